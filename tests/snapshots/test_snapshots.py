"""Volume sources in snapshot mode, end to end: the operator in-process, real Jobs on the test
ground, the test ground's CSI snapshot driver (e2e/testground/csisnapshots.py), S3 storage."""

from __future__ import annotations

import copy
import random
import secrets
from pathlib import Path
from typing import Any

from testground.csisnapshots import FAIL_ANNOTATION, HOLD_ANNOTATION, SnapshotDriver
from testground.kube import Namespace
from testground.objectstores import RunningStore


def _location(namespace: Namespace, store: RunningStore) -> None:
    bucket = f"b-{secrets.token_hex(4)}"
    store.make_bucket(bucket)
    options = dict(store.options)
    endpoint = options.pop("endpoint")
    region = options.pop("region", None)
    namespace.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "loc-storage"},
                "stringData": options,
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "loc-password"},
                "stringData": {"password": secrets.token_hex(12)},
            },
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupLocation",
                "metadata": {"name": "loc"},
                "spec": {
                    "provider": store.provider,
                    "bucket": bucket,
                    "prefix": "repo",
                    "endpoint": endpoint,
                    **({"region": region} if region else {}),
                    "credentialsSecretRef": {"name": "loc-storage"},
                    "repositoryPasswordSecretRef": {"name": "loc-password"},
                },
            },
        ]
    )
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)


def _claim_dir(namespace: Namespace, claim: str) -> Path:
    def bound() -> str | None:
        pvc = namespace.get("pvc", claim) or {}
        if (pvc.get("status") or {}).get("phase") == "Bound":
            return str(pvc["spec"]["volumeName"])
        return None

    volume = namespace.cluster.wait_for(bound, timeout=60, what=f"claim {claim} to be bound")
    pv = namespace.cluster.get("pv", volume)
    assert pv is not None
    return Path(pv["spec"]["hostPath"]["path"])


def _write(root: Path, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    out: dict[str, bytes] = {}
    for i in range(12):
        rel = f"d{i % 3}/f{i}.bin"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(32 * 1024 + i)
        (root / rel).write_bytes(data)
        out[rel] = data
    return out


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _run(namespace: Namespace, name: str, policy: str) -> dict[str, Any]:
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupRun",
            "metadata": {"name": name},
            "spec": {"policyRef": {"name": policy}},
        }
    )
    namespace.wait_condition("backuprun", name, "Complete", timeout=240)
    run = namespace.get("backuprun", name)
    assert run is not None
    return run


def _no_snapshots_left(namespace: Namespace, driver: SnapshotDriver) -> None:
    def gone() -> bool:
        snaps = driver.api.get(
            f"/apis/snapshot.storage.k8s.io/v1/namespaces/{namespace}/volumesnapshots"
        )["items"]
        claims = driver.api.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims")["items"]
        left[:] = [f"volumesnapshot/{s['metadata']['name']}" for s in snaps] + [
            f"pvc/{c['metadata']['name']} finalizers={c['metadata'].get('finalizers')} "
            f"deleting={bool(c['metadata'].get('deletionTimestamp'))}"
            for c in claims
            if c["metadata"]["name"].endswith("-clone")
        ]
        return not left

    left: list[str] = []
    try:
        namespace.cluster.wait_for(gone, timeout=90, what="snapshots and clones to be deleted")
    except Exception as exc:
        raise AssertionError(f"still there: {left}") from exc


def test_snapshot_backup_is_crash_consistent_and_cleaned_up(
    namespace: Namespace,
    s3_store: RunningStore,
    csi_snapshots: SnapshotDriver,
    operator: Any,
    guide: dict[str, dict[str, Any]],
) -> None:
    operator(poll_interval=1.0)
    _location(namespace, s3_store)
    namespace.apply(guide["PersistentVolumeClaim"])
    live = _claim_dir(namespace, "app-data")
    at_snapshot = _write(live, seed=7)
    changed: list[str] = []

    def write_after_ready(ns: str, snapshot: str, origin: Path) -> None:
        # the application keeps writing the moment the snapshot is ready
        if ns == str(namespace):
            (origin / "d0/f0.bin").write_bytes(b"written after the snapshot" * 100)
            (origin / "late.txt").write_text("not in the snapshot")
            changed.append(snapshot)

    csi_snapshots.on_ready = write_after_ready
    try:
        namespace.apply(guide["BackupPolicy"])
        run = _run(namespace, guide["BackupRun"]["metadata"]["name"], "app-snapshots")
    finally:
        csi_snapshots.on_ready = None
    assert run["status"]["phase"] == "Succeeded", run["status"]
    [source] = run["status"]["sources"]
    assert source["phase"] == "Succeeded"
    assert not source.get("warnings"), source
    assert changed, "the driver never cut a snapshot"
    assert source["files"] == len(at_snapshot)
    # the Job is deleted with the snapshot (its finished pod would hold the clone)
    namespace.cluster.wait_for(
        lambda: namespace.get("job", source["job"]) is None, timeout=60, what="the Job to go"
    )
    _no_snapshots_left(namespace, csi_snapshots)

    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "RestoreRequest",
            "metadata": {"name": "back"},
            "spec": {"backupRunRef": {"name": "app-now"}, "target": {"claimName": "restored"}},
        }
    )
    namespace.wait_condition("restorerequest", "back", "Complete", timeout=240)
    rr = namespace.get("restorerequest", "back")
    assert rr is not None
    assert rr["status"]["phase"] == "Succeeded", rr["status"]
    # the content at the snapshot's moment, not the live claim's
    assert _tree(_claim_dir(namespace, "restored")) == at_snapshot
    assert _tree(live) != at_snapshot


