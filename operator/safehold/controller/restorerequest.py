"""RestoreRequest: bring a backup's sources back (claims, databases, manifests), one Job each.

The backup (a BackupRun, or a policy's newest successful run at or before
``pointInTime``) is resolved first; when ``policyRef`` matches no BackupRun (a fresh
cluster), a resolve Job lists the policy's newest snapshots in the repository and its
result is recorded in ``status.resolvedSnapshots`` before anything is planned
(safehold.controller.restoresources). Every Job follows the policy's ``spec.job`` over
the chart's ``jobDefaults``. Each volume source goes into the claim of the same name, or
``spec.target.claimName``, in the request's namespace, ``spec.target.namespace`` or the
``namespaceMapping``'s. A missing claim is created (``spec.target``, else the original
claim's or the snapshot's recorded size, class, access modes: safehold.controller.
restoreplan, which also checks the target namespaces' grants). The rule
for a claim that already exists (``existingResourcePolicy``): ``Skip`` leaves it
untouched and records the source as Skipped; ``Overwrite`` restores into it (files in
the backup are rewritten unless already identical; other files are left alone); ``Fail``
fails the request before anything is written. The Job mounts the claim at
``/restore/volume`` under an ``emptyDir`` at ``/restore`` and runs ``safehold restore
SNAPSHOT /restore``, so the snapshot's top directory ``volume`` lands on the claim's
root.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from safehold.api import (
    BackupLocation,
    BackupPolicy,
    ErrorDetail,
    Progress,
    RestoredItem,
    RestoreRequest,
    RestoreRequestStatus,
    validate_spec,
)
from safehold.api.enums import RunPhase
from safehold.api.summaries import RestoreSummary
from safehold.controller import commands, metrics
from safehold.controller.common import Stop, field_errors_message, now, write_status
from safehold.controller.grants import Denial
from safehold.controller.identity import account_problem
from safehold.controller.jobs import (
    JobRequest,
    Mount,
    build_job,
    with_settings,
)
from safehold.controller.progress import combine_progress, read_progress
from safehold.controller.restoreplan import CLAIM_TARGET, plan_restore, restore_denial
from safehold.controller.restoresources import Origin, Wait, find_origin, policy_name
from safehold.controller.runtime import Runtime
from safehold.controller.sources import restore_job, source_name
from safehold.controller.sources.databases import MissingSource, database_restore_job
from safehold.controller.sources.resources import resources_restore_job
from safehold.controller.status import FINAL_PHASES, complete_conditions

__all__ = ["PLURAL", "RESTORE_ROOT", "reconcile", "volume_pattern"]

log = logging.getLogger(__name__)
PLURAL = "restorerequests"
RESTORE_ROOT = "/restore"


def _write(
    rt: Runtime,
    body: dict[str, Any],
    status: RestoreRequestStatus,
    old: RunPhase | None,
    message: str,
    reason: str | None = None,
) -> None:
    meta = body["metadata"]
    phase = status.phase or "Pending"
    final = phase in FINAL_PHASES
    if final and status.completion_time is None:
        status.completion_time = now()
    status.observed_generation = meta.get("generation")
    status.conditions = complete_conditions(
        status.conditions, phase, message, now=now(), generation=meta.get("generation")
    )
    if reason:
        for c in status.conditions:
            if c.status == "True":
                c.reason = reason
                c.message = message
    write_status(rt.kube, PLURAL, body, status)
    if phase != old:
        rt.kube.event(
            body, reason or phase, message, warning=phase in ("Failed", "PartiallyFailed")
        )
        _count(meta["namespace"], status, old, phase)


def _count(ns: str, status: RestoreRequestStatus, old: RunPhase | None, phase: str) -> None:
    """The restore metrics of a phase change (each change is written once)."""
    if phase == "Running" or (phase in FINAL_PHASES and old in (None, "Pending")):
        metrics.RESTORES_STARTED.labels(ns).inc()
    if phase not in FINAL_PHASES:
        return
    metrics.RESTORES.labels(ns, phase).inc()
    written = sum(item.bytes or 0 for item in status.restored)
    if written:
        metrics.RESTORE_BYTES.labels(ns).inc(written)
    if status.start_time and status.completion_time:
        seconds = (status.completion_time - status.start_time).total_seconds()
        metrics.RESTORE_DURATION.labels(ns).observe(max(0.0, seconds))


def _policy(rt: Runtime, ns: str, name: str) -> BackupPolicy | None:
    """The BackupPolicy ``name`` if it exists (in a fresh cluster it may not)."""
    body = rt.kube.get_cr("backuppolicies", ns, name) if name else None
    if body is None:
        return None
    errors = validate_spec("BackupPolicy", body.get("spec"))
    if errors:
        raise Stop("InvalidPolicy", f"BackupPolicy {name}: {field_errors_message(errors)}")
    return BackupPolicy.model_validate({k: v for k, v in body.items() if k != "status"})


def volume_pattern(path: str) -> str:
    """A pattern of ``spec.paths`` (relative to the volume's root, the backup's language) as
    the restore's ``--include`` inside the snapshot, where the volume is the top-level
    ``volume`` directory: anchored patterns (with ``/``) below it, a single name at any depth
    below it (``*.txt`` is ``volume/**/*.txt``)."""
    while path.startswith("./"):
        path = "/" + path[2:]
    name = path.strip("/")
    if not name:
        return "volume"
    if "/" in path.rstrip("/"):
        return f"volume/{name}"
    return f"volume/**/{name}"


def _job_request(
    rt: Runtime,
    body: dict[str, Any],
    req: RestoreRequest,
    location: BackupLocation,
    item: RestoredItem,
) -> JobRequest:
    _, tns, claim = item.target.split("/", 2)
    include = [volume_pattern(path) for path in req.spec.paths]
    args = commands.restore(item.snapshot_id or "", RESTORE_ROOT, include=include)
    target = req.spec.target
    mounts = [
        Mount(name="staging", path=RESTORE_ROOT, volume={"emptyDir": {}}, read_only=False),
        Mount(
            name="target",
            path=f"{RESTORE_ROOT}/volume",
            volume={"persistentVolumeClaim": {"claimName": claim}},
            read_only=False,
            sub_path=(target.path.strip("/") or None) if target else None,
        ),
    ]
    return restore_job(
        rt.image,
        body,
        req,
        location,
        item.source,
        args,
        namespace=tns,
        mounts=mounts,
        file_access="write",
    )


def _data_directory_job(
    rt: Runtime,
    body: dict[str, Any],
    req: RestoreRequest,
    location: BackupLocation,
    item: RestoredItem,
    origin: Origin,
) -> JobRequest:
    """The Job that writes a point-in-time source's PostgreSQL data directory into the
    target claim (``pg-restore-pitr``): at ``spec.target.path`` inside it, owned by the
    server's user when the Job runs as root."""
    _, tns, claim = item.target.split("/", 2)
    path = (req.spec.target.path.strip("/") if req.spec.target else "") or ""
    directory = f"{RESTORE_ROOT}/volume" + (f"/{path}" if path else "")
    ns = req.metadata.namespace or ""
    # spec.pointInTime: that second; a backupRunRef: that run's base backup, to its end;
    # neither: as far as the archive goes
    snapshot = item.snapshot_id if req.spec.backup_run_ref is not None else None
    args = commands.pg_restore_pitr(
        source_name(ns, origin.policy, item.source), directory,
        to=req.spec.point_in_time, snapshot=snapshot,
    )  # fmt: skip
    mounts = [
        Mount(
            name="target",
            path=f"{RESTORE_ROOT}/volume",
            volume={"persistentVolumeClaim": {"claimName": claim}},
            read_only=False,
        )
    ]
    return restore_job(
        rt.image, body, req, location, item.source, args,
        namespace=tns, mounts=mounts, file_access="write",
    )  # fmt: skip


