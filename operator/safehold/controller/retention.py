"""A BackupPolicy's ``retention``: after each successful run, one Job forgets the policy's
snapshots the rules do not keep and prunes the data they used.

The operator decides nothing about snapshots itself (it never opens the repository): the
Job runs ``safehold forget --source-prefix <namespace>/<policy>/ <rules> --prune
--lock-wait S``, so the rules apply per source to every source of the policy (a database
source's ``<namespace>/<policy>/<source>/<db>`` included) and to nothing of another
policy sharing the repository. Its JSON summary comes back through the termination
message and goes into ``status.lastRetention``.

State lives in the policy's status, so a restart loses nothing: ``lastRetention.run``
names the successful BackupRun the last retention was started for, and a new one starts
only for a newer successful run, when no run of the policy is active (a backup holds the
repository's shared lock, which forget's exclusive lock must wait for) and no retention
Job of the policy is running. The Job's name is derived from the policy and the run, so
a Job created just before a restart is found again (409) instead of made twice.

A retention that fails (the repository stayed locked for the whole ``--lock-wait``, a
wrong password, a deadline) is recorded with its reason, posts a Warning Event, and is
tried again after the next successful run. It never changes the BackupRun.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from safehold.api import BackupLocation, BackupPolicy
from safehold.api.backuppolicy import (
    BackupPolicyStatus,
    ReplicationTarget,
    Retention,
    RetentionResult,
    SiteReplication,
)
from safehold.api.summaries import ForgetSummary, PruneSummary
from safehold.controller import commands, metrics
from safehold.controller.common import load_location, now, parse_time, running_jobs
from safehold.controller.jobs import (
    COMPONENT_REPLICATE,
    COMPONENT_RETENTION,
    LABEL_COMPONENT,
    LABEL_LOCATION,
    LABEL_POLICY,
    LABEL_RUN,
    LABEL_SITE,
    JobRequest,
    build_job,
    job_name,
    label_value,
    with_settings,
)
from safehold.controller.kube import ApiException
from safehold.controller.repository import with_repository
from safehold.controller.runtime import Runtime
from safehold.controller.sources import policy_prefix
from safehold.controller.status import JobOutcome

__all__ = [
    "active_retention_job",
    "follow_site_retention",
    "newest_success",
    "reconcile_retention",
    "record_retention",
    "retention_args",
    "retention_request",
    "retention_result",
    "start_site_retention",
]


def retention_args(retention: Retention, *, time_zone: str, prefix: str) -> list[str]:
    """The ``safehold forget`` arguments of ``retention`` for the sources under ``prefix``."""
    keep = commands.KeepRules(
        last=retention.keep_last or 0,
        hourly=retention.keep_hourly or 0,
        daily=retention.keep_daily or 0,
        weekly=retention.keep_weekly or 0,
        monthly=retention.keep_monthly or 0,
        yearly=retention.keep_yearly or 0,
        within=retention.keep_within,
        tags=retention.keep_tags,
    )
    return commands.forget(prefix, keep, time_zone=time_zone)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def retention_result(base: RetentionResult, outcome: JobOutcome) -> RetentionResult:
    """``base`` (run, job, start) with what the retention Job reported, once it ended."""
    result = base.model_copy(deep=True)
    if outcome.state in ("Pending", "Running"):
        result.result = "Running"
        result.message = (
            f"the Job's pod does not start: {outcome.waiting}"
            if outcome.waiting
            else "forgetting and pruning"
        )[:4096]
        return result
    result.completion_time = parse_time(outcome.completion_time) or now()
    doc = outcome.read(ForgetSummary)
    prune = doc.prune or PruneSummary()
    result.snapshots_kept = doc.keep
    result.snapshots_forgotten = doc.removed
    result.snapshots_locked = doc.locked
    result.bytes_freed = prune.bytes_freed
    if outcome.succeeded:
        result.result = "Succeeded"
        result.reason = None
        kept, gone = result.snapshots_kept, result.snapshots_forgotten
        parts = [
            f"kept {'?' if kept is None else kept} and forgot {'?' if gone is None else gone}"
            " snapshot(s)"
        ]
        if result.bytes_freed is not None:
            parts.append(f"prune freed {_size(result.bytes_freed)}")
        if result.snapshots_locked:
            parts.append(
                f"{result.snapshots_locked} snapshot(s) stay under their object lock until it "
                "expires"
            )
        if prune.deferred:
            parts.append(prune.deferred)
        result.message = "; ".join(parts)[:4096]
        return result
    result.result = "Failed"
    error = outcome.error
    result.reason = (error.reason if error else "Error")[:128]
    message = error.message if error else "the retention Job failed"
    result.message = (
        f"{message} (tried again after the next successful run; the BackupRun is not affected)"
    )[:4096]
    return result


def newest_success(runs: Sequence[Mapping[str, Any]]) -> str | None:
    dated = []
    for r in runs:
        status = r.get("status") or {}
        when = parse_time(status.get("completionTime"))
        if status.get("phase") == "Succeeded" and when is not None:
            dated.append((when, r["metadata"]["name"]))
    return max(dated)[1] if dated else None


def retention_request(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    location: BackupLocation,
    rules: Retention,
    *,
    name: str,
    run: str,
    site: bool = False,
) -> JobRequest:
    """The Job that applies ``rules`` to the policy's snapshots at ``location``: the
    primary after a run, or (``site``) a recovery site after a replication, whose Jobs
    also lock what they write for the site's ``immutabilityDays``."""
    ns = policy.metadata.namespace or ""
    pname = policy.metadata.name or ""
    schedule = policy.spec.schedule
    zone = rules.time_zone or (schedule.time_zone if schedule else "UTC")
    args = retention_args(rules, time_zone=zone, prefix=policy_prefix(ns, pname))
    args += commands.prune_options(rt.retention_lock_wait)
    lname = location.metadata.name or ""
    labels = {LABEL_POLICY: pname, LABEL_RUN: run, LABEL_LOCATION: lname}
    if site:
        labels[LABEL_SITE] = lname
    request = JobRequest(
        name=name,
        namespace=ns,
        component=COMPONENT_RETENTION,
        args=args,
        labels=labels,
        owner=body,
        image=rt.image,
    )
    request = with_repository(request, location, site_locks=site)
    request = with_settings(request, rt.job_settings(policy.spec.job))
    # A failed retention is tried again after the next successful run, not by the Job:
    # a second pod would only wait for the same lock again.
    return replace(request, backoff_limit=0)


