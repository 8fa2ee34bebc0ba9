"""A policy's ``testRestore.cron`` on the test ground: every minute, the newest snapshot is
restored into a scratch claim by the real ``safehold restore --verify``, the user's check
runs on it, the outcome lands in ``status.lastTestRestore``, the ``RestoreTested`` condition,
Events and metrics, and the Job and its claim are gone afterwards; after a pack is damaged
in the bucket, the next test fails naming the file. A restarted operator finishes a test it
started, and a test Job left behind (with its claim) is removed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from safehold.controller import metrics
from safehold.repo import BLOB_DATA, Repository, pack_object_name
from safehold.storage import open_storage
from testground.kube import Namespace
from testground.objectstores import RunningStore

PASSWORD = "test restore test password"
SELECTOR = "app.kubernetes.io/component=test-restore"


def _tested_after(
    namespace: Namespace, kit: Any, policy: str, after: datetime, timeout: int = 200
) -> dict[str, Any]:
    """The policy's status once a test started after ``after`` has ended."""

    def done() -> dict[str, Any] | None:
        status = kit.get(namespace, "backuppolicy", policy).get("status") or {}
        last = status.get("lastTestRestore") or {}
        started = (status.get("testRestore") or {}).get("startTime")
        if not last or not started:
            return None
        start = datetime.fromisoformat(started.replace("Z", "+00:00"))
        if start <= after:
            return None
        when = datetime.fromisoformat(last["time"].replace("Z", "+00:00"))
        return status if when >= start else None

    found: dict[str, Any] = namespace.cluster.wait_for(
        done, timeout=timeout, what=f"a test restore of {policy} after {after}"
    )
    return found


