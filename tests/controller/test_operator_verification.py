"""A policy's ``verification.cron`` on the test ground: every minute, a verify Job per
location (the real ``safehold verify --read-data-subset``) checks the repository and the
outcome lands in ``status.lastVerification``, the ``Verified`` condition, Events and the
metrics; after a pack is damaged in the bucket, the next check fails and names it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from safehold.api.backuppolicy import BackupPolicyStatus
from safehold.api.conditions import find_condition
from safehold.controller import metrics
from safehold.repo import BLOB_DATA, Repository, pack_object_name
from safehold.storage import open_storage
from testground.kube import Namespace
from testground.objectstores import RunningStore

PASSWORD = "verification test password"


def _repository(store: RunningStore, bucket: str) -> Repository:
    return Repository.open(open_storage(store.url(bucket, "repo"), dict(store.options)), PASSWORD)


def _check_after(
    namespace: Namespace, kit: Any, policy: str, after: datetime, timeout: int = 200
) -> dict[str, Any]:
    """The first ``lastVerification`` of a check started after ``after``."""

    def done() -> dict[str, Any] | None:
        status = kit.get(namespace, "backuppolicy", policy).get("status") or {}
        last = status.get("lastVerification") or {}
        started = (status.get("verification") or {}).get("startTime")
        if not last or not started:
            return None
        if datetime.fromisoformat(started.replace("Z", "+00:00")) <= after:
            return None
        when = datetime.fromisoformat(last["time"].replace("Z", "+00:00"))
        return status if when >= datetime.fromisoformat(started.replace("Z", "+00:00")) else None

    found: dict[str, Any] = namespace.cluster.wait_for(
        done, timeout=timeout, what=f"a verification of {policy} after {after}"
    )
    return found


def _events(namespace: Namespace, reason: str) -> list[dict[str, Any]]:
    items = json.loads(namespace.kubectl("get", "events", "-o", "json").stdout)["items"]
    return [e for e in items if e.get("reason") == reason]


def test_scheduled_verification_records_success_then_names_a_damaged_pack(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator(poll_interval=1.0)
    data = kit.make_claim(namespace, "data")
    kit.write_data(data, seed=41, files=4)
    bucket = kit.store_location(namespace, s3_store, password=PASSWORD)
    kit.policy(
        namespace,
        "pol",
        "loc",
        ["data"],
        verification={"cron": "* * * * *", "readDataPercent": 100},
    )
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    backed_up = datetime.now(UTC)
    # verification.afterBackup (default true): the Job checked the new snapshot's structure
    [source] = kit.get(namespace, "backuprun", "run-1")["status"]["sources"]
    assert source["verified"] is True, source
    assert (
        "--verify"
        in namespace.get("job", source["job"])["spec"]["template"]["spec"]["containers"][0]["args"]
    )

    status = _check_after(namespace, kit, "pol", backed_up)
    last = status["lastVerification"]
    assert last["result"] == "Succeeded", last
    assert last["subset"] == "1/1"
    assert last["readDataPercent"] == 100
    [check] = last["locations"]
    assert check["location"] == "loc"
    assert check["packsRead"] >= 1
    parsed = BackupPolicyStatus.model_validate(status)
    verified = find_condition(parsed.conditions, "Verified")
    assert verified is not None
    assert verified.status == "True", verified
    # The Job was built like every other: owned by the policy, no API rights, labelled.
    job = namespace.get("job", check["job"])
    assert job is not None
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "verify"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "BackupPolicy"
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["args"][:3] == ["verify", "--read-data-subset", "1/1"]
    assert PASSWORD not in json.dumps(job)
    labels = {"namespace": str(namespace), "policy": "pol", "location": "loc"}
    success = metrics.REGISTRY.get_sample_value(
        "safehold_verification_last_success_timestamp_seconds", labels
    )
    assert success is not None
    assert success > backed_up.timestamp() - 5

    # Flip bytes in the middle of a pack in the bucket.
    repo = _repository(s3_store, bucket)
    pack = min(loc.pack for _, loc in repo.index.items() if loc.type == BLOB_DATA)  # not trees
    name = pack_object_name(pack)
    blob = bytearray(repo.storage.get(name))
    for i in range(len(blob) // 2, len(blob) // 2 + 16):
        blob[i] ^= 0xFF
    repo.storage.put(name, bytes(blob))
    damaged = datetime.now(UTC)

    status = _check_after(namespace, kit, "pol", damaged)
    last = status["lastVerification"]
    assert last["result"] == "Failed", last
    assert name in last["message"], last["message"]
    assert "snapshot " in last["message"]
    assert "repair index --read-data" in last["message"]
    assert last["locations"][0]["reason"] == "RepositoryDamaged"
    verified = find_condition(BackupPolicyStatus.model_validate(status).conditions, "Verified")
    assert verified is not None
    assert verified.status == "False"
    assert _events(namespace, "VerificationFailed")
    failures = metrics.REGISTRY.get_sample_value("safehold_verification_failures_total", labels)
    assert failures is not None
    assert failures >= 1


def test_every_recovery_site_is_verified_with_the_primary(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator(poll_interval=1.0)
    data = kit.make_claim(namespace, "data")
    kit.write_data(data, seed=43, files=3)
    kit.store_location(namespace, s3_store, "primary", password=PASSWORD)
    kit.store_location(namespace, s3_store, "site", password=PASSWORD, role="recovery-site")
    kit.policy(
        namespace,
        "pol",
        "primary",
        ["data"],
        replicateTo=[{"name": "site"}],
        verification={"cron": "* * * * *", "readDataPercent": 50, "afterBackup": False},
    )
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    [source] = kit.get(namespace, "backuprun", "run-1")["status"]["sources"]
    assert "verified" not in source  # afterBackup: false

    def replicated() -> bool:
        status = kit.get(namespace, "backuppolicy", "pol").get("status") or {}
        sites = status.get("replication") or []
        return bool(sites) and sites[0].get("phase") == "Succeeded"

    namespace.cluster.wait_for(replicated, timeout=180, what="the copy to the site")
    status = _check_after(namespace, kit, "pol", datetime.now(UTC))
    last = status["lastVerification"]
    assert last["result"] == "Succeeded", last
    assert [c["location"] for c in last["locations"]] == ["primary", "site"]
    assert all(c["result"] == "Succeeded" for c in last["locations"])
    assert last["subset"] in ("1/2", "2/2")
    # the rotation moved on: the next check reads the other part
    nxt = status["verification"]["nextSubset"]
    assert f"{3 - nxt}/2" == last["subset"]
    site_job = namespace.get("job", last["locations"][1]["job"])
    assert site_job is not None
    assert site_job["metadata"]["labels"]["safehold.io/location"] == "site"
