"""A policy's scheduled verification without a cluster: the parts of the rotation, the
verify Jobs (one per location, built like every Job), the outcome in
``status.lastVerification`` and the ``Verified`` condition, and the rotation surviving a
restart (it lives in the status, read back from its JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

import testground.fakekube
from safehold.api import BackupLocation, BackupPolicy, SourceResult, validate_spec
from safehold.api.backuppolicy import BackupPolicyStatus
from safehold.api.conditions import find_condition
from safehold.api.summaries import VerifySummary
from safehold.controller import metrics, verification
from safehold.controller.jobs import JobImage
from safehold.controller.runtime import Runtime
from safehold.controller.status import JobOutcome, source_result
from safehold.controller.verification import (
    check_message,
    parts_of,
    reconcile_verification,
    rotate,
    verify_args,
    verify_schedule,
)

NS = "prod"


def test_the_parts_hold_at_least_the_share_asked_for() -> None:
    assert [parts_of(p) for p in (0, 1, 10, 30, 34, 50, 51, 100)] == [1, 100, 10, 3, 2, 2, 1, 1]
    assert [rotate(k, 3) for k in (1, 2, 3, 7)] == [2, 3, 1, 1]
    assert verify_args(0, 1, 1) == ["verify"]
    assert verify_args(10, 4, 10) == ["verify", "--read-data-subset", "4/10"]


def test_the_message_names_the_pack_the_snapshot_and_the_repair() -> None:
    doc = {
        "ok": False,
        "damaged_objects": 2,
        "objects": {"data/ab/abcd": "pack holds damaged blobs"},
        "damaged": {"0123456789abcdef": {"files": 2, "paths": ["a/b", "c"]}},
        "repair_hint": "to repair, run 'safehold repair index --read-data'; see docs/repair.md",
    }
    text = check_message("loc", VerifySummary.model_validate(doc), "x")
    assert text.startswith("loc: data/ab/abcd: pack holds damaged blobs; 1 more damaged")
    assert "snapshot 0123456789ab: 2 damaged path(s) a/b, c" in text
    assert "'safehold repair index --read-data'" in text
    assert "BackupLocation loc" in text
    assert check_message("loc", None, "wrong password") == "loc: wrong password"


def _policy(**verify: Any) -> dict[str, Any]:
    return {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "BackupPolicy",
        "metadata": {
            "name": "app",
            "namespace": NS,
            "uid": "uid-pol",
            "generation": 1,
            "creationTimestamp": "2026-11-26T09:00:00Z",
        },
        "spec": {
            "location": {"name": "loc"},
            "replicateTo": [{"name": "site"}],
            "schedule": {"timeZone": "Asia/Kolkata", "slots": [{"cron": "0 2 * * *"}]},
            "sources": {"volumes": [{"claimName": "data"}]},
            "verification": {"cron": "0 * * * *", **verify},
        },
    }


def _location(name: str) -> dict[str, Any]:
    return BackupLocation.model_validate(
        {
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "provider": "s3",
                "bucket": f"b-{name}",
                "credentialsSecretRef": {"name": f"{name}-creds"},
                "repositoryPasswordSecretRef": {"name": f"{name}-pw"},
                **({"role": "recovery-site"} if name == "site" else {}),
            },
        }
    ).model_dump(mode="json", by_alias=True, exclude_none=True)


class FakeKube(testground.fakekube.FakeKube):
    """Verification's Jobs end with a summary; its exit code says whether they failed."""

    def finish(  # type: ignore[override]
        self, name: str, summary: dict[str, Any], exit_code: int = 0
    ) -> None:
        message = json.dumps({**summary, "exit_code": exit_code})
        super().finish(name, exit_code == 0, message, exit_code)


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube({("backuplocations", n): _location(n) for n in ("loc", "site")})


