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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from safehold.api import BackupLocation, RestoreRequest
from safehold.api.enums import SourceKind
from safehold.api.restorerequest import ResolvedSnapshot
from safehold.api.summaries import SnapshotsSummary
from safehold.controller import commands
from safehold.controller.common import parse_time
from safehold.controller.jobs import (
    COMPONENT_RESTORE,
    LABEL_RESTORE,
    LABEL_SOURCE,
    JobRequest,
    job_name,
)
from safehold.controller.repository import with_repository
from safehold.controller.snapshotmeta import SOURCE_KIND, SOURCE_NAME
from safehold.controller.sources import policy_prefix
from safehold.controller.sources.resources import KIND as RESOURCES_KIND
from safehold.controller.sources.resources import SOURCE as RESOURCES_SOURCE

__all__ = [
    "RESOLVE_SOURCE",
    "Origin",
    "RestoreSource",
    "parse_resolved",
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
    image: str, body: Mapping[str, Any], req: RestoreRequest, location: BackupLocation
) -> JobRequest:
    """The Job that lists the newest snapshot per source of the request's policy on
    ``location`` (at or before ``pointInTime``); its summary is the result."""
    assert req.spec.policy_ref is not None
    ns = req.metadata.namespace or ""
    when = req.spec.point_in_time
    args = commands.snapshots(
        policy_prefix(ns, req.spec.policy_ref.name), before=when.isoformat() if when else None
    )
    request = JobRequest(
        name=resolve_job_name(req.metadata.name or ""),
        namespace=ns,
        component=COMPONENT_RESTORE,
        args=args,
        labels={LABEL_RESTORE: req.metadata.name or "", LABEL_SOURCE: RESOLVE_SOURCE},
        owner=body,
        image=image,
        active_deadline_seconds=600,
        backoff_limit=2,
    )
    return with_repository(request, location)
