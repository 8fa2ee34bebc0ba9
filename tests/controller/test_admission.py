"""The run queue's decision: limits cluster-wide and per location, order of creation, the
message with a position, the cache it reads, and a queued run past its starting deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from safehold.api import BackupPolicy, BackupRunStatus
from safehold.controller import metrics
from safehold.controller.admission import (
    Admission,
    Run,
    decide,
    location_limits,
    queue_keys,
    queued,
    runs_from_cache,
)
from safehold.controller.common import Stop
from safehold.controller.kube import Kube
from safehold.controller.runtime import Runtime, max_concurrent_runs_from_env

T0 = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)


def _run(name: str, second: int, location: str = "a", *, running: bool = False) -> Run:
    return Run(
        ("backupruns", "ns", name), T0 + timedelta(seconds=second), ("ns", location), running
    )


def _queued(decisions: dict[Any, Admission]) -> list[tuple[str, int]]:
    waiting = [(k[2], d.position) for k, d in decisions.items() if not d.admitted]
    return sorted(waiting, key=lambda x: x[1])


def test_without_limits_every_run_is_admitted() -> None:
    runs = [_run("r1", 0, running=True), _run("r2", 1), _run("r3", 2)]
    decisions = decide(runs, None, {})
    assert set(decisions) == {r.key for r in runs[1:]}  # running runs are not decided
    assert all(d.admitted for d in decisions.values())


def test_runs_over_the_cluster_limit_wait_in_order_of_creation_then_name() -> None:
    runs = [_run("c", 5), _run("b", 3), _run("a", 3), _run("old", 0, running=True)]
    decisions = decide(runs, 2, {})
    assert decisions[("backupruns", "ns", "a")].admitted  # same second: by name
    assert _queued(decisions) == [("b", 1), ("c", 2)]
    b = decisions[("backupruns", "ns", "b")]
    assert (b.length, b.cluster_limit) == (2, 2)
    assert b.message == "queued: position 1 of 2 (limit 2 cluster-wide)"


def test_a_location_limit_does_not_hold_up_runs_at_other_locations() -> None:
    runs = [_run("a1", 0, running=True), _run("a2", 1), _run("b1", 2, "b"), _run("a3", 3)]
    decisions = decide(runs, None, {("ns", "a"): 1})
    assert decisions[("backupruns", "ns", "b1")].admitted
    assert _queued(decisions) == [("a2", 1), ("a3", 2)]
    assert decisions[("backupruns", "ns", "a3")].message == (
        "queued: position 2 of 2 (limit 1 at location a)"
    )


def test_both_limits_in_the_message_and_an_admitted_run_keeps_its_place() -> None:
    # a1 is admitted (not started yet: its location is being checked); it holds its place
    runs = [_run("a1", 0), _run("b1", 1, "b"), _run("a2", 2), _run("b2", 3, "b")]
    decisions = decide(runs, 2, {("ns", "a"): 1})
    assert [k[2] for k, d in decisions.items() if d.admitted] == ["a1", "b1"]
    assert _queued(decisions) == [("a2", 1), ("b2", 2)]
    assert decisions[("backupruns", "ns", "a2")].message == (
        "queued: position 1 of 2 (limit 2 cluster-wide, 1 at location a)"
    )


def test_a_run_without_a_location_takes_no_place() -> None:
    lost = Run(("backupruns", "ns", "lost"), T0, None, False)
    decisions = decide([lost, _run("r", 1)], 1, {})
    assert lost.key not in decisions
    assert decisions[("backupruns", "ns", "r")].admitted


def _body(name: str, created: str, *, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
        "spec": {"policyRef": {"name": "pol"}},
        "status": status or {},
    }


def _cache() -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        ("backuppolicies", "ns", "pol"): {"spec": {"location": {"name": "loc"}}},
        ("backuplocations", "ns", "loc"): {"spec": {"maxConcurrentRuns": 1}},
        ("backuplocations", "ns", "other"): {"spec": {"provider": "s3"}},
        ("backupruns", "ns", "done"): _body(
            "done", "2026-12-04T01:00:00Z", status={"phase": "Succeeded", "sources": [{}]}
        ),
        ("backupruns", "ns", "busy"): _body(
            "busy",
            "2026-12-04T01:30:00Z",
            status={"phase": "Running", "location": "other", "sources": [{}]},
        ),
        ("backupruns", "ns", "next"): _body("next", "2026-12-04T02:00:00Z"),
        ("backupruns", "ns", "late"): _body("late", "2026-12-04T02:00:01Z"),
    }


def test_the_cache_gives_runs_their_location_and_locations_their_limit() -> None:
    cache = _cache()
    runs = {r.key[2]: r for r in runs_from_cache(cache)}
    assert set(runs) == {"busy", "next", "late"}  # final runs are left out
    assert (runs["busy"].running, runs["busy"].location) == (True, ("ns", "other"))  # status
    assert (runs["next"].running, runs["next"].location) == (False, ("ns", "loc"))  # policy
    assert location_limits(cache) == {("ns", "loc"): 1}


def _policy(deadline: int | None) -> BackupPolicy:
    spec: dict[str, Any] = {
        "location": {"name": "loc"},
        "sources": {"volumes": [{"claimName": "data"}]},
    }
    if deadline is not None:
        spec["startingDeadlineSeconds"] = deadline
    return BackupPolicy.model_validate(
        {"metadata": {"name": "pol", "namespace": "ns"}, "spec": spec}
    )


class _WatchCache:
    """The part of safehold.controller.cache.Cache admission reads, over the test's dict
    (read at each call, so the test can change it)."""

    def __init__(self, objects: dict[Any, Any]) -> None:
        self.objects = objects

    def everything(self, plural: str) -> list[dict[str, Any]]:
        return [
            {**body, "metadata": {"namespace": ns, "name": name, **(body.get("metadata") or {})}}
            for (p, ns, name), body in self.objects.items()
            if p == plural
        ]


def _runtime(cache: dict[Any, Any], limit: int | None = None) -> Runtime:
    kube = SimpleNamespace(cache=_WatchCache(cache))
    return Runtime(cast(Kube, kube), max_concurrent_runs=limit)


def test_queued_gives_the_message_sets_the_gauge_and_lists_the_queue() -> None:
    cache = _cache()
    rt = _runtime(cache)
    status = BackupRunStatus()
    assert queued(rt, cache[("backupruns", "ns", "next")], _policy(None), status) is None
    message = queued(rt, cache[("backupruns", "ns", "late")], _policy(None), status)
    assert message == "queued: position 1 of 1 (limit 1 at location loc)"
    assert (
        metrics.REGISTRY.get_sample_value(
            "safehold_backup_runs_queued", {"namespace": "ns", "location": "loc"}
        )
        == 1
    )
    assert queue_keys(rt) == [("backupruns", "ns", "next"), ("backupruns", "ns", "late")]
    # once the queue is empty, the gauge shows 0
    cache[("backupruns", "ns", "next")]["status"] = {"phase": "Succeeded", "sources": [{}]}
    assert queued(rt, cache[("backupruns", "ns", "late")], _policy(None), status) is None
    assert (
        metrics.REGISTRY.get_sample_value(
            "safehold_backup_runs_queued", {"namespace": "ns", "location": "loc"}
        )
        == 0
    )
    # without any limit nothing waits, and the gauge is empty
    cache[("backupruns", "ns", "next")]["status"] = {}
    del cache[("backuplocations", "ns", "loc")]
    assert queued(rt, cache[("backupruns", "ns", "late")], _policy(None), status) is None
    assert (
        metrics.REGISTRY.get_sample_value(
            "safehold_backup_runs_queued", {"namespace": "ns", "location": "loc"}
        )
        is None
    )


def test_a_queued_scheduled_run_past_its_starting_deadline_is_missed() -> None:
    cache = _cache()
    rt = _runtime(cache)
    late = cache[("backupruns", "ns", "late")]
    slot = datetime.now(UTC) - timedelta(minutes=5)
    # within its deadline it waits; a run made by hand (no slot) always waits
    assert queued(rt, late, _policy(600), BackupRunStatus(schedule_time=slot))
    assert queued(rt, late, _policy(60), BackupRunStatus())
    with pytest.raises(Stop) as stop:
        queued(rt, late, _policy(60), BackupRunStatus(schedule_time=slot))
    assert stop.value.reason == "Missed"
    assert "startingDeadlineSeconds (60)" in stop.value.message
    assert "position 1 of 1" in stop.value.message
    # an admitted run starts even past its deadline: only waiting in the queue misses it
    nxt = cache[("backupruns", "ns", "next")]
    assert queued(rt, nxt, _policy(60), BackupRunStatus(schedule_time=slot)) is None


def test_the_cluster_wide_limit_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for raw, want in (("", None), ("0", None), ("3", 3), (" 12 ", 12)):
        monkeypatch.setenv("SAFEHOLD_MAX_CONCURRENT_RUNS", raw)
        assert max_concurrent_runs_from_env() == want
    for bad in ("-1", "two", "1.5"):
        monkeypatch.setenv("SAFEHOLD_MAX_CONCURRENT_RUNS", bad)
        assert max_concurrent_runs_from_env() is None
    assert "ignoring SAFEHOLD_MAX_CONCURRENT_RUNS='1.5'" in caplog.text