def _at(monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    moment = datetime.fromisoformat(when).replace(tzinfo=UTC)
    monkeypatch.setattr(verification, "now", lambda: moment)


def _restart(status: BackupPolicyStatus) -> BackupPolicyStatus:
    """The status as a restarted operator reads it back."""
    doc = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return BackupPolicyStatus.model_validate(json.loads(json.dumps(doc)))


def test_one_job_per_location_and_the_rotation_survives_a_restart(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = Runtime(kube, image=JobImage("safehold:test"))  # type: ignore[arg-type]
    body = _policy(readDataPercent=50)
    policy = BackupPolicy.model_validate(body)
    assert verify_schedule(policy) is not None
    status = BackupPolicyStatus()
    _at(monkeypatch, "2026-11-26T10:00:30")
    assert reconcile_verification(rt, body, policy, status) is None
    state = status.verification
    assert state is not None
    assert state.subset == "1/2"
    assert state.next_subset == 2
    assert [c.location for c in state.checks] == ["loc", "site"]
    jobs = list(kube.jobs.values())
    assert len(jobs) == 2
    for job, where in zip(jobs, ("loc", "site"), strict=True):
        assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "verify"
        assert job["metadata"]["labels"]["safehold.io/location"] == where
        assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-pol"
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[:3] == ["verify", "--read-data-subset", "1/2"]
        assert f"b-{where}" in " ".join(args)
        assert job["spec"]["backoffLimit"] == 0

    # the operator restarts while the Jobs run; the same slot starts nothing again
    status = _restart(status)
    _at(monkeypatch, "2026-11-26T10:05:00")
    reconcile_verification(rt, body, policy, status)
    assert len(kube.jobs) == 2
    assert status.last_verification is None
    good = {"ok": True, "snapshots": 3, "packs": 8, "packs_read": 4, "bytes_read": 1000}
    for name in kube.jobs:
        kube.finish(name, good)
    reconcile_verification(rt, body, policy, status)
    last = status.last_verification
    assert last is not None
    assert last.result == "Succeeded"
    assert last.subset == "1/2"
    assert "loc: no errors (3 snapshots, 8 packs, 4 read)" in last.message
    verified = find_condition(status.conditions, "Verified")
    assert verified is not None
    assert verified.status == "True"
    labels = {"namespace": NS, "policy": "app", "location": "site"}
    assert metrics.REGISTRY.get_sample_value(
        "safehold_verification_last_success_timestamp_seconds", labels
    )

    # restarted again: the next slot reads the next part
    status = _restart(status)
    _at(monkeypatch, "2026-11-26T11:00:10")
    reconcile_verification(rt, body, policy, status)
    assert status.verification is not None
    assert status.verification.subset == "2/2"
    assert status.verification.next_subset == 1
    new = [n for n in kube.jobs if "status" in kube.jobs[n] and "active" in kube.jobs[n]["status"]]
    assert len(new) == 2
    before = metrics.REGISTRY.get_sample_value("safehold_verification_failures_total", labels) or 0
    bad = {
        "ok": False,
        "damaged_objects": 1,
        "objects": {"data/12/1234": "pack bytes do not match its name (changed or corrupt)"},
        "damaged": {"feedfacecafe0000": {"files": 1, "paths": ["f"]}},
        "repair_hint": "to repair, run 'safehold repair index --read-data'; see docs/repair.md",
    }
    site_job = next(
        n for n in new if kube.jobs[n]["metadata"]["labels"]["safehold.io/location"] == "site"
    )
    for name in new:
        kube.finish(name, bad if name == site_job else good, exit_code=4 if name == site_job else 0)
    reconcile_verification(rt, body, policy, status)
    last = status.last_verification
    assert last is not None
    assert last.result == "Failed"
    assert last.message.startswith("site: data/12/1234: pack bytes do not match")
    assert "snapshot feedfacecafe" in last.message
    assert [c.result for c in last.locations] == ["Succeeded", "Failed"]
    assert last.locations[1].reason == "RepositoryDamaged"
    verified = find_condition(status.conditions, "Verified")
    assert verified is not None
    assert verified.status == "False"
    assert verified.reason == "RepositoryDamaged"
    assert any(r == "VerificationFailed" and w for r, _m, w in kube.events)
    after = metrics.REGISTRY.get_sample_value("safehold_verification_failures_total", labels)
    assert after == before + 1


def test_a_slot_while_the_check_runs_is_skipped_and_suspend_starts_nothing(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = Runtime(kube, image=JobImage("safehold:test"))  # type: ignore[arg-type]
    body = _policy()
    policy = BackupPolicy.model_validate(body)
    status = BackupPolicyStatus()
    _at(monkeypatch, "2026-11-26T10:00:30")
    reconcile_verification(rt, body, policy, status)
    assert status.verification is not None
    assert status.verification.subset is None  # readDataPercent 0: the structure only
    args = next(iter(kube.jobs.values()))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--read-data-subset" not in args
    _at(monkeypatch, "2026-11-26T11:00:30")
    note = reconcile_verification(rt, body, policy, status)
    assert note is not None
    assert "skipped" in note
    assert len(kube.jobs) == 2

    suspended = _policy()
    suspended["spec"]["suspend"] = True
    status = BackupPolicyStatus()
    kube.jobs.clear()
    reconcile_verification(rt, suspended, BackupPolicy.model_validate(suspended), status)
    assert not kube.jobs


def test_test_restore_beside_verification_is_accepted() -> None:
    """Once refused (not carried out), `testRestore` is now carried out: the policy with
    both is valid (tests/controller/test_testrestore_unit.py checks its own rules)."""
    spec = _policy()["spec"]
    spec["testRestore"] = {"cron": "0 3 * * *"}
    assert validate_spec("BackupPolicy", spec) == []


def test_a_damaged_new_snapshot_fails_its_source() -> None:
    base = SourceResult(name="data", kind="volume")
    doc = {"ok": True, "snapshot": "ab" * 32, "type": "full", "total_files": 3}
    whole = source_result(base, JobOutcome("Succeeded", {**doc, "verify": {"ok": True}}))
    assert whole.phase == "Succeeded"
    assert whole.verified is True
    unchecked = source_result(base, JobOutcome("Succeeded", doc))
    assert unchecked.verified is None
    bad = {"ok": False, "message": "snapshot abab is damaged: 1 path(s) lost (a: ...)"}
    damaged = source_result(base, JobOutcome("Failed", {**doc, "ok": False, "verify": bad}))
    assert damaged.phase == "Failed"
    assert damaged.verified is False
    assert damaged.error is not None
    assert damaged.error.reason == "SnapshotDamaged"
    assert "1 path(s) lost" in damaged.error.message
