"""RestoreRequest: bring a backup's sources back (claims, databases, manifests), one Job each.

The backup (a BackupRun, or a policy's newest successful run at or before
``pointInTime``) is resolved first; when ``policyRef`` matches no BackupRun (a fresh
cluster), a resolve Job lists the policy's newest snapshots in the repository and its
result is recorded in ``status.resolvedSnapshots`` before anything is planned
(safehold.controller.restoresources). Every Job follows the policy's ``spec.job`` over
the chart's ``jobDefaults``. Each volume source goes into the claim of the same name, or
``spec.target.claimName``, in the request's namespace, ``spec.target.namespace`` or the
``namespaceMapping``'s. A missing claim is created (``spec.target``, else the original
claim's or the snapshot's recorded size, class, access modes: claim_manifest). The rule
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
    BackupRun,
    ErrorDetail,
    Progress,
    RestoredItem,
    RestoreRequest,
    RestoreRequestStatus,
    validate_spec,
)
from safehold.api.enums import RunPhase
from safehold.api.jobs import JobSettings
from safehold.api.restorerequest import ResolvedSnapshot
from safehold.api.summaries import RestoreSummary, SnapshotsSummary
from safehold.controller import commands, metrics
from safehold.controller.common import Stop, field_errors_message, now, parse_time, write_status
from safehold.controller.grants import Denial, check_grant
from safehold.controller.jobs import (
    COMPONENT_RESTORE,
    LABEL_RESTORE,
    LABEL_SOURCE,
    JobRequest,
    Mount,
    build_job,
    job_name,
    with_settings,
)
from safehold.controller.progress import combine_progress, read_progress
from safehold.controller.repository import with_repository
from safehold.controller.restoresources import (
    Origin,
    RestoreSource,
    parse_resolved,
    repository_origin,
    resolve_job,
    run_origin,
)
from safehold.controller.runtime import Runtime
from safehold.controller.snapshotmeta import ClaimShape, claim_shape
from safehold.controller.sources import policy_prefix
from safehold.controller.sources.databases import (
    MissingSource,
    database_restore_host,
    database_restore_item,
    database_restore_job,
    service_namespace,
)
from safehold.controller.sources.resources import (
    KIND as RESOURCES_KIND,
)
from safehold.controller.sources.resources import (
    resources_restore_item,
    resources_restore_job,
    resources_target_namespaces,
)
from safehold.controller.status import FINAL_PHASES, complete_conditions, job_outcome

__all__ = ["PLURAL", "RESTORE_ROOT", "claim_manifest", "reconcile", "volume_pattern"]

log = logging.getLogger(__name__)
PLURAL = "restorerequests"
RESTORE_ROOT = "/restore"
_DEFAULT_SIZE = "1Gi"


class _Wait(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
        if final:
            metrics.RESTORES.labels(meta["namespace"], phase).inc()


def _policy(rt: Runtime, ns: str, name: str) -> BackupPolicy | None:
    """The BackupPolicy ``name`` if it exists (in a fresh cluster it may not)."""
    body = rt.kube.get_cr("backuppolicies", ns, name) if name else None
    if body is None:
        return None
    errors = validate_spec("BackupPolicy", body.get("spec"))
    if errors:
        raise Stop("InvalidPolicy", f"BackupPolicy {name}: {field_errors_message(errors)}")
    return BackupPolicy.model_validate({k: v for k, v in body.items() if k != "status"})


def _find_run(
    rt: Runtime, req: RestoreRequest, status: RestoreRequestStatus
) -> dict[str, Any] | None:
    """The BackupRun to restore from; None when policyRef matches no run (the snapshots
    are then resolved from the repository)."""
    ns = req.metadata.namespace or ""
    if status.backup_run:  # resolved on an earlier pass: keep it
        run = rt.kube.get_cr("backupruns", ns, status.backup_run)
        if run is None:
            raise Stop(
                "BackupRunNotFound",
                f"BackupRun {status.backup_run} was deleted while it was restored from",
            )
        return run
    if req.spec.backup_run_ref is not None:
        name = req.spec.backup_run_ref.name
        run = rt.kube.get_cr("backupruns", ns, name)
        if run is None:
            raise Stop(
                "BackupRunNotFound",
                f"spec.backupRunRef.name: BackupRun {name!r} does not exist in namespace {ns}: "
                "name an existing run (kubectl get backupruns)",
            )
        phase = (run.get("status") or {}).get("phase")
        if phase not in FINAL_PHASES:
            raise _Wait(f"waiting for BackupRun {name} to finish (it is {phase or 'Pending'})")
        return run
    assert req.spec.policy_ref is not None
    policy = req.spec.policy_ref.name
    limit = req.spec.point_in_time
    best: tuple[str, dict[str, Any]] | None = None
    for run in rt.kube.list_cr("backupruns", ns):
        st = run.get("status") or {}
        if run.get("spec", {}).get("policyRef", {}).get("name") != policy:
            continue
        if st.get("phase") not in ("Succeeded", "PartiallyFailed"):
            continue
        done = parse_time(st.get("completionTime"))
        if done is None or (limit is not None and done > limit):
            continue
        if best is None or done.isoformat() > best[0]:
            best = (done.isoformat(), run)
    return best[1] if best else None


def _location(rt: Runtime, ns: str, name: str | None, whose: str) -> BackupLocation:
    lbody = rt.kube.get_cr("backuplocations", ns, name) if name else None
    if lbody is None:
        raise Stop(
            "LocationNotFound",
            f"BackupLocation {name!r} ({whose}) does not exist in namespace {ns}: create it "
            "or set spec.locationRef",
        )
    return BackupLocation.model_validate(lbody)


def _from_run(
    rt: Runtime, req: RestoreRequest, run: dict[str, Any]
) -> tuple[Origin, BackupLocation]:
    ns = req.metadata.namespace or ""
    run_name = run["metadata"]["name"]
    BackupRun.model_validate({k: v for k, v in run.items() if k != "status"})
    lname = (req.spec.location_ref.name if req.spec.location_ref else None) or (
        (run.get("status") or {}).get("location")
    )
    location = _location(rt, ns, lname, f"of BackupRun {run_name}, or spec.locationRef")
    return run_origin(run), location


def _resolved(
    rt: Runtime,
    body: dict[str, Any],
    req: RestoreRequest,
    location: BackupLocation,
    settings: JobSettings | None,
    status: RestoreRequestStatus,
) -> list[ResolvedSnapshot]:
    """The newest snapshots of the policy on ``location``, from the resolve Job (created
    on the first pass, found by its name after a restart). Raises _Wait while it runs."""
    request = with_settings(resolve_job(rt.image, body, req, location), settings)
    lname = location.metadata.name or ""
    job = rt.kube.get_job(request.namespace, request.name)
    if job is None:
        rt.kube.create_job(build_job(request))
        raise _Wait(f"resolving the snapshots on BackupLocation {lname} (Job {request.name})")
    outcome = job_outcome(job, rt.kube.job_pods(request.namespace, request.name))
    if outcome.state in ("Pending", "Running"):
        why = f": {outcome.waiting}" if outcome.waiting else ""
        raise _Wait(f"resolving the snapshots on BackupLocation {lname} (Job {request.name}){why}")
    doc = outcome.read(SnapshotsSummary)
    snaps = parse_resolved(doc)
    if outcome.state == "Failed" and not snaps:
        error = outcome.error or ErrorDetail(reason="Error", message="the Job failed")
        raise Stop(
            error.reason,
            f"the Job {request.name} that lists the snapshots on BackupLocation {lname} "
            f"failed: {error.message}",
        )
    for name in doc.unreadable:
        status.warnings.append(f"snapshot {name} on BackupLocation {lname} is unreadable")
    if doc.snapshots_truncated:
        status.warnings.append(
            f"the resolve Job's report was cut to fit a termination message: "
            f"{doc.snapshots_truncated} snapshot(s) are not listed, their sources not restored"
        )
    return snaps


def _from_repository(
    rt: Runtime,
    body: dict[str, Any],
    req: RestoreRequest,
    policy: BackupPolicy | None,
    settings: JobSettings | None,
    status: RestoreRequestStatus,
) -> tuple[Origin, BackupLocation]:
    """No BackupRun matches: the snapshots come from the repository (resolve Job), and
    its result goes into status before anything is planned."""
    assert req.spec.policy_ref is not None
    ns = req.metadata.namespace or ""
    pname = req.spec.policy_ref.name
    prefix = policy_prefix(ns, pname)
    lname = (
        status.location
        or (req.spec.location_ref.name if req.spec.location_ref else None)
        or (policy.spec.location.name if policy else None)
    )
    if not lname:
        raise Stop(
            "LocationRequired",
            f"no BackupRun of BackupPolicy {pname!r} exists in namespace {ns} and neither does "
            "the policy, so the location holding its snapshots is unknown: set "
            "spec.locationRef to that BackupLocation",
        )
    location = _location(rt, ns, lname, "spec.locationRef, or the policy's spec.location")
    if not status.resolved_snapshots:
        snaps = _resolved(rt, body, req, location, settings, status)
        if not snaps:
            when = (
                f" at or before {req.spec.point_in_time.isoformat()}"
                if req.spec.point_in_time
                else ""
            )
            raise Stop(
                "NoBackupFound",
                f"BackupPolicy {pname!r} has no BackupRun in namespace {ns} and BackupLocation "
                f"{lname} has no snapshot under {prefix}{when}: check spec.policyRef, "
                "spec.locationRef and spec.pointInTime",
            )
        status.location = lname
        status.resolved_snapshots = snaps
        write_status(rt.kube, PLURAL, body, status)  # recorded before planning
    return repository_origin(pname, prefix, lname, status.resolved_snapshots), location


def _claim_of(policy: BackupPolicy | None, source: RestoreSource) -> str:
    """The claim a volume source was read from: as recorded in the snapshot, else the
    policy's claimName, else the source's name."""
    recorded = claim_shape(source.meta).name
    if recorded:
        return recorded
    for v in policy.spec.sources.volumes if policy else []:
        if (v.name or v.claim_name) == source.name and v.claim_name:
            return v.claim_name
    return source.name


def _check_sources(req: RestoreRequest, origin: Origin) -> list[RestoreSource]:
    spec = req.spec
    names = [s.name for s in origin.sources]
    unknown = sorted(set(spec.sources) - set(names))
    if unknown:
        raise Stop(
            "SourceNotFound",
            f"spec.sources: {', '.join(unknown)} has no snapshot in {origin.described} "
            f"(sources with a snapshot: {', '.join(names) or 'none'})",
        )
    chosen = [s for s in origin.sources if not spec.sources or s.name in spec.sources]
    if not chosen:
        raise Stop("NothingToRestore", f"{origin.described} has no snapshot to restore")
    if spec.target is not None and len(chosen) != 1:
        raise Stop(
            "InvalidSpec",
            "spec.target restores one volume source: set spec.sources to one of "
            + ", ".join(s.name for s in chosen),
        )
    return chosen


def _database_item(
    req: RestoreRequest, origin: Origin, policy: BackupPolicy | None, s: RestoreSource
) -> RestoredItem:
    item = database_restore_item(req, policy, origin.policy, s.name, s.snapshot_id)
    if item.phase == "Pending" and s.run_tag is None and req.spec.point_in_time is not None:
        item.phase = "Failed"
        item.error = ErrorDetail(
            reason="NoRunTag",
            message=f"the dumps of {s.name} carry no run= tag, so restore-db cannot pick "
            "those of spec.pointInTime: restore them with the safehold CLI by snapshot id",
        )
    return item


def _volume_namespace(req: RestoreRequest) -> tuple[str, str]:
    """The namespace volume sources are restored into, and the field that chose it."""
    ns = req.metadata.namespace or ""
    target = req.spec.target
    if target is not None and target.namespace:
        return target.namespace, "spec.target.namespace"
    if ns in req.spec.namespace_mapping:
        return req.spec.namespace_mapping[ns], f"spec.namespaceMapping[{ns}]"
    return ns, "the request's namespace"


def _other_namespaces(
    rt: Runtime,
    req: RestoreRequest,
    policy: BackupPolicy | None,
    kind: str,
    source: str,
    volume_ns: str,
) -> list[tuple[str, str]]:
    """(namespace, what) for each namespace other than the request's that restoring
    ``source`` writes into: a volume's target, a clusterResources restore's mapped and
    named namespaces, a database server addressed as a Service of another namespace."""
    ns = req.metadata.namespace or ""
    if kind == RESOURCES_KIND:
        return [
            (t, f"clusterResources source {source} (spec.namespaceMapping, "
                "spec.resources.includeNamespaces)")
            for t in resources_target_namespaces(req)
        ]  # fmt: skip
    if kind == "database":
        host = database_restore_host(policy, source)
        found = service_namespace(host) if host else None
        if found is None or found[0] == ns:
            return []
        tns, certain = found
        if not certain and not rt.kube.namespace_exists(tns):
            return []  # NAME.OTHER where no namespace OTHER exists: an outside host
        return [(tns, f"database source {source} (its server {host} is a Service of {tns})")]
    if volume_ns == ns:
        return []
    _, field = _volume_namespace(req)
    return [(volume_ns, f"volume source {source} ({field})")]


def _denial(
    rt: Runtime,
    req: RestoreRequest,
    policy: BackupPolicy | None,
    kind: str,
    source: str,
    volume_ns: str,
) -> Denial | None:
    """Why restoring ``source`` may not write where it would (the target namespace's
    grant, safehold.controller.grants), or None."""
    ns = req.metadata.namespace or ""
    for tns, what in _other_namespaces(rt, req, policy, kind, source, volume_ns):
        denial = check_grant(rt.kube, ns, tns, what)
        if denial is not None:
            return denial
    return None


def _limit(
    rt: Runtime, req: RestoreRequest, policy: BackupPolicy | None, item: RestoredItem
) -> None:
    """Fail ``item`` when it names what the chart's policyLimits do not allow: the
    ServiceAccount a clusterResources restore runs as, a database server's host."""
    ns = req.metadata.namespace or ""
    why: str | None = None
    if item.kind == RESOURCES_KIND and req.spec.resources is not None:
        sa = req.spec.resources.service_account_name
        why = rt.limits.service_account(ns, sa) if sa else None
        reason, field = "ServiceAccountNotAllowed", "spec.resources.serviceAccountName"
    elif item.kind == "database":
        host = database_restore_host(policy, item.source)
        why = rt.limits.database_host(host) if host else None
        reason, field = "DatabaseHostNotAllowed", f"the host of database source {item.source}"
    if why and item.phase in ("Pending", "Skipped"):
        item.phase = "Failed"
        item.error = ErrorDetail(reason=reason, message=f"{field}: {why}")


