"""``RestoreRequest``: what to bring back, from which backup, into where.

Which snapshots: ``backupRunRef`` names a BackupRun; ``policyRef`` takes the policy's
newest successful BackupRun completed at or before ``pointInTime``. When no BackupRun
object matches (a new cluster after a disaster: the runs died with the old one), the
snapshots are found in the repository itself: a short Job lists, on ``locationRef`` (or
the policy's ``location`` when the policy exists; one of them is required), the newest
snapshot at or before ``pointInTime`` of every source named ``NAMESPACE/POLICY/...``.
``status.backupRun`` then stays empty, ``status.resolvedSnapshots`` records what the Job
found and ``status.restored[].snapshotId`` what was used; a location with no snapshot of
the policy fails with reason NoBackupFound. A re-created claim gets the size, access
modes, volume mode, labels and StorageClass (through ``storageClassMapping``) recorded in
its snapshot when the original claim is gone; a database source needs its BackupPolicy
(the server and the credentials Secret), e.g. applied from Git. Every Job of a restore
follows the request's own ``spec.job``, over the policy's (when the policy exists), over
the chart's ``jobDefaults``.

Tenancy: a request writes into its own namespace unless ``target.namespace`` or
``namespaceMapping`` (for clusterResources also ``resources.includeNamespaces``, for a
database a Service of another namespace) names another; that namespace must exist and
its owners must allow it with ConfigMap ``safehold-restore-grant`` listing the
request's namespace in ``data.fromNamespaces``. Otherwise the request fails with reason
CrossNamespaceDenied (or NamespaceNotFound) before anything is written there; the grant
is read again before each Job is created (docs/security.md).

Rule for existing data (``existingResourcePolicy``), per target: Skip leaves a claim
that exists untouched (its source is Skipped, with a warning) and every object or
database that exists, and restores the rest; Overwrite restores into them (a claim's files
not in the backup are left alone); Fail stops before writing anything when any target
exists. The status lists what was restored and skipped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from safehold.api.base import ApiModel
from safehold.api.conditions import Conditions
from safehold.api.enums import RunPhase, SourceKind
from safehold.api.errors import invalid
from safehold.api.jobs import JobSettings
from safehold.api.meta import CrdInfo, CustomResource, PrinterColumn
from safehold.api.references import LocalObjectReference
from safehold.api.reports import ErrorDetail, Progress
from safehold.api.selectors import LabelSelector
from safehold.api.types import (
    NamespaceName,
    Quantity,
    ResourceName,
    StorageClassName,
    quantity_value,
)

__all__ = [
    "ExistingResourcePolicy",
    "ResolvedSnapshot",
    "RestoreRequest",
    "RestoreRequestSpec",
    "RestoreRequestStatus",
    "RestoreResourceFilter",
    "RestoreTarget",
    "RestoredItem",
]

ExistingResourcePolicy = Literal["Skip", "Overwrite", "Fail"]


class RestoreResourceFilter(ApiModel):
    """Which resource manifests of a clusterResources source to re-create."""

    include_namespaces: list[str] = Field(default_factory=list, max_length=256)
    """Namespaces (as backed up) to restore; empty means all in the backup."""
    exclude_namespaces: list[str] = Field(default_factory=list, max_length=256)
    """Namespaces to leave out."""
    include_resources: list[str] = Field(default_factory=list, max_length=256)
    """Resource types as ``plural.group``; empty means all in the backup."""
    exclude_resources: list[str] = Field(default_factory=list, max_length=256)
    """Resource types to leave out."""
    label_selector: LabelSelector | None = None
    """Only objects whose labels match."""
    names: list[str] = Field(default_factory=list, max_length=256)
    """Only objects of these names; empty means all."""
    service_account_name: ResourceName | None = None
    """The ServiceAccount (in the request's namespace) the restore Job runs as: it needs
    ``get`` and ``create`` (``patch`` for Overwrite) on the restored types in the target
    namespaces. Required to restore a clusterResources source."""


class RestoreTarget(ApiModel):
    """Where a volume source's data goes, when not back into a claim of its own name; for a
    database source with pointInTime, the claim its PostgreSQL data directory is written
    into."""

    claim_name: ResourceName
    """The PersistentVolumeClaim to restore into; created if missing."""
    namespace: NamespaceName | None = None
    """Its namespace; empty means the RestoreRequest's namespace. Another namespace must
    exist and allow it: its owners list this request's namespace in ConfigMap
    safehold-restore-grant there (data.fromNamespaces); otherwise the request fails with
    CrossNamespaceDenied (docs/security.md)."""
    storage_class_name: StorageClassName | None = None
    """For a claim that is created: its StorageClass (empty: the original claim's, mapped
    by storageClassMapping; the cluster's default when the backup recorded none)."""
    size: Quantity | None = None
    """For a claim that is created: its size (empty: the backed-up claim's size)."""
    path: str = Field(default="", max_length=4096)
    """A directory inside the claim to restore into, from its root (``app/restored`` or
    ``/app/restored``; no ``..``); empty means its root."""

    @model_validator(mode="after")
    def _size_above_zero(self) -> RestoreTarget:
        """A claim to create has a size above zero, or the apiserver refuses it; the path
        stays inside the claim (the Job mounts it as a subPath, which the kubelet refuses
        outside it)."""
        if self.size is not None and quantity_value(self.size) <= 0:
            raise invalid("size", "a claim holds more than nothing: write a size such as 10Gi")
        if ".." in self.path.split("/"):
            raise invalid(
                "path",
                f"{self.path!r} must stay inside the claim: a path from its root such as "
                "app/restored, without ..",
            )
        return self


class RestoreRequestSpec(ApiModel):
    """What to restore, from where, into where."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["backupRunRef"]}, {"required": ["policyRef"]}]}
    )

    backup_run_ref: LocalObjectReference | None = None
    """The BackupRun whose snapshots to restore. Set this, or policyRef."""
    policy_ref: LocalObjectReference | None = None
    """Restore the newest snapshot of this BackupPolicy (at or before pointInTime)."""
    point_in_time: datetime | None = None
    """With policyRef: the newest snapshot at or before this time (RFC 3339, e.g.
    2026-01-31T23:00:00Z) is restored; empty means the newest. A database source with
    pointInTime recovers to this very second (empty: as far as its WAL archive goes)."""
    location_ref: LocalObjectReference | None = None
    """The BackupLocation to read from, e.g. a recovery site; empty means the BackupRun's
    location, else the policy's. Required with policyRef when neither a BackupRun nor the
    policy exists in this cluster."""
    sources: list[str] = Field(default_factory=list, max_length=64)
    """Sources to restore, by name; empty means all sources of the backup."""
    paths: list[str] = Field(default_factory=list, max_length=256)
    """Patterns of the paths to restore inside each volume source, relative to the
    volume's root, in the backup's pattern language (docs/cli.md): ``*`` and ``?`` within
    one name, ``**`` across directories; a pattern with ``/`` is anchored at the volume's
    root (``dir/file``, ``/top``, ``logs/*.gz``), a single name matches at any depth
    (``*.conf``); a matching directory is restored with all it holds, with the directories
    leading to it. When nothing matches, the source fails without writing anything and
    its message names the closest paths. Empty means everything."""
    resources: RestoreResourceFilter | None = None
    """Which manifests of the clusterResources source to restore."""
    namespace_mapping: dict[str, str] = Field(default_factory=dict)
    """Restore into other namespaces: ``{prod: prod-restored}``. Each target other than
    the request's namespace must exist and list the request's namespace in its ConfigMap
    safehold-restore-grant (data.fromNamespaces); otherwise the request fails with
    CrossNamespaceDenied before anything is written (docs/security.md)."""
    storage_class_mapping: dict[str, StorageClassName] = Field(default_factory=dict)
    """Create claims with other StorageClasses: ``{gp2: gp3}``."""
    target: RestoreTarget | None = None
    """Restore a single volume source into this claim instead, or the data directory of a
    database source with pointInTime (required for one)."""
    existing_resource_policy: ExistingResourcePolicy = "Skip"
    """What to do with a target that exists (a claim, an object, a database): Skip leaves
    it untouched (a claim that exists is not restored into at all), Overwrite restores into
    it, Fail stops the request before anything is written (docs/operator.md)."""
    dry_run: bool = False
    """Only list what would be restored, into status.restored, without writing anything."""
    job: JobSettings | None = None
    """Settings for this request's Jobs, over the policy's spec.job and the chart's
    jobDefaults, field by field: more memory or a longer deadline for a large restore, or
    runAsRoot to give restored files their owners when the policy does not say so."""

    @model_validator(mode="after")
    def _one_origin(self) -> RestoreRequestSpec:
        """Exactly one of `backupRunRef` and `policyRef`; `pointInTime` only with
        `policyRef`."""
        if (self.backup_run_ref is None) == (self.policy_ref is None):
            raise invalid(
                "backupRunRef",
                "set exactly one of backupRunRef (a BackupRun) and policyRef (a policy's "
                "newest snapshot, optionally at or before pointInTime)",
            )
        if self.point_in_time is not None and self.policy_ref is None:
            raise invalid(
                "pointInTime",
                "only works with policyRef; with backupRunRef the run fixes the time",
            )
        return self


class RestoredItem(ApiModel):
    """What was (or, for a dry run, would be) restored from one source."""

    source: str = Field(max_length=253)
    """The source's name."""
    kind: SourceKind
    """volume, database or clusterResources."""
    snapshot_id: str | None = Field(default=None, max_length=128)
    """The snapshot restored from."""
    target: str = Field(default="", max_length=1024)
    """Where it went, e.g. ``persistentvolumeclaim/prod/data``."""
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"] = "Pending"
    """This item's state."""
    files: int | None = Field(default=None, ge=0)
    """Files (or objects) restored."""
    bytes: int | None = Field(default=None, ge=0)
    """Bytes written."""
    skipped: int | None = Field(default=None, ge=0)
    """Files or objects left alone because they existed (existingResourcePolicy Skip)."""
    error: ErrorDetail | None = None
    """Why it failed."""


class ResolvedSnapshot(ApiModel):
    """A snapshot of the policy found in the repository itself (policyRef without a
    matching BackupRun, e.g. in a fresh cluster): the newest of its source at or before
    pointInTime, as the resolve Job reported it."""

    source: str = Field(max_length=1024)
    """The snapshot's source name in the repository, e.g. ``prod/app/data``."""
    snapshot_id: str = Field(max_length=128)
    """Its id."""
    time: datetime | None = None
    """When it was taken."""
    tags: list[str] = Field(default_factory=list, max_length=64)
    """Its tags (``run=NAME`` names the BackupRun that made it)."""
    meta: dict[str, str] = Field(default_factory=dict)
    """The metadata recorded at backup time (``source.kind``, ``claim.size``, ...)."""


class RestoreRequestStatus(ApiModel):
    """The record of the restore, written by the controller."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` this status describes."""
    phase: RunPhase | None = None
    """Pending, Running, Succeeded, PartiallyFailed or Failed."""
    conditions: Conditions = Field(default_factory=list)
    """Complete is True once finished; Failed is True when some or all of it failed."""
    backup_run: str | None = Field(default=None, max_length=253)
    """The BackupRun restored from (resolved from policyRef and pointInTime); empty when
    no BackupRun matched and the snapshots were resolved from the repository."""
    location: str | None = Field(default=None, max_length=253)
    """The BackupLocation read from."""
    resolved_snapshots: list[ResolvedSnapshot] = Field(default_factory=list, max_length=256)
    """With policyRef and no matching BackupRun: the snapshots the resolve Job found in
    the location's repository (newest per source), recorded before anything is planned."""
    start_time: datetime | None = None
    """When the restore started."""
    completion_time: datetime | None = None
    """When it finished."""
    restored: list[RestoredItem] = Field(default_factory=list, max_length=256)
    """One entry per source restored."""
    warnings: list[str] = Field(default_factory=list, max_length=64)
    """Things to look at, e.g. objects skipped because they exist."""
    progress: Progress | None = None
    """Byte progress while running."""


class RestoreRequest(CustomResource):
    """A request to restore backed-up volumes, databases or resources."""

    crd = CrdInfo(
        kind="RestoreRequest",
        plural="restorerequests",
        singular="restorerequest",
        short_names=("rr", "rreq"),
        printer_columns=(
            PrinterColumn("Backup", "string", ".status.backupRun", "The BackupRun restored"),
            PrinterColumn("Phase", "string", ".status.phase", "The restore's state"),
            PrinterColumn("Progress", "integer", ".status.progress.percent", "Percent done"),
            PrinterColumn("Dry Run", "boolean", ".spec.dryRun", "Only listing", priority=1),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Age"),
        ),
    )

    kind: Literal["RestoreRequest"] = "RestoreRequest"
    """``RestoreRequest``."""
    spec: RestoreRequestSpec
    """What to restore."""
    status: RestoreRequestStatus | None = None
    """Written by the controller."""