def _request(
    rt: Runtime, body: Mapping[str, Any], policy: BackupPolicy, location: BackupLocation, run: str
) -> JobRequest:
    assert policy.spec.retention is not None
    name = job_name(policy.metadata.name or "", "retention", run)
    return retention_request(rt, body, policy, location, policy.spec.retention, name=name, run=run)


def _running_jobs(rt: Runtime, ns: str, selector: str) -> list[str]:
    return running_jobs(rt.kube, ns, f"{selector},{LABEL_COMPONENT}={COMPONENT_RETENTION}")


def active_retention_job(rt: Runtime, namespace: str, location: str) -> str | None:
    """A retention Job still running on ``location`` (by its label), or None.

    Its forget and prune hold the repository's exclusive lock, which a backup's shared
    lock cannot join: a BackupRun of that location waits for it instead of failing."""
    running = _running_jobs(rt, namespace, f"{LABEL_LOCATION}={label_value(location)}")
    return running[0] if running else None


def _start(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    location: BackupLocation,
    result: RetentionResult,
) -> RetentionResult:
    try:
        rt.kube.create_job(build_job(_request(rt, body, policy, location, result.run)))
    except ApiException as exc:
        result.result = "Failed"
        result.reason = "JobNotCreated"
        result.completion_time = now()
        result.message = f"the retention Job could not be created: {exc.reason}"[:4096]
    return result


def record_retention(rt: Runtime, body: Mapping[str, Any], result: RetentionResult) -> None:
    """An Event and the metrics for a retention that just ended (nothing while it runs)."""
    if result.result in ("Failed", "Succeeded"):
        meta = body.get("metadata", {})
        labels = (meta.get("namespace", ""), meta.get("name", ""))
        metrics.RETENTIONS.labels(*labels, result.result).inc()
        metrics.RETENTION_FORGOTTEN.labels(*labels).inc(result.snapshots_forgotten or 0)
        metrics.RETENTION_BYTES_FREED.labels(*labels).inc(result.bytes_freed or 0)
    if result.result == "Failed":
        rt.kube.event(body, "RetentionFailed", f"{result.reason}: {result.message}", warning=True)
    elif result.result == "Succeeded":
        rt.kube.event(body, "RetentionApplied", result.message)


