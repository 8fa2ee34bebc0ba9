"""The operator as people run it (``safehold operator``), killed mid-run and started again:
the run is picked up from the cluster and recorded once. Also its /metrics and /healthz."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testground.kube import Namespace
from testground.objectstores import RunningStore

SAFEHOLD = str(Path(sys.executable).parent / "safehold")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    def __init__(
        self,
        namespace: Namespace,
        log: Path,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.namespace = namespace
        self.log = log
        self.env = env or {}
        self.command = command or [SAFEHOLD]  # what runs `safehold`'s main with the arguments
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0

    def start(self) -> None:
        self.metrics_port, self.health_port = _free_port(), _free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.namespace.cluster.kubeconfig),
            "SAFEHOLD_IMAGE": os.environ.get("SAFEHOLD_TEST_IMAGE", "safehold:0.1.0"),
            **self.env,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.command, "operator", "--namespace", str(self.namespace),
                 "--metrics-port", str(self.metrics_port),
                 "--health-port", str(self.health_port)],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def get(self, path: str, port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return str(r.read().decode())


@pytest.fixture
def operator_process(namespace: Namespace, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(namespace, tmp_path / "operator.log")
    try:
        yield op
    finally:
        op.stop()


def test_killed_operator_picks_the_run_up_and_records_it_once(
    namespace: Namespace, s3_store: RunningStore, operator_process: OperatorProcess, kit: Any
) -> None:
    op = operator_process
    data = kit.make_claim(namespace, "data")
    kit.write_data(data, seed=3, files=40, size=512 * 1024)
    kit.store_location(namespace, s3_store)
    kit.policy(namespace, "pol", "loc", ["data"])
    op.start()
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    kit.backup_run(namespace, "run", "pol")

    def job_recorded() -> str | None:
        run = namespace.get("backuprun", "run") or {}
        sources = (run.get("status") or {}).get("sources") or []
        return sources[0].get("job") if sources else None

    job = namespace.cluster.wait_for(job_recorded, timeout=60, what="the run's Job name")
    op.kill()  # SIGKILL: no cleanup, the Job goes on without the operator
    op.start()
    kit.kubectl_wait(namespace, "backuprun/run", "Complete", timeout=180)
    run = kit.get(namespace, "backuprun", "run")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["sources"][0]["job"] == job
    jobs = json.loads(
        namespace.kubectl("get", "jobs", "-l", "safehold.io/run=run", "-o", "json").stdout
    )["items"]
    assert [j["metadata"]["name"] for j in jobs] == [job]  # one Job, not one per operator

    events = json.loads(namespace.kubectl("get", "events", "-o", "json").stdout)["items"]
    succeeded = [
        e for e in events
        if e["involvedObject"]["name"] == "run" and e["reason"] == "Succeeded"
    ]  # fmt: skip
    assert len(succeeded) == 1
    assert sum(e.get("count", 1) for e in succeeded) == 1

    metrics = op.get("/metrics", op.metrics_port)
    label = f'namespace="{namespace}",policy="pol"'
    assert f"safehold_backup_runs_succeeded_total{{{label}}} 1.0" in metrics
    assert f"safehold_backup_run_duration_seconds_count{{{label}}} 1.0" in metrics
    assert "safehold_backup_last_success_timestamp_seconds{" in metrics
    assert "safehold_location_bytes_stored{" in metrics
    assert op.get("/healthz", op.health_port)


def _answers(op: OperatorProcess) -> bool:
    try:
        return bool(op.get("/healthz", op.health_port))
    except OSError:
        return False


def test_sigterm_stops_the_operator_cleanly(namespace: Namespace, tmp_path: Path) -> None:
    op = OperatorProcess(namespace, tmp_path / "operator.log")
    op.start()
    assert op.proc is not None
    try:
        namespace.cluster.wait_for(lambda: _answers(op), timeout=60, what="/healthz")
        op.proc.send_signal(signal.SIGTERM)
        assert op.proc.wait(timeout=60) == 0, op.log.read_text()[-3000:]
    finally:
        op.kill()


# The operator as `safehold operator` runs it, with one more cleanup handler that never
# returns: a stop that hangs, as kopf's own can (docs/operator.md, "Restarts lose nothing").
_HUNG_STOP = """
import asyncio, sys
import kopf
from safehold.cli.main import main

@kopf.on.cleanup()
async def never_done(**_):
    print("the cleanup hangs", flush=True)
    await asyncio.Event().wait()

