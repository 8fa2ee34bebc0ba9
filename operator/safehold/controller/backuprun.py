"""BackupRun: one Job per volume source, results into status, once.

The first pass plans the run: it resolves the policy's sources, records one source
result per source with the name of its Job (a deterministic name, so a restarted
operator finds the same Job instead of making another), and starts the Jobs. Later
passes read each Job's outcome and, every ~10 s, its pod's progress line. When every
source is final the run gets its final phase, the ``Complete`` condition, an Event and
its metrics; a final run is never touched again.

Database sources are dumped by Jobs of their own (safehold.controller.sources.databases); a
clusterResources source is one export Job (safehold.controller.sources.resources).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from safehold.api import (
    AVAILABLE,
    COMPLETE,
    BackupLocation,
    BackupPolicy,
    BackupRun,
    BackupRunStatus,
    ErrorDetail,
    Progress,
    SourceResult,
    find_condition,
    set_condition,
    validate_spec,
)
from safehold.api.enums import RunPhase
from safehold.controller import admission, metrics
from safehold.controller.common import (
    Stop,
    field_errors_message,
    not_primary_message,
    now,
    parse_time,
    write_status,
)
from safehold.controller.exec_hooks import finish_pod_hooks, start_pod_hooks, undo_pod_hooks
from safehold.controller.identity import account_problem, resources_account
from safehold.controller.job_hooks import record_job_hooks
from safehold.controller.jobs import (
    COMPONENT_BACKUP,
    LABEL_POLICY,
    LABEL_RUN,
    LABEL_SOURCE,
    JobRequest,
    build_job,
    job_name,
    with_settings,
)
from safehold.controller.limits import apply_limits
from safehold.controller.progress import combine_progress, read_progress
from safehold.controller.repository import with_repository
from safehold.controller.retention import active_retention_job
from safehold.controller.runtime import Runtime
from safehold.controller.sources import BackupJob, RunContext, SourceFailed, SourceKind
from safehold.controller.sources.claims import name_conflict, resolve_volumes
from safehold.controller.sources.databases import DatabaseSources
from safehold.controller.sources.resources import ResourcesSource
from safehold.controller.sources.volumes import SOURCE_MOUNT, VolumeSources
from safehold.controller.status import (
    FINAL_PHASES,
    complete_conditions,
    run_phase,
    source_result,
)

__all__ = ["PLURAL", "SCHEDULE_ANNOTATION", "SOURCE_MOUNT", "reconcile"]

log = logging.getLogger(__name__)
PLURAL = "backupruns"
#: Set by the schedule on the runs it creates: the slot the run is for.
SCHEDULE_ANNOTATION = "safehold.io/schedule-time"


def _transition(
    rt: Runtime,
    body: dict[str, Any],
    status: BackupRunStatus,
    old: RunPhase | None,
    waiting: str | None = None,
    reason: str | None = None,
) -> None:
    """Write the status; on a phase change post an Event and, once final, count metrics.
    ``reason`` (with ``waiting``): why a run has not started, on its Complete condition."""
    meta = body["metadata"]
    ns = meta["namespace"]
    policy = body.get("spec", {}).get("policyRef", {}).get("name", "")
    phase = status.phase or "Pending"
    if phase in FINAL_PHASES and status.completion_time is None:
        status.completion_time = now()
    message = waiting or _summary(status)
    status.conditions = complete_conditions(
        status.conditions, phase, message, now=now(), generation=meta.get("generation")
    )
    if reason is not None:
        status.conditions = set_condition(
            status.conditions,
            COMPLETE,
            "False",
            reason,
            message,
            now=now(),
            observed_generation=meta.get("generation"),
        )
    write_status(rt.kube, PLURAL, body, status)
    if phase == old:
        return
    rt.kube.event(body, reason or phase, message, warning=phase in ("Failed", "PartiallyFailed"))
    if phase not in FINAL_PHASES:
        return
    labels = (ns, policy)
    metrics.record_sources(ns, policy, status.sources)
    if phase == "Succeeded":
        metrics.RUNS_SUCCEEDED.labels(*labels).inc()
        metrics.LAST_SUCCESS.labels(*labels).set((status.completion_time or now()).timestamp())
    else:
        metrics.RUNS_FAILED.labels(*labels).inc()
    if phase == "PartiallyFailed":
        metrics.RUNS_PARTIALLY_FAILED.labels(*labels).inc()
    if status.start_time and status.completion_time:
        seconds = (status.completion_time - status.start_time).total_seconds()
        metrics.RUN_DURATION.labels(*labels).observe(max(0.0, seconds))


def _summary(status: BackupRunStatus) -> str:
    phase = status.phase or "Pending"
    if phase not in FINAL_PHASES:
        if not status.sources:
            return f"waiting for BackupLocation {status.location} to be checked"
        running = sum(1 for s in status.sources if s.phase == "Running")
        return f"{running} of {len(status.sources)} source(s) running"
    parts = []
    for s in status.sources:
        if s.error:
            parts.append(f"{s.name}: {s.phase} ({s.error.reason}: {s.error.message})")
        else:
            parts.append(
                f"{s.name}: {s.phase}" + (f" {s.snapshot_id[:12]}" if s.snapshot_id else "")
            )
    return "; ".join(parts) or "no sources"


def _captured(ctx: RunContext, kinds: dict[str, SourceKind], status: BackupRunStatus) -> set[str]:
    """The active sources whose data is fixed already (a cut VolumeSnapshot), while the
    policy's post exec hooks wait to run; asked only then."""
    hooks = ctx.policy.spec.hooks
    if hooks is None or not hooks.post_backup or any(h.phase == "post" for h in status.hooks):
        return set()
    volumes = kinds.get(VolumeSources.kind)
    if not isinstance(volumes, VolumeSources):
        return set()
    active = (s for s in status.sources if s.phase in ("Pending", "Running"))
    return {s.name for s in active if s.kind == "volume" and volumes.captured(ctx, s)}


