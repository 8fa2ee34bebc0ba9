"""A RestoreRequest with policyRef in a cluster that has no BackupRun of the policy (a fresh
cluster after a disaster): the snapshots are resolved from the repository by a Job, the
claim is re-created from the snapshot's metadata, and every Job honours the policy's
spec.job. On the test ground, with a real object store and the real CLI."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from testground.kube import Namespace
from testground.objectstores import RunningStore

PROVISIONER = "testground.safehold.io/local-path"
TOLERATION = {"key": "safehold.io/disaster-recovery", "operator": "Exists"}


@pytest.fixture
def classes(namespace: Namespace) -> Iterator[tuple[str, str]]:
    """Two StorageClasses of the test ground's provisioner: the backed-up claim's and the
    one storageClassMapping maps it to."""
    names = (f"{namespace}-old", f"{namespace}-new")
    namespace.cluster.apply(
        [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": n},
                "provisioner": PROVISIONER,
            }
            for n in names
        ]
    )
    yield names
    namespace.cluster.kubectl("delete", "storageclass", *names, "--ignore-not-found")


def _claim(namespace: Namespace, name: str, size: str, klass: str) -> None:
    namespace.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": {"app": "shop"}},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": klass,
                "resources": {"requests": {"storage": size}},
            },
        }
    )


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


def _run(namespace: Namespace, kit: Any, name: str) -> dict[str, Any]:
    kit.backup_run(namespace, name, "pol")
    kit.kubectl_wait(namespace, f"backuprun/{name}", "Complete")
    run: dict[str, Any] = kit.get(namespace, "backuprun", name)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    return run


def _gone(namespace: Namespace, kind: str, name: str) -> None:
    namespace.kubectl("delete", kind, name, "--wait=false")
    namespace.cluster.wait_for(
        lambda: namespace.get(kind, name) is None, timeout=90, what=f"{kind} {name} to go"
    )


def _job_of(namespace: Namespace, restore: str, source: str) -> dict[str, Any]:
    out = namespace.kubectl(
        "get", "jobs", "-l", f"safehold.io/restore={restore},safehold.io/source={source}",
        "-o", "jsonpath={.items[0].metadata.name}",
    ).stdout  # fmt: skip
    job = namespace.get("job", out)
    assert job is not None, f"no Job of {restore} for {source}"
    return job


def _assert_job_settings(job: dict[str, Any]) -> None:
    assert job["spec"]["activeDeadlineSeconds"] == 1234
    assert job["spec"]["template"]["spec"]["tolerations"] == [TOLERATION]


def test_restore_without_backup_runs_resolves_from_the_repository(
    namespace: Namespace,
    s3_store: RunningStore,
    operator: Any,
    kit: Any,
    classes: tuple[str, str],
) -> None:
    old_class, new_class = classes
    operator()
    kit.store_location(namespace, s3_store)
    _claim(namespace, "data", "3Gi", old_class)
    data_dir = kit.claim_dir(namespace, "data")
    first_data = kit.write_data(data_dir, seed=11, files=6)
    job = {"activeDeadlineSeconds": 1234, "tolerations": [TOLERATION]}
    kit.policy(namespace, "pol", "loc", ["data"], job=job)
    first = _run(namespace, kit, "first")
    time.sleep(2)  # the second snapshot is taken clearly after the point in time below
    (data_dir / "dir0/file0.bin").write_bytes(b"newer" * 1000)
    second_data = kit.read_tree(data_dir)
    second = _run(namespace, kit, "second")
    snapshot = {r: kit.get(namespace, "backuprun", r)["status"]["sources"][0]["snapshotId"]
                for r in ("first", "second")}  # fmt: skip
    first_done = datetime.fromisoformat(first["status"]["completionTime"].replace("Z", "+00:00"))
    assert second["status"]["startTime"] > first["status"]["completionTime"]

    # a fresh cluster: no BackupRun objects, no claim; only the policy and the location
    for run in ("first", "second"):
        _gone(namespace, "backuprun", run)
    _gone(namespace, "pvc", "data")

    kit.restore_request(
        namespace, "dr", policyRef={"name": "pol"}, storageClassMapping={old_class: new_class}
    )
    kit.kubectl_wait(namespace, "restorerequest/dr", "Complete", timeout=180)
    rr = kit.get(namespace, "restorerequest", "dr")
    assert rr["status"]["phase"] == "Succeeded", rr["status"]
    assert "backupRun" not in rr["status"]
    assert rr["status"]["location"] == "loc"
    item = rr["status"]["restored"][0]
    assert (item["source"], item["kind"]) == ("data", "volume")
    assert item["snapshotId"] == snapshot["second"]
    assert item["target"] == f"persistentvolumeclaim/{namespace}/data"
    resolved = rr["status"]["resolvedSnapshots"]
    assert [s["snapshotId"] for s in resolved] == [snapshot["second"]]
    assert resolved[0]["meta"]["claim.size"] == "3Gi"
    # the claim comes back with its backed-up size (not 1Gi), mapped class and labels
    pvc = kit.get(namespace, "pvc", "data")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "3Gi"
    assert pvc["spec"]["storageClassName"] == new_class
    assert pvc["metadata"]["labels"]["app"] == "shop"
    assert kit.read_tree(kit.claim_dir(namespace, "data")) == second_data
    # the resolve Job and the restore Job carry the policy's spec.job
    _assert_job_settings(_job_of(namespace, "dr", "resolve-snapshots"))
    _assert_job_settings(_job_of(namespace, "dr", "data"))

    # pointInTime picks the older snapshot
    at = (first_done + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    kit.restore_request(
        namespace, "older", policyRef={"name": "pol"}, pointInTime=at,
        target={"claimName": "old-copy"},
    )  # fmt: skip
    kit.kubectl_wait(namespace, "restorerequest/older", "Complete", timeout=180)
    older = kit.get(namespace, "restorerequest", "older")
    assert older["status"]["phase"] == "Succeeded", older["status"]
    assert older["status"]["restored"][0]["snapshotId"] == snapshot["first"]
    assert kit.read_tree(kit.claim_dir(namespace, "old-copy")) == first_data
    copy = kit.get(namespace, "pvc", "old-copy")
    assert copy["spec"]["resources"]["requests"]["storage"] == "3Gi"
    # the original claim exists again (restored above): its class wins over the recorded one
    assert copy["spec"]["storageClassName"] == new_class


def test_no_snapshot_of_the_policy_fails_naming_the_location(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    kit.store_location(namespace, s3_store, "site")
    namespace.wait_condition("backuplocation", "site", "Available", timeout=120)
    # neither a run nor the policy: the location must be named
    kit.restore_request(namespace, "nowhere", policyRef={"name": "ghost"})
    kit.kubectl_wait(namespace, "restorerequest/nowhere", "Failed")
    failed = _condition(kit.get(namespace, "restorerequest", "nowhere"), "Failed")
    assert failed["reason"] == "LocationRequired"
    assert "spec.locationRef" in failed["message"]

    kit.restore_request(
        namespace, "empty", policyRef={"name": "ghost"}, locationRef={"name": "site"}
    )
    kit.kubectl_wait(namespace, "restorerequest/empty", "Failed", timeout=120)
    rr = kit.get(namespace, "restorerequest", "empty")
    assert rr["status"]["phase"] == "Failed"
    failed = _condition(rr, "Failed")
    assert failed["reason"] == "NoBackupFound"
    assert "BackupLocation site" in failed["message"]
    assert f"{namespace}/ghost/" in failed["message"]
