"""RestoreRequest: bring a BackupRun's volume sources back into claims, one Job each.

The backup (a BackupRun, or a policy's newest successful run at or before
``pointInTime``) is resolved first. Each volume source goes into the claim of the same
name, or ``spec.target.claimName``, in the request's namespace, ``spec.target.namespace``
or the ``namespaceMapping``'s. A missing claim is created (the backed-up claim's size
and class unless set). The rule for a claim that already exists
(``existingResourcePolicy``): ``Skip`` leaves it untouched and records the source as
Skipped; ``Overwrite`` restores into it (files in the backup are rewritten unless
already identical; other files are left alone); ``Fail`` fails the request before
anything is written. The Job mounts the claim at ``/restore/volume`` under an
``emptyDir`` at ``/restore`` and runs ``safehold restore SNAPSHOT /restore``, so the
snapshot's top directory ``volume`` lands on the claim's root.
"""

from __future__ import annotations

import logging
from typing import Any

from safehold.api import (
    BackupLocation,
    BackupRun,
    ErrorDetail,
    Progress,
    RestoredItem,
    RestoreRequest,
    RestoreRequestStatus,
    validate_spec,
)
from safehold.api.enums import RunPhase
from safehold.controller import metrics
from safehold.controller.backuprun import combine_progress, read_progress
from safehold.controller.common import Stop, field_errors_message, now, parse_time, write_status
from safehold.controller.databases import database_restore_item, database_restore_job
from safehold.controller.jobs import (
    COMPONENT_RESTORE,
    LABEL_RESTORE,
    LABEL_SOURCE,
    JobRequest,
    Mount,
    build_job,
    job_name,
)
from safehold.controller.repository import with_repository
from safehold.controller.resources import resources_restore_item, resources_restore_job
from safehold.controller.runtime import Runtime
from safehold.controller.status import FINAL_PHASES, complete_conditions, job_outcome

__all__ = ["PLURAL", "RESTORE_ROOT", "reconcile"]

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


def _resolve_run(rt: Runtime, req: RestoreRequest) -> dict[str, Any]:
    ns = req.metadata.namespace or ""
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
    if best is None:
        when = f" at or before {limit.isoformat()}" if limit else ""
        raise Stop(
            "NoBackupFound",
            f"spec.policyRef.name: BackupPolicy {policy!r} has no successful BackupRun{when} "
            f"in namespace {ns}: check the name and spec.pointInTime",
        )
    return best[1]


def _claim_of(rt: Runtime, ns: str, run: dict[str, Any], source: str) -> str:
    """The claim a volume source was read from (its policy's claimName, else its name)."""
    pname = run.get("spec", {}).get("policyRef", {}).get("name", "")
    policy = rt.kube.get_cr("backuppolicies", ns, pname) or {}
    for v in policy.get("spec", {}).get("sources", {}).get("volumes") or []:
        if (v.get("name") or v.get("claimName")) == source and v.get("claimName"):
            return str(v["claimName"])
    return source