def _undo_pod_hooks(rt: Runtime, body: dict[str, Any], status: BackupRunStatus) -> str | None:
    """A run that stops after its preBackup exec hooks ran: its policy's postBackup hooks
    run now. None when they ran or there is nothing to undo; else what the user must undo
    by hand (the policy is gone or cannot be read, so its post hooks are unknown)."""
    if not any(h.phase == "pre" for h in status.hooks) or any(
        h.phase == "post" for h in status.hooks
    ):
        return None
    ns = body["metadata"]["namespace"]
    pname = (body.get("spec") or {}).get("policyRef", {}).get("name", "")
    pbody = rt.kube.get_cr("backuppolicies", ns, pname)
    if pbody is not None and not validate_spec("BackupPolicy", pbody.get("spec")):
        policy = BackupPolicy.model_validate({k: v for k, v in pbody.items() if k != "status"})
        undo_pod_hooks(rt.kube.core, policy, status, enabled=rt.exec_hooks)
        return None
    pods = sorted({h.pod for h in status.hooks if h.phase == "pre" and h.pod})
    if not pods:
        return None  # no pre hook reached a pod: nothing to undo
    return (
        f"its preBackup exec hooks ran (pods: {', '.join(pods)}) and BackupPolicy "
        f"{pname} can no longer be read, so no postBackup hook ran: undo by hand what the "
        "pre hooks did (a freeze, a lock)"
    )


