"""The operator end to end on the test ground: a BackupLocation on a real object store, a
claim with data, BackupRuns whose Jobs run the real ``safehold`` CLI, and restores."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.controller import metrics
from testground.kube import Namespace
from testground.objectstores import RunningStore


def _metric(name: str, labels: dict[str, str]) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def _counted(namespace: Namespace, *expected: tuple[str, dict[str, str], float]) -> None:
    """Wait until the metrics hold the expected values: the operator counts a run once its
    status is written (a write that fails is retried, and counts once), so a test that has
    just read the status may be a moment ahead of the counts."""
    namespace.cluster.wait_for(
        lambda: all(_metric(name, labels) == value for name, labels, value in expected) or None,
        timeout=30,
        interval=0.1,
        what="the operator to count what the status says",
    )


def _sources(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in obj["status"]["sources"]}


def test_backup_incremental_and_restore_on_s3(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    data_dir = kit.make_claim(namespace, "data")
    original = kit.write_data(data_dir, seed=1)
    kit.store_location(namespace, s3_store)
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    loc = kit.get(namespace, "backuplocation", "loc")
    assert len(loc["status"]["repositoryId"]) >= 16
    assert loc["status"]["phase"] == "Available"

    kit.policy(namespace, "pol", "loc", ["data"])
    namespace.wait_condition("backuppolicy", "pol", "Ready", timeout=60)
    kit.backup_run(namespace, "first", "pol")
    kit.kubectl_wait(namespace, "backuprun/first", "Complete")
    first = kit.get(namespace, "backuprun", "first")
    assert first["status"]["phase"] == "Succeeded", first["status"]
    src = _sources(first)["data"]
    assert src["phase"] == "Succeeded"
    assert len(src["snapshotId"]) == 64
    assert src["type"] == "full"
    assert src["files"] == len(original)
    total = sum(len(v) for v in original.values())
    assert src["bytesRead"] == total
    assert src["bytesStored"] >= total  # random data: compression gains nothing
    assert first["status"]["progress"]["percent"] == 100
    assert first["status"]["location"] == "loc"
    assert src["cpuSeconds"] > 0  # what the Job measured about itself
    assert src["peakMemoryBytes"] > 10 * 2**20

    # the per-source metrics count what the status says
    labels = {"namespace": str(namespace), "policy": "pol", "source": "data"}
    _counted(
        namespace,
        ("safehold_backup_sources_total", {**labels, "result": "Succeeded"}, 1),
        ("safehold_backup_source_cpu_seconds_total", labels, src["cpuSeconds"]),
    )
    assert _metric("safehold_backup_sources_total", {**labels, "result": "Succeeded"}) == 1
    assert _metric("safehold_backup_source_files_total", labels) == len(original)
    assert _metric("safehold_backup_source_read_bytes_total", labels) == total
    assert _metric("safehold_backup_source_stored_bytes_total", labels) == src["bytesStored"]
    assert _metric("safehold_backup_source_cpu_seconds_total", labels) == src["cpuSeconds"]

    # a second run reads and stores only the change
    (data_dir / "dir0/file0.bin").write_bytes(b"changed" * 1000)
    kit.backup_run(namespace, "second", "pol")
    kit.kubectl_wait(namespace, "backuprun/second", "Complete")
    second = kit.get(namespace, "backuprun", "second")
    assert second["status"]["phase"] == "Succeeded", second["status"]
    src2 = _sources(second)["data"]
    assert src2["type"] == "incremental"
    assert src2["parentSnapshotId"] == src["snapshotId"]
    assert src2["bytesRead"] == 7000
    assert src2["bytesStored"] < 64 * 1024  # the changed file and metadata, not the rest

    # the first run's data comes back, byte for byte, into a new claim
    kit.restore_request(
        namespace, "back", backupRunRef={"name": "first"}, target={"claimName": "restored"}
    )
    kit.kubectl_wait(namespace, "restorerequest/back", "Complete")
    rr = kit.get(namespace, "restorerequest", "back")
    assert rr["status"]["phase"] == "Succeeded", rr["status"]
    item = rr["status"]["restored"][0]
    assert item["target"] == f"persistentvolumeclaim/{namespace}/restored"
    assert item["files"] == len(original)
    assert kit.read_tree(kit.claim_dir(namespace, "restored")) == original
    ns_label = {"namespace": str(namespace)}
    _counted(namespace, ("safehold_restore_duration_seconds_count", ns_label, 1))
    assert _metric("safehold_restores_started_total", ns_label) == 1
    assert _metric("safehold_restores_total", {**ns_label, "result": "Succeeded"}) == 1
    assert _metric("safehold_restore_bytes_total", ns_label) == item["bytes"]
    assert _metric("safehold_restore_duration_seconds_count", ns_label) == 1

    # the existing-data rule: Fail refuses an existing claim before writing anything
    kit.restore_request(
        namespace, "onto-existing", backupRunRef={"name": "second"},
        target={"claimName": "restored"}, existingResourcePolicy="Fail",
    )  # fmt: skip
    kit.kubectl_wait(namespace, "restorerequest/onto-existing", "Failed")
    refused = kit.get(namespace, "restorerequest", "onto-existing")
    failed = next(c for c in refused["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "TargetExists"
    assert "restored already exists" in failed["message"]
    assert "Overwrite" in failed["message"]

    # Overwrite restores the newer run into it; the other files stay equal
    kit.restore_request(
        namespace, "overwrite", backupRunRef={"name": "second"},
        target={"claimName": "restored"}, existingResourcePolicy="Overwrite",
    )  # fmt: skip
    kit.kubectl_wait(namespace, "restorerequest/overwrite", "Complete")
    assert kit.get(namespace, "restorerequest", "overwrite")["status"]["phase"] == "Succeeded"
    assert kit.read_tree(kit.claim_dir(namespace, "restored")) == kit.read_tree(data_dir)


@pytest.mark.parametrize("provider", ["gcs", "azure"])
def test_backup_and_restore_on_other_object_stores(
    provider: str,
    namespace: Namespace,
    operator: Any,
    kit: Any,
    request: pytest.FixtureRequest,
) -> None:
    store: RunningStore = request.getfixturevalue(f"{provider}_store")
    operator()
    data_dir = kit.make_claim(namespace, "data")
    original = kit.write_data(data_dir, seed=2, files=8)
    kit.store_location(namespace, store)
    kit.policy(namespace, "pol", "loc", ["data"])
    kit.backup_run(namespace, "run", "pol", "full")
    kit.kubectl_wait(namespace, "backuprun/run", "Complete", timeout=180)
    run = kit.get(namespace, "backuprun", "run")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert _sources(run)["data"]["files"] == len(original)
    kit.restore_request(namespace, "back", backupRunRef={"name": "run"})
    # the claim "data" exists: the default rule (Skip) leaves it alone and says so
    kit.kubectl_wait(namespace, "restorerequest/back", "Complete")
    skipped = kit.get(namespace, "restorerequest", "back")
    assert skipped["status"]["restored"][0]["phase"] == "Skipped"
    assert "existingResourcePolicy" in skipped["status"]["warnings"][0]
    kit.restore_request(
        namespace, "elsewhere", backupRunRef={"name": "run"}, target={"claimName": "copy"}
    )
    kit.kubectl_wait(namespace, "restorerequest/elsewhere", "Complete")
    assert kit.get(namespace, "restorerequest", "elsewhere")["status"]["phase"] == "Succeeded"
    assert kit.read_tree(kit.claim_dir(namespace, "copy")) == original


def test_fail_refuses_an_existing_claim_before_any_claim_is_made(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    """existingResourcePolicy Fail with two sources, the first claim gone and the second
    still there: the request fails TargetExists and creates neither claim."""
    operator()
    for claim in ("a", "b"):
        kit.write_data(kit.make_claim(namespace, claim), seed=len(claim), files=2)
    kit.store_location(namespace, s3_store)
    kit.policy(namespace, "pol", "loc", ["a", "b"])
    kit.backup_run(namespace, "run", "pol", "full")
    kit.kubectl_wait(namespace, "backuprun/run", "Complete")
    assert kit.get(namespace, "backuprun", "run")["status"]["phase"] == "Succeeded"
    # the backup's pods (done) still name the claim, which its protection finalizer heeds
    namespace.kubectl("delete", "jobs", "--all", "--cascade=foreground")
    namespace.kubectl("delete", "pods", "--all")
    namespace.kubectl("delete", "pvc", "a", "--wait=false")
    namespace.cluster.wait_for(
        lambda: namespace.get("pvc", "a") is None or None, timeout=60, what="claim a to go"
    )

    kit.restore_request(
        namespace, "back", backupRunRef={"name": "run"}, existingResourcePolicy="Fail"
    )
    kit.kubectl_wait(namespace, "restorerequest/back", "Failed")
    failed = next(
        c
        for c in kit.get(namespace, "restorerequest", "back")["status"]["conditions"]
        if c["type"] == "Failed"
    )
    assert failed["reason"] == "TargetExists", failed
    assert f"{namespace}/b already exists" in failed["message"]
    assert namespace.get("pvc", "a") is None  # nothing made for the first source either
