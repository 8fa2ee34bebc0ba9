"""BackupLocation: check the location with a short Job and report ``Available``.

The operator never connects to storage itself. A Job with the location's Secrets
mounted as files checks it, and its JSON summary (repository id, snapshots per source,
bytes, object lock) or error (a wrong key, a missing bucket, a bucket that cannot lock)
comes back through the termination message, with the count of locks in the repository
and the age of the oldest (``safehold_location_oldest_lock_age_seconds``; a lock older than
the stale age was left by a killed Job). The check is repeated every
``validationInterval``, whenever the spec changes (a new generation), and after a backup
to the location ended (so ``size`` and ``snapshotCount`` follow the backups), at most
every :data:`REFRESH_GAP`.

What the Job runs depends on the ``role``:

- ``primary``: ``safehold repo init --if-absent`` creates the repository if the location
  is empty (with ``--object-lock-mode governance --object-lock-days N`` for
  ``immutabilityDays``, so its config records the lock), otherwise opens it, which checks
  the password and that its object lock is the one asked for. Once a check of the current
  spec has found the repository, later checks run ``safehold repo info``: a repository
  that vanished (a wiped bucket) or was replaced is reported, never silently re-created.
- ``recovery-site``: ``safehold repo info --allow-empty`` never creates anything, because
  a site is created by the first replication as a copy of the primary (same keys, same
  repository id): an empty site is Available with reason ``AwaitingReplication``.

``status.sources`` lists, per snapshot source, the count and the newest snapshot, so a
cluster that has never run a policy sees what a location holds (Velero's backup sync,
read-only: nothing is created from it).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from safehold.api import (
    AVAILABLE,
    BackupLocation,
    BackupLocationStatus,
    find_condition,
    parse_duration,
    validate_spec,
)
from safehold.api.backuplocation import SourceSnapshots
from safehold.api.conditions import ConditionStatus
from safehold.api.summaries import RepositoryInfoSummary, RepositoryInitSummary
from safehold.controller import commands, metrics
from safehold.controller.common import field_errors_message, now, parse_time, write_condition
from safehold.controller.identity import account_problem
from safehold.controller.jobs import (
    COMPONENT_VALIDATE,
    LABEL_COMPONENT,
    LABEL_LOCATION,
    JobRequest,
    build_job,
    job_name,
    label_value,
    with_settings,
)
from safehold.controller.repository import LOCK_MODE, with_repository
from safehold.controller.runtime import Runtime
from safehold.controller.status import FINAL_PHASES
from safehold.units import human_size

__all__ = ["PLURAL", "REFRESH_GAP", "backed_up_since", "check_args", "reconcile"]

PLURAL = "backuplocations"
_GENERATION = "safehold.io/generation"
#: On a check Job: the repository (id, first 32 digits) it must find again.
_KNOWN = "safehold.io/repository"


def _set(
    rt: Runtime,
    body: dict[str, Any],
    status: BackupLocationStatus,
    state: ConditionStatus,
    reason: str,
    message: str,
) -> None:
    status.phase = {"True": "Available", "False": "Unavailable"}.get(state, "Pending")  # type: ignore[assignment]
    if state in ("True", "False"):
        meta = body["metadata"]
        metrics.LOCATION_AVAILABLE.labels(meta["namespace"], meta["name"]).set(state == "True")
    write_condition(rt.kube, PLURAL, body, status, AVAILABLE, state, reason, message)


def check_args(location: BackupLocation, *, known: bool = False) -> list[str]:
    """The ``safehold`` command that checks ``location`` for its role; ``known``: an
    earlier check of the same spec found its repository, so this one must find it again
    rather than create a new one in its place (a wiped bucket is an alarm, not a start)."""
    if location.spec.role == "recovery-site":
        return commands.repo_check(create=False, allow_empty=True)
    days = location.spec.immutability_days
    return commands.repo_check(create=not known, lock=(LOCK_MODE, days) if days else None)


def _request(
    rt: Runtime,
    body: dict[str, Any],
    location: BackupLocation,
    stamp: str,
    *,
    known: str | None = None,
) -> JobRequest:
    """The check Job; ``known``: the repository id an earlier check of this spec found."""
    meta = body["metadata"]
    name, gen = meta["name"], str(meta.get("generation"))
    known = known if location.spec.role == "primary" else None
    labels = {LABEL_LOCATION: name, _GENERATION: gen}
    if known:
        labels[_KNOWN] = known[:32]
    request = JobRequest(
        name=job_name(name, "validate", gen, stamp),
        namespace=meta["namespace"],
        component=COMPONENT_VALIDATE,
        args=check_args(location, known=bool(known)),
        labels=labels,
        owner=body,
        image=rt.image,
    )
    # The chart's jobDefaults place the check (node selector, tolerations, priority,
    # resources) like every other Job; its deadline and retries stay the check's own.
    placed = with_settings(with_repository(request, location), rt.job_settings(None))
    return replace(placed, active_deadline_seconds=300, backoff_limit=0)


def _record_summary(
    status: BackupLocationStatus, location: BackupLocation, doc: RepositoryInfoSummary
) -> None:
    """What a successful check reported, into ``status``."""
    status.repository_id = doc.repository
    status.snapshot_count = doc.snapshots
    status.bytes_stored = doc.pack_bytes
    status.size = human_size(doc.pack_bytes) if doc.pack_bytes is not None else None
    status.locks = doc.locks
    status.oldest_lock_age_seconds = doc.oldest_lock_age_seconds
    status.sources = []
    for entry in doc.sources_newest:
        try:
            status.sources.append(
                SourceSnapshots(
                    source=entry.source,
                    snapshots=entry.count,
                    newest_time=parse_time(entry.newest_time),
                    newest_snapshot=entry.newest_id,
                )
            )
        except ValueError:
            continue  # one odd entry does not hide the others
    lock = doc.object_lock
    if lock:
        status.immutability_days = lock.days or None
    elif location.spec.role == "recovery-site" and location.spec.immutability_days:
        # the site's config is the primary's; its replication Jobs lock what they write
        status.immutability_days = location.spec.immutability_days
    else:
        status.immutability_days = None


def _gone(known: str) -> str:
    return (
        f": repository {known[:16]}, which this location held, is gone. Nothing new is "
        "created in its place, so no backup starts a new chain unnoticed: restore the "
        "bucket's objects, or fail over to a recovery site (docs/disaster-recovery.md); to "
        "start an empty repository here, change the spec (e.g. its prefix) or re-create the "
        "BackupLocation"
    )


def _changed(known: str, found: Any) -> str:
    return (
        f"the location now holds repository {str(found)[:16]}, not {known[:16]} that it "
        "held: another repository was created in its place. Backups are held back; point "
        "the BackupLocation at the right bucket and prefix, or re-create it to accept the "
        "new repository"
    )


def _found(location: BackupLocation, doc: RepositoryInitSummary) -> tuple[str, str]:
    """The Available condition's reason and message after a successful check."""
    where = doc.location
    if doc.empty:
        return (
            "AwaitingReplication",
            f"{where} is reachable and empty: the first replication of a policy that names "
            "this recovery site creates the repository there",
        )
    verb = "created" if doc.initialized else "found"
    message = f"{verb} repository {str(doc.repository)[:16]} at {where}"
    if location.spec.role == "recovery-site":
        message += " (recovery site: written by replication, read by restores)"
    days = location.spec.immutability_days
    if days:
        message += f"; every object is locked for {days} day(s) ({LOCK_MODE})"
    return "Validated", message


