"""A WAL archive's copies to the policy's recovery sites: after each archive of a
``pointInTime`` source (walarchive.py), one Job per ``replicateTo`` site runs ``safehold
replicate --source NAMESPACE/POLICY/SOURCE/pg/wal --only-newer`` into that site, so that a
disaster that takes the primary loses minutes of transactions, not the time since the last
run's replication (replication.py), which copies the base backups.

Per site, ``status.walArchive[].sites[]`` keeps the running or last copy and
``replicatedUntil``: every transaction committed by then is archived at the site. The metric
``safehold_wal_replicated_until_timestamp_seconds`` follows it and the alert
SafeholdWalReplicationLagging fires when it falls behind.

A copy starts when the archive has reached further than the last copy carried, one per site
at a time; a failed one is tried again after the next archive (the site then gets both
archives' WAL at once). No copy starts before a run's replication has reached the site (it
creates the site's repository with the primary's keys, and brings the base backups without
which WAL restores nothing), nor while the site's check says it is unavailable, nor while
a retention Job holds the site's or the primary's exclusive lock. A Job that succeeded is
deleted once its outcome is in the status, as the archive's are.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime
from typing import Any

from safehold.api import BackupLocation, BackupPolicy
from safehold.api.backuppolicy import BackupPolicyStatus, WalArchiveState, WalSiteCopy
from safehold.api.summaries import ReplicateSummary
from safehold.controller import commands, metrics
from safehold.controller.common import load_location, now, parse_time
from safehold.controller.identity import account_problem
from safehold.controller.jobs import build_job, job_name
from safehold.controller.kube import ApiException
from safehold.controller.replication import (
    copy_failure,
    site_available,
    site_hint,
    site_problem,
    site_request,
)
from safehold.controller.retention import active_retention_job
from safehold.controller.runtime import Runtime
from safehold.controller.status import JobOutcome

__all__ = ["COMPONENT_WAL_COPY", "finish", "forget_gauges", "reconcile_sites"]

COMPONENT_WAL_COPY = "wal-copy"


def _labels(body: Mapping[str, Any], source: str, site: str) -> tuple[str, str, str, str]:
    meta = body.get("metadata", {})
    return (meta.get("namespace", ""), meta.get("name", ""), source, site)


def forget_gauges(body: Mapping[str, Any], source: str, sites: list[str]) -> None:
    """Remove the gauges of ``source``'s copies to ``sites`` (no longer replicated), so that
    SafeholdWalReplicationLagging cannot fire for them."""
    for site in sites:
        with suppress(KeyError):
            metrics.WAL_REPLICATED_UNTIL.remove(*_labels(body, source, site))


def _gauge(body: Mapping[str, Any], source: str, copy: WalSiteCopy) -> None:
    if copy.copying_until is None and copy.replicated_until is None:
        return  # no copy tried yet: the site awaits a run's replication (its own alert)
    # 0 until a copy succeeds: a site that never gets the WAL is as far behind as can be
    until = copy.replicated_until.timestamp() if copy.replicated_until else 0.0
    metrics.WAL_REPLICATED_UNTIL.labels(*_labels(body, source, copy.location)).set(until)


def finish(copy: WalSiteCopy, outcome: JobOutcome) -> bool:
    """An ended copy Job's outcome into ``copy``, from its ``ReplicateSummary``; whether the
    site now holds the WAL up to ``copyingUntil``."""
    doc = outcome.read(ReplicateSummary)
    if outcome.succeeded and doc.ok:
        copy.result = "Succeeded"
        copy.reason = None
        copy.replicated_until = copy.copying_until or copy.replicated_until
        copy.last_success_time = parse_time(outcome.completion_time) or now()
        until = copy.replicated_until.isoformat() if copy.replicated_until else "?"
        copy.message = (
            f"copied {doc.snapshots_copied or 0} WAL snapshot(s), {doc.total.copied_bytes} "
            f"bytes: restores from {copy.location} reach {until}"
        )
        return True
    reason, cause = copy_failure(outcome, doc)
    copy.result = "Failed"
    copy.reason = reason[:128]
    copy.message = (
        f"copying the WAL to {copy.location} failed: {cause}{site_hint(reason, copy.location)}"
        " (tried again after the next archive)"
    )[:4096]
    return False


def _follow(rt: Runtime, body: Mapping[str, Any], source: str, copy: WalSiteCopy) -> bool:
    """Follow ``copy``'s running Job; True while it runs."""
    if copy.result != "Running" or not copy.job:
        return False
    ns = body["metadata"]["namespace"]
    job = rt.kube.get_job(ns, copy.job)
    if job is None:
        copy.result, copy.reason = "Failed", "JobDeleted"
        copy.message = f"the copy Job {copy.job} is gone (tried again after the next archive)"
        return False
    outcome = rt.kube.outcome_of(ns, job, copy.job)
    if outcome.state in ("Pending", "Running"):
        if outcome.waiting:
            copy.message = f"the copy Job waits: {outcome.waiting}"[:4096]
        return True
    if finish(copy, outcome):
        rt.kube.delete_job(ns, copy.job)
    else:
        metrics.WAL_REPLICATION_FAILURES.labels(*_labels(body, source, copy.location)).inc()
        rt.kube.event(
            body, "WalReplicationFailed", f"{source}: {copy.reason}: {copy.message}"[:1024],
            warning=True,
        )  # fmt: skip
    return False


