"""When to look at an object again, and which objects an event concerns.

The operator reconciles on watch events (safehold.controller.handlers) and on time only
where time matters (issue 17). After each reconcile, :func:`next_look` says when the
object needs another look without any event:

- a BackupRun or RestoreRequest that has not ended: every ``poll_interval`` (its Job's
  progress, its pods' state, volume snapshots becoming ready); an ended one: never;
- a BackupLocation or BackupPolicy with a Job of its own running: every ``poll_interval``
  (a pod that cannot start shows in no Job event);
- a BackupLocation otherwise: at its next ``validationInterval``, or sooner when a backup
  to it ended since its last check (``backuplocation.REFRESH_GAP`` after that check);
- a BackupPolicy otherwise: at the earliest of its next schedule slot, next verification,
  next test restore, next replication attempt and next WAL archive; every
  :data:`NOT_READY_RETRY` seconds while it is not Ready (a claim it names may be created);
- in any case at least every :data:`RESYNC` seconds, a safety net that costs no API call
  (the reconcile reads the watch cache).

:func:`related` names the other objects an event concerns: a BackupRun's policy (its
active runs, its last success, what follows a success) and, once it ended, its location
(its size), the policies that name a BackupLocation, and the owner of a Job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from safehold.api import GROUP, KINDS, BackupLocationSpec
from safehold.api.types import parse_duration
from safehold.controller import backuplocation
from safehold.controller.cache import Cache
from safehold.controller.common import now, parse_time
from safehold.controller.status import FINAL_PHASES

__all__ = ["NOT_READY_RETRY", "RESYNC", "Key", "next_look", "related"]

Key = tuple[str, str, str]  # (plural, namespace, name)
#: Seconds between two looks at a policy that is not Ready.
NOT_READY_RETRY = 60.0
#: The longest an object of a live kind goes without a reconcile.
RESYNC = 3600.0
#: Seconds added to a due time, so that the slot has come when the reconcile looks.
_MARGIN = 0.5
_DEFAULT_INTERVAL = BackupLocationSpec.model_fields["validation_interval"].default
_PLURAL = {kind: model.crd.plural for kind, model in KINDS.items()}


def _status(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict(body.get("status") or {})


def _ended(job: Mapping[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
    )


def _runs_a_job(cache: Cache, body: Mapping[str, Any]) -> bool:
    """Whether a Job the object owns has not ended."""
    meta = body.get("metadata") or {}
    uid = meta.get("uid")
    for job in cache.select("jobs", str(meta.get("namespace"))):
        owners = (job.get("metadata") or {}).get("ownerReferences") or []
        if any(o.get("uid") == uid for o in owners) and not _ended(job):
            return True
    return False


def _ready(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def _seconds_until(times: Iterable[datetime | None], current: datetime) -> float | None:
    due = [t for t in times if t is not None]
    if not due:
        return None
    return max(0.0, (min(due) - current).total_seconds()) + _MARGIN


def _policy_times(status: Mapping[str, Any]) -> list[datetime | None]:
    times = [parse_time(status.get("nextScheduleTime"))]
    for part in ("verification", "testRestore"):
        times.append(parse_time((status.get(part) or {}).get("nextScheduleTime")))
    for site in status.get("replication") or []:
        times.append(parse_time(site.get("nextAttemptTime")))
    for archive in status.get("walArchive") or []:
        times.append(parse_time(archive.get("nextArchiveTime")))
    return times


def _location_time(cache: Cache, body: Mapping[str, Any], current: datetime) -> float | None:
    status = _status(body)
    last = parse_time(status.get("lastValidationTime"))
    if last is None:
        return None
    interval = (body.get("spec") or {}).get("validationInterval") or _DEFAULT_INTERVAL
    try:
        due = [last + parse_duration(interval)]
    except ValueError:
        return None  # an invalid spec waits for a change
    meta = body.get("metadata") or {}
    runs = cache.select("backupruns", str(meta.get("namespace")))
    if backuplocation.backed_up_since(runs, str(meta.get("name")), last):
        due.append(last + backuplocation.REFRESH_GAP)
    return _seconds_until(due, current)


def next_look(cache: Cache, plural: str, body: Mapping[str, Any], poll: float) -> float | None:
    """Seconds until ``body`` needs another reconcile without an event (None: never)."""
    status = _status(body)
    if plural in ("backupruns", "restorerequests"):
        return None if status.get("phase") in FINAL_PHASES else poll
    if _runs_a_job(cache, body):
        return poll
    current = now()
    if plural == "backuplocations":
        wait = _location_time(cache, body, current)
    elif not _ready(status):
        wait = NOT_READY_RETRY
    else:
        wait = _seconds_until(_policy_times(status), current)
    return RESYNC if wait is None else min(wait, RESYNC)


def _policies_naming(cache: Cache, namespace: str, location: str) -> list[Key]:
    out = []
    for policy in cache.select("backuppolicies", namespace):
        spec = policy.get("spec") or {}
        names = {(spec.get("location") or {}).get("name")}
        names.update(t.get("name") for t in spec.get("replicateTo") or [])
        if location in names:
            out.append(("backuppolicies", namespace, policy["metadata"]["name"]))
    return out


def related(cache: Cache, plural: str, body: Mapping[str, Any]) -> list[Key]:
    """The other objects to reconcile when ``body`` (of ``plural``) changed."""
    meta = body.get("metadata") or {}
    ns = str(meta.get("namespace"))
    if plural == "backupruns":
        policy = ((body.get("spec") or {}).get("policyRef") or {}).get("name")
        out: list[Key] = [("backuppolicies", ns, policy)] if policy else []
        status = _status(body)
        if status.get("phase") in FINAL_PHASES and status.get("location"):
            out.append(("backuplocations", ns, str(status["location"])))
        return out
    if plural == "backuplocations":
        return _policies_naming(cache, ns, str(meta.get("name")))
    if plural == "jobs":
        return [
            (_PLURAL[o["kind"]], ns, o["name"])
            for o in meta.get("ownerReferences") or []
            if str(o.get("apiVersion", "")).startswith(f"{GROUP}/") and o.get("kind") in _PLURAL
        ]
    return []