def _phase(items: list[RestoredItem]) -> RunPhase:
    phases = [i.phase for i in items]
    if any(p in ("Pending", "Running") for p in phases):
        return "Running" if any(p == "Running" for p in phases) else "Pending"
    failed = [i for i in items if i.phase == "Failed"]
    if not failed:
        return "Succeeded"
    return "Failed" if len(failed) == len(items) else "PartiallyFailed"


def _restore_job(
    rt: Runtime,
    body: dict[str, Any],
    req: RestoreRequest,
    location: BackupLocation,
    item: RestoredItem,
    origin: Origin,
    policy: BackupPolicy | None,
) -> JobRequest:
    if item.kind == "database" and item.target.startswith(CLAIM_TARGET):
        return _data_directory_job(rt, body, req, location, item, origin)
    if item.kind == "database":
        source = next((s for s in origin.sources if s.name == item.source), None)
        run_tag = source.run_tag if source else None
        return database_restore_job(rt, body, req, location, item, policy, run_tag)
    if item.kind == "clusterResources":
        return resources_restore_job(rt, body, req, location, item)
    return _job_request(rt, body, req, location, item)


def _advance(
    rt: Runtime, request: JobRequest, item: RestoredItem, guard: Callable[[], Denial | None]
) -> Progress | None:
    """Create the item's Job (unless ``guard`` denies it now) or read its outcome into
    ``item``; its progress while it runs."""
    job = rt.kube.get_job(request.namespace, request.name)
    if job is None:
        if item.phase == "Running":
            item.phase = "Failed"
            item.error = ErrorDetail(reason="JobDeleted", message=f"Job {request.name} was deleted")
        elif (denial := guard()) is not None:
            item.phase = "Failed"
            item.error = ErrorDetail(reason=denial.reason, message=denial.message)
        else:
            rt.kube.create_job(build_job(request))
        return None
    outcome = rt.kube.outcome_of(request.namespace, job, request.name)
    doc = outcome.read(RestoreSummary)
    if outcome.state in ("Pending", "Running"):
        item.phase = outcome.state
        if outcome.waiting:
            item.error = ErrorDetail(reason="PodNotStarting", message=outcome.waiting[:4000])
        return read_progress(rt, request.namespace, request.name, outcome.running_pod)
    item.files = doc.files
    item.bytes = doc.bytes_written
    item.skipped = doc.files_skipped
    if outcome.succeeded:
        item.phase = "Succeeded"
        item.error = None
    else:
        item.phase = "Failed"
        item.error = (
            _not_restored(doc, root=request.run_as_root and request.file_access is not None)
            or outcome.error
            or ErrorDetail(reason="Error", message=doc.error or "the restore failed")
        )
    return None


