"""The run queue: limits on how many BackupRuns run at once, cluster-wide and per location.

The cluster-wide limit is the chart's ``maxConcurrentRuns`` (``Runtime.max_concurrent_runs``),
a location's is its ``spec.maxConcurrentRuns``; either may be unset (no limit). A run
*runs* from the moment its Jobs are recorded in ``status.sources`` (which happens just
before they are created) until it is final; a run's Jobs (one per source) count as one run.
Runs that have not started wait in order of creation (``creationTimestamp``, then
namespace and name): walking them oldest first, each one that fits under both limits is
admitted and takes its place, each one that does not is queued. So a run at a location
with room is not held up by older runs queued at a full location, and an older admitted run
that still waits for something else (its location's check, a retention Job) keeps its place.

RestoreRequests neither wait in the queue nor count toward it: a restore is what someone
waits for on the worst day, and it should not queue behind routine backups.

:func:`decide` is the pure decision over the watch cache's runs, policies and locations;
:func:`queued` is what the BackupRun reconciler calls before its Jobs are created, and
:func:`queue_keys` what a run that ends, or a new run, wakes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from safehold.api import BackupPolicy, BackupRunStatus
from safehold.controller import metrics
from safehold.controller.common import Stop, now, parse_time
from safehold.controller.runtime import Runtime
from safehold.controller.status import FINAL_PHASES

__all__ = [
    "MISSED",
    "QUEUED",
    "Admission",
    "Run",
    "decide",
    "location_limits",
    "queue_keys",
    "queued",
    "runs_from_cache",
    "starting_deadline",
]

#: The reason of a run's Complete condition while it waits in the queue.
QUEUED = "Queued"
#: The reason a scheduled run fails with when it waited past its starting deadline.
MISSED = "Missed"

Key = tuple[str, str, str]
#: A BackupLocation by (namespace, name).
Location = tuple[str, str]


@dataclass(frozen=True)
class Run:
    """A BackupRun as the queue sees it."""

    key: Key
    created: datetime
    location: Location | None  # None: its policy or location cannot be found
    running: bool


@dataclass(frozen=True)
class Admission:
    """The queue's answer for one run: admitted now, or queued at ``position`` of
    ``length`` (every queued run, cluster-wide)."""

    admitted: bool
    position: int = 0
    length: int = 0
    cluster_limit: int | None = None
    location: Location | None = None
    location_limit: int | None = None

    @property
    def message(self) -> str:
        """``queued: position 3 of 7 (limit 2 cluster-wide, 1 at location foo)``."""
        limits = []
        if self.cluster_limit is not None:
            limits.append(f"limit {self.cluster_limit} cluster-wide")
        if self.location_limit is not None and self.location is not None:
            word = "" if limits else "limit "
            limits.append(f"{word}{self.location_limit} at location {self.location[1]}")
        return f"queued: position {self.position} of {self.length} ({', '.join(limits)})"


def _order(run: Run) -> tuple[datetime, str, str]:
    return run.created, run.key[1], run.key[2]


def decide(
    runs: Iterable[Run], cluster_limit: int | None, location_limits: Mapping[Location, int]
) -> dict[Key, Admission]:
    """Every run that has not started, admitted or queued (see the module's docstring).
    ``runs`` are the runs that are not final; running ones only take their place."""
    running = [r for r in runs if r.running]
    total = len(running)
    at: dict[Location, int] = {}
    for r in running:
        if r.location is not None:
            at[r.location] = at.get(r.location, 0) + 1
    admitted: list[Run] = []
    waiting: list[Run] = []
    for r in sorted((r for r in runs if not r.running), key=_order):
        if r.location is None:
            continue  # it fails for want of its policy or location, without a Job
        limit = location_limits.get(r.location)
        full = (cluster_limit is not None and total >= cluster_limit) or (
            limit is not None and at.get(r.location, 0) >= limit
        )
        if full:
            waiting.append(r)
            continue
        admitted.append(r)
        total += 1
        at[r.location] = at.get(r.location, 0) + 1
    out = {r.key: Admission(True) for r in admitted}
    for i, r in enumerate(waiting, 1):
        out[r.key] = Admission(
            False,
            position=i,
            length=len(waiting),
            cluster_limit=cluster_limit,
            location=r.location,
            location_limit=location_limits.get(r.location) if r.location else None,
        )
    return out


def _policy_location(objects: Mapping[Key, Mapping[str, Any]], ns: str, run: Any) -> str | None:
    policy = (run.get("spec") or {}).get("policyRef", {}).get("name")
    body = objects.get(("backuppolicies", ns, str(policy)))
    name = ((body or {}).get("spec") or {}).get("location", {}).get("name")
    return str(name) if name else None


def runs_from_cache(objects: Mapping[Key, Mapping[str, Any]]) -> list[Run]:
    """The BackupRuns of ``objects`` that are not final. A running run is at the location
    its status records; one that has not started at its policy's location."""
    out = []
    for key, body in objects.items():
        plural, ns, _name = key
        status = body.get("status") or {}
        if plural != "backupruns" or status.get("phase") in FINAL_PHASES:
            continue
        running = bool(status.get("sources"))
        where = status.get("location") if running else _policy_location(objects, ns, body)
        meta = body.get("metadata") or {}
        created = parse_time(meta.get("creationTimestamp")) or now()
        out.append(Run(key, created, (ns, str(where)) if where else None, running))
    return out


def location_limits(objects: Mapping[Key, Mapping[str, Any]]) -> dict[Location, int]:
    """Each cached BackupLocation's ``spec.maxConcurrentRuns`` that is set and valid."""
    out = {}
    for (plural, ns, name), body in objects.items():
        value = (body.get("spec") or {}).get("maxConcurrentRuns")
        if plural == "backuplocations" and isinstance(value, int) and value >= 1:
            out[(ns, name)] = value
    return out


def _cache(rt: Runtime, body: Mapping[str, Any] | None = None) -> dict[Key, Mapping[str, Any]]:
    """The watch cache's runs, policies and locations by key, with ``body`` as its run."""
    objects: dict[Key, Mapping[str, Any]] = {}
    cache = rt.kube.cache
    for plural in ("backupruns", "backuppolicies", "backuplocations"):
        for obj in cache.everything(plural) if cache is not None else []:
            meta = obj["metadata"]
            objects[(plural, meta["namespace"], meta["name"])] = obj
    if body is not None:
        meta = body["metadata"]
        objects[("backupruns", meta["namespace"], meta["name"])] = body
    return objects


#: The locations the queue-depth gauge has shown, so that an emptied queue shows 0.
_shown: set[Location] = set()


def _record_depth(decisions: Mapping[Key, Admission] | None) -> None:
    """The queue depth per location, into the ``safehold_backup_runs_queued`` gauge
    (None: no limits, so no queue and no gauge)."""
    if decisions is None:
        metrics.RUNS_QUEUED.clear()
        _shown.clear()
        return
    depth: dict[Location, int] = {}
    for d in decisions.values():
        if not d.admitted and d.location is not None:
            depth[d.location] = depth.get(d.location, 0) + 1
    _shown.update(depth)
    for where in list(_shown):
        metrics.RUNS_QUEUED.labels(*where).set(depth.get(where, 0))


def starting_deadline(policy: BackupPolicy, status: BackupRunStatus) -> datetime | None:
    """When a scheduled run that has not started is missed (its slot plus the policy's
    ``startingDeadlineSeconds``); None for runs made by hand or without a deadline."""
    seconds = policy.spec.starting_deadline_seconds
    if status.schedule_time is None or seconds is None:
        return None
    return status.schedule_time + timedelta(seconds=seconds)


def queued(
    rt: Runtime, body: Mapping[str, Any], policy: BackupPolicy, status: BackupRunStatus
) -> str | None:
    """None when the run (not started, its location ready) may create its Jobs now, else
    the queue's message (the Complete condition's, with reason ``Queued``). A queued
    scheduled run past its starting deadline stops with reason ``Missed``."""
    objects = _cache(rt, body)
    limits = location_limits(objects)
    if rt.max_concurrent_runs is None and not limits:
        _record_depth(None)
        return None
    meta = body["metadata"]
    key = ("backupruns", meta["namespace"], meta["name"])
    where = (meta["namespace"], policy.spec.location.name)  # as loaded, whatever the cache says
    runs = [replace(r, location=where) if r.key == key else r for r in runs_from_cache(objects)]
    decisions = decide(runs, rt.max_concurrent_runs, limits)
    _record_depth(decisions)
    mine = decisions.get(key)
    if mine is None or mine.admitted:
        return None
    deadline = starting_deadline(policy, status)
    if deadline is not None and now() > deadline:
        slot = status.schedule_time.isoformat() if status.schedule_time else "?"
        raise Stop(
            MISSED,
            f"the slot at {slot} is missed: the run waited in the queue longer than the "
            f"policy's startingDeadlineSeconds ({policy.spec.starting_deadline_seconds}) "
            f"and did not start ({mine.message}); raise the limit or the deadline",
        )
    return mine.message


def queue_keys(rt: Runtime) -> list[Key]:
    """The keys of every BackupRun that has not started, oldest first: the runs waiting in
    the queue and those it has just admitted. When a run ends, these are the runs that
    may start or move up; when a new run joins, the queue they wait in grew. Looking at
    them again updates their positions and the queue's length."""
    runs = [r for r in runs_from_cache(_cache(rt)) if not r.running]
    return [r.key for r in sorted(runs, key=_order)]