#: The shortest time between two checks that follow backups.
REFRESH_GAP = timedelta(minutes=5)


def backed_up_since(runs: list[dict[str, Any]], location: str, since: datetime) -> bool:
    """Whether a run to ``location`` ended after ``since`` (its figures are then stale)."""
    for run in runs:
        status = run.get("status") or {}
        if status.get("location") != location or status.get("phase") not in FINAL_PHASES:
            continue
        ended = parse_time(status.get("completionTime"))
        if ended is not None and ended > since:
            return True
    return False


def reconcile(rt: Runtime, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    ns, name, gen = meta["namespace"], meta["name"], meta.get("generation")
    status = BackupLocationStatus.model_validate(body.get("status") or {})
    errors = validate_spec("BackupLocation", body.get("spec"))
    if errors:
        _set(rt, body, status, "False", "InvalidSpec", field_errors_message(errors))
        return
    location = BackupLocation.model_validate(body)
    refused = account_problem(rt.limits, ns, [location])
    if refused:
        _set(rt, body, status, "False", *refused)
        return
    if status.bytes_stored is not None:  # also after a restart, before the next check
        metrics.BYTES_STORED.labels(ns, name).set(status.bytes_stored)
    if status.oldest_lock_age_seconds is not None:
        metrics.OLDEST_LOCK_AGE.labels(ns, name).set(status.oldest_lock_age_seconds)
    selector = f"{LABEL_LOCATION}={label_value(name)},{LABEL_COMPONENT}={COMPONENT_VALIDATE}"
    every = rt.kube.list_jobs(ns, selector)
    jobs = [j for j in every if j["metadata"]["labels"].get(_GENERATION) == str(gen)]
    jobs.sort(key=lambda j: j["metadata"].get("creationTimestamp") or "")
    latest = jobs[-1] if jobs else None
    for old in every:  # only the newest check of the current spec is kept
        if old is not latest:
            rt.kube.delete_job(ns, old["metadata"]["name"])
    current = now()
    if latest is not None:
        outcome = rt.kube.outcome_of(ns, latest, latest["metadata"]["name"])
        if outcome.state in ("Pending", "Running"):
            # a check that waits for a node says so, but does not make the location
            # unavailable: that would stop the runs writing to it
            checked = find_condition(status.conditions, AVAILABLE)
            if outcome.waiting and not outcome.waiting_may_pass:
                _set(rt, body, status, "False", "PodNotStarting", outcome.waiting)
            elif checked is None or checked.status == "Unknown":
                why = f": {outcome.waiting}" if outcome.waiting else ""
                _set(
                    rt, body, status, "Unknown", "Validating", f"the location is being checked{why}"
                )
            return
        finished = parse_time(outcome.completion_time) or current
        if status.last_validation_time is None or finished > status.last_validation_time:
            status.last_validation_time = finished
            doc = outcome.read(RepositoryInitSummary)
            # the repository the check was told to find again (a label of its Job)
            known = latest["metadata"]["labels"].get(_KNOWN)
            found = doc.repository or ""
            ok = outcome.state == "Succeeded" and doc.ok
            if ok and known and found[:32] != known:
                _set(rt, body, status, "False", "RepositoryChanged", _changed(known, found))
            elif ok:
                _record_summary(status, location, doc)
                if status.bytes_stored is not None:
                    metrics.BYTES_STORED.labels(ns, name).set(status.bytes_stored)
                if status.snapshot_count is not None:
                    metrics.LOCATION_SNAPSHOTS.labels(ns, name).set(status.snapshot_count)
                if status.oldest_lock_age_seconds is not None:
                    metrics.OLDEST_LOCK_AGE.labels(ns, name).set(status.oldest_lock_age_seconds)
                metrics.LOCATION_LAST_VALIDATION.labels(ns, name).set(finished.timestamp())
                _set(rt, body, status, "True", *_found(location, doc))
            else:
                err = outcome.error
                reason = err.reason if err else "ValidationFailed"
                message = (err.message if err else "the check failed") + (
                    _gone(known)
                    if known and reason == "RepositoryNotFound"
                    else " (fix the BackupLocation or its Secrets; the check is repeated on "
                    "every change and every validationInterval)"
                )
                _set(rt, body, status, "False", reason, message)
            return
    interval = parse_duration(location.spec.validation_interval)
    last = status.last_validation_time
    if (
        latest is not None
        and status.observed_generation == gen
        and last is not None
        and current - last < interval
        and not (
            current - last >= REFRESH_GAP
            and backed_up_since(rt.kube.list_cr("backupruns", ns), name, last)
        )
    ):
        return
    known = status.repository_id if status.observed_generation == gen else None
    stamp = str(int(current.timestamp()))
    rt.kube.create_job(build_job(_request(rt, body, location, stamp, known=known)))
    if find_condition(status.conditions, AVAILABLE) is None:
        _set(rt, body, status, "Unknown", "Validating", "the location is being checked")
