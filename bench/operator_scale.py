"""The operator at scale: 1,000 BackupPolicies on the test ground, chart-installed operator.

``make bench-operator`` (or ``bench/run.py --only operator``, or this file on its own) starts the
test ground's control plane (a real kube-apiserver, controller-manager and the pod runner; built
once by ``make cluster``) and a SeaweedFS, ``helm install``s charts/safehold as it stands (as
many replicas as the chart defines), and creates 20 namespaces, each with the two Secrets, one
BackupLocation (one bucket shared by all, a prefix per namespace), one claim ``data`` holding
4 KiB, and ``--policies / 20`` BackupPolicies backing up that claim on a daily schedule
(03:00 UTC, so no run starts by itself). The operator runs the code of ``--source`` (default:
the safehold this script imports). Then it measures:

* **ready**: seconds from the first policy's creation until every policy is ``Ready``;
* **memory**: the RSS of the operator pod's processes (the pod runner runs a pod as local
  processes, found by their ``HOSTNAME``; read from /proc), idle and after the runs, and their
  peak (VmHWM: the larger of the first process's and the restarted one's);
* **idle API traffic**: the apiserver's own ``apiserver_request_total`` (its /metrics),
  summed, as a rate over ``--idle-seconds`` with the operator running minus the same span with
  it scaled to 0 (what the pod runner, the controller-manager and this script send is in both),
  in requests/s; also per verb and resource, which tells what still polls;
* **BackupRun to Job**: five BackupRuns created by hand one after the other, the seconds until
  each one's Job exists (median);
* **50 runs at once** (``--runs``): BackupRuns of 50 policies created together; all must end
  ``Succeeded`` with exactly one Job and one ``Succeeded`` Event each; seconds until all end.

It prints a table, checks the targets of issue 17 (idle traffic <= 2 requests/s, memory
< 150 MB, latency < 1 s median) and writes the figures as JSON (``--json``; run.py passes
``bench/results/operator.json``). ``--policies 100`` gives a quick version. The arithmetic and
the table are in operator_figures.py; docs/performance.md ("Operator at scale") has the results.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

import quickstart  # e2e/quickstart.py: the chart's install, as the end-to-end tests do it
from operator_figures import Figures, Totals, median, operator_share, rates, request_totals, table
from testground import controlplane
from testground.kube import Cluster
from testground.manifests import IMAGE
from testground.objectstores import RunningStore, start_store
from testground.rest import Api, ApiError

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent
NAMESPACES = 20
GROUP = "/apis/safehold.io/v1alpha1"
RELEASE = "safehold"
OPERATOR_NS = "safehold-system"
FINAL = ("Succeeded", "PartiallyFailed", "Failed")
_START = time.monotonic()


def _log(message: str) -> None:
    print(f"operator [{time.monotonic() - _START:5.0f} s]: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the test ground


def _wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _ready(obj: dict[str, Any], condition: str = "Ready") -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == condition and c.get("status") == "True" for c in conds)


def _items(api: Api, path: str, **query: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(path, **query).get("items") or []
    return items


def _totals(api: Api) -> Totals:
    return request_totals(str(api.get("/metrics").get("text", "")))


def _operator_pids(api: Api) -> list[int]:
    """The processes of the operator's running pods (the pod runner sets HOSTNAME to the pod)."""
    pods = _items(api, f"/api/v1/namespaces/{OPERATOR_NS}/pods",
                  labelSelector=f"app.kubernetes.io/instance={RELEASE}")  # fmt: skip
    names = {f"HOSTNAME={p['metadata']['name']}".encode() for p in pods}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if env & names:
            found.append(int(entry.name))
    return found


def _memory(pids: list[int]) -> tuple[int, int]:
    """(summed VmRSS, summed VmHWM) in bytes of these processes."""
    rss = hwm = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                kib = int(value.split()[0]) * 1024
                rss, hwm = (rss + kib, hwm) if key == "VmRSS" else (rss, hwm + kib)
    return rss, hwm