#: How a file system refuses a user what only its owner or root may do.
_DENIED = ("Permission denied", "Operation not permitted")


def _not_restored(doc: RestoreSummary, *, root: bool) -> ErrorDetail | None:
    """The error of a restore that ended but could not write some paths (exit code 3), in
    the claim's own paths, and what to do; None for any other failure."""
    if not doc.error_list:
        return None
    prefix = f"{RESTORE_ROOT}/volume/"
    shown = "; ".join(f"{e.path.removeprefix(prefix)}: {e.error}" for e in doc.error_list[:3])
    more = ", ..." if len(doc.error_list) > 3 else ""
    if not root and any(d in e.error for e in doc.error_list for d in _DENIED):
        hint = (
            "the Jobs' non-root user may not write these paths or give them their owners: "
            "run the restore as root (spec.job.runAsRoot, of this request or its policy; "
            "docs/operator.md)"
        )
    else:
        hint = "create the request again to complete them (complete files are skipped)"
    return ErrorDetail(
        reason="FilesNotRestored",
        message=f"{doc.errors or len(doc.error_list)} path(s) could not be restored "
        f"({shown}{more}): {hint}",
    )


def reconcile(rt: Runtime, body: dict[str, Any]) -> None:
    status = RestoreRequestStatus.model_validate(body.get("status") or {})
    if status.phase in FINAL_PHASES:
        return
    old = status.phase
    try:
        errors = validate_spec("RestoreRequest", body.get("spec"))
        if errors:
            raise Stop("InvalidSpec", field_errors_message(errors))
        req = RestoreRequest.model_validate({k: v for k, v in body.items() if k != "status"})
        ns = req.metadata.namespace or ""
        pname = policy_name(rt, req, status)
        policy = _policy(rt, ns, pname)
        # the policy's spec.job over the chart's jobDefaults, for every Job of the restore
        settings = rt.job_settings(policy.spec.job if policy else None, req.spec.job)

        def record() -> None:
            write_status(rt.kube, PLURAL, body, status)

        origin, location = find_origin(rt, body, req, policy, settings, status, record)
        if not status.restored:
            status.restored = plan_restore(rt, req, origin, policy, status)
            status.start_time = now()
            write_status(rt.kube, PLURAL, body, status)
        progress: list[Progress] = []
        for item in status.restored:
            if item.phase not in ("Pending", "Running"):
                continue
            try:
                request = _restore_job(rt, body, req, location, item, origin, policy)
            except MissingSource as missing:
                item.phase = "Failed"
                item.error = missing.detail
                continue
            own = request.service_account_name
            refused = account_problem(
                rt.limits, request.namespace, [location],
                ("spec.resources.serviceAccountName", own) if own else None,
            )  # fmt: skip
            if refused and item.phase == "Pending":
                item.phase = "Failed"
                item.error = ErrorDetail(reason=refused[0], message=refused[1])
                continue
            # the grant is checked again right before the Job: one removed since the
            # plan stops what has not started
            volume_ns = item.target.split("/", 2)[1] if item.kind == "volume" else ""

            def guard(item: RestoredItem = item, volume_ns: str = volume_ns) -> Denial | None:
                return restore_denial(rt, req, policy, item.kind, item.source, volume_ns)

            p = _advance(rt, with_settings(request, settings), item, guard)
            if p is not None:
                progress.append(p)
        status.phase = _phase(status.restored)
        status.progress = combine_progress(progress, now()) or status.progress
        if status.phase in FINAL_PHASES:
            status.progress = None
        parts = [
            f"{i.source} -> {i.target}: {i.phase}"
            + (f" ({i.error.reason}: {i.error.message})" if i.error else "")
            for i in status.restored
        ]
        _write(rt, body, status, old, "; ".join(parts))
    except Wait as wait:
        status.phase = "Pending"
        _write(rt, body, status, old, wait.message)
    except Stop as stop:
        status.phase = "Failed"
        for item in status.restored:
            if item.phase in ("Pending", "Running"):
                item.phase = "Failed"
        _write(rt, body, status, old, stop.message, reason=stop.reason)
