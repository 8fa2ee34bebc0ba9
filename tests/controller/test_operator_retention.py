"""A policy's ``retention`` on the test ground: after each successful run a retention Job
(the real ``safehold forget --prune``) forgets the policy's old snapshots, leaves another
policy's snapshots in the same repository alone, and reports in ``status.lastRetention``;
a retention that cannot get the repository lock fails on its own, never the run."""

from __future__ import annotations

import json
from typing import Any

from safehold.repo import Repository
from safehold.repo.layout import snapshot_name
from safehold.repo.locks import RepositoryLock
from safehold.storage import open_storage
from testground.kube import Namespace
from testground.objectstores import RunningStore

PASSWORD = "retention test password"


def _repository(store: RunningStore, bucket: str) -> Repository:
    return Repository.open(open_storage(store.url(bucket, "repo"), dict(store.options)), PASSWORD)


def _snapshots(store: RunningStore, bucket: str) -> dict[str, list[str]]:
    """Snapshot ids per source, oldest first."""
    out: dict[str, list[str]] = {}
    for snap in sorted(_repository(store, bucket).snapshots(), key=lambda s: s.datetime):
        out.setdefault(snap.source, []).append(snap.id)
    return out


def _strip_hosts(store: RunningStore, bucket: str, ids: list[str]) -> list[str]:
    """Rewrite the snapshots ``ids`` as the code before hosts wrote them (no host); the ids
    with the rewritten ones in their place."""
    repo = _repository(store, bucket)
    renamed: dict[str, str] = {}
    with RepositoryLock(repo, exclusive=True, operation="test"):
        for snap in repo.snapshots():
            if snap.id in ids:
                old, snap.host = snap.id, None
                renamed[old] = repo.save_snapshot(snap)
                repo.storage.delete(snapshot_name(old))
    return [renamed.get(i, i) for i in ids]


def _snapshot_id(namespace: Namespace, kit: Any, run: str) -> str:
    obj = kit.get(namespace, "backuprun", run)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    return str(obj["status"]["sources"][0]["snapshotId"])


def _backup(namespace: Namespace, kit: Any, run: str, policy: str) -> str:
    kit.backup_run(namespace, run, policy)
    kit.kubectl_wait(namespace, f"backuprun/{run}", "Complete", timeout=180)
    return _snapshot_id(namespace, kit, run)


def _retention_of(namespace: Namespace, kit: Any, policy: str, run: str) -> dict[str, Any]:
    """Wait for the retention started after ``run`` to finish; its status."""

    def done() -> dict[str, Any] | None:
        status = kit.get(namespace, "backuppolicy", policy).get("status") or {}
        last = status.get("lastRetention") or {}
        return last if last.get("run") == run and last.get("result") != "Running" else None

    found: dict[str, Any] = namespace.cluster.wait_for(
        done, timeout=180, what=f"the retention after {run}"
    )
    return found


def _events(namespace: Namespace, reason: str) -> list[dict[str, Any]]:
    items = json.loads(namespace.kubectl("get", "events", "-o", "json").stdout)["items"]
    return [e for e in items if e.get("reason") == reason]


