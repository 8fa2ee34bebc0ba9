"""The Grafana dashboard: generated from code, shipped by the chart when asked for, and made of
queries that name metrics the operator exports (docs/monitoring.md, "Dashboard")."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "charts"))

import render_dashboard  # noqa: E402

from safehold.controller import metrics  # noqa: E402

Render = Callable[[dict[str, Any]], list[dict[str, Any]]]


def test_the_committed_dashboard_is_the_generated_one() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "charts" / "render_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_panels_have_unique_ids_and_query_ids() -> None:
    panels = json.loads(render_dashboard.DASHBOARD.read_text())["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        refs = [t["refId"] for t in panel.get("targets") or []]
        assert all(refs), panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"


def test_every_query_names_metrics_the_operator_exports() -> None:
    exported: set[str] = set()
    for family in metrics.REGISTRY.collect():
        exported.add(family.name)
        exported.update(s.name for s in family.samples)
        if family.type == "counter":
            exported.add(f"{family.name}_total")
        if family.type == "histogram":
            exported.update(f"{family.name}_{x}" for x in ("sum", "count", "bucket"))
    for panel in render_dashboard.PANELS:
        for expr, _legend in panel.queries:
            names = set(re.findall(r"\bsafehold_[a-z_]+", expr))
            assert names, expr
            assert names <= exported, f"{panel.title}: {names - exported} are not exported"


def test_the_chart_ships_it_for_grafanas_sidecar_only_when_enabled(render: Any) -> None:
    assert not [o for o in render({}) if o["kind"] == "ConfigMap"]
    objects = render({"grafanaDashboard": {"enabled": True, "annotations": {"folder": "Ops"}}})
    (config,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["annotations"] == {"folder": "Ops"}
    shipped = json.loads(config["data"]["safehold.json"])
    assert shipped == json.loads(render_dashboard.DASHBOARD.read_text())
