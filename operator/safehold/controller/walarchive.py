"""A BackupPolicy's WAL archive: for each database source with ``pointInTime``, a Job every
``archiveInterval`` stores the server's write-ahead log up to that moment.

Each Job runs ``safehold pg-archive-wal`` (docs/databases.md) against the source's server
with its credentials Secret, into the policy's location, as snapshots of
``NAMESPACE/POLICY/SOURCE/pg/wal``; the policy's runs take the base backups
(``SOURCE/pg/base``). ``status.walArchive`` keeps, per source, the running or last Job, its
outcome and ``archivedUntil``: every transaction the server committed by then is in the
repository. The metric ``safehold_wal_archived_until_timestamp_seconds`` follows it and
the alert SafeholdWalArchiveLagging fires when it falls behind. After each archive the WAL is
copied to the policy's recovery sites (walsites.py, ``status.walArchive[].sites``).

One archive Job per source at a time: an interval that comes while the previous archive
still runs starts when it ends. A Job that succeeded is deleted once its outcome is in the
status (an archive every few minutes would leave hundreds a day); a failed one stays for
its logs until the Jobs' time to live. The archive does not start while the policy is suspended
(the server then keeps its WAL for the slot: docs/databases.md says what that costs), nor
while a retention Job holds the location's exclusive lock (it waits, as a run does); a
host the installation does not allow (``policyLimits.databaseHosts``) fails the archive
with DatabaseHostNotAllowed before any Job exists. A failed archive is tried again at the
next interval; the slot keeps the server's WAL meanwhile, so a later archive stores it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

from safehold.api import AVAILABLE, BackupLocation, BackupPolicy
from safehold.api.backuppolicy import BackupPolicyStatus, DatabaseSource, WalArchiveState
from safehold.api.conditions import find_condition
from safehold.api.summaries import WalArchiveSummary
from safehold.api.types import parse_duration
from safehold.controller import commands, metrics
from safehold.controller.common import load_location, now, parse_time
from safehold.controller.jobs import (
    LABEL_LOCATION,
    LABEL_POLICY,
    JobRequest,
    build_job,
    job_name,
)
from safehold.controller.kube import ApiException
from safehold.controller.policy_jobs import policy_job
from safehold.controller.retention import active_retention_job
from safehold.controller.runtime import Runtime
from safehold.controller.snapshotmeta import WAL_SUFFIX, source_meta
from safehold.controller.sources import source_name
from safehold.controller.sources.databases import server_connection
from safehold.controller.status import JobOutcome
from safehold.controller.walsites import forget_gauges, reconcile_sites

__all__ = ["COMPONENT_WAL", "finish", "reconcile_wal_archive", "slot_name"]

COMPONENT_WAL = "wal-archive"
#: How soon an archive that waits (for a retention Job) looks again.
_WAIT = timedelta(seconds=30)


def slot_name(namespace: str, policy: str, source: str) -> str:
    """The default replication slot of a source: ``safehold_NAMESPACE_POLICY_SOURCE`` in
    the characters PostgreSQL allows; a name over 63 characters is cut and ends with a
    hash of the whole, so that two long names stay apart."""
    whole = re.sub(r"[^a-z0-9_]", "_", f"safehold_{namespace}_{policy}_{source}".lower())
    if len(whole) <= 63:
        return whole
    return f"{whole[:54]}_{hashlib.sha256(whole.encode()).hexdigest()[:8]}"


def _sources(policy: BackupPolicy) -> list[DatabaseSource]:
    return [d for d in policy.spec.sources.databases if d.point_in_time is not None]


def _record(rt: Runtime, body: Mapping[str, Any], state: WalArchiveState) -> None:
    meta = body.get("metadata", {})
    labels = (meta.get("namespace", ""), meta.get("name", ""), state.source)
    if state.archived_until is not None:
        metrics.WAL_ARCHIVED_UNTIL.labels(*labels).set(state.archived_until.timestamp())
    if state.result == "Failed":
        metrics.WAL_ARCHIVE_FAILURES.labels(*labels).inc()
        rt.kube.event(
            body, "WalArchiveFailed", f"{state.source}: {state.reason}: {state.message}"[:1024],
            warning=True,
        )  # fmt: skip
    elif state.reason == "WalGap":
        rt.kube.event(body, "WalGap", f"{state.source}: {state.message}"[:1024], warning=True)


def _fail(state: WalArchiveState, reason: str, message: str) -> None:
    state.result = "Failed"
    state.reason = reason
    state.message = message[:4096]


def _follow(rt: Runtime, body: Mapping[str, Any], state: WalArchiveState) -> bool:
    """Follow the source's running archive Job into ``state``; True while it runs."""
    if state.result != "Running" or not state.job:
        return False
    ns = body["metadata"]["namespace"]
    job = rt.kube.get_job(ns, state.job)
    if job is None:
        _fail(state, "JobDeleted", f"the archive Job {state.job} is gone")
        _record(rt, body, state)
        return False
    outcome = rt.kube.outcome_of(ns, job, state.job)
    if outcome.state in ("Pending", "Running"):
        if outcome.waiting:
            state.message = f"the archive Job waits: {outcome.waiting}"[:4096]
        return True
    stored = finish(state, outcome)
    _record(rt, body, state)
    if stored:
        # one archive every few minutes would leave hundreds of ended Jobs a day; a failed
        # one stays for its logs until the Jobs' TTL
        rt.kube.delete_job(ns, state.job)
    return False