def test_retention_keeps_the_newest_snapshots_of_the_policy_only(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    data = kit.make_claim(namespace, "data")
    other = kit.make_claim(namespace, "other")
    kit.write_data(other, seed=11, files=3)
    bucket = kit.store_location(namespace, s3_store, password=PASSWORD)
    # Another policy in the same repository, without retention, backed up first.
    kit.policy(namespace, "keepall", "loc", ["other"])
    kept_other = [_backup(namespace, kit, f"other-{i}", "keepall") for i in (1, 2)]
    kit.policy(namespace, "pol", "loc", ["data"], retention={"keepLast": 2})

    ids = []
    for i in range(1, 5):
        kit.write_data(data, seed=20 + i, files=3)
        ids.append(_backup(namespace, kit, f"run-{i}", "pol"))
        if i == 2:
            # As if runs 1 and 2 had been made before snapshots had hosts: the next backup
            # is an incremental of them and retention keeps one series (format section 9).
            assert _retention_of(namespace, kit, "pol", "run-2")["result"] == "Succeeded"
            ids = _strip_hosts(s3_store, bucket, ids)
    third = {s.id: s for s in _repository(s3_store, bucket).snapshots()}[ids[2]]
    assert (third.parent, third.host) == (ids[1], str(namespace))
    source = kit.get(namespace, "backuprun", "run-3")["status"]["sources"][0]
    args = namespace.get("job", source["job"])["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--host") + 1] == str(namespace)  # a stable host, not the pod's
    last = _retention_of(namespace, kit, "pol", "run-4")
    assert last["result"] == "Succeeded", last
    assert last["snapshotsKept"] == 2
    assert last["snapshotsForgotten"] >= 1
    assert "bytesFreed" in last  # prune ran (young packs stay for its 2 h grace period)
    assert "kept 2 and forgot" in last["message"]
    assert last["job"]

    held = _snapshots(s3_store, bucket)
    assert held[f"{namespace}/pol/data"] == ids[-2:]  # exactly the two newest of the policy
    assert held[f"{namespace}/keepall/other"] == kept_other  # the other policy: untouched
    assert set(held) == {f"{namespace}/pol/data", f"{namespace}/keepall/other"}

    # The Job was built like every other: owned by the policy, no API rights, labelled.
    job = namespace.get("job", last["job"])
    assert job is not None
    meta = job["metadata"]
    assert meta["labels"]["app.kubernetes.io/component"] == "retention"
    assert meta["ownerReferences"][0]["kind"] == "BackupPolicy"
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    args = pod["containers"][0]["args"]
    assert args[:3] == ["forget", "--source-prefix", f"{namespace}/pol/"]
    assert PASSWORD not in json.dumps(job)
    assert all(
        kit.get(namespace, "backuprun", f"run-{i}")["status"]["phase"] == "Succeeded"
        for i in range(1, 5)
    )
    assert _events(namespace, "RetentionApplied")


def test_a_locked_repository_fails_the_retention_not_the_run(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator(retention_lock_wait=2)
    data = kit.make_claim(namespace, "data")
    kit.write_data(data, seed=31, files=3)
    bucket = kit.store_location(namespace, s3_store, password=PASSWORD)
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    kit.policy(namespace, "pol", "loc", ["data"], retention={"keepLast": 1})
    # Another operation (a backup elsewhere) holds a shared lock for the whole run.
    lock = RepositoryLock(_repository(s3_store, bucket), exclusive=False, operation="backup")
    lock.acquire()
    try:
        first = _backup(namespace, kit, "run-1", "pol")
        kit.write_data(data, seed=32, files=3)
        second = _backup(namespace, kit, "run-2", "pol")  # shared with shared: no conflict
        last = _retention_of(namespace, kit, "pol", "run-2")
    finally:
        lock.release()
    assert last["result"] == "Failed", last
    assert last["reason"] == "RepositoryLocked"
    assert "locked" in last["message"]
    assert "next successful run" in last["message"]
    assert PASSWORD not in last["message"]
    for run in ("run-1", "run-2"):
        status = kit.get(namespace, "backuprun", run)["status"]
        assert status["phase"] == "Succeeded"
        assert not any(
            c["type"] == "Failed" and c["status"] == "True" for c in status["conditions"]
        )
    assert _events(namespace, "RetentionFailed")
    assert _snapshots(s3_store, bucket)[f"{namespace}/pol/data"] == [first, second]

    # The lock is gone: the next successful run applies the retention.
    kit.write_data(data, seed=33, files=3)
    third = _backup(namespace, kit, "run-3", "pol")
    last = _retention_of(namespace, kit, "pol", "run-3")
    assert last["result"] == "Succeeded", last
    assert _snapshots(s3_store, bucket)[f"{namespace}/pol/data"] == [third]
