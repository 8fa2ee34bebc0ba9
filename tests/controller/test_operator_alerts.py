"""Safehold's alerts and dashboard end to end: a real Prometheus (the Debian package's
binary) scrapes the operator's /metrics every second and evaluates
charts/safehold/files/alerts.yaml (with every ``for:`` at 0s) every second.

- A location with a wrong secret key and a run that fails on it make
  SafeholdLocationUnavailable and SafeholdBackupFailed fire, as Prometheus's API reports, and
  a real Alertmanager (Debian package) delivers them to a webhook receiver in the test.
- Two runs (one queued), their replication, a scheduled verification and test restore, a
  restore and a lock a killed Job left: every query of the Grafana dashboard returns data,
  the figures are those in status, and SafeholdRepositoryLockedLong fires on the lock's age
  as the location's check measured it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from safehold.controller import metrics
from safehold.repo import Repository
from safehold.repo.crypto import AAD_LOCK, seal
from safehold.storage import open_storage
from testground.kube import Namespace
from testground.objectstores import RunningStore
from testground.prometheus import (
    answers,
    binary,
    free_port,
    panels_answer,
    prometheus,
    server,
    value,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "charts"))
from render_dashboard import PANELS, POINT_IN_TIME

#: The dashboard's rows this test makes data for: all but the point-in-time row, which
#: test_operator_point_in_time.py shows (it has a PostgreSQL server to archive)
ROWS = {p.row for p in PANELS} - {POINT_IN_TIME}


class _Webhook(ThreadingHTTPServer):
    """Alertmanager's webhook receiver: keeps every notification it is sent."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                webhook.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def alert(self, labels: dict[str, str], timeout: float = 60) -> dict[str, Any]:
        """The first firing alert notified with ``labels``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for note in list(self.notifications):
                for alert in note["alerts"]:
                    if alert["status"] == "firing" and labels.items() <= alert["labels"].items():
                        return dict(alert)
            time.sleep(0.5)
        raise AssertionError(f"no notification of {labels}: {self.notifications}")


@contextmanager
def _alertmanager(tmp_path: Path, webhook: _Webhook) -> Iterator[int]:
    """Alertmanager (the Debian package's binary, no cluster peers) routing every alert at
    once to ``webhook``, as docs/monitoring.md's example route does to a real receiver."""
    command = binary("prometheus-alertmanager", "prometheus-alertmanager")
    config = {
        "route": {"receiver": "webhook", "group_by": ["alertname", "namespace"],
                  "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook.url}]}],
    }  # fmt: skip
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    args = [command, f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]  # fmt: skip
    with server(args, tmp_path / "alertmanager.log", port):
        yield port


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


@contextmanager
def _queue_depths(namespace: str) -> Iterator[list[float]]:
    """The values the operator's ``safehold_backup_runs_queued`` gauge takes for the
    namespace while the block runs, read in this process every 20 ms."""
    depths: list[float] = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for family in metrics.RUNS_QUEUED.collect():
                depths.extend(
                    s.value for s in family.samples if s.labels.get("namespace") == namespace
                )
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield depths
    finally:
        done.set()
        sampler.join()


def test_a_wrong_key_and_a_failed_run_fire_their_alerts(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any, tmp_path: Path
) -> None:
    """SafeholdLocationUnavailable and SafeholdBackupFailed fire in Prometheus, and reach a
    real Alertmanager's webhook receiver with their labels and annotations."""
    metrics_port = metrics.serve(0, "127.0.0.1")
    webhook = _Webhook()
    with (
        _alertmanager(tmp_path, webhook) as alertmanager,
        prometheus(tmp_path, metrics_port, alertmanager) as port,
    ):
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

        # Both reach the receiver through Alertmanager, labels and annotations intact.
        for alertname, notes in (("SafeholdLocationUnavailable", located["annotations"]),
                                 ("SafeholdBackupFailed", failed["annotations"])):  # fmt: skip
            sent = webhook.alert({"alertname": alertname, "namespace": str(namespace)})
            assert sent["annotations"]["summary"] == notes["summary"]
            assert sent["annotations"]["description"] == notes["description"]
            assert sent["annotations"]["runbook_url"] == notes["runbook_url"]
            assert sent["labels"]["severity"] == "critical"
        assert webhook.alert({"alertname": "SafeholdBackupFailed"})["labels"]["policy"] == "pol"


PASSWORD = "dashboard test password"


def _stale_lock(store: RunningStore, bucket: str, age: timedelta) -> None:
    """A lock as a Job killed ``age`` ago leaves it: written once, never refreshed."""
    repo = Repository.open(open_storage(store.url(bucket, "repo"), dict(store.options)), PASSWORD)
    written = (datetime.now(UTC) - age).isoformat().replace("+00:00", "Z")
    doc = {"exclusive": True, "time": written, "hostname": "gone", "pid": 7, "operation": "prune"}
    repo.save_object("locks", seal(repo.aead, AAD_LOCK, json.dumps(doc).encode()))


def _policy_status(namespace: Namespace, kit: Any, check: Any, what: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = kit.get(namespace, "backuppolicy", "pol").get("status") or {}
        return status if check(status) else None

    found: dict[str, Any] = namespace.cluster.wait_for(done, timeout=240, what=what)
    return found


def _replicated(status: dict[str, Any]) -> bool:
    sites = status.get("replication") or []
    return bool(sites) and sites[0].get("run") == "run-2" and sites[0].get("phase") == "Succeeded"


def _checked(status: dict[str, Any]) -> bool:
    verified = (status.get("lastVerification") or {}).get("result") == "Succeeded"
    tested = (status.get("lastTestRestore") or {}).get("result") == "Succeeded"
    return verified and tested


def test_every_dashboard_panel_shows_data_and_a_stale_lock_fires(
    namespace: Namespace,
    s3_store: RunningStore,
    gcs_store: RunningStore,
    operator: Any,
    kit: Any,
    tmp_path: Path,
) -> None:
    """One of everything the dashboard shows: two runs (one queued behind the other under a
    limit of one), their replication to a recovery site, a scheduled verification and test
    restore, a restore, and a lock a killed Job left in the primary. Every panel's query
    answers, the figures are the ones in status, and SafeholdRepositoryLockedLong fires on
    the location check's exact lock age."""
    metrics_port = metrics.serve(0, "127.0.0.1")
    with prometheus(tmp_path, metrics_port) as port:
        operator(poll_interval=1.0, max_concurrent_runs=1)
        data = kit.make_claim(namespace, "data")
        kit.write_data(data, seed=61, files=4)
        bucket = kit.store_location(namespace, s3_store, "primary", password=PASSWORD)
        kit.store_location(namespace, gcs_store, "site", password=PASSWORD, role="recovery-site")
        namespace.wait_condition("backuplocation", "primary", "Available", timeout=120)
        # A lock left two hours ago; a new spec (generation) makes the operator check again.
        _stale_lock(s3_store, bucket, timedelta(hours=2))
        namespace.kubectl("patch", "backuplocation", "primary", "--type=merge",
                          "-p", json.dumps({"spec": {"validationInterval": "2h"}}))  # fmt: skip
        replicated = {"replicateTo": [{"name": "site"}]}
        kit.policy(namespace, "pol", "primary", ["data"], **replicated)
        with _queue_depths(str(namespace)) as depths:
            kit.backup_run(namespace, "run-1", "pol")
            kit.backup_run(namespace, "run-2", "pol")  # queued until run-1 ends
            for run in ("run-1", "run-2"):
                kit.kubectl_wait(namespace, f"backuprun/{run}", "Complete", timeout=180)
        # run-2 waited: the operator's own gauge said so (read every 20 ms here; Prometheus,
        # scraping every second, can miss a wait shorter than that)
        assert max(depths) == 1, depths
        _policy_status(namespace, kit, _replicated, "run-2 at the site")
        # The scheduled checks, once the site holds a repository to verify.
        scheduled = time.time()
        kit.policy(namespace, "pol", "primary", ["data"], **replicated,
                   verification={"cron": "* * * * *", "readDataPercent": 100},
                   testRestore={"cron": "* * * * *"})  # fmt: skip
        kit.restore_request(
            namespace, "back", backupRunRef={"name": "run-2"}, target={"claimName": "restored"}
        )
        kit.kubectl_wait(namespace, "restorerequest/back", "Complete", timeout=180)
        _policy_status(namespace, kit, _checked, "a verification and a test restore")
        location = kit.get(namespace, "backuplocation", "primary")["status"]
        assert location["locks"] == 1, location
        assert location["oldestLockAgeSeconds"] >= 7200, location

        locked = _wait_firing(
            port, {"alertname": "SafeholdRepositoryLockedLong", "location": "primary"}
        )
        assert locked["labels"]["namespace"] == str(namespace)
        time.sleep(3)  # the last figures scraped
        panels_answer(port, str(namespace), ROWS)

        _recovery_figures(
            port, namespace, kit, scheduled, lock_age=location["oldestLockAgeSeconds"]
        )


def _recovery_figures(
    port: int, namespace: Namespace, kit: Any, scheduled: float, *, lock_age: int
) -> None:
    """The figures Prometheus holds are the ones status shows."""

    def one(metric: str, selector: str = "") -> float:
        return value(port, f'{metric}{{namespace="{namespace}"{selector}}}', str(namespace))

    def none(expr: str) -> bool:
        return not answers(port, expr, str(namespace))

    status = kit.get(namespace, "backuppolicy", "pol")["status"]
    assert one("safehold_location_oldest_lock_age_seconds", ', location="primary"') == lock_age
    assert one("safehold_location_oldest_lock_age_seconds", ', location="site"') == 0
    queued = f'safehold_backup_runs_queued{{namespace="{namespace}"}}'
    assert value(port, queued, str(namespace)) == 0  # the queue emptied (run-2 waited: above)
    # replication: every copy succeeded, the site holds the newest run (no lag)
    site = ', policy="pol", location="site"'
    assert one("safehold_replications_total", site + ', result="Succeeded"') >= 1
    assert none('safehold_replications_total{result!="Succeeded"}')
    assert one("safehold_replication_lag_seconds", site) == 0
    moved = one("safehold_replication_bytes_transferred_total", site)
    # (run-1's copy may have taken run-2's snapshot too, leaving run-2's nothing to copy)
    assert moved >= status["replication"][0]["bytesTransferred"]
    assert moved > 0
    # verification: a success at both locations since it was scheduled, no failure
    assert [c["location"] for c in status["lastVerification"]["locations"]] == ["primary", "site"]
    for where in ("primary", "site"):
        verified = one(
            "safehold_verification_last_success_timestamp_seconds", f', location="{where}"'
        )
        assert verified >= scheduled
    assert none("safehold_verification_failures_total > 0")
    # test restore: the measured recovery time is the one status shows
    source = ', policy="pol", source="data"'

    def measured() -> bool | None:
        """(A test every minute: the next one may have ended since, not yet scraped.)"""
        tested = kit.get(namespace, "backuppolicy", "pol")["status"]["lastTestRestore"]
        duration = one("safehold_test_restore_duration_seconds", source)
        return duration == tested["durationSeconds"] or None

    namespace.cluster.wait_for(measured, timeout=10, what="the test restore's duration")
    assert one("safehold_test_restore_last_success_timestamp_seconds", source) >= scheduled
    assert none("safehold_test_restore_failures_total > 0")
    assert one("safehold_restores_total", ', result="Succeeded"') == 1
