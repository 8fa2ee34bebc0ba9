"""Safehold's alerts end to end: a real Prometheus (the Debian package's binary) scrapes the
operator's /metrics every second and evaluates charts/safehold/files/alerts.yaml (with every
``for:`` at 0s) every second; a location with a wrong secret key and a run that fails on it
make SafeholdLocationUnavailable and SafeholdBackupFailed fire, as Prometheus's API reports."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.controller import metrics
from testground.kube import Namespace
from testground.objectstores import RunningStore

ALERTS = Path(__file__).resolve().parents[2] / "charts" / "safehold" / "files" / "alerts.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prometheus(tmp_path: Path, metrics_port: int) -> Iterator[int]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: run e2e/install-deps (Debian package prometheus)")
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"  # the test-only rendering: fire on the first evaluation
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "alerts.yaml")],
        "scrape_configs": [
            {
                "job_name": "safehold",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _firing(port: int) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5) as r:
            alerts: list[dict[str, Any]] = json.load(r)["data"]["alerts"]
    except OSError:
        return []
    return [a for a in alerts if a["state"] == "firing"]


def _wait_firing(port: int, labels: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for alert in _firing(port):
            if labels.items() <= alert["labels"].items():
                return alert
        time.sleep(1)
    raise AssertionError(f"no firing alert {labels}; firing: {_firing(port)}")


def _query(port: int, expr: str) -> list[Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        answer = json.load(r)
    assert answer["status"] == "success", (expr, answer)
    result: list[Any] = answer["data"]["result"]
    return result


def _dashboard_queries_answer(port: int, metrics_port: int) -> None:
    """The Grafana dashboard's queries (charts/render_dashboard.py) run on this Prometheus:
    every one parses, and each whose metrics the operator exports by now returns data."""
    sys.path.insert(0, str(ALERTS.parents[2]))
    import render_dashboard

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        exported = r.read().decode()
    answered = []
    for panel in render_dashboard.PANELS:
        for expr, _legend in panel.queries:
            names = set(re.findall(r"\bsafehold_[a-z_]+", expr))
            result = _query(port, expr)
            if all(re.search(rf"^{n}[{{ ]", exported, re.M) for n in names):
                assert result, f"{panel.title}: {expr} returned no data"
                answered.append(panel.title)
    assert "Runs ended per hour" in answered  # the failed run


def test_a_wrong_key_and_a_failed_run_fire_their_alerts(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any, tmp_path: Path
) -> None:
    metrics_port = metrics.serve(0, "127.0.0.1")
    prometheus = _prometheus(tmp_path, metrics_port)
    port = next(prometheus)
    try:
        operator()
        kit.make_claim(namespace, "data")
        creds = {
            "AWS_ACCESS_KEY_ID": s3_store.options["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": "not-the-key",
        }
        kit.store_location(namespace, s3_store, "wrongkey", credentials=creds)
        kit.policy(namespace, "pol", "wrongkey", ["data"])
        namespace.wait_condition("backuplocation", "wrongkey", "Available", status="False",
                                 timeout=120)  # fmt: skip
        located = _wait_firing(
            port, {"alertname": "SafeholdLocationUnavailable", "location": "wrongkey"}
        )
        assert located["labels"]["namespace"] == str(namespace)
        assert f"{namespace}/wrongkey" in located["annotations"]["description"]
        assert located["annotations"]["runbook_url"].endswith("#safeholdlocationunavailable")

        time.sleep(3)  # the policy's run counters, at 0, scraped before the run fails
        kit.backup_run(namespace, "doomed", "pol")
        kit.kubectl_wait(namespace, "backuprun/doomed", "Failed", timeout=60)
        failed = _wait_firing(port, {"alertname": "SafeholdBackupFailed", "policy": "pol"})
        assert failed["labels"]["severity"] == "critical"
        assert f"{namespace}/pol" in failed["annotations"]["summary"]
        _dashboard_queries_answer(port, metrics_port)
    finally:
        prometheus.close()