def _plan(
    rt: Runtime,
    req: RestoreRequest,
    origin: Origin,
    policy: BackupPolicy | None,
    status: RestoreRequestStatus,
) -> list[RestoredItem]:
    chosen = _check_sources(req, origin)
    volume_ns, _ = _volume_namespace(req)
    # every target namespace is checked before anything is looked at or created there
    for s in chosen:
        denial = _denial(rt, req, policy, s.kind, s.name, volume_ns)
        if denial is not None:
            raise Stop(denial.reason, denial.message)
    items: list[RestoredItem] = []
    for s in chosen:
        if s.kind == RESOURCES_KIND:
            items.append(resources_restore_item(req, {"name": s.name, "snapshotId": s.snapshot_id}))
        elif s.kind == "database":
            items.append(_database_item(req, origin, policy, s))
        else:
            items.append(_volume_item(rt, req, policy, s, status, volume_ns))
        _limit(rt, req, policy, items[-1])
    if req.spec.dry_run:
        status.warnings.append("dry run: nothing was written; status.restored lists the plan")
    return items


def _volume_item(
    rt: Runtime,
    req: RestoreRequest,
    policy: BackupPolicy | None,
    s: RestoreSource,
    status: RestoreRequestStatus,
    tns: str,
) -> RestoredItem:
    spec = req.spec
    ns = req.metadata.namespace or ""
    original = _claim_of(policy, s)
    target = spec.target
    claim = target.claim_name if target else original
    item = RestoredItem(
        source=s.name,
        kind="volume",
        snapshot_id=s.snapshot_id,
        target=f"persistentvolumeclaim/{tns}/{claim}",
    )
    existing = rt.kube.get_pvc(tns, claim)
    if existing is not None and not _ours(existing, req):
        if spec.existing_resource_policy == "Fail":
            raise Stop(
                "TargetExists",
                f"PersistentVolumeClaim {tns}/{claim} already exists and "
                "existingResourcePolicy is Fail: delete it, choose spec.target.claimName, "
                "or set existingResourcePolicy to Overwrite",
            )
        if spec.existing_resource_policy == "Skip":
            item.phase = "Skipped"
            item.skipped = 1
            status.warnings.append(
                f"{item.target} exists and was left untouched (existingResourcePolicy "
                "Skip): set Overwrite to restore into it"
            )
    if spec.dry_run:
        item.phase = "Skipped"
    elif existing is None:
        old = rt.kube.get_pvc(ns, original)
        rt.kube.create_pvc(tns, claim_manifest(req, claim, original, old, claim_shape(s.meta)))
    return item