def _fail(
    rt: Runtime, body: dict[str, Any], status: BackupRunStatus, reason: str, message: str
) -> None:
    old = status.phase
    status.phase = "Failed"
    status.progress = None
    for s in status.sources:
        if s.phase in ("Pending", "Running"):
            s.phase = "Failed"
            s.error = ErrorDetail(reason=reason, message=message[:4000])
    if not status.sources:
        status.sources = []
    note = _undo_pod_hooks(rt, body, status)
    if note is not None:
        message = f"{message}; {note}"
    status.conditions = complete_conditions(
        status.conditions,
        "Failed",
        message,
        now=now(),
        generation=body["metadata"].get("generation"),
    )
    # the Complete/Failed conditions carry the reason that says what to fix
    for c in status.conditions:
        c.reason = reason
        c.message = message
    meta = body["metadata"]
    status.completion_time = now()
    write_status(rt.kube, PLURAL, body, status)
    if old != "Failed":
        rt.kube.event(body, reason, message, warning=True)
        policy = body.get("spec", {}).get("policyRef", {}).get("name", "")
        metrics.RUNS_FAILED.labels(meta["namespace"], policy).inc()


def _load(rt: Runtime, body: dict[str, Any]) -> tuple[BackupRun, BackupPolicy, BackupLocation]:
    ns = body["metadata"]["namespace"]
    errors = validate_spec("BackupRun", body.get("spec"))
    if errors:
        raise Stop("InvalidSpec", field_errors_message(errors))
    run = BackupRun.model_validate({k: v for k, v in body.items() if k != "status"})
    pname = run.spec.policy_ref.name
    pbody = rt.kube.get_cr("backuppolicies", ns, pname)
    if pbody is None:
        raise Stop(
            "PolicyNotFound",
            f"spec.policyRef.name: BackupPolicy {pname!r} does not exist in namespace {ns}: "
            "create it or fix the name",
        )
    perrors = validate_spec("BackupPolicy", pbody.get("spec"))
    if perrors:
        raise Stop("InvalidPolicy", f"BackupPolicy {pname}: {field_errors_message(perrors)}")
    policy = BackupPolicy.model_validate({k: v for k, v in pbody.items() if k != "status"})
    lname = policy.spec.location.name
    lbody = rt.kube.get_cr("backuplocations", ns, lname)
    if lbody is None:
        raise Stop(
            "LocationNotFound",
            f"BackupPolicy {pname} spec.location.name: BackupLocation {lname!r} does not "
            f"exist in namespace {ns}: create it or fix the name",
        )
    lerrors = validate_spec("BackupLocation", lbody.get("spec"))
    if lerrors:
        raise Stop("InvalidLocation", f"BackupLocation {lname}: {field_errors_message(lerrors)}")
    location = BackupLocation.model_validate(lbody)
    if location.spec.role != "primary":
        raise Stop(
            "LocationNotPrimary",
            f"BackupPolicy {pname} {not_primary_message(lname, location.spec.role)}",
        )
    refused = account_problem(rt.limits, ns, [location])
    if refused:
        raise Stop(*refused)
    return run, policy, location


def _kinds(ctx: RunContext) -> dict[str, SourceKind]:
    """Every source kind, by the ``kind`` of its results (volumes resolved as of now)."""
    kinds: list[SourceKind] = [
        VolumeSources(resolve_volumes(ctx.rt.kube, ctx.policy)),
        DatabaseSources(),
        ResourcesSource(),
    ]
    return {k.kind: k for k in kinds}


def _plan(ctx: RunContext, kinds: dict[str, SourceKind]) -> list[SourceResult]:
    """One result per source the run backs up; a name in spec.sources the policy does not
    have stops the run."""
    wanted = set(ctx.run.spec.sources)
    known = set().union(*(k.names(ctx) for k in kinds.values()))
    unknown = sorted(wanted - known)
    if unknown:
        raise Stop(
            "SourceNotFound",
            f"spec.sources: {', '.join(unknown)} not in BackupPolicy {ctx.policy_name} "
            f"(its sources: {', '.join(sorted(known)) or 'none'}): fix the names",
        )
    volumes = kinds.get(VolumeSources.kind)
    if isinstance(volumes, VolumeSources):
        conflict = name_conflict(ctx.policy, volumes.listed)
        if conflict is not None:
            raise Stop("SourceNameConflict", conflict)
    out = [result for kind in kinds.values() for result in kind.plan(ctx, wanted)]
    apply_limits(ctx.rt.limits, ctx.policy, out, ctx.rt.job_settings(ctx.policy.spec.job))
    own = resources_account(ctx.policy)
    refused = own and account_problem(ctx.rt.limits, ctx.namespace, [ctx.location], own)
    for result in out:
        if refused and result.kind == "clusterResources" and result.phase == "Pending":
            result.phase, result.job = "Failed", None
            result.error = ErrorDetail(reason=refused[0], message=refused[1])
    return out