def reconcile_retention(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    status: BackupPolicyStatus,
    runs: Sequence[Mapping[str, Any]],
    active: Sequence[Mapping[str, Any]],
) -> None:
    """Follow the running retention Job into ``status.lastRetention``, or start one after a
    newer successful run. The caller writes the status."""
    ns = policy.metadata.namespace or ""
    pname = policy.metadata.name or ""
    last = status.last_retention
    if last is not None and last.result == "Running" and last.job:
        job = rt.kube.get_job(ns, last.job)
        if job is None:
            # created-and-lost (a restart between recording and creating) or deleted
            # while it ran: start it again under the same name
            location = load_location(rt.kube, ns, policy.spec.location.name)
            if policy.spec.retention is None or location is None:
                last.result = "Failed"
                last.reason = "JobDeleted"
                last.completion_time = now()
                last.message = f"Job {last.job} is gone and the retention cannot start again"
                record_retention(rt, body, last)
                return
            status.last_retention = _start(rt, body, policy, location, last)
            record_retention(rt, body, status.last_retention)
            return
        outcome = rt.kube.outcome_of(ns, job, last.job)
        status.last_retention = retention_result(last, outcome)
        record_retention(rt, body, status.last_retention)
        return
    if policy.spec.retention is None or active:
        return
    # the stored name too: a history limit of 0 deletes a run in the pass it succeeded
    newest = newest_success(runs) or status.last_successful_run
    if newest is None or (last is not None and last.run == newest):
        return
    if _running_jobs(rt, ns, f"{LABEL_POLICY}={label_value(pname)}"):
        return  # one retention Job per policy: a restart lost its record; wait for it
    replicating = f"{LABEL_POLICY}={label_value(pname)},{LABEL_COMPONENT}={COMPONENT_REPLICATE}"
    if running_jobs(rt.kube, ns, replicating):
        return  # a replication holds the primary's shared lock: forget would only wait
    location = load_location(rt.kube, ns, policy.spec.location.name)
    if location is None:
        return
    result = RetentionResult(
        run=newest,
        job=job_name(pname, "retention", newest),
        result="Running",
        start_time=now(),
        message="forgetting and pruning",
    )
    status.last_retention = _start(rt, body, policy, location, result)
    record_retention(rt, body, status.last_retention)


# ------------------------------------------------ at a recovery site, after a copy


def _site_rules(policy: BackupPolicy, target: ReplicationTarget) -> Retention | None:
    return target.retention or policy.spec.retention


def start_site_retention(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    site: BackupLocation,
    target: ReplicationTarget,
    state: SiteReplication,
) -> None:
    rules = _site_rules(policy, target)
    if rules is None:
        state.retention = None
        return
    name = job_name(policy.metadata.name or "", "retention", state.location, state.run)
    state.retention = RetentionResult(
        run=state.run,
        job=name,
        result="Running",
        start_time=now(),
        message="forgetting and pruning",
    )
    request = retention_request(rt, body, policy, site, rules, name=name, run=state.run, site=True)
    try:
        rt.kube.create_job(build_job(request))
    except ApiException as exc:
        state.retention.result = "Failed"
        state.retention.reason = "JobNotCreated"
        state.retention.completion_time = now()
        state.retention.message = f"the site's retention Job could not be created: {exc.reason}"


def follow_site_retention(
    rt: Runtime, body: Mapping[str, Any], ns: str, state: SiteReplication
) -> bool:
    """Follow the site's running retention Job; True while it runs."""
    last = state.retention
    if last is None or last.result != "Running" or not last.job:
        return False
    job = rt.kube.get_job(ns, last.job)
    if job is None:
        last.result = "Failed"
        last.reason = "JobDeleted"
        last.completion_time = now()
        last.message = f"Job {last.job} is gone; the site's retention runs after the next copy"
    else:
        state.retention = retention_result(last, rt.kube.outcome_of(ns, job, last.job))
    done = state.retention
    assert done is not None
    if done.result == "Running":
        return True
    if done.result == "Failed":
        rt.kube.event(
            body,
            "SiteRetentionFailed",
            f"retention at recovery site {state.location}: {done.reason}: {done.message}",
            warning=True,
        )
    else:
        rt.kube.event(
            body,
            "SiteRetentionApplied",
            f"retention at recovery site {state.location}: {done.message}",
        )
    return False
