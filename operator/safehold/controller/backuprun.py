"""BackupRun: one Job per volume source, results into status, once.

The first pass plans the run: it resolves the policy's sources, records one source
result per source with the name of its Job (a deterministic name, so a restarted
operator finds the same Job instead of making another), and starts the Jobs. Later
passes read each Job's outcome and, every ~10 s, its pod's progress line. When every
source is final the run gets its final phase, the ``Complete`` condition, an Event and
its metrics; a final run is never touched again.

Database sources are dumped by Jobs of their own (safehold.controller.databases); a
clusterResources source is one export Job (safehold.controller.resources).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from safehold.api import (
    AVAILABLE,
    BackupLocation,
    BackupPolicy,
    BackupRun,
    BackupRunStatus,
    ErrorDetail,
    Progress,
    SourceResult,
    find_condition,
    validate_spec,
)
from safehold.api.enums import RunPhase
from safehold.controller import metrics
from safehold.controller.common import (
    Stop,
    field_errors_message,
    not_primary_message,
    now,
    parse_time,
    write_status,
)
from safehold.controller.databases import plan_database_sources, start_database_backup
from safehold.controller.hooks import (
    finish_pod_hooks,
    job_hook_args,
    record_job_hooks,
    start_pod_hooks,
)
from safehold.controller.jobs import (
    COMPONENT_BACKUP,
    LABEL_POLICY,
    LABEL_RUN,
    LABEL_SOURCE,
    JobRequest,
    Mount,
    build_job,
    job_name,
    with_settings,
)
from safehold.controller.kube import ApiException
from safehold.controller.limits import apply_limits
from safehold.controller.progress import last_progress_event, to_progress
from safehold.controller.repository import with_repository
from safehold.controller.resources import plan_resources_source, start_resources_backup
from safehold.controller.retention import active_retention_job
from safehold.controller.runtime import Runtime
from safehold.controller.snapshotmeta import meta_args, original_claim, source_meta, volume_meta
from safehold.controller.sources import VolumeClaim, claim_node, pattern_args, resolve_volumes
from safehold.controller.status import (
    FINAL_PHASES,
    complete_conditions,
    job_outcome,
    run_phase,
    source_result,
)
from safehold.controller.volume_snapshots import SnapshotError, prepare_claim, snapshot_settings
from safehold.controller.volume_snapshots import cleanup as snapshot_cleanup

__all__ = ["PLURAL", "SCHEDULE_ANNOTATION", "SOURCE_MOUNT", "reconcile"]

log = logging.getLogger(__name__)
PLURAL = "backupruns"
#: Set by the schedule on the runs it creates: the slot the run is for.
SCHEDULE_ANNOTATION = "safehold.io/schedule-time"
#: Where the source claim is mounted (read-only) in the backup Job; the snapshot's top
#: directory is therefore ``volume``.
SOURCE_MOUNT = "/data/volume"


def _transition(
    rt: Runtime,
    body: dict[str, Any],
    status: BackupRunStatus,
    old: RunPhase | None,
    waiting: str | None = None,
) -> None:
    """Write the status; on a phase change post an Event and, once final, count metrics."""
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
    write_status(rt.kube, PLURAL, body, status)
    if phase == old:
        return
    rt.kube.event(body, phase, message, warning=phase in ("Failed", "PartiallyFailed"))
    if phase not in FINAL_PHASES:
        return
    labels = (ns, policy)
    if phase == "Succeeded":
        metrics.RUNS_SUCCEEDED.labels(*labels).inc()
        metrics.LAST_SUCCESS.labels(*labels).set((status.completion_time or now()).timestamp())
    else:
        metrics.RUNS_FAILED.labels(*labels).inc()
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
    return run, policy, location


def _plan(
    rt: Runtime, run: BackupRun, policy: BackupPolicy, claims: list[VolumeClaim]
) -> list[SourceResult]:
    ns = run.metadata.namespace or ""
    name = run.metadata.name or ""
    wanted = set(run.spec.sources)
    known = {c.source for c in claims} | {d.name for d in policy.spec.sources.databases}
    if policy.spec.sources.cluster_resources is not None:
        known.add("resources")
    unknown = sorted(wanted - known)
    if unknown:
        raise Stop(
            "SourceNotFound",
            f"spec.sources: {', '.join(unknown)} not in BackupPolicy {policy.metadata.name} "
            f"(its sources: {', '.join(sorted(known)) or 'none'}): fix the names",
        )
    out: list[SourceResult] = []
    for c in claims:
        if wanted and c.source not in wanted:
            continue
        result = SourceResult(name=c.source, kind="volume", job=job_name(name, c.source))
        if rt.kube.get_pvc(ns, c.claim) is None:
            result.phase = "Failed"
            result.job = None
            result.error = ErrorDetail(
                reason="ClaimNotFound",
                message=f"BackupPolicy {policy.metadata.name} {c.field}: PersistentVolumeClaim "
                f"{c.claim!r} does not exist in namespace {ns}: create it or fix the name",
            )
        out.append(result)
    out += plan_database_sources(policy, wanted, name)
    out += plan_resources_source(policy, wanted, name)
    apply_limits(rt.limits, policy, out)
    return out


def _start_job(
    rt: Runtime,
    body: dict[str, Any],
    run: BackupRun,
    policy: BackupPolicy,
    location: BackupLocation,
    source: SourceResult,
    claim: VolumeClaim,
) -> None:
    ns = run.metadata.namespace or ""
    pvc = rt.kube.get_pvc(ns, claim.claim)
    node = claim_node(pvc, rt.kube.list_pods(ns)) if pvc else None
    args = [
        "backup",
        SOURCE_MOUNT,
        "--source",
        f"{ns}/{policy.metadata.name}/{source.name}",
        "--type",
        run.spec.type,
        "--tag",
        f"run={run.metadata.name}",
    ]
    for tag in run.spec.tags:
        args += ["--tag", tag]
    args += pattern_args(claim)  # relative to the volume's root, SOURCE_MOUNT
    check = policy.spec.verification
    if check is not None and check.after_backup:
        args.append("--verify")  # the new snapshot's structure, in the Job (docs/verify.md)
    # The hooks run in a container of their own, without the Secrets (docs/hooks.md); the
    # backup gets the same options for their number, timeout and on-error.
    hooks = job_hook_args(policy, claim)
    args += hooks
    # what a fresh cluster needs to re-create the claim, read from the ORIGINAL claim
    # (``claim.claim`` may be a snapshot clone)
    original = original_claim(policy, claim)
    source_pvc = pvc if original == claim.claim else rt.kube.get_pvc(ns, original)
    meta = source_meta(policy.metadata.name or "", source.name)
    meta |= volume_meta(source_pvc or {"metadata": {"name": original}})
    args += meta_args(meta)
    request = JobRequest(
        name=source.job or job_name(run.metadata.name or "", source.name),
        namespace=ns,
        component=COMPONENT_BACKUP,
        args=args,
        labels={
            LABEL_RUN: run.metadata.name or "",
            LABEL_SOURCE: source.name,
            LABEL_POLICY: policy.metadata.name or "",
        },
        owner=body,
        mounts=[
            Mount(
                name="source",
                path=SOURCE_MOUNT,
                volume={"persistentVolumeClaim": {"claimName": claim.claim, "readOnly": True}},
                read_only=True,
            )
        ],
        image=rt.image,
        node_name=node,
        hooks=hooks,
        hook_mounts=["source"],
    )
    request = with_settings(with_repository(request, location), rt.job_settings(policy.spec.job))
    rt.kube.create_job(build_job(request))


def read_progress(rt: Runtime, ns: str, job: str, pod: str | None) -> Progress | None:
    """The job's latest progress, reading its pod's log at most every ``rt.progress_interval``."""
    cached = rt.progress.get(job)
    if pod is None:
        return cached
    last = rt.progress_read.get(job, 0.0)
    if time.monotonic() - last < rt.progress_interval and cached is not None:
        return cached
    rt.progress_read[job] = time.monotonic()
    try:
        tail = rt.kube.read_log(ns, pod, 20)
    except (ApiException, OSError) as exc:
        log.debug("no log of pod %s/%s: %s", ns, pod, exc)
        return cached
    event = last_progress_event(tail)
    if event is not None:
        rt.progress[job] = to_progress(event, now())
    return rt.progress.get(job)


def combine_progress(parts: list[Progress], at: datetime) -> Progress | None:
    if not parts:
        return None
    done = sum(p.bytes_done for p in parts)
    totals = [p.bytes_total for p in parts]
    total = sum(t for t in totals if t is not None) if all(t is not None for t in totals) else None
    etas = [p.eta for p in parts if p.eta is not None]
    return Progress(
        bytes_done=done,
        bytes_total=total,
        files_done=sum(p.files_done for p in parts),
        percent=max(0, min(100, int(done * 100 / total))) if total else None,
        eta=max(etas) if etas else None,
        update_time=at,
    )


def reconcile(rt: Runtime, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    ns = meta["namespace"]
    status = BackupRunStatus.model_validate(body.get("status") or {})
    if status.phase in FINAL_PHASES:
        return
    old = status.phase
    try:
        run, policy, location = _load(rt, body)
        if status.schedule_time is None:
            status.schedule_time = parse_time(meta.get("annotations", {}).get(SCHEDULE_ANNOTATION))
        claims = {c.source: c for c in resolve_volumes(rt.kube, policy)}
        if not status.sources:
            available = find_condition(
                (location.status.conditions if location.status else []), AVAILABLE
            )
            if available is None or available.status == "Unknown":
                status.phase = "Pending"
                status.location = location.metadata.name
                _transition(rt, body, status, old)
                return
            if available.status == "False":
                raise Stop(
                    "LocationUnavailable",
                    f"BackupLocation {location.metadata.name} is not available "
                    f"({available.reason}: {available.message})",
                )
            retention = active_retention_job(rt, ns, location.metadata.name or "")
            if retention is not None:
                # its forget/prune hold the exclusive lock a backup cannot join
                status.phase = "Pending"
                status.location = location.metadata.name
                waiting = (
                    f"waiting for retention Job {retention} (forget and prune) on "
                    f"BackupLocation {location.metadata.name} to finish"
                )
                _transition(rt, body, status, old, waiting)
                return
            status.sources = _plan(rt, run, policy, list(claims.values()))
            status.location = location.metadata.name
            status.start_time = now()
            metrics.RUNS_STARTED.labels(ns, policy.metadata.name or "").inc()
            status.phase = run_phase(status.sources) if status.sources else "Failed"
            if not status.sources:
                raise Stop(
                    "NoSources",
                    "no source of the policy matched: check spec.sources and the policy's "
                    "selectors",
                )
            # record the Job names before creating the Jobs (a restart finds them by name)
            write_status(rt.kube, PLURAL, body, status)
            body = {
                **body,
                "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
            }
        start_pod_hooks(rt.kube.core, policy, status, enabled=rt.exec_hooks)
        progress: list[Progress] = []
        for i, source in enumerate(status.sources):
            if source.phase not in ("Pending", "Running") or not source.job:
                continue
            job = rt.kube.get_job(ns, source.job)
            if job is None:
                if source.phase == "Running":
                    source.phase = "Failed"
                    source.error = ErrorDetail(
                        reason="JobDeleted",
                        message=f"Job {source.job} was deleted while it ran: start a new BackupRun",
                    )
                    continue
                if source.kind == "database":
                    start_database_backup(rt, body, run, policy, location, source)
                    continue
                if source.kind == "clusterResources":
                    start_resources_backup(rt, body, run, policy, location, source)
                    continue
                claim = claims.get(source.name)
                if claim is None:
                    source.phase = "Failed"
                    source.error = ErrorDetail(
                        reason="SourceNotFound",
                        message=f"source {source.name} is no longer in BackupPolicy "
                        f"{policy.metadata.name}",
                    )
                    continue
                try:
                    mounted = prepare_claim(rt, body, policy, source, claim)
                except SnapshotError as exc:
                    source.phase = "Failed"
                    source.error = ErrorDetail(reason=exc.reason, message=exc.message)
                    continue
                if mounted is None:  # the snapshot is not ready yet
                    continue
                _start_job(rt, body, run, policy, location, source, replace(claim, claim=mounted))
                continue
            outcome = job_outcome(job, rt.kube.job_pods(ns, source.job))
            status.sources[i] = source_result(source, outcome)
            record_job_hooks(status.sources[i], outcome.summary)
            if outcome.state == "Running":
                p = read_progress(rt, ns, source.job, outcome.running_pod)
                if p is not None:
                    progress.append(p)
            elif outcome.state in ("Succeeded", "Failed"):
                if source.name in claims and snapshot_settings(policy, claims[source.name]):
                    snapshot_cleanup(rt, ns, source)
                rt.progress.pop(source.job, None)
                rt.progress_read.pop(source.job, None)
        finish_pod_hooks(rt.kube.core, policy, status, enabled=rt.exec_hooks)
        status.phase = run_phase(status.sources)
        status.bytes_read = sum(s.bytes_read or 0 for s in status.sources) or None
        status.bytes_stored = sum(s.bytes_stored or 0 for s in status.sources) or None
        if status.phase in FINAL_PHASES:
            total = status.bytes_read or 0
            status.progress = (
                Progress(
                    bytes_done=total,
                    bytes_total=total,
                    files_done=sum(s.files or 0 for s in status.sources),
                    percent=100,
                    update_time=now(),
                )
                if status.phase == "Succeeded"
                else None
            )
        else:
            status.progress = combine_progress(progress, now()) or status.progress
        _transition(rt, body, status, old)
    except Stop as stop:
        _fail(rt, body, status, stop.reason, stop.message)