def _create_backup_job(ctx: RunContext, source: SourceResult, job: BackupJob) -> None:
    """Every backup Job, whatever its source kind: name, labels, owner, repository and the
    policy's ``spec.job`` over the chart's ``jobDefaults``."""
    request = JobRequest(
        name=source.job or job_name(ctx.run_name, source.name),
        namespace=ctx.namespace,
        component=COMPONENT_BACKUP,
        args=job.args,
        labels={
            LABEL_RUN: ctx.run_name,
            LABEL_SOURCE: source.name,
            LABEL_POLICY: ctx.policy_name,
        },
        owner=ctx.body,
        mounts=job.mounts,
        image=ctx.rt.image,
        node_name=job.node_name,
        hooks=job.hooks,
        hook_mounts=job.hook_mounts,
        service_account_name=job.service_account_name,
        file_access=job.file_access,
    )
    if job.active_deadline_seconds is not None:
        request = replace(request, active_deadline_seconds=job.active_deadline_seconds)
    if job.backoff_limit is not None:
        request = replace(request, backoff_limit=job.backoff_limit)
    request = with_repository(request, ctx.location)
    request = with_settings(request, ctx.rt.job_settings(ctx.policy.spec.job))
    ctx.rt.kube.create_job(build_job(request))


def _waiting(rt: Runtime, ns: str, location: BackupLocation) -> str | None:
    """Why the run cannot start yet (the location not checked, a retention Job holding
    the repository's exclusive lock), or None; an unavailable location stops it."""
    name = location.metadata.name or ""
    available = find_condition((location.status.conditions if location.status else []), AVAILABLE)
    if available is None or available.status == "Unknown":
        return f"waiting for BackupLocation {name} to be checked"
    if available.status == "False":
        raise Stop(
            "LocationUnavailable",
            f"BackupLocation {name} is not available ({available.reason}: {available.message})",
        )
    retention = active_retention_job(rt, ns, name)
    if retention is not None:
        # its forget/prune hold the exclusive lock a backup cannot join
        return (
            f"waiting for retention Job {retention} (forget and prune) on "
            f"BackupLocation {name} to finish"
        )
    return None


def _start_run(
    ctx: RunContext, kinds: dict[str, SourceKind], status: BackupRunStatus
) -> dict[str, Any]:
    """Plan the run and record its sources with their Jobs' names before any Job exists
    (a restarted operator finds them by name); the body with that status."""
    status.sources = _plan(ctx, kinds)
    status.location = ctx.location.metadata.name
    status.start_time = now()
    metrics.RUNS_STARTED.labels(ctx.namespace, ctx.policy_name).inc()
    status.phase = run_phase(status.sources) if status.sources else "Failed"
    if not status.sources:
        raise Stop(
            "NoSources",
            "no source of the policy matched: check spec.sources and the policy's selectors",
        )
    # out of the queue (or never in it): the Complete condition no longer says Queued
    status.conditions = complete_conditions(
        status.conditions,
        status.phase,
        _summary(status),
        now=now(),
        generation=ctx.body["metadata"].get("generation"),
    )
    write_status(ctx.rt.kube, PLURAL, ctx.body, status)
    status_doc = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {**ctx.body, "status": status_doc}