class Ground:
    """The running test ground, object store and operator of one benchmark run."""

    def __init__(self, cluster: Cluster, store: RunningStore, bucket: str) -> None:
        self.cluster = cluster
        assert cluster.local is not None
        self.api = cluster.local.api()
        self.store = store
        self.bucket = bucket
        self.namespaces = [f"bench-{i:02d}" for i in range(NAMESPACES)]

    def install(self, source: Path) -> int:
        """helm install the chart, its pod running the safehold of ``source``; returns the
        chart's replicas.

        The pod runner ignores images and runs the command in the project's environment,
        whose editable install names one checkout; ``PYTHONPATH`` (set on the Deployment,
        which restarts its pod) makes the operator run ``source``'s code instead.
        """
        helm_bin = quickstart.find_helm()
        self.cluster.kubectl("create", "namespace", OPERATOR_NS)
        quickstart.install_operator(helm_bin, self.cluster, RELEASE, OPERATOR_NS, IMAGE)
        self.cluster.kubectl("set", "env", f"deployment/{RELEASE}", "-n", OPERATOR_NS,
                             f"PYTHONPATH={source}")  # fmt: skip
        self.cluster.kubectl("rollout", "status", f"deployment/{RELEASE}", "-n", OPERATOR_NS,
                             "--timeout=120s", timeout=130)  # fmt: skip
        deploy = self.api.get(f"/apis/apps/v1/namespaces/{OPERATOR_NS}/deployments/{RELEASE}")
        return int(deploy["spec"].get("replicas", 1))

    def namespace(self, ns: str) -> None:
        """A namespace with the Secrets, the location and the claim ``data`` with 4 KiB."""
        self.cluster.kubectl("create", "namespace", ns)
        creds = {
            "AWS_ACCESS_KEY_ID": self.store.options["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": self.store.options["secret_access_key"],
        }
        quickstart.run_shell_block("secrets", self.cluster, ns, creds)
        location = quickstart.walkthrough_yaml(
            "location", S3_ENDPOINT=self.store.endpoint, BUCKET=self.bucket
        ).replace("prefix: demo", f"prefix: {ns}")
        self.cluster.apply(location, ns)
        self.cluster.apply(
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "64Mi"}}}},
            ns,
        )  # fmt: skip
        path = quickstart.claim_path(self.cluster, ns, "data", timeout=120)
        (path / "small.bin").write_bytes(os.urandom(4096))

    def policies(self, ns: str, count: int) -> None:
        docs = [
            {"apiVersion": "safehold.io/v1alpha1", "kind": "BackupPolicy",
             "metadata": {"name": f"p{i:03d}"},
             "spec": {"location": {"name": "s3"},
                      "sources": {"volumes": [{"claimName": "data"}]},
                      "schedule": {"timeZone": "UTC",
                                   "slots": [{"cron": "0 3 * * *", "type": "incremental"}]}}}
            for i in range(count)
        ]  # fmt: skip
        self.cluster.apply({"apiVersion": "v1", "kind": "List", "items": docs}, ns)

    def count_ready(self, kind: str, condition: str) -> int:
        return sum(_ready(o, condition) for o in _items(self.api, f"{GROUP}/{kind}"))

    def scale(self, replicas: int) -> None:
        self.cluster.kubectl("scale", "deployment", RELEASE, f"--replicas={replicas}",
                             "-n", OPERATOR_NS)  # fmt: skip
        if replicas == 0:
            _wait(lambda: not _operator_pids(self.api), 120, "the operator's processes to end")
        else:
            self.cluster.kubectl("rollout", "status", f"deployment/{RELEASE}", "-n",
                                 OPERATOR_NS, "--timeout=120s", timeout=130)  # fmt: skip

    def create_run(self, ns: str, policy: str, name: str) -> None:
        self.api.post(f"{GROUP}/namespaces/{ns}/backupruns", {
            "apiVersion": "safehold.io/v1alpha1", "kind": "BackupRun",
            "metadata": {"name": name},
            "spec": {"policyRef": {"name": policy}, "type": "full"},
        })  # fmt: skip

    def jobs_of(self, ns: str, run: str) -> list[dict[str, Any]]:
        return _items(self.api, f"/apis/batch/v1/namespaces/{ns}/jobs",
                      labelSelector=f"safehold.io/run={run}")  # fmt: skip

    def phase(self, ns: str, run: str) -> str:
        try:
            obj = self.api.get(f"{GROUP}/namespaces/{ns}/backupruns/{run}")
        except ApiError:
            return ""
        return str((obj.get("status") or {}).get("phase") or "")