def test_without_a_class_for_the_driver_the_live_claim_is_read_with_a_warning(
    namespace: Namespace,
    s3_store: RunningStore,
    csi_snapshots: SnapshotDriver,
    operator: Any,
    guide: dict[str, dict[str, Any]],
) -> None:
    operator(poll_interval=1.0)
    _location(namespace, s3_store)
    claim = copy.deepcopy(guide["PersistentVolumeClaim"])
    del claim["spec"]["storageClassName"]  # the default local-path class: no snapshot class
    namespace.apply(claim)
    data = _write(_claim_dir(namespace, "app-data"), seed=3)
    policy = copy.deepcopy(guide["BackupPolicy"])
    policy["spec"]["sources"]["volumes"][0]["snapshot"] = {}
    namespace.apply(policy)
    run = _run(namespace, "live", "app-snapshots")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    [source] = run["status"]["sources"]
    assert source["files"] == len(data)
    [warning] = source["warnings"]
    assert warning.startswith("SnapshotUnsupported: no VolumeSnapshotClass for the claim's driver")
    assert "live volume was read" in warning
    _no_snapshots_left(namespace, csi_snapshots)


def test_failed_and_timed_out_snapshots_fail_their_source_with_the_reason(
    namespace: Namespace,
    s3_store: RunningStore,
    csi_snapshots: SnapshotDriver,
    operator: Any,
    guide: dict[str, dict[str, Any]],
) -> None:
    operator(poll_interval=1.0)
    _location(namespace, s3_store)
    for name, annotation, value in (
        ("broken", FAIL_ANNOTATION, "disk array refused the snapshot"),
        ("stuck", HOLD_ANNOTATION, "true"),
    ):
        claim = copy.deepcopy(guide["PersistentVolumeClaim"])
        claim["metadata"] = {"name": name, "annotations": {annotation: value}}
        namespace.apply(claim)
        _claim_dir(namespace, name)
    policy = copy.deepcopy(guide["BackupPolicy"])
    # "broken" may take as long as it needs to report its error (the driver and the
    # operator's polls share a loaded machine); only "stuck" must time out
    policy["spec"]["sources"]["volumes"] = [
        {"claimName": "broken", "snapshot": {"readyTimeout": "120s"}},
        {"claimName": "stuck", "snapshot": {"readyTimeout": "5s"}},
    ]
    namespace.apply(policy)
    run = _run(namespace, "bad", "app-snapshots")
    assert run["status"]["phase"] == "Failed", run["status"]
    sources = {s["name"]: s for s in run["status"]["sources"]}
    broken, stuck = sources["broken"], sources["stuck"]
    assert broken["phase"] == "Failed"
    assert broken["error"]["reason"] == "SnapshotFailed"
    assert "disk array refused the snapshot" in broken["error"]["message"]
    assert stuck["phase"] == "Failed"
    assert stuck["error"]["reason"] == "SnapshotTimeout"
    assert "within 5s" in stuck["error"]["message"]
    assert "readyTimeout" in stuck["error"]["message"]
    _no_snapshots_left(namespace, csi_snapshots)


def _exec_hook(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "podSelector": {"matchLabels": {"app": "app"}},
        "command": ["true"],
        "onError": "Continue",
    }


def test_post_exec_hooks_run_once_the_snapshot_is_cut_not_after_the_upload(
    namespace: Namespace,
    s3_store: RunningStore,
    csi_snapshots: SnapshotDriver,
    operator: Any,
    guide: dict[str, dict[str, Any]],
) -> None:
    """An application frozen by the policy's pre hooks is thawed as soon as its snapshot is
    cut, while the Job still reads the clone, not when the Job ends. (The test ground has
    no exec: the hooks are recorded with that reason, which shows when they ran.)"""
    operator(poll_interval=1.0)
    _location(namespace, s3_store)
    namespace.apply(guide["PersistentVolumeClaim"])
    _write(_claim_dir(namespace, "app-data"), seed=9)
    policy = copy.deepcopy(guide["BackupPolicy"])
    # the Job's own post hook keeps it running for a while after the backup
    policy["spec"]["sources"]["volumes"][0]["hooks"] = {
        "postBackup": ["sleep 20"],
        "timeoutSeconds": 60,
    }
    policy["spec"]["hooks"] = {
        "preBackup": [_exec_hook("freeze")],
        "postBackup": [_exec_hook("thaw")],
    }
    namespace.apply(policy)
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupRun",
            "metadata": {"name": "thawed-early"},
            "spec": {"policyRef": {"name": "app-snapshots"}},
        }
    )

    def thawed() -> dict[str, Any] | None:
        status = (namespace.get("backuprun", "thawed-early") or {}).get("status") or {}
        posts = [h for h in status.get("hooks") or [] if h["phase"] == "post"]
        return status if posts else None

    status = namespace.cluster.wait_for(thawed, timeout=120, what="the post exec hooks")
    [source] = status["sources"]
    assert source["phase"] in ("Pending", "Running"), source  # its Job still going
    namespace.wait_condition("backuprun", "thawed-early", "Complete", timeout=240)
    run = namespace.get("backuprun", "thawed-early")
    assert run is not None
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert [(h["name"], h["phase"]) for h in run["status"]["hooks"]] == [
        ("freeze", "pre"),
        ("thaw", "post"),
    ]  # each once