def _plan(
    rt: Runtime, req: RestoreRequest, run: dict[str, Any], status: RestoreRequestStatus
) -> list[RestoredItem]:
    ns = req.metadata.namespace or ""
    spec = req.spec
    sources = [
        s
        for s in (run.get("status") or {}).get("sources") or []
        if s.get("kind") in ("volume", "database", "clusterResources") and s.get("snapshotId")
    ]
    names = [s["name"] for s in sources]
    unknown = sorted(set(spec.sources) - set(names))
    if unknown:
        raise Stop(
            "SourceNotFound",
            f"spec.sources: {', '.join(unknown)} has no snapshot in BackupRun "
            f"{run['metadata']['name']} (volume sources with a snapshot: "
            f"{', '.join(names) or 'none'})",
        )
    chosen = [s for s in sources if not spec.sources or s["name"] in spec.sources]
    if not chosen:
        raise Stop(
            "NothingToRestore",
            f"BackupRun {run['metadata']['name']} has no volume snapshot to restore",
        )
    if spec.target is not None and len(chosen) != 1:
        raise Stop(
            "InvalidSpec",
            "spec.target restores one volume source: set spec.sources to one of "
            + ", ".join(s["name"] for s in chosen),
        )
    items: list[RestoredItem] = []
    for s in chosen:
        if s.get("kind") == "clusterResources":
            items.append(resources_restore_item(req, s))
            continue
        if s.get("kind") == "database":
            items.append(database_restore_item(rt, req, run, s))
            continue
        original = _claim_of(rt, ns, run, s["name"])
        target = spec.target
        tns = (target.namespace if target and target.namespace else None) or (
            spec.namespace_mapping.get(ns, ns)
        )
        claim = target.claim_name if target else original
        item = RestoredItem(
            source=s["name"],
            kind="volume",
            snapshot_id=s["snapshotId"],
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
            _create_claim(rt, req, run, original, tns, claim)
        items.append(item)
    if spec.dry_run:
        status.warnings.append("dry run: nothing was written; status.restored lists the plan")
    return items


def _ours(pvc: dict[str, Any], req: RestoreRequest) -> bool:
    labels = pvc["metadata"].get("labels") or {}
    return labels.get(LABEL_RESTORE) == req.metadata.name


def _create_claim(
    rt: Runtime, req: RestoreRequest, run: dict[str, Any], original: str, ns: str, claim: str
) -> None:
    source_ns = req.metadata.namespace or ""
    old = rt.kube.get_pvc(source_ns, original) or {}
    old_spec = old.get("spec") or {}
    target = req.spec.target
    size = (target.size if target and target.size else None) or (
        old_spec.get("resources", {}).get("requests", {}).get("storage") or _DEFAULT_SIZE
    )
    sc = target.storage_class_name if target and target.storage_class_name else None
    if sc is None and old_spec.get("storageClassName"):
        sc = req.spec.storage_class_mapping.get(
            old_spec["storageClassName"], old_spec["storageClassName"]
        )
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim,
            "labels": {
                "app.kubernetes.io/managed-by": "safehold-operator",
                LABEL_RESTORE: req.metadata.name or "",
            },
        },
        "spec": {
            "accessModes": old_spec.get("accessModes") or ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        },
    }
    if sc:
        manifest["spec"]["storageClassName"] = sc
    rt.kube.create_pvc(ns, manifest)


def _job_request(
    rt: Runtime,
    body: dict[str, Any],
    req: RestoreRequest,
    location: BackupLocation,
    item: RestoredItem,
) -> JobRequest:
    _, tns, claim = item.target.split("/", 2)
    args = ["restore", item.snapshot_id or "", RESTORE_ROOT]
    for path in req.spec.paths:
        args += ["--include", f"volume/{path.strip('/')}"]
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
        run = _resolve_run(rt, req)
        run_name = run["metadata"]["name"]
        status.backup_run = run_name
        lname = (req.spec.location_ref.name if req.spec.location_ref else None) or (
            (run.get("status") or {}).get("location")
        )
        lbody = rt.kube.get_cr("backuplocations", ns, lname) if lname else None
        if lbody is None:
            raise Stop(
                "LocationNotFound",
                f"BackupLocation {lname!r} (of BackupRun {run_name}, or spec.locationRef) does "
                f"not exist in namespace {ns}: create it or set spec.locationRef",
            )
        location = BackupLocation.model_validate(lbody)
        BackupRun.model_validate({k: v for k, v in run.items() if k != "status"})
        if not status.restored:
            status.restored = _plan(rt, req, run, status)
            status.start_time = now()
            write_status(rt.kube, PLURAL, body, status)
        progress: list[Progress] = []
        for item in status.restored:
            if item.phase not in ("Pending", "Running"):
                continue
            request = (
                database_restore_job(rt, body, req, location, item, run)
                if item.kind == "database"
                else resources_restore_job(rt, body, req, location, item)
                if item.kind == "clusterResources"
                else _job_request(rt, body, req, location, item)
            )
            job = rt.kube.get_job(request.namespace, request.name)
            if job is None:
                if item.phase == "Running":
                    item.phase = "Failed"
                    item.error = ErrorDetail(
                        reason="JobDeleted", message=f"Job {request.name} was deleted"
                    )
                else:
                    rt.kube.create_job(build_job(request))
                continue
            outcome = job_outcome(job, rt.kube.job_pods(request.namespace, request.name))
            doc = outcome.summary or {}
            if outcome.state in ("Pending", "Running"):
                item.phase = outcome.state
                if outcome.waiting:
                    item.error = ErrorDetail(
                        reason="PodNotStarting", message=outcome.waiting[:4000]
                    )
                p = read_progress(rt, request.namespace, request.name, outcome.running_pod)
                if p is not None:
                    progress.append(p)
                continue
            item.files = doc.get("files")
            item.bytes = doc.get("bytes_written")
            item.skipped = doc.get("files_skipped")
            if outcome.state == "Succeeded" and doc.get("ok", True):
                item.phase = "Succeeded"
                item.error = None
            else:
                item.phase = "Failed"
                item.error = outcome.error or ErrorDetail(
                    reason="Error", message=str(doc.get("error") or "the restore failed")
                )
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