def _wait(copy: WalSiteCopy, reason: str, message: str) -> None:
    """``copy`` cannot start yet, for a reason that passes by itself (``result`` stays the
    last copy's)."""
    copy.reason = reason
    copy.message = message[:4096]


def _free_site(
    rt: Runtime,
    policy: BackupPolicy,
    status: BackupPolicyStatus,
    primary: BackupLocation,
    copy: WalSiteCopy,
) -> BackupLocation | None:
    """The site ``copy`` may start on now, or None with why not in ``copy``."""
    ns = policy.metadata.namespace or ""
    site = load_location(rt.kube, ns, copy.location)
    problem = site_problem(f"replicateTo {copy.location}", copy.location, site, primary)
    if problem is not None:
        copy.result, copy.reason, copy.message = "Failed", problem[0], problem[1]
        return None
    assert site is not None  # site_problem names a missing one
    availability, why = site_available(site)
    if availability != "True":
        _wait(copy, "SiteUnavailable", f"waits for BackupLocation {copy.location}: {why}")
        return None
    reached = next((r for r in status.replication if r.location == copy.location), None)
    if reached is None or reached.last_success_time is None:
        _wait(
            copy,
            "AwaitingReplication",
            f"waits for a run's replication to reach {copy.location}: it creates the site "
            "and brings the base backups the WAL is replayed onto",
        )
        return None
    for name in (copy.location, primary.metadata.name or ""):
        job = active_retention_job(rt, ns, name)
        if job is not None:
            _wait(copy, "RetentionRunning", f"waits for retention Job {job} on {name}")
            return None
    return site


def _start(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    primary: BackupLocation,
    site: BackupLocation,
    source: str,
    wal_source: str,
    copy: WalSiteCopy,
    until: datetime,
) -> None:
    # one name per archive position and site: after a restart that lost the status, the
    # Job is found again (409), and the copy after the next archive gets a name of its own
    name = job_name(policy.metadata.name or "", "walcopy", source, copy.location,
                    str(int(until.timestamp() * 1000)))  # fmt: skip
    refused = account_problem(rt.limits, policy.metadata.namespace or "", [primary, site])
    if refused:
        copy.result, copy.reason = "Failed", refused[0]
        copy.message = f"the WAL cannot be copied to {copy.location}: {refused[1]}"[:4096]
        return
    request = site_request(
        rt, body, policy, primary, site, name=name, component=COMPONENT_WAL_COPY,
        args=commands.replicate_source(wal_source), labels={},
    )  # fmt: skip
    copy.copying_until = until
    try:
        rt.kube.create_job(build_job(request))
    except ApiException as exc:
        copy.result, copy.reason = "Failed", "JobNotCreated"
        copy.message = f"the copy Job could not be created: {exc.reason}"[:4096]
        return
    copy.job = name
    copy.result = "Running"
    copy.reason = None
    copy.message = f"copying the WAL archived until {until.isoformat()} to {copy.location}"


def reconcile_sites(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    status: BackupPolicyStatus,
    primary: BackupLocation | None,
    state: WalArchiveState,
    wal_source: str,
) -> None:
    """Follow the copies of ``state``'s archive to every recovery site into
    ``state.sites``, and start one to each site the archive has run ahead of."""
    wanted = [t.name for t in policy.spec.replicate_to]
    old = {c.location: c for c in state.sites}
    forget_gauges(body, state.source, [name for name in old if name not in wanted])
    state.sites = [old.get(name) or WalSiteCopy(location=name) for name in wanted]
    for copy in state.sites:
        running = _follow(rt, body, state.source, copy)
        _gauge(body, state.source, copy)
        if running or primary is None or policy.spec.suspend:
            continue
        until = state.archived_until
        carried = copy.copying_until or copy.replicated_until
        if until is None or (carried is not None and carried >= until):
            continue  # nothing archived yet, or the site has (or was last sent) all of it
        site = _free_site(rt, policy, status, primary, copy)
        if site is None:
            continue
        _start(rt, body, policy, primary, site, state.source, wal_source, copy, until)