def _ours(pvc: dict[str, Any], req: RestoreRequest) -> bool:
    labels = pvc["metadata"].get("labels") or {}
    return labels.get(LABEL_RESTORE) == req.metadata.name


def claim_manifest(
    req: RestoreRequest,
    claim: str,
    original: str,
    old: dict[str, Any] | None,
    recorded: ClaimShape,
) -> dict[str, Any]:
    """The claim to create: ``spec.target`` first, then the original claim if it still
    exists, then what its snapshot recorded (size, class, access modes, volume mode,
    labels), then defaults. ``storageClassMapping`` maps the original's or the recorded
    class; the backed-up labels go only onto a claim of the original's name."""
    old_spec = (old or {}).get("spec") or {}
    target = req.spec.target
    size = (
        (target.size if target else None)
        or old_spec.get("resources", {}).get("requests", {}).get("storage")
        or recorded.size
        or _DEFAULT_SIZE
    )
    sc = target.storage_class_name if target else None
    backed_up_class = old_spec.get("storageClassName") or recorded.storage_class_name
    if sc is None and backed_up_class:
        sc = req.spec.storage_class_mapping.get(backed_up_class, backed_up_class)
    labels: dict[str, str] = {}
    if claim == original:
        labels.update(((old or {}).get("metadata") or {}).get("labels") or recorded.labels or {})
    labels.update(
        {
            "app.kubernetes.io/managed-by": "safehold-operator",
            LABEL_RESTORE: req.metadata.name or "",
        }
    )
    spec: dict[str, Any] = {
        "accessModes": old_spec.get("accessModes")
        or list(recorded.access_modes)
        or ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if sc:
        spec["storageClassName"] = sc
    mode = old_spec.get("volumeMode") or recorded.volume_mode
    if mode:
        spec["volumeMode"] = mode
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "labels": labels},
        "spec": spec,
    }


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
    same_ns = tns == req.metadata.namespace
    request = JobRequest(
        name=job_name(req.metadata.name or "", item.source),
        namespace=tns,
        component=COMPONENT_RESTORE,
        args=args,
        labels={LABEL_RESTORE: req.metadata.name or "", LABEL_SOURCE: item.source},
        owner=body if same_ns else None,  # owner references cannot cross namespaces
        mounts=[
            Mount(name="staging", path=RESTORE_ROOT, volume={"emptyDir": {}}, read_only=False),
            Mount(
                name="target",
                path=f"{RESTORE_ROOT}/volume",
                volume={"persistentVolumeClaim": {"claimName": claim}},
                read_only=False,
                sub_path=(target.path.strip("/") or None) if target else None,
            ),
        ],
        image=rt.image,
    )
    return with_repository(request, location)