def _start_source(ctx: RunContext, kind: SourceKind | None, source: SourceResult) -> None:
    """Create the Job of a Pending source (unless its kind is not ready yet)."""
    try:
        if kind is None:
            raise ctx.gone(source.name)
        job = kind.backup_job(ctx, source)
    except SourceFailed as failed:
        source.phase = "Failed"
        source.error = failed.detail
        return
    if job is not None:
        _create_backup_job(ctx, source, job)


def _advance(
    ctx: RunContext, kinds: dict[str, SourceKind], status: BackupRunStatus, i: int
) -> Progress | None:
    """Start source ``i``'s Job, or read its outcome into the status; its progress."""
    rt, ns, source = ctx.rt, ctx.namespace, status.sources[i]
    if source.phase not in ("Pending", "Running") or not source.job:
        return None
    job = rt.kube.get_job(ns, source.job)
    if job is None:
        if source.phase == "Running":
            source.phase = "Failed"
            source.error = ErrorDetail(
                reason="JobDeleted",
                message=f"Job {source.job} was deleted while it ran: start a new BackupRun",
            )
        else:
            _start_source(ctx, kinds.get(source.kind), source)
        return None
    outcome = rt.kube.outcome_of(ns, job, source.job)
    status.sources[i] = source_result(source, outcome)
    record_job_hooks(status.sources[i], outcome.summary)
    if outcome.state == "Running":
        return read_progress(rt, ns, source.job, outcome.running_pod)
    if outcome.state in ("Succeeded", "Failed"):
        kind = kinds.get(source.kind)
        if kind is not None:
            kind.finished(ctx, source)
        rt.progress.pop(source.job, None)
        rt.progress_read.pop(source.job, None)
    return None


def _totals(status: BackupRunStatus, progress: list[Progress]) -> None:
    """The run's phase, bytes and progress from its sources."""
    status.phase = run_phase(status.sources)
    status.bytes_read = sum(s.bytes_read or 0 for s in status.sources) or None
    status.bytes_stored = sum(s.bytes_stored or 0 for s in status.sources) or None
    if status.phase not in FINAL_PHASES:
        status.progress = combine_progress(progress, now()) or status.progress
    elif status.phase == "Succeeded":
        total = status.bytes_read or 0
        status.progress = Progress(
            bytes_done=total,
            bytes_total=total,
            files_done=sum(s.files or 0 for s in status.sources),
            percent=100,
            update_time=now(),
        )
    else:
        status.progress = None


def reconcile(rt: Runtime, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    status = BackupRunStatus.model_validate(body.get("status") or {})
    if status.phase in FINAL_PHASES:
        return
    old = status.phase
    try:
        run, policy, location = _load(rt, body)
        if status.schedule_time is None:
            status.schedule_time = parse_time(meta.get("annotations", {}).get(SCHEDULE_ANNOTATION))
        ctx = RunContext(rt, body, run, policy, location)
        kinds = _kinds(ctx)
        if not status.sources:
            waiting = _waiting(rt, ctx.namespace, location)
            queue = admission.queued(rt, body, policy, status) if waiting is None else None
            if waiting is not None or queue is not None:
                status.phase = "Pending"
                status.location = location.metadata.name
                _transition(rt, body, status, old, waiting or queue, queue and admission.QUEUED)
                return
            body = _start_run(ctx, kinds, status)
            ctx = RunContext(rt, body, run, policy, location)
        start_pod_hooks(rt.kube.core, policy, status, enabled=rt.exec_hooks)
        advanced = (_advance(ctx, kinds, status, i) for i in range(len(status.sources)))
        progress = [p for p in advanced if p is not None]
        finish_pod_hooks(
            rt.kube.core,
            policy,
            status,
            enabled=rt.exec_hooks,
            captured=_captured(ctx, kinds, status),
        )
        _totals(status, progress)
        _transition(rt, body, status, old)
    except Stop as stop:
        _fail(rt, body, status, stop.reason, stop.message)