def finish(state: WalArchiveState, outcome: JobOutcome) -> bool:
    """An ended archive Job's outcome into ``state``, from its ``WalArchiveSummary``;
    whether the archive stored the WAL."""
    doc = outcome.read(WalArchiveSummary)
    if doc.ok and doc.snapshot:
        state.result = "Succeeded"
        state.archived_until = parse_time(doc.archived_until) or state.archived_until
        state.timeline = doc.timeline or state.timeline
        state.last_success_time = parse_time(outcome.completion_time) or now()
        state.reason = "WalGap" if doc.gap else None
        state.message = (
            doc.gap
            or f"archived up to {doc.end_lsn} (snapshot {doc.snapshot[:12]}): restores can "
            f"reach {doc.archived_until}"
        )[:4096]
        return True
    error = outcome.error
    _fail(
        state,
        error.reason if error else "Error",
        (error.message if error else None) or doc.error or "the archive Job failed",
    )
    return False


def _blocked(rt: Runtime, ns: str, location: BackupLocation | None) -> tuple[str, str | None]:
    """Why no archive may start now: ``(reason, None)`` fails it (a missing or unavailable
    location), ``("", note)`` makes it wait (the location not checked yet, a retention Job
    holding the exclusive lock), ``("", None)``: it may start."""
    if location is None:
        return "LocationNotFound", None
    name = location.metadata.name or ""
    conditions = location.status.conditions if location.status else []
    available = find_condition(conditions, AVAILABLE)
    if available is None or available.status == "Unknown":
        return "", f"waits for BackupLocation {name} to be checked"
    if available.status == "False":
        return "LocationUnavailable", None
    job = active_retention_job(rt, ns, name)
    if job is not None:
        return "", f"waits for retention Job {job}"
    return "", None


def _request(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    location: BackupLocation,
    d: DatabaseSource,
    name: str,
) -> JobRequest:
    """The archive Job of ``d``."""
    ns = policy.metadata.namespace or ""
    pname = policy.metadata.name or ""
    assert d.point_in_time is not None
    conn, mount = server_connection(d)
    args = commands.pg_archive_wal(
        conn,
        source=source_name(ns, pname, d.name),
        host=ns,  # the runs' snapshot host (RunContext.snapshot_host)
        slot=d.point_in_time.slot or slot_name(ns, pname, d.name),
        meta=source_meta(pname, d.name),
    )
    labels = {LABEL_POLICY: pname, LABEL_LOCATION: location.metadata.name or ""}
    # a failed archive is tried at the next interval: the slot keeps the WAL meanwhile
    return policy_job(
        rt, body, policy, location, name=name, component=COMPONENT_WAL, args=args,
        labels=labels, mounts=[mount],
    )  # fmt: skip


