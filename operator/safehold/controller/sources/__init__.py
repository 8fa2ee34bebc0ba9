"""A BackupPolicy's sources, one module per kind, behind one small protocol.

- ``volumes.py``: volume sources (a claim, or claims by label), one backup Job per claim;
- ``volume_snapshots.py``: a volume source read from a clone of a CSI VolumeSnapshot;
- ``databases.py``: database sources, dumped (and restored) by Jobs of their own;
- ``resources.py``: the clusterResources source, exported (and applied) by one Job.

Each kind gives the BackupRun what :class:`SourceKind` names: its planned source results
and, per source, the :class:`BackupJob` (the command and what the pod needs);
safehold.controller.backuprun builds every backup Job from that in one place (name,
labels, owner, repository, the policy's ``spec.job``). Every snapshot of a source is
named by :func:`source_name`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from safehold.api import (
    BackupLocation,
    BackupPolicy,
    BackupRun,
    ErrorDetail,
    RestoreRequest,
    SourceResult,
)
from safehold.api.enums import SourceKind as SourceKindName
from safehold.controller.jobs import (
    COMPONENT_RESTORE,
    LABEL_RESTORE,
    LABEL_SOURCE,
    FileAccess,
    JobImage,
    JobRequest,
    Mount,
    job_name,
)
from safehold.controller.repository import with_repository
from safehold.controller.runtime import Runtime

__all__ = [
    "BackupJob",
    "RunContext",
    "SourceFailed",
    "SourceKind",
    "policy_prefix",
    "restore_job",
    "source_name",
]


def policy_prefix(namespace: str, policy: str) -> str:
    """The beginning of every snapshot source name of ``policy``, with its closing slash
    (what retention, replication and a restore's resolve Job select by)."""
    return f"{namespace}/{policy}/"


def source_name(namespace: str, policy: str, source: str) -> str:
    """The snapshot source name of a policy's source: ``NAMESPACE/POLICY/SOURCE`` (a
    database source's dumps go below it, ``.../db/DATABASE`` and ``.../globals``)."""
    return policy_prefix(namespace, policy) + source


class SourceFailed(Exception):
    """The source cannot be backed up: it fails with ``detail`` (no Job)."""

    def __init__(self, detail: ErrorDetail) -> None:
        super().__init__(detail.message)
        self.detail = detail


@dataclass(frozen=True)
class RunContext:
    """The BackupRun being planned or started, and what it was loaded with."""

    rt: Runtime
    body: Mapping[str, Any]
    run: BackupRun
    policy: BackupPolicy
    location: BackupLocation

    @property
    def namespace(self) -> str:
        return self.run.metadata.namespace or ""

    @property
    def policy_name(self) -> str:
        return self.policy.metadata.name or ""

    @property
    def run_name(self) -> str:
        return self.run.metadata.name or ""

    def source_name(self, source: str) -> str:
        return source_name(self.namespace, self.policy_name, source)

    @property
    def snapshot_host(self) -> str:
        """The ``--host`` of the run's snapshots: the namespace (docs/operator.md, snapshot
        hosts). A Job's pod has a new random host name each run, which would make every
        backup a full one and every snapshot a retention series of its own; the
        namespace is stable, known without any API call, and the same in a rebuilt
        cluster that re-applies the policies, so its first backups are incrementals of the
        old ones."""
        return self.namespace

    def gone(self, source: str) -> SourceFailed:
        """The failure of a source the policy no longer has."""
        return SourceFailed(
            ErrorDetail(
                reason="SourceNotFound",
                message=f"source {source} is no longer in BackupPolicy {self.policy_name}",
            )
        )


@dataclass(frozen=True)
class BackupJob:
    """What one source's backup Job runs and needs; the rest is the same for every kind."""

    args: Sequence[str]
    mounts: Sequence[Mount] = ()
    node_name: str | None = None
    #: Job-side hook options (safehold.controller.job_hooks) and the mounts they see.
    hooks: Sequence[str] = ()
    hook_mounts: Sequence[str] = ()
    service_account_name: str | None = None
    active_deadline_seconds: int | None = None
    backoff_limit: int | None = None
    #: What it does to a volume's files (jobs.JobRequest.file_access).
    file_access: FileAccess | None = None


class SourceKind(Protocol):
    """What a source kind provides to a BackupRun."""

    @property
    def kind(self) -> SourceKindName:
        """The ``kind`` of its source results."""
        ...

    def plan(self, ctx: RunContext, wanted: set[str]) -> list[SourceResult]:
        """One result per source of this kind the run backs up (``wanted``: the run's
        ``spec.sources``, empty for all), Pending with its Job's name, or already Failed."""
        ...

    def names(self, ctx: RunContext) -> set[str]:
        """The names of the policy's sources of this kind (for spec.sources' check)."""
        ...

    def backup_job(self, ctx: RunContext, source: SourceResult) -> BackupJob | None:
        """The source's backup Job; None while it is not ready to start (a snapshot being
        taken). Raises :class:`SourceFailed` when it cannot be backed up."""
        ...

    def finished(self, ctx: RunContext, source: SourceResult) -> None:
        """The source's Job has ended: clean up what ``backup_job`` made for it."""
        ...


def restore_job(
    image: JobImage,
    body: Mapping[str, Any],
    req: RestoreRequest,
    location: BackupLocation,
    source: str,
    args: Sequence[str],
    *,
    namespace: str | None = None,
    mounts: Sequence[Mount] = (),
    service_account_name: str | None = None,
    active_deadline_seconds: int | None = None,
    backoff_limit: int | None = None,
    file_access: FileAccess | None = None,
) -> JobRequest:
    """Every Job of a RestoreRequest (a source's, or the resolve Job): named after the
    request and ``source`` and labelled with both, reading ``location``'s repository, in
    ``namespace`` (the request's by default) and owned by the request only in its own
    namespace (owner references cannot cross namespaces)."""
    own = req.metadata.namespace or ""
    where = namespace or own
    request = JobRequest(
        name=job_name(req.metadata.name or "", source),
        namespace=where,
        component=COMPONENT_RESTORE,
        args=args,
        labels={LABEL_RESTORE: req.metadata.name or "", LABEL_SOURCE: source},
        owner=body if where == own else None,
        mounts=mounts,
        image=image,
        service_account_name=service_account_name,
        file_access=file_access,
    )
    if active_deadline_seconds is not None:
        request = replace(request, active_deadline_seconds=active_deadline_seconds)
    if backoff_limit is not None:
        request = replace(request, backoff_limit=backoff_limit)
    return with_repository(request, location)
