"""Where a RestoreRequest's snapshots come from: a BackupRun's status, or the repository.

With ``backupRunRef``, or ``policyRef`` when a matching BackupRun object exists, the
run's source results name the snapshots. In a cluster that never ran the policy (a
fresh cluster after a disaster) there is no such object: a short *resolve* Job runs
``safehold snapshots --source-prefix NS/POLICY/ [--before T] --latest`` on the location
and reports the newest snapshot of every source under the policy's prefix. The
controller never opens the repository itself.

Snapshot source names follow the backup Jobs: a volume source ``NS/POLICY/SOURCE``, a
database source ``NS/POLICY/SOURCE/db/DATABASE`` and ``NS/POLICY/SOURCE/globals``, the
clusterResources source ``NS/POLICY/resources``. The metadata recorded at backup time
(safehold.controller.snapshotmeta) says the kind and the source's name where present;
older snapshots without it are mapped by the shape of their source name.

:func:`find_origin` is the lookup: the run (``backupRunRef``, or the newest of
``policyRef`` at or before ``pointInTime``), else the resolve Job's result; :class:`Wait`
while the run or the resolve Job has not finished.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from safehold.api import (
    BackupLocation,
    BackupPolicy,
    BackupRun,
    ErrorDetail,
    RestoreRequest,
    RestoreRequestStatus,
)
from safehold.api.enums import SourceKind
from safehold.api.jobs import JobSettings
from safehold.api.restorerequest import ResolvedSnapshot
from safehold.api.summaries import SnapshotsSummary
from safehold.controller import commands
from safehold.controller.common import Stop, parse_time
from safehold.controller.jobs import (
    JobImage,
    JobRequest,
    build_job,
    job_name,
    with_settings,
)
from safehold.controller.runtime import Runtime
from safehold.controller.snapshotmeta import BASE_KIND, SOURCE_KIND, SOURCE_NAME, WAL_KIND
from safehold.controller.sources import policy_prefix, restore_job
from safehold.controller.sources.resources import KIND as RESOURCES_KIND
from safehold.controller.sources.resources import SOURCE as RESOURCES_SOURCE
from safehold.controller.status import FINAL_PHASES

__all__ = [
    "RESOLVE_SOURCE",
    "Origin",
    "RestoreSource",
    "Wait",
    "find_origin",
    "parse_resolved",
    "policy_name",
    "repository_origin",
    "resolve_job",
    "resolve_job_name",
    "run_origin",
    "sources_from_snapshots",
]

#: The Job label value (and name part) of the resolve Job; ``:`` is in no source name,
#: so the Job's name never equals a restore Job's.
RESOLVE_SOURCE = "resolve:snapshots"
_KINDS: frozenset[str] = frozenset({"volume", "database", RESOURCES_KIND})


@dataclass(frozen=True)
class RestoreSource:
    """One source of the policy to restore, and the snapshot that holds it."""

    name: str  # the policy's source name (a database source's, for all its dumps)
    kind: SourceKind
    snapshot_id: str
    #: The BackupRun whose dumps a database restore reads (their ``run=`` tag).
    run_tag: str | None = None
    time: datetime | None = None
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Origin:
    """The snapshots a request restores and where they were found."""

    policy: str  # the BackupPolicy's name
    run: str | None  # the BackupRun, None when resolved from the repository
    described: str  # for messages: "BackupRun NAME" or "BackupLocation L under PREFIX"
    sources: Sequence[RestoreSource]


def run_origin(run: Mapping[str, Any]) -> Origin:
    """The sources with a snapshot in a BackupRun's status."""
    name = str(run["metadata"]["name"])
    sources = [
        RestoreSource(
            name=str(s["name"]), kind=s["kind"], snapshot_id=str(s["snapshotId"]), run_tag=name
        )
        for s in (run.get("status") or {}).get("sources") or []
        if s.get("kind") in _KINDS and s.get("snapshotId")
    ]
    return Origin(
        policy=str(run.get("spec", {}).get("policyRef", {}).get("name", "")),
        run=name,
        described=f"BackupRun {name}",
        sources=sources,
    )


def parse_resolved(summary: SnapshotsSummary) -> list[ResolvedSnapshot]:
    """The snapshots of a ``safehold snapshots --json`` summary (entries without an id or
    a source are left out)."""
    return [
        ResolvedSnapshot(
            source=s.source,
            snapshot_id=s.id,
            time=parse_time(s.time),
            tags=s.tags[:64],
            meta=dict(s.meta),
        )
        for s in summary.snapshots
        if s.id and s.source
    ]


def _run_tag(tags: Iterable[str]) -> str | None:
    return next((t.split("=", 1)[1] for t in tags if t.startswith("run=")), None)