sys.exit(main(sys.argv[1:]))
"""


def test_a_stop_that_hangs_ends_in_sigkill(namespace: Namespace, tmp_path: Path) -> None:
    """The process kills itself EXIT_DEADLINE seconds after its stop began, before a pod's
    grace period ends, instead of hanging (kopf's own default: ten minutes)."""
    from safehold.controller.operator import EXIT_DEADLINE

    hung = [sys.executable, "-c", _HUNG_STOP]
    op = OperatorProcess(namespace, tmp_path / "operator.log", command=hung)
    op.start()
    assert op.proc is not None
    try:
        namespace.cluster.wait_for(lambda: _answers(op), timeout=60, what="/healthz")
        op.proc.send_signal(signal.SIGTERM)
        code = op.proc.wait(timeout=EXIT_DEADLINE + 60)
        log = op.log.read_text()
        assert "the cleanup hangs" in log, log[-3000:]  # the stop did hang...
        assert code == -signal.SIGKILL, log[-3000:]  # ...and ended in the kill
    finally:
        op.kill()


# ------------------------------------------------------------------ high availability
LEASE = "safehold-test-leader"


def _holder(namespace: Namespace) -> str | None:
    lease = namespace.get("lease", LEASE) or {}
    return (lease.get("spec") or {}).get("holderIdentity") or None


def _leads(op: OperatorProcess) -> float | None:
    """The replica's ``safehold_leader`` gauge, None until it serves its metrics."""
    try:
        text = op.get("/metrics", op.metrics_port)
    except OSError:
        return None
    line = next((x for x in text.splitlines() if x.startswith("safehold_leader ")), None)
    return float(line.split()[1]) if line else None


def _standby_health(op: OperatorProcess) -> bool:
    try:
        return "standby" in op.get("/healthz", op.health_port)
    except OSError:
        return False


def _replica(namespace: Namespace, tmp_path: Path, name: str) -> OperatorProcess:
    """One replica as the chart runs it: electing its leader on a Lease in its namespace."""
    env = {
        "SAFEHOLD_LEADER_LEASE": LEASE,
        "SAFEHOLD_POD_NAMESPACE": str(namespace),
        "SAFEHOLD_POD_NAME": name,
    }
    return OperatorProcess(namespace, tmp_path / f"{name}.log", env)


def test_the_standby_takes_over_when_the_leader_is_killed_mid_run(
    namespace: Namespace, s3_store: RunningStore, tmp_path: Path, kit: Any
) -> None:
    """Two replicas; the leader is SIGKILLed while a run's Job runs: the standby takes the
    Lease within its duration, the run completes, one Job, one Succeeded Event. A leader that
    stops cleanly hands the Lease over at once."""
    from safehold.controller.leader import LEASE_SECONDS, RETRY_SECONDS

    cluster = namespace.cluster
    a, b = _replica(namespace, tmp_path, "op-a"), _replica(namespace, tmp_path, "op-b")
    try:
        a.start()
        cluster.wait_for(lambda: _holder(namespace) == "op-a", timeout=60, what="op-a to lead")
        b.start()
        cluster.wait_for(lambda: _leads(b) == 0.0, timeout=60, what="op-b to wait as a standby")
        # its probes pass meanwhile (the standby's /healthz opens just after its /metrics)
        cluster.wait_for(lambda: _standby_health(b), timeout=30, what="op-b's standby /healthz")

        data = kit.make_claim(namespace, "data")
        kit.write_data(data, seed=8, files=40, size=512 * 1024)
        kit.store_location(namespace, s3_store)
        kit.policy(namespace, "pol", "loc", ["data"])
        namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
        kit.backup_run(namespace, "run", "pol")

        def job_recorded() -> str | None:
            run = namespace.get("backuprun", "run") or {}
            sources = (run.get("status") or {}).get("sources") or []
            return sources[0].get("job") if sources else None

        job = cluster.wait_for(job_recorded, timeout=60, what="the run's Job name")
        killed = time.monotonic()
        a.kill()
        cluster.wait_for(lambda: _holder(namespace) == "op-b", timeout=60, what="op-b to take over")
        takeover = time.monotonic() - killed
        assert takeover < LEASE_SECONDS + 3 * RETRY_SECONDS + 5, takeover

        kit.kubectl_wait(namespace, "backuprun/run", "Complete", timeout=180)
        run = kit.get(namespace, "backuprun", "run")
        assert run["status"]["phase"] == "Succeeded", run["status"]
        jobs = json.loads(
            namespace.kubectl("get", "jobs", "-l", "safehold.io/run=run", "-o", "json").stdout
        )["items"]
        assert [j["metadata"]["name"] for j in jobs] == [job]
        events = json.loads(namespace.kubectl("get", "events", "-o", "json").stdout)["items"]
        succeeded = [
            e for e in events
            if e["involvedObject"]["name"] == "run" and e["reason"] == "Succeeded"
        ]  # fmt: skip
        assert sum(e.get("count", 1) for e in succeeded) == 1
        assert _leads(b) == 1.0

        # a clean stop (a rolling update) releases the Lease: no wait for it to expire
        a.start()
        cluster.wait_for(lambda: _leads(a) == 0.0, timeout=60, what="op-a to wait as a standby")
        stopped = time.monotonic()
        b.stop()
        cluster.wait_for(lambda: _holder(namespace) == "op-a", timeout=30, what="op-a to lead")
        assert time.monotonic() - stopped < LEASE_SECONDS, "the Lease was not released"
    finally:
        a.stop()
        b.stop()
