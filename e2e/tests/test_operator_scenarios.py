"""The operator end to end, as a user drives it: installed by the Helm chart, YAML applied with
kubectl (issue 5, scenarios 1 to 7).

The operator runs as the chart's Deployment pod (through the pod runner on the test ground)
under the chart's own ServiceAccount and RBAC, so every API call it makes is authorised as on
a real cluster. One install serves the whole module, watching all namespaces; each test works
in a namespace of its own. What tests/controller proves in-process (every field of the status,
every bad input) is not repeated here: these tests follow the user's path.

Scenarios 1 to 4 apply docs/walkthrough.md's blocks as written (placeholders filled in only).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import quickstart
from testground.kube import Cluster, Namespace
from testground.manifests import IMAGE
from testground.objectstores import RunningStore

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


UNFINISHED = ("Pending", "Running")


def _load(path: Path, name: str) -> ModuleType:
    """A helper module of another test directory (test directories are not packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: tests/controller's helpers: claims, data, locations on the object-store fixtures.
kit: Any = _load(REPO / "tests" / "controller" / "conftest.py", "controller_kit")


@dataclass
class Operator:
    """The module's operator install."""

    cluster: Cluster
    namespace: Namespace
    release: str
    metrics_port: int

    def pods(self) -> list[dict[str, Any]]:
        out = self.namespace.kubectl(
            "get", "pods", "-l", f"app.kubernetes.io/instance={self.release}", "-o", "json"
        ).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The operator's /metrics: (sample name, sorted labels) -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[Operator]:
    """``helm install`` the chart once for the module (all namespaces); uninstalled after."""
    helm_bin = quickstart.find_helm()
    ns = cluster.create_namespace("safehold-system")
    release = "e2e"
    metrics_port, _ = quickstart.install_operator(helm_bin, cluster, release, ns, IMAGE)
    try:
        yield Operator(cluster, ns, release, metrics_port)
    finally:
        quickstart.helm(
            helm_bin, cluster, "uninstall", release, "--namespace", ns, "--wait"
        )  # fmt: skip
        cluster.delete_namespace(ns)


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


def _wait_pod(namespace: Namespace, name: str) -> str:
    """Wait for a pod of the walkthrough to succeed; returns its log."""
    pod = namespace.wait_pod_finished(name, timeout=120)
    log = namespace.logs(name)
    assert pod["status"]["phase"] == "Succeeded", f"pod {name}: {log}"
    return log


def _runs_of(namespace: Namespace, policy: str) -> list[dict[str, Any]]:
    out = namespace.kubectl(
        "get", "backupruns", "-l", f"safehold.io/policy={policy}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _final(run: dict[str, Any]) -> bool:
    return (run.get("status") or {}).get("phase") in ("Succeeded", "PartiallyFailed", "Failed")


def test_operator_walkthrough_on_s3(
    operator: Operator, namespace: Namespace, s3_store: RunningStore
) -> None:
    """Scenarios 1 to 4, with docs/walkthrough.md's YAML; and the metrics endpoint."""
    cluster = namespace.cluster
    # 1. Secrets (the walkthrough's own commands) and the location: Available
    bucket = "walkthrough"
    s3_store.make_bucket(bucket)
    quickstart.run_shell_block(
        "secrets",
        cluster,
        namespace,
        {
            "AWS_ACCESS_KEY_ID": s3_store.options["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": s3_store.options["secret_access_key"],
        },
    )
    namespace.apply(
        quickstart.walkthrough_yaml("location", S3_ENDPOINT=s3_store.endpoint, BUCKET=bucket)
    )
    kit.kubectl_wait(namespace, "backuplocation/s3", "Available", timeout=120)
    location = kit.get(namespace, "backuplocation", "s3")
    assert len(location["status"]["repositoryId"]) >= 16

    # 2. a claim filled by a pod; the policy's schedule (every minute) makes a run
    namespace.apply(quickstart.walkthrough_yaml("volume"))
    assert "wrote 51 files" in _wait_pod(namespace, "writer")
    data_dir = kit.claim_dir(namespace, "data")
    original = kit.read_tree(data_dir)
    assert len(original) == 52  # the 51 files and SHA256SUMS
    namespace.kubectl("delete", "pod", "writer")
    namespace.apply(quickstart.walkthrough_yaml("policy"))
    policy = namespace.wait_condition("backuppolicy", "demo", "Ready", timeout=60)
    assert _condition(policy, "Ready")["reason"] == "Scheduled"
    runs = cluster.wait_for(
        lambda: _runs_of(namespace, "demo"), timeout=75, what="the schedule's first BackupRun"
    )
    first_name = runs[0]["metadata"]["name"]
    assert first_name.startswith("demo-")
    kit.kubectl_wait(namespace, f"backuprun/{first_name}", "Complete", timeout=180)
    first = kit.get(namespace, "backuprun", first_name)
    assert first["status"]["phase"] == "Succeeded", first["status"]
    [src] = first["status"]["sources"]
    assert len(src["snapshotId"]) == 64
    assert src["files"] == len(original)
    assert src["bytesRead"] == sum(len(v) for v in original.values())
    assert src["bytesStored"] > 8 * 1024 * 1024  # the random 8 MiB do not compress

    # the metrics endpoint shows the succeeded run for the policy
    labels = (("namespace", str(namespace)), ("policy", "demo"))
    succeeded = ("safehold_backup_runs_succeeded_total", labels)

    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = operator.metrics()
        return samples if samples.get(succeeded) else None

    samples = cluster.wait_for(counted, timeout=30, what="the succeeded run in /metrics")
    assert samples[succeeded] >= 1
    assert samples[("safehold_backup_last_success_timestamp_seconds", labels)] > 0

    # stop the schedule, and let a run it started meanwhile end
    namespace.kubectl("patch", "backuppolicy", "demo", "--type", "merge",
                      "-p", '{"spec":{"suspend":true}}')  # fmt: skip
    cluster.wait_for(
        lambda: all(_final(r) for r in _runs_of(namespace, "demo")),
        timeout=180,
        what="the schedule's runs to end",
    )

    # 3. lose the data; the RestoreRequest brings it back, byte for byte
    namespace.apply(quickstart.walkthrough_yaml("lose"))
    assert _wait_pod(namespace, "lose").strip().endswith("0")
    assert kit.read_tree(data_dir) == {}
    namespace.apply(quickstart.walkthrough_yaml("restore", RUN=first_name))
    kit.kubectl_wait(namespace, "restorerequest/bring-back-data", "Complete", timeout=180)
    restore = kit.get(namespace, "restorerequest", "bring-back-data")
    assert restore["status"]["phase"] == "Succeeded", restore["status"]
    assert restore["status"]["restored"][0]["files"] == len(original)
    assert kit.read_tree(kit.claim_dir(namespace, "data")) == original
    namespace.apply(quickstart.walkthrough_yaml("check"))
    assert "ALL FILES MATCH" in _wait_pod(namespace, "check")

    # 4. a change, and a second run by hand: incremental, storing only the change
    namespace.apply(quickstart.walkthrough_yaml("change"))
    _wait_pod(namespace, "change")
    namespace.apply(quickstart.walkthrough_yaml("second-run"))
    kit.kubectl_wait(namespace, "backuprun/second", "Complete", timeout=180)
    second = kit.get(namespace, "backuprun", "second")
    assert second["status"]["phase"] == "Succeeded", second["status"]
    [src2] = second["status"]["sources"]
    assert src2["type"] == "incremental"
    snapshots = {
        s["snapshotId"] for r in _runs_of(namespace, "demo") for s in r["status"]["sources"]
    }
    assert src2["parentSnapshotId"] in snapshots
    assert src2["files"] == len(original) + 1
    assert src2["bytesStored"] < 256 * 1024, src2  # the note and metadata, not the 8 MiB


def test_operator_bad_input_names_what_to_fix(
    operator: Operator, namespace: Namespace, s3_store: RunningStore
) -> None:
    """Scenario 5: each bad input is refused or fails with a message naming what to fix, and
    a good location beside them is not affected."""
    # the schema refuses a bad cron expression before the operator sees it
    refused = namespace.kubectl(
        "apply", "-f", "-", check=False,
        input=quickstart.walkthrough_yaml("policy").replace("* * * * *", "every minute"),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "spec.schedule.slots" in refused.stderr, refused.stderr
    assert "cron" in refused.stderr
    assert namespace.get("backuppolicy", "demo") is None

    kit.make_claim(namespace, "data")
    kit.store_location(namespace, s3_store, "good")
    kit.store_location(namespace, s3_store, "nobucket", bucket="no-such-bucket", make_bucket=False)
    wrong = {
        "AWS_ACCESS_KEY_ID": s3_store.options["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": "not-the-key",
    }
    kit.store_location(namespace, s3_store, "wrongkey", credentials=wrong)
    kit.policy(namespace, "noclaim", "good", ["missing-claim"])
    kit.restore_request(namespace, "lost", backupRunRef={"name": "no-such-run"})

    nobucket = namespace.wait_condition(
        "backuplocation", "nobucket", "Available", status="False", timeout=120
    )
    assert "no-such-bucket" in _condition(nobucket, "Available")["message"]
    wrongkey = namespace.wait_condition(
        "backuplocation", "wrongkey", "Available", status="False", timeout=120
    )
    message = _condition(wrongkey, "Available")["message"]
    assert "credentials" in message.lower() or "denied" in message.lower(), message
    assert "not-the-key" not in message
    noclaim = namespace.wait_condition("backuppolicy", "noclaim", "Ready", status="False")
    cond = _condition(noclaim, "Ready")
    assert cond["reason"] == "ClaimNotFound"
    assert "spec.sources.volumes[0].claimName" in cond["message"]
    assert "missing-claim" in cond["message"]
    kit.kubectl_wait(namespace, "restorerequest/lost", "Failed", timeout=60)
    cond = _condition(kit.get(namespace, "restorerequest", "lost"), "Failed")
    assert cond["reason"] == "BackupRunNotFound"
    assert "no-such-run" in cond["message"]

    # nothing else is affected: the good location is Available, the operator never restarted
    namespace.wait_condition("backuplocation", "good", "Available", timeout=120)
    [pod] = operator.pods()
    assert all(c["restartCount"] == 0 for c in pod["status"]["containerStatuses"])


@pytest.mark.parametrize("provider", ["gcs", "azure"])
def test_operator_backup_and_restore_on_other_stores(
    provider: str, operator: Operator, namespace: Namespace, request: pytest.FixtureRequest
) -> None:
    """Scenario 7: the backup and restore path on fake-gcs-server and Azurite."""
    store: RunningStore = request.getfixturevalue(f"{provider}_store")
    original = kit.write_data(kit.make_claim(namespace, "data"), seed=7, files=6)
    kit.store_location(namespace, store)
    kit.policy(namespace, "pol", "loc", ["data"])
    kit.backup_run(namespace, "run", "pol", "full")
    kit.kubectl_wait(namespace, "backuprun/run", "Complete", timeout=180)
    run = kit.get(namespace, "backuprun", "run")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["sources"][0]["files"] == len(original)
    kit.restore_request(
        namespace, "back", backupRunRef={"name": "run"}, target={"claimName": "copy"}
    )
    kit.kubectl_wait(namespace, "restorerequest/back", "Complete", timeout=180)
    assert kit.get(namespace, "restorerequest", "back")["status"]["phase"] == "Succeeded"
    assert kit.read_tree(kit.claim_dir(namespace, "copy")) == original


def test_operator_killed_during_a_run_completes_it_once(
    operator: Operator, namespace: Namespace, s3_store: RunningStore
) -> None:
    """Scenario 6: the operator's process is killed (SIGKILL, no clean shutdown) as soon as a
    run has recorded its Job, and its pod is deleted; the Deployment brings a new one, which
    finds the Job (done or not), and the run completes and is recorded once (one Job, one
    Succeeded Event)."""
    cluster = namespace.cluster
    # enough data (160 MiB) that the Job takes a few seconds
    original = kit.write_data(
        kit.make_claim(namespace, "data", "512Mi"), seed=6, files=160, size=1024 * 1024
    )
    kit.store_location(namespace, s3_store)
    kit.policy(namespace, "pol", "loc", ["data"])
    kit.backup_run(namespace, "run", "pol", "full")

    def job_started() -> bool:
        # The run writes its Job's name before creating the Job, and is Pending until a
        # pass sees the Job run; a Job this fast (~3 s) may be done before that pass.
        status = (namespace.get("backuprun", "run") or {}).get("status") or {}
        sources = status.get("sources") or []
        return status.get("phase") in UNFINISHED and bool(sources and sources[0].get("job"))

    # the moment the run has recorded its Job (created next, or already), before it can end
    cluster.wait_for(job_started, timeout=120, what="the run to start its Job", interval=0.1)
    [old] = operator.pods()
    container_id = old["status"]["containerStatuses"][0].get("containerID", "")
    if cluster.pod_runner and container_id.startswith("testground://"):
        # the pod runner's container is a process group led by this PID: kill it hard
        os.killpg(int(container_id.removeprefix("testground://")), signal.SIGKILL)
    operator.namespace.kubectl("delete", "pod", old["metadata"]["name"], "--wait=false")
    assert (namespace.get("backuprun", "run") or {})["status"]["phase"] in UNFINISHED

    new = cluster.wait_for(
        lambda: [p for p in operator.pods() if p["metadata"]["name"] != old["metadata"]["name"]
                 and p["status"].get("phase") == "Running"],
        timeout=120,
        what="the Deployment's new operator pod",
    )  # fmt: skip
    assert len(new) == 1
    kit.kubectl_wait(namespace, "backuprun/run", "Complete", timeout=300)
    run = kit.get(namespace, "backuprun", "run")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    [src] = run["status"]["sources"]
    assert src["files"] == len(original)
    assert len(src["snapshotId"]) == 64
    # recorded once: one Job, one Succeeded Event
    jobs = json.loads(
        namespace.kubectl("get", "jobs", "-l", "safehold.io/run=run", "-o", "json").stdout
    )["items"]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    events = json.loads(namespace.kubectl("get", "events", "-o", "json").stdout)["items"]
    succeeded = [
        e for e in events
        if e["involvedObject"]["kind"] == "BackupRun" and e["involvedObject"]["name"] == "run"
        and e["reason"] == "Succeeded"
    ]  # fmt: skip
    assert len(succeeded) == 1, succeeded
    assert succeeded[0].get("count", 1) == 1
    # the new operator goes on working: a restore of the run
    kit.restore_request(
        namespace, "back", backupRunRef={"name": "run"}, target={"claimName": "copy"}
    )
    kit.kubectl_wait(namespace, "restorerequest/back", "Complete", timeout=180)
    assert kit.read_tree(kit.claim_dir(namespace, "copy")) == original