# ------------------------------------------------------------------ the measurements


def measure_ready(g: Ground, f: Figures) -> None:
    per_ns = max(1, f.policies // NAMESPACES)
    start = time.monotonic()
    for ns in g.namespaces:
        g.policies(ns, per_ns)
    f.create_seconds = time.monotonic() - start
    total = per_ns * NAMESPACES
    f.policies = total
    _log(f"{total} policies created in {f.create_seconds:.1f} s; waiting until all are Ready")

    def all_ready() -> bool:
        return g.count_ready("backuppolicies", "Ready") >= total

    _wait(all_ready, 1800, f"{total} policies to be Ready", interval=1.0)
    f.ready_seconds = time.monotonic() - start
    _log(f"every policy Ready after {f.ready_seconds:.1f} s")


def measure_idle(g: Ground, f: Figures, seconds: float) -> None:
    """The operator's memory, then its idle traffic: running minus scaled to 0."""

    def window() -> Totals:
        before, t0 = _totals(g.api), time.monotonic()
        time.sleep(seconds)
        after, t1 = _totals(g.api), time.monotonic()
        return rates(before, after, t1 - t0)

    _log(f"settling 20 s, then {seconds:.0f} s of idle traffic with the operator running")
    time.sleep(20)
    running = window()
    f.memory_idle_bytes, f.memory_peak_bytes = _memory(_operator_pids(g.api))
    _log("scaling the operator to 0 for the baseline")
    g.scale(0)
    time.sleep(5)
    baseline = window()
    g.scale(f.replicas)
    f.idle.seconds = seconds
    f.idle.running_rps = sum(running.values())
    f.idle.baseline_rps = sum(baseline.values())
    f.idle.operator_rps = f.idle.running_rps - f.idle.baseline_rps
    f.idle.by_request = {
        f"{verb} {resource}".strip(): round(v, 3)
        for (verb, resource), v in operator_share(running, baseline).items()
    }
    _log(f"idle: {f.idle.operator_rps:.2f} requests/s from the operator")


def measure_latency(g: Ground, f: Figures, count: int = 5) -> None:
    """BackupRuns by hand, one after the other: seconds until each one's Job exists.

    Measured 30 s after the operator's restart (the baseline scaled it to 0), so its start
    (listing every object) is over.
    """
    time.sleep(30)
    for i in range(count):
        ns, run = g.namespaces[i % NAMESPACES], f"latency-{i}"
        start = time.monotonic()
        g.create_run(ns, "p000" if i < NAMESPACES else "p001", run)
        _wait(lambda: g.jobs_of(ns, run), 120, f"the Job of {run}", interval=0.02)  # noqa: B023
        f.latencies.append(round(time.monotonic() - start, 3))
        _wait(lambda: g.phase(ns, run) in FINAL, 300, f"{run} to end")  # noqa: B023
    f.latency_median = median(f.latencies)
    _log(f"BackupRun to Job: median {f.latency_median:.2f} s of {f.latencies}")


def measure_burst(g: Ground, f: Figures, count: int = 50) -> None:
    """``count`` BackupRuns of as many policies created at once; all must end right."""
    per_ns = max(1, f.policies // NAMESPACES)
    runs = [(g.namespaces[i % NAMESPACES], f"p{(i // NAMESPACES + 1) % per_ns:03d}", f"burst-{i}")
            for i in range(count)]  # fmt: skip
    start = time.monotonic()
    threads = [threading.Thread(target=g.create_run, args=run) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def ended() -> bool:
        return all(g.phase(ns, run) in FINAL for ns, _, run in runs)

    _wait(ended, 1800, f"{count} runs to end", interval=1.0)
    f.burst.seconds = time.monotonic() - start
    f.burst.runs = count
    time.sleep(5)  # an Event posted twice would come right after the first
    events: dict[tuple[str, str], int] = {}
    for ns in g.namespaces:
        for e in _items(g.api, f"/api/v1/namespaces/{ns}/events"):
            obj = e.get("involvedObject") or {}
            if obj.get("kind") == "BackupRun" and e.get("reason") == "Succeeded":
                key = (ns, str(obj.get("name")))
                events[key] = events.get(key, 0) + int(e.get("count") or 1)
    for ns, _, run in runs:
        phase, jobs, posted = g.phase(ns, run), len(g.jobs_of(ns, run)), events.get((ns, run), 0)
        f.burst.succeeded += phase == "Succeeded"
        if (phase, jobs, posted) != ("Succeeded", 1, 1):
            f.burst.problems[f"{ns}/{run}"] = f"phase {phase}, {jobs} Jobs, {posted} Events"
    f.memory_after_runs_bytes, peak = _memory(_operator_pids(g.api))
    f.memory_peak_bytes = max(f.memory_peak_bytes, peak)  # the restart reset the peak
    _log(f"{count} runs ended in {f.burst.seconds:.1f} s, {f.burst.succeeded} Succeeded")


def _default_source() -> Path:
    """The source root of the safehold this script imports (``$PYTHONPATH``'s, if set)."""
    spec = importlib.util.find_spec("safehold")
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))).parent.absolute()