def _start(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    location: BackupLocation,
    d: DatabaseSource,
    state: WalArchiveState,
    current: datetime,
) -> None:
    pname = policy.metadata.name or ""
    why = rt.limits.database_host(d.host)
    index = next(i for i, s in enumerate(policy.spec.sources.databases) if s.name == d.name)
    if why:
        _fail(
            state,
            "DatabaseHostNotAllowed",
            f"BackupPolicy {pname} spec.sources.databases[{index}].host: {why}",
        )
        _record(rt, body, state)
        return
    name = job_name(pname, "wal", d.name, str(int(current.timestamp())))
    request = _request(rt, body, policy, location, d, name)
    state.start_time = current
    try:
        rt.kube.create_job(build_job(request))
    except ApiException as exc:
        _fail(state, "JobNotCreated", f"the archive Job could not be created: {exc.reason}")
        _record(rt, body, state)
        return
    state.job = name
    state.result = "Running"
    state.message = "archiving the WAL"


def reconcile_wal_archive(
    rt: Runtime, body: Mapping[str, Any], policy: BackupPolicy, status: BackupPolicyStatus
) -> str | None:
    """Follow each source's archive Job into ``status.walArchive`` and start the ones whose
    interval has come. Returns a note for the Ready condition (an archive that waits), or
    None. The caller writes the status."""
    sources = _sources(policy)
    old = {s.source: s for s in status.wal_archive}
    states: list[WalArchiveState] = []
    notes: list[str] = []
    current = now()
    ns = policy.metadata.namespace or ""
    lname = policy.spec.location.name
    location = load_location(rt.kube, ns, lname) if sources else None
    for d in sources:
        assert d.point_in_time is not None
        state = old.get(d.name) or WalArchiveState(source=d.name)
        states.append(state)
        labels = (ns, policy.metadata.name or "", d.name)
        interval = parse_duration(d.point_in_time.archive_interval)
        metrics.WAL_ARCHIVE_INTERVAL.labels(*labels).set(interval.total_seconds())
        if state.archived_until is not None:  # also after a restart of the operator
            metrics.WAL_ARCHIVED_UNTIL.labels(*labels).set(state.archived_until.timestamp())
        running = _follow(rt, body, state)
        wal = source_name(ns, policy.metadata.name or "", d.name) + WAL_SUFFIX
        reconcile_sites(rt, body, policy, status, location, state, wal)
        if running:
            continue
        if policy.spec.suspend:
            state.next_archive_time = None
            continue
        due = state.next_archive_time
        if due is not None and due > current:
            continue
        failure, wait = _blocked(rt, ns, location)
        if wait is not None:
            notes.append(f"the WAL archive of {d.name} {wait}")
            state.next_archive_time = current + _WAIT
            continue
        state.next_archive_time = current + interval
        if location is None or failure:
            _fail(
                state,
                failure,
                f"BackupLocation {lname} "
                + ("is not available" if location else "does not exist or is not valid")
                + ": the WAL stays on the server (its slot keeps it) until an archive stores it",
            )
            _record(rt, body, state)
            continue
        _start(rt, body, policy, location, d, state, current)
    # a source removed from the policy (or its pointInTime): a running archive is followed
    # to its end, then its gauges go, or SafeholdWalArchiveLagging would fire for it
    for name, state in old.items():
        if name in {d.name for d in sources}:
            continue
        if _follow(rt, body, state):
            states.append(state)
            continue
        for gauge in (metrics.WAL_ARCHIVED_UNTIL, metrics.WAL_ARCHIVE_INTERVAL):
            with suppress(KeyError):
                gauge.remove(ns, policy.metadata.name or "", name)
        forget_gauges(body, name, [c.location for c in state.sites])
    status.wal_archive = states
    return "; ".join(notes) or None