def _items(namespace: Namespace, kind: str, selector: str = SELECTOR) -> list[dict[str, Any]]:
    out = namespace.kubectl("get", kind, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _nothing_left(namespace: Namespace) -> None:
    """No test Job and no scratch claim remain (the garbage collector removes the claims
    of deleted Jobs)."""

    def gone() -> bool:
        return not _items(namespace, "jobs") and not _items(namespace, "pvc")

    namespace.cluster.wait_for(gone, timeout=90, what="the test restore's Job and claim to go")


def _events(namespace: Namespace, reason: str) -> list[dict[str, Any]]:
    items = json.loads(namespace.kubectl("get", "events", "-o", "json").stdout)["items"]
    return [e for e in items if e.get("reason") == reason]


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions") or [] if c["type"] == kind)


def test_a_scheduled_test_restore_checks_every_file_then_names_a_damaged_one(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator(poll_interval=1.0)
    data = kit.make_claim(namespace, "data")
    files = kit.write_data(data, seed=51, files=6)
    bucket = kit.store_location(namespace, s3_store, password=PASSWORD)
    check = {
        "image": "busybox:1.36",
        "command": ["sh", "-c", "test -s /scratch/dir0/file0.bin && echo application check ok"],
    }
    kit.policy(namespace, "pol", "loc", ["data"], testRestore={"cron": "* * * * *", "check": check})
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    backed_up = datetime.now(UTC)

    status = _tested_after(namespace, kit, "pol", backed_up)
    last = status["lastTestRestore"]
    assert last["result"] == "Succeeded", last
    assert last["run"] == "run-1"
    assert last["files"] == len(files)
    assert last["bytes"] == sum(len(b) for b in files.values())
    assert last["durationSeconds"] > 0
    [tested] = last["sources"]
    assert tested["source"] == "data"
    assert tested["claim"] == tested["job"]
    assert "your check passed" in tested["message"], tested
    assert f"{len(files)} files" in last["message"]
    assert _condition(status, "RestoreTested")["status"] == "True"
    assert _events(namespace, "RestoreTested")
    labels = {"namespace": str(namespace), "policy": "pol", "source": "data"}
    success = metrics.REGISTRY.get_sample_value(
        "safehold_test_restore_last_success_timestamp_seconds", labels
    )
    assert success is not None
    assert success > backed_up.timestamp() - 5
    duration = metrics.REGISTRY.get_sample_value("safehold_test_restore_duration_seconds", labels)
    assert duration == last["durationSeconds"]
    _nothing_left(namespace)

    # Flip bytes in the middle of the pack in the bucket: one file's data is damaged.
    storage = open_storage(s3_store.url(bucket, "repo"), dict(s3_store.options))
    repo = Repository.open(storage, PASSWORD)
    # a pack of file data (trees have packs of their own)
    name = pack_object_name(min(loc.pack for _, loc in repo.index.items() if loc.type == BLOB_DATA))
    blob = bytearray(storage.get(name))
    for i in range(len(blob) // 2, len(blob) // 2 + 16):
        blob[i] ^= 0xFF
    storage.put(name, bytes(blob))
    damaged = datetime.now(UTC)

    status = _tested_after(namespace, kit, "pol", damaged)
    last = status["lastTestRestore"]
    assert last["result"] == "Failed", last
    assert any(rel in last["message"] for rel in files), last["message"]
    condition = _condition(status, "RestoreTested")
    assert condition["status"] == "False"
    assert condition["reason"] == last["sources"][0]["reason"]
    assert _events(namespace, "TestRestoreFailed")
    failures = metrics.REGISTRY.get_sample_value("safehold_test_restore_failures_total", labels)
    assert failures is not None
    assert failures >= 1
    _nothing_left(namespace)
    assert PASSWORD not in json.dumps(status)


def test_a_restarted_operator_finishes_its_test_and_removes_a_left_over_one(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    runner = operator(poll_interval=1.0)
    data = kit.make_claim(namespace, "data")
    files = kit.write_data(data, seed=53, files=40, size=256 * 1024)
    kit.store_location(namespace, s3_store, password=PASSWORD)
    kit.policy(namespace, "pol", "loc", ["data"], testRestore={"cron": "* * * * *"})
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)

    def running() -> dict[str, Any] | None:
        state = (kit.get(namespace, "backuppolicy", "pol").get("status") or {}).get("testRestore")
        entries = (state or {}).get("sources") or []
        return entries[0] if entries and entries[0]["result"] == "Running" else None

    entry = namespace.cluster.wait_for(running, timeout=120, what="a test restore to start")
    kit.stop(runner)  # the operator goes away while its test runs

    # A test Job of this policy that no status lists (as an operator stopped between
    # creating it and writing the status leaves one), with the claim it owns.
    namespace.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "pol-test-left-over",
                "labels": {
                    "app.kubernetes.io/managed-by": "safehold-operator",
                    "app.kubernetes.io/component": "test-restore",
                    "safehold.io/policy": "pol",
                },
            },
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "safehold", "image": "x", "command": ["sleep", "600"]}
                        ],
                    }
                },
            },
        }
    )
    left = kit.get(namespace, "job", "pol-test-left-over")
    namespace.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": "pol-test-left-over",
                "labels": {"app.kubernetes.io/component": "test-restore"},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": "pol-test-left-over",
                        "uid": left["metadata"]["uid"],
                    }
                ],
            },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "16Mi"}},
            },
        }
    )

    operator(poll_interval=1.0)

    def finished() -> dict[str, Any] | None:
        status = kit.get(namespace, "backuppolicy", "pol").get("status") or {}
        last = status.get("lastTestRestore") or {}
        done = [s for s in last.get("sources") or [] if s.get("job") == entry["job"]]
        return last if done else None

    last = namespace.cluster.wait_for(finished, timeout=180, what="the test to be recorded")
    assert last["result"] == "Succeeded", last
    assert last["files"] == len(files)
    _nothing_left(namespace)
    assert namespace.get("pvc", "pol-test-left-over") is None


def test_a_test_restore_as_root_gives_the_scratch_files_their_owners(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    """With spec.job.runAsRoot the test's restore runs with CHOWN and its companions: the
    scratch claim's private directory has its owner and mode back, and a check run as that
    owner (check.runAsUser; non-root, no capabilities) reads the file in it."""
    from safehold.controller.limits import Limits

    operator(poll_interval=1.0, limits=Limits(run_as_root=True))
    kit.private_data(kit.make_claim(namespace, "data"))
    kit.store_location(namespace, s3_store, password=PASSWORD)
    owners = (
        'test "$(stat -c %u:%g:%a /scratch/private)" = 999:998:700 '
        "&& grep -q 'only the owner' /scratch/private/key.pem && echo owners kept"
    )
    check = {
        "image": "busybox:1.36",
        "command": ["sh", "-c", owners],
        "runAsUser": 999,
        "runAsGroup": 998,
    }
    test = {"cron": "* * * * *", "check": check}
    kit.policy(namespace, "pol", "loc", ["data"], job={"runAsRoot": True}, testRestore=test)
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    assert kit.get(namespace, "backuprun", "run-1")["status"]["phase"] == "Succeeded"
    backed_up = datetime.now(UTC)

    last = _tested_after(namespace, kit, "pol", backed_up)["lastTestRestore"]
    assert last["result"] == "Succeeded", last
    assert last["files"] == 2
    assert "your check passed" in last["sources"][0]["message"], last