def _phase(items: list[RestoredItem]) -> RunPhase:
    phases = [i.phase for i in items]
    if any(p in ("Pending", "Running") for p in phases):
        return "Running" if any(p == "Running" for p in phases) else "Pending"
    failed = [i for i in items if i.phase == "Failed"]
    if not failed:
        return "Succeeded"
    return "Failed" if len(failed) == len(items) else "PartiallyFailed"


def _origin(
    rt: Runtime,
    body: dict[str, Any],
    req: RestoreRequest,
    policy: BackupPolicy | None,
    settings: JobSettings | None,
    status: RestoreRequestStatus,
) -> tuple[Origin, BackupLocation]:
    """Where the snapshots come from: a BackupRun, or (policyRef, no run) the repository."""
    run = None if status.resolved_snapshots else _find_run(rt, req, status)
    if run is not None:
        origin, location = _from_run(rt, req, run)
    else:
        origin, location = _from_repository(rt, body, req, policy, settings, status)
    status.backup_run = origin.run
    status.location = location.metadata.name
    return origin, location


def _restore_job(
    rt: Runtime,
    body: dict[str, Any],
    req: RestoreRequest,
    location: BackupLocation,
    item: RestoredItem,
    origin: Origin,
    policy: BackupPolicy | None,
) -> JobRequest:
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
    outcome = job_outcome(job, rt.kube.job_pods(request.namespace, request.name))
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
        item.error = outcome.error or ErrorDetail(
            reason="Error", message=doc.error or "the restore failed"
        )
    return None


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
        pname = _policy_name(rt, req, status)
        policy = _policy(rt, ns, pname)
        # the policy's spec.job over the chart's jobDefaults, for every Job of the restore
        settings = rt.job_settings(policy.spec.job if policy else None)
        origin, location = _origin(rt, body, req, policy, settings, status)
        if not status.restored:
            status.restored = _plan(rt, req, origin, policy, status)
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
            # the grant is checked again right before the Job: one removed since the
            # plan stops what has not started
            volume_ns = item.target.split("/", 2)[1] if item.kind == "volume" else ""

            def guard(item: RestoredItem = item, volume_ns: str = volume_ns) -> Denial | None:
                return _denial(rt, req, policy, item.kind, item.source, volume_ns)

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
    except _Wait as wait:
        status.phase = "Pending"
        _write(rt, body, status, old, wait.message)
    except Stop as stop:
        status.phase = "Failed"
        for item in status.restored:
            if item.phase in ("Pending", "Running"):
                item.phase = "Failed"
        _write(rt, body, status, old, stop.message, reason=stop.reason)


def _policy_name(rt: Runtime, req: RestoreRequest, status: RestoreRequestStatus) -> str:
    """The policy whose snapshots are restored: policyRef's, else the BackupRun's."""
    if req.spec.policy_ref is not None:
        return req.spec.policy_ref.name
    ns = req.metadata.namespace or ""
    name = status.backup_run or (req.spec.backup_run_ref.name if req.spec.backup_run_ref else "")
    run = rt.kube.get_cr("backupruns", ns, name) if name else None
    return str(((run or {}).get("spec") or {}).get("policyRef", {}).get("name", ""))
