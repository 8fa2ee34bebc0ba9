"""When an object is looked at again, and which objects an event concerns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from safehold.controller import wakeups
from safehold.controller.cache import Cache
from safehold.controller.wakeups import NOT_READY_RETRY, RESYNC, next_look, related

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wakeups, "now", lambda: NOW)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def body(name: str, uid: str = "u1", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "a", "uid": uid}, "spec": {}, "status": status}


READY = [{"type": "Ready", "status": "True"}]


def job(owner_uid: str, *, ended: bool, kind: str = "BackupPolicy") -> dict[str, Any]:
    conditions = [{"type": "Complete", "status": "True"}] if ended else []
    return {
        "metadata": {
            "name": "j",
            "namespace": "a",
            "ownerReferences": [
                {"apiVersion": "safehold.io/v1alpha1", "kind": kind, "name": "p", "uid": owner_uid}
            ],
        },
        "status": {"conditions": conditions},
    }


def test_runs_are_polled_until_they_end() -> None:
    cache = Cache([])
    assert next_look(cache, "backupruns", body("r", phase="Running"), 3.0) == 3.0
    assert next_look(cache, "restorerequests", body("r"), 3.0) == 3.0
    assert next_look(cache, "backupruns", body("r", phase="Succeeded"), 3.0) is None


def test_an_idle_policy_waits_for_its_earliest_slot() -> None:
    cache = Cache(["jobs"])
    policy = body(
        "p",
        conditions=READY,
        nextScheduleTime=iso(NOW + timedelta(hours=5)),
        verification={"nextScheduleTime": iso(NOW + timedelta(minutes=20))},
        replication=[{"nextAttemptTime": iso(NOW + timedelta(minutes=30))}],
    )
    wait = next_look(cache, "backuppolicies", policy, 3.0)
    assert wait is not None
    assert 20 * 60 <= wait <= 20 * 60 + 1
    daily = body("p", conditions=READY, nextScheduleTime=iso(NOW + timedelta(days=1)))
    assert next_look(cache, "backuppolicies", daily, 3.0) == RESYNC
    overdue = body("p", conditions=READY, nextScheduleTime=iso(NOW - timedelta(seconds=5)))
    assert next_look(cache, "backuppolicies", overdue, 3.0) == pytest.approx(0.5)


def test_a_policy_not_ready_is_retried_and_one_running_a_job_is_polled() -> None:
    cache = Cache(["jobs"])
    assert next_look(cache, "backuppolicies", body("p"), 3.0) == NOT_READY_RETRY
    cache.watched("jobs", job("u1", ended=False))
    ready = body("p", conditions=READY)
    assert next_look(cache, "backuppolicies", ready, 3.0) == 3.0
    cache.watched("jobs", job("u1", ended=True))
    assert next_look(cache, "backuppolicies", ready, 3.0) == RESYNC


def test_a_location_waits_for_its_validation_interval() -> None:
    cache = Cache(["jobs"])
    location = body("l", lastValidationTime=iso(NOW - timedelta(minutes=50)))
    location["spec"] = {"validationInterval": "1h"}
    wait = next_look(cache, "backuplocations", location, 3.0)
    assert wait is not None
    assert 10 * 60 <= wait <= 10 * 60 + 1


def test_events_concern_the_policy_of_a_run_the_policies_of_a_location_and_a_jobs_owner() -> None:
    cache = Cache(["backuppolicies"])
    for name, spec in {
        "uses": {"location": {"name": "l"}},
        "replicates": {"location": {"name": "m"}, "replicateTo": [{"name": "l"}]},
        "other": {"location": {"name": "m"}},
    }.items():
        cache.watched(
            "backuppolicies", {"metadata": {"name": name, "namespace": "a"}, "spec": spec}
        )
    run = body("r")
    run["spec"] = {"policyRef": {"name": "p"}}
    assert related(cache, "backupruns", run) == [("backuppolicies", "a", "p")]
    assert sorted(related(cache, "backuplocations", body("l"))) == [
        ("backuppolicies", "a", "replicates"),
        ("backuppolicies", "a", "uses"),
    ]
    assert related(cache, "jobs", job("u", ended=False, kind="BackupRun")) == [
        ("backupruns", "a", "p")
    ]


def test_a_location_is_checked_again_after_a_backup_to_it_ended() -> None:
    cache = Cache(["jobs", "backupruns"])
    location = body("l", lastValidationTime=iso(NOW - timedelta(minutes=2)))
    location["spec"] = {"validationInterval": "1h"}
    run = body("r", phase="Succeeded", location="l", completionTime=iso(NOW - timedelta(minutes=1)))
    assert related(cache, "backupruns", run) == [("backuplocations", "a", "l")]
    cache.watched("backupruns", run)
    wait = next_look(cache, "backuplocations", location, 3.0)
    assert wait is not None
    assert 3 * 60 <= wait <= 3 * 60 + 1  # REFRESH_GAP (5 min) after the last check
