"""The run queue on the test ground: runs over a limit wait their turn (phase Pending,
reason Queued, a position), one Job at a time, each run recorded once; a queued scheduled
run whose starting deadline passes is missed, without a Job."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from testground.kube import Namespace
from testground.objectstores import RunningStore

RUNS = ("q1", "q2", "q3")


def _run(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "BackupRun",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"policyRef": {"name": "pol"}},
    }


def _items(namespace: Namespace, *args: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(namespace.kubectl("get", *args, "-o", "json").stdout)[
        "items"
    ]
    return items


def _active_jobs(jobs: list[dict[str, Any]]) -> list[str]:
    def ended(job: dict[str, Any]) -> bool:
        conds = (job.get("status") or {}).get("conditions") or []
        return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conds)

    return [j["metadata"]["name"] for j in jobs if not ended(j)]


def _complete(run: dict[str, Any]) -> dict[str, Any]:
    conds = (run.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Complete"), {})


def _events(namespace: Namespace, name: str, reason: str) -> int:
    events = _items(namespace, "events")
    return sum(
        e.get("count", 1)
        for e in events
        if e["involvedObject"]["name"] == name and e["reason"] == reason
    )


def test_runs_over_a_location_limit_wait_their_turn(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    kit.write_data(kit.make_claim(namespace, "data"), seed=7, files=6)
    kit.store_location(namespace, s3_store, maxConcurrentRuns=1)
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    kit.policy(namespace, "pol", "loc", ["data"])
    namespace.wait_condition("backuppolicy", "pol", "Ready", timeout=60)

    namespace.apply([_run(name) for name in RUNS])  # created at once, in this order
    seen: dict[str, set[str]] = {name: set() for name in RUNS}
    most_jobs = 0
    deadline = time.monotonic() + 240
    while True:
        runs = {r["metadata"]["name"]: r for r in _items(namespace, "backupruns")}
        most_jobs = max(most_jobs, len(_active_jobs(_items(namespace, "jobs"))))
        for name, run in runs.items():
            cond = _complete(run)
            if cond.get("reason") == "Queued":
                assert run["status"]["phase"] == "Pending"
                assert not run["status"].get("sources")  # no Job while queued
                seen[name].add(cond["message"])
        phases = [(r.get("status") or {}).get("phase") for r in runs.values()]
        if len(phases) == len(RUNS) and all(p in ("Succeeded", "Failed") for p in phases):
            break
        assert time.monotonic() < deadline, f"runs did not finish: {phases}"
        time.sleep(0.3)

    assert most_jobs == 1
    limit = "(limit 1 at location loc)"
    assert f"queued: position 1 of 2 {limit}" in seen["q2"], seen
    assert f"queued: position 2 of 2 {limit}" in seen["q3"], seen
    for name in RUNS:
        run = kit.get(namespace, "backuprun", name)
        assert run["status"]["phase"] == "Succeeded", run["status"]
        jobs = _items(namespace, "jobs", "-l", f"safehold.io/run={name}")
        assert len(jobs) == 1
        assert _events(namespace, name, "Succeeded") == 1
        assert _events(namespace, name, "Queued") == (0 if name == "q1" else 1)

    # one after another, in order of creation
    def times(name: str, key: str) -> datetime:
        value = kit.get(namespace, "backuprun", name)["status"][key]
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    assert times("q1", "completionTime") <= times("q2", "startTime")
    assert times("q2", "completionTime") <= times("q3", "startTime")


def test_a_queued_scheduled_run_past_its_starting_deadline_is_missed(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator(max_concurrent_runs=1)
    kit.write_data(kit.make_claim(namespace, "data"), seed=8, files=4)
    kit.store_location(namespace, s3_store)
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    kit.policy(namespace, "pol", "loc", ["data"], startingDeadlineSeconds=60)
    namespace.wait_condition("backuppolicy", "pol", "Ready", timeout=60)

    # a run by hand first, then one for a slot ten minutes ago, as a schedule makes it
    slot = (datetime.now(UTC) - timedelta(minutes=10)).replace(second=0, microsecond=0)
    late = _run("m2", {"safehold.io/schedule-time": slot.isoformat()})
    namespace.apply([_run("m1"), late])
    kit.kubectl_wait(namespace, "backuprun/m2", "Complete")
    missed = kit.get(namespace, "backuprun", "m2")
    assert missed["status"]["phase"] == "Failed", missed["status"]
    cond = _complete(missed)
    assert cond["reason"] == "Missed"
    assert "startingDeadlineSeconds (60)" in cond["message"]
    assert "queued: position 1 of 1 (limit 1 cluster-wide)" in cond["message"]
    assert not _items(namespace, "jobs", "-l", "safehold.io/run=m2")
    assert _events(namespace, "m2", "Missed") == 1

    kit.kubectl_wait(namespace, "backuprun/m1", "Complete")
    assert kit.get(namespace, "backuprun", "m1")["status"]["phase"] == "Succeeded"