def _classify(rest: str, meta: Mapping[str, str]) -> tuple[str, SourceKind] | None:
    """The source name and kind of a snapshot whose source is PREFIX + ``rest``."""
    parts = rest.split("/")
    kind = meta.get(SOURCE_KIND)
    if kind == BASE_KIND:  # a pointInTime source, as its base backups
        return meta.get(SOURCE_NAME) or parts[0], "database"
    if kind == WAL_KIND:  # its WAL, which a restore of the source reads with its base backup
        return None
    dump = (len(parts) >= 3 and parts[1] == "db") or parts[1:] == ["globals"]
    if kind == "database" or (kind is None and dump):
        return (meta.get(SOURCE_NAME) or parts[0], "database") if len(parts) >= 2 else None
    if kind == RESOURCES_KIND or (kind is None and rest == RESOURCES_SOURCE):
        return meta.get(SOURCE_NAME) or rest, RESOURCES_KIND
    if kind in (None, "volume") and len(parts) == 1 and rest:
        return meta.get(SOURCE_NAME) or rest, "volume"
    return None


def _newer(a: ResolvedSnapshot, b: ResolvedSnapshot | None) -> bool:
    if b is None:
        return True
    return (a.time or datetime.min, a.snapshot_id) > (b.time or datetime.min, b.snapshot_id)


def sources_from_snapshots(prefix: str, snaps: Iterable[ResolvedSnapshot]) -> list[RestoreSource]:
    """One source per volume, database and clusterResources source under ``prefix``: a
    database source's dumps (one snapshot per database, plus globals) become one source
    whose snapshot is the newest dump and whose ``run_tag`` is that dump's run."""
    chosen: dict[tuple[str, SourceKind], ResolvedSnapshot] = {}
    for snap in snaps:
        if not snap.source.startswith(prefix):
            continue
        found = _classify(snap.source[len(prefix) :], snap.meta)
        if found is None:
            continue
        if _newer(snap, chosen.get(found)):
            chosen[found] = snap
    return [
        RestoreSource(
            name=name,
            kind=kind,
            snapshot_id=snap.snapshot_id,
            run_tag=_run_tag(snap.tags),
            time=snap.time,
            meta=dict(snap.meta),
        )
        for (name, kind), snap in sorted(chosen.items())
    ]


def repository_origin(
    policy: str, prefix: str, location: str, snaps: Iterable[ResolvedSnapshot]
) -> Origin:
    return Origin(
        policy=policy,
        run=None,
        described=f"BackupLocation {location} (snapshots under {prefix})",
        sources=sources_from_snapshots(prefix, snaps),
    )


def resolve_job_name(request: str) -> str:
    return job_name(request, RESOLVE_SOURCE)


def resolve_job(
    image: JobImage, body: Mapping[str, Any], req: RestoreRequest, location: BackupLocation
) -> JobRequest:
    """The Job that lists the newest snapshot per source of the request's policy on
    ``location`` (at or before ``pointInTime``); its summary is the result."""
    assert req.spec.policy_ref is not None
    ns = req.metadata.namespace or ""
    when = req.spec.point_in_time
    args = commands.snapshots(
        policy_prefix(ns, req.spec.policy_ref.name), before=when.isoformat() if when else None
    )
    return restore_job(
        image,
        body,
        req,
        location,
        RESOLVE_SOURCE,
        args,
        active_deadline_seconds=600,
        backoff_limit=2,
    )


# ------------------------------------------------ finding the origin of a request


class Wait(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
            raise Wait(f"waiting for BackupRun {name} to finish (it is {phase or 'Pending'})")
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
    on the first pass, found by its name after a restart). Raises Wait while it runs."""
    request = with_settings(resolve_job(rt.image, body, req, location), settings)
    lname = location.metadata.name or ""
    job = rt.kube.get_job(request.namespace, request.name)
    if job is None:
        rt.kube.create_job(build_job(request))
        raise Wait(f"resolving the snapshots on BackupLocation {lname} (Job {request.name})")
    outcome = rt.kube.outcome_of(request.namespace, job, request.name)
    if outcome.state in ("Pending", "Running"):
        why = f": {outcome.waiting}" if outcome.waiting else ""
        raise Wait(f"resolving the snapshots on BackupLocation {lname} (Job {request.name}){why}")
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
    record: Callable[[], None],
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
        record()  # recorded before planning
    return repository_origin(pname, prefix, lname, status.resolved_snapshots), location


def find_origin(
    rt: Runtime,
    body: dict[str, Any],
    req: RestoreRequest,
    policy: BackupPolicy | None,
    settings: JobSettings | None,
    status: RestoreRequestStatus,
    record: Callable[[], None],
) -> tuple[Origin, BackupLocation]:
    """Where the snapshots come from: a BackupRun, or (policyRef, no run) the repository."""
    run = None if status.resolved_snapshots else _find_run(rt, req, status)
    if run is not None:
        origin, location = _from_run(rt, req, run)
    else:
        origin, location = _from_repository(rt, body, req, policy, settings, status, record)
    status.backup_run = origin.run
    status.location = location.metadata.name
    return origin, location


def policy_name(rt: Runtime, req: RestoreRequest, status: RestoreRequestStatus) -> str:
    """The policy whose snapshots are restored: policyRef's, else the BackupRun's."""
    if req.spec.policy_ref is not None:
        return req.spec.policy_ref.name
    ns = req.metadata.namespace or ""
    name = status.backup_run or (req.spec.backup_run_ref.name if req.spec.backup_run_ref else "")
    run = rt.kube.get_cr("backupruns", ns, name) if name else None
    return str(((run or {}).get("spec") or {}).get("policyRef", {}).get("name", ""))
