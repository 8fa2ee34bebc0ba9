"""A real Prometheus (the Debian package's binary) for the tests of the alerts and the
dashboard: it scrapes the operator's /metrics every second and evaluates the chart's
alerts (``charts/safehold/files/alerts.yaml``, every ``for:`` at 0s) every second.

:func:`panels_answer` runs the Grafana dashboard's queries (``charts/render_dashboard.py``)
against it. The dashboard's rows are shown by the tests that make their data: the
point-in-time row by the operator's point-in-time test (it has a PostgreSQL server), every
other row by the alerts test.
"""

from __future__ import annotations

import importlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ALERTS",
    "answers",
    "binary",
    "free_port",
    "panels_answer",
    "prometheus",
    "query",
    "server",
    "value",
]

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "charts" / "safehold" / "files" / "alerts.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is missing: run e2e/install-deps (Debian package {package})")
    return found


@contextmanager
def server(args: list[str], log: Path, port: int) -> Iterator[None]:
    """A server process, logging to ``log``, once its ``/-/ready`` on ``port`` answers;
    stopped after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{args[0]} did not start: {log.read_text()}") from None
                time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def prometheus(tmp_path: Path, metrics_port: int, alertmanager: int | None = None) -> Iterator[int]:
    """Prometheus scraping the operator every second and evaluating the alerts every second
    (every ``for:`` at 0s), sending them to ``alertmanager`` (a port) if given; its port."""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"  # the test-only rendering: fire on the first evaluation
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "alerts.yaml")],
        "scrape_configs": [
            {
                "job_name": "safehold",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
            }
        ],
    }
    if alertmanager is not None:
        targets = [f"127.0.0.1:{alertmanager}"]
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": targets}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    args = [binary("prometheus", "prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    with server(args, tmp_path / "prometheus.log", port):
        yield port


def query(port: int, expr: str) -> list[Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        answer = json.load(r)
    assert answer["status"] == "success", (expr, answer)
    result: list[Any] = answer["data"]["result"]
    return result


def answers(port: int, expr: str, namespace: str) -> list[dict[str, Any]]:
    """The series of ``expr`` that belong to ``namespace`` (the operator's registry is the
    process's: other tests' series may be there too)."""
    return [r for r in query(port, expr) if r["metric"].get("namespace") == namespace]


def value(port: int, expr: str, namespace: str) -> float:
    """The one series of ``expr``, waited for past a stale scrape (see
    :func:`panels_answer`)."""
    deadline = time.monotonic() + 30
    while not (found := answers(port, expr, namespace)) and time.monotonic() < deadline:
        time.sleep(0.5)
    [series] = found
    return float(series["value"][1])


def panels_answer(port: int, namespace: str, rows: Iterable[str]) -> None:
    """Every query of the dashboard's panels in ``rows`` (as the committed JSON holds it)
    returns data of ``namespace`` from this Prometheus."""
    sys.path.insert(0, str(REPO / "charts"))
    render_dashboard: Any = importlib.import_module("render_dashboard")

    wanted = set(rows)
    assert wanted <= {p.row for p in render_dashboard.PANELS}, wanted
    titles = {p.title for p in render_dashboard.PANELS if p.row in wanted}
    panels = json.loads(render_dashboard.DASHBOARD.read_text())["panels"]
    queried = [
        (p["title"], t["expr"])
        for p in panels
        if p["title"] in titles
        for t in p.get("targets") or []
    ]
    expected = sum(len(p.queries) for p in render_dashboard.PANELS if p.row in wanted)
    assert len(queried) == expected, (queried, expected)
    # Polled: a scrape that overruns its 1 s (the metrics are served from a thread of the
    # test's process) marks every series stale until the next one.
    deadline = time.monotonic() + 30
    while empty := [(t, expr) for t, expr in queried if not answers(port, expr, namespace)]:
        assert time.monotonic() < deadline, f"panels without data: {empty}"
        time.sleep(0.5)