def _describe(source: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(source), *args], capture_output=True,
                              text=True, check=False)  # fmt: skip
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = "+changes" if git("status", "--porcelain", "--", ".") else ""
    return f"{source} at {commit}{dirty}"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # tears the test ground down on the way out


def run(args: argparse.Namespace) -> Figures:
    figures = Figures(datetime.now(UTC).isoformat(timespec="seconds"), args.policies,
                      NAMESPACES, 1, _describe(args.source))  # fmt: skip
    directory = Path(tempfile.mkdtemp(prefix="safehold-bench-operator-"))
    _log(f"starting the test ground in {directory}")
    state = controlplane.up(directory / "cluster", crds=REPO / "crds")
    store: RunningStore | None = None
    try:
        cluster = Cluster(state.kubeconfig, state)
        store = start_store("s3", directory / "store")
        store.make_bucket("bench")
        ground = Ground(cluster, store, "bench")
        figures.replicas = ground.install(args.source)
        _log(f"operator installed ({figures.replicas} replica(s)); creating {NAMESPACES} "
             "namespaces with a location and a claim each")  # fmt: skip
        for ns in ground.namespaces:
            ground.namespace(ns)
        _wait(lambda: ground.count_ready("backuplocations", "Available") >= NAMESPACES, 600,
              "every location to be Available", interval=1.0)  # fmt: skip
        measure_ready(ground, figures)
        measure_idle(ground, figures, args.idle_seconds)
        measure_latency(ground, figures)
        measure_burst(ground, figures, args.runs)
    finally:
        if store is not None:
            store.stop()
        controlplane.down(directory / "cluster")
        shutil.rmtree(directory, ignore_errors=True)
    figures.evaluate()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--policies", type=int, default=1000, help="in 20 namespaces")
    parser.add_argument("--runs", type=int, default=50, help="runs started at once (default 50)")
    parser.add_argument(
        "--idle-seconds", type=float, default=60.0, help="seconds of each idle window (60)"
    )
    parser.add_argument("--source", type=Path, default=_default_source(),
                        help="the safehold source root the operator runs (default: the one "
                        "this script imports, %(default)s)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if args.policies < NAMESPACES:
        parser.error(f"--policies must be at least {NAMESPACES} (one per namespace)")
    figures = run(args)
    print(table(figures))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(figures), indent=2) + "\n")
        _log(f"figures: {args.json}")
    return 0 if all(v == "MET" for v in figures.targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
