"""What a BackupPolicy backs up: ``spec.sources`` (volumes, database servers, cluster
resources), each source's own settings, and the rules that hold across them (at least one
source, unique names)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from safehold.api.base import ApiModel
from safehold.api.errors import invalid
from safehold.api.references import DatabaseCredentials
from safehold.api.selectors import LabelSelector
from safehold.api.types import Duration, NamespaceName, ResourceName, SourceName, parse_duration

__all__ = [
    "RESOURCES_SOURCE",
    "ClusterResourcesSource",
    "DatabaseSource",
    "JobHooks",
    "PointInTime",
    "Sources",
    "VolumeSnapshot",
    "VolumeSource",
]

_NAMESPACE_OR_ALL = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"
_RESOURCE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_NamespaceOrAll = Annotated[str, Field(max_length=63, pattern=_NAMESPACE_OR_ALL)]
_ResourceType = Annotated[str, Field(max_length=253, pattern=_RESOURCE)]
#: A path pattern of a volume source (rules: docs/cli.md, `safehold backup`); the backup Job
#: checks the rest, an empty pattern is refused here already.
_PathPattern = Annotated[str, Field(min_length=1, max_length=4096)]
#: The name of the cluster resources' source (``spec.sources.clusterResources``).
RESOURCES_SOURCE = "resources"


class VolumeSnapshot(ApiModel):
    """Freeze the volume with a CSI VolumeSnapshot and read a clone of it."""

    volume_snapshot_class_name: str | None = Field(default=None, max_length=253)
    """The VolumeSnapshotClass to use; empty uses the cluster's default for the driver.
    Without any class, the live volume is read and the run notes it in the source result."""
    ready_timeout: Duration = "10m"
    """How long to wait for the snapshot to become ready to use before the source fails."""


class JobHooks(ApiModel):
    """Shell commands run inside the backup Job (``safehold backup --pre-hook/--post-hook``):
    the pre hooks before the source is read, the post hooks after, also when the backup
    failed. They run in the safehold image, as the Job's user, with the source mounted
    read-only at ``/data/volume``; see docs/hooks.md."""

    pre_backup: list[str] = Field(default_factory=list, max_length=8)
    """Command lines run with ``sh -c`` before the backup, in order."""
    post_backup: list[str] = Field(default_factory=list, max_length=8)
    """Command lines run with ``sh -c`` after the backup, in order."""
    timeout_seconds: int = Field(default=60, ge=1, le=3600)
    """How long each command may take before it is killed."""
    on_error: Literal["Fail", "Continue"] = "Fail"
    """Fail: a failed pre hook fails the source without a snapshot, a failed post hook fails
    the source; Continue: the failure is recorded as a warning."""


class VolumeSource(ApiModel):
    """PersistentVolumeClaims of the policy's namespace: one by name, or all that match."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["claimName"]}, {"required": ["selector"]}]}
    )

    name: SourceName | None = None
    """The source's name in results and restores (with claimName only). Defaults to the
    claim's name; with a selector, each matching claim becomes a source named after the
    claim, so a name is refused there."""
    claim_name: ResourceName | None = None
    """The PersistentVolumeClaim to back up. Set this or selector."""
    selector: LabelSelector | None = None
    """Back up every PersistentVolumeClaim whose labels match. Set this or claimName."""
    include: list[_PathPattern] = Field(default_factory=list, max_length=256)
    """Glob patterns of paths to back up (relative to the volume's root); empty means all."""
    exclude: list[_PathPattern] = Field(default_factory=list, max_length=256)
    """Glob patterns of paths to leave out, e.g. ``cache/**`` or ``*.tmp``."""
    snapshot: VolumeSnapshot | None = None
    """Read a crash-consistent CSI snapshot instead of the live volume."""
    hooks: JobHooks | None = None
    """Shell commands run inside this source's backup Job, before and after it reads. With
    snapshot, only postBackup: the snapshot is taken before the Job starts."""

    @model_validator(mode="after")
    def _claim_or_selector(self) -> VolumeSource:
        """Each volume source sets exactly one of `claimName` and `selector`."""
        if (self.claim_name is None) == (self.selector is None):
            raise invalid(
                "claimName",
                "set exactly one of claimName (one claim) and selector (claims by label)",
            )
        if self.snapshot is not None and self.hooks is not None and self.hooks.pre_backup:
            raise invalid(
                "hooks.preBackup",
                "run in the backup Job, which reads a VolumeSnapshot taken before it starts, "
                "so they cannot prepare what the snapshot holds: prepare the application with "
                "the policy's spec.hooks.preBackup (run in its pods before the snapshot), or "
                "remove snapshot to read the live volume after the hooks",
            )
        if self.selector is not None and self.name is not None:
            raise invalid(
                "name",
                "a selector's sources are named after their claims: remove name, or name "
                "one claim with claimName",
            )
        return self


#: Of a replication slot: what PostgreSQL accepts in a slot's name.
SLOT_PATTERN = r"^[a-z0-9_]{1,63}$"


class PointInTime(ApiModel):
    """PostgreSQL point-in-time recovery: the runs take base backups of the whole server
    (pg_basebackup) instead of dumps, and the write-ahead log (WAL) is archived between
    them, so that a restore can bring the server back to any second the archive reaches
    (docs/databases.md)."""

    archive_interval: Duration = "5m"
    """How often the WAL is archived into the repository: a lost server loses at most about
    this much of its latest work. At least 1m."""
    slot: str | None = Field(default=None, pattern=SLOT_PATTERN)
    """The physical replication slot that keeps the server's WAL until it is archived
    (created by the first archive); empty: safehold_NAMESPACE_POLICY_SOURCE, cut to 63
    characters. Each policy archiving the same server needs its own."""

    @model_validator(mode="after")
    def _at_least_a_minute(self) -> PointInTime:
        if parse_duration(self.archive_interval) < timedelta(minutes=1):
            raise invalid(
                "archiveInterval",
                "at least 1m: each archive is a Job, and the WAL of a shorter interval is "
                "more Jobs than recovery point",
            )
        return self


class DatabaseSource(ApiModel):
    """A database server whose databases are dumped (pg_dump, mysqldump) into the repository,
    or, with ``pointInTime``, a PostgreSQL server backed up whole with its WAL archived."""

    name: SourceName
    """The source's name in results and restores."""
    engine: Literal["postgresql", "mysql"]
    """The server type; mysql also covers MariaDB."""
    host: str = Field(min_length=1, max_length=253)
    """The server's host name, e.g. ``db.prod.svc``."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """The server's port; defaults to 5432 for postgresql and 3306 for mysql."""
    databases: list[str] = Field(default_factory=list, max_length=256)
    """The databases to dump; empty dumps all of them (with roles, for postgresql)."""
    credentials_secret_ref: DatabaseCredentials
    """Where the user name and password come from."""
    point_in_time: PointInTime | None = None
    """PostgreSQL only: take base backups instead of dumps and archive the WAL between
    them, for restores to any second. The user needs the REPLICATION attribute, and
    pg_hba.conf must let it in for replication."""

    @model_validator(mode="after")
    def _point_in_time(self) -> DatabaseSource:
        if self.point_in_time is None:
            return self
        if self.engine != "postgresql":
            raise invalid(
                "pointInTime",
                "point-in-time recovery archives PostgreSQL's write-ahead log; for mysql, "
                "remove pointInTime (the runs then dump the databases)",
            )
        if self.databases:
            raise invalid(
                "databases",
                "with pointInTime a run backs up the whole server (a base backup), not "
                "single databases: remove databases, or make a second source without "
                "pointInTime for the dumps",
            )
        return self


class ClusterResourcesSource(ApiModel):
    """Resource manifests (Deployments, ConfigMaps, ...) exported as YAML."""

    include_namespaces: list[_NamespaceOrAll] = Field(default_factory=list, max_length=256)
    """Namespaces to export; empty means the policy's own, ``*`` all (the operator
    then needs cluster-wide read access)."""
    exclude_namespaces: list[NamespaceName] = Field(default_factory=list, max_length=256)
    """Namespaces to leave out, e.g. ``kube-system``."""
    include_resources: list[_ResourceType] = Field(default_factory=list, max_length=256)
    """Resource types as ``plural.group`` (``deployments.apps``, ``configmaps``); empty: all."""
    exclude_resources: list[_ResourceType] = Field(default_factory=list, max_length=256)
    """Resource types to leave out, e.g. ``events``, ``secrets``."""
    label_selector: LabelSelector | None = None
    """Only objects whose labels match."""
    include_cluster_scoped: bool = False
    """Also export the cluster-scoped objects the namespaced ones use
    (CustomResourceDefinitions, StorageClasses, ClusterRoles)."""
    include_secrets: bool = False
    """Also export Secrets (left out unless set)."""
    service_account_name: ResourceName | None = None
    """The ServiceAccount (in the policy's namespace) the export Job runs as: it needs
    ``get`` and ``list`` on the selected types in the selected namespaces. Required: the
    operator hands out no API rights itself (docs/cluster-resources.md)."""


class Sources(ApiModel):
    """What to back up; at least one source."""

    volumes: list[VolumeSource] = Field(default_factory=list, max_length=64)
    """PersistentVolumeClaims, by name or label selector."""
    databases: list[DatabaseSource] = Field(default_factory=list, max_length=32)
    """Database servers to dump."""
    cluster_resources: ClusterResourcesSource | None = None
    """Resource manifests, as the source named ``resources``."""

    @model_validator(mode="after")
    def _not_empty_and_unique(self) -> Sources:
        """A policy has at least one source, and source names are unique."""
        if not self.volumes and not self.databases and self.cluster_resources is None:
            raise invalid(
                "volumes", "the policy backs up nothing: add volumes, databases or clusterResources"
            )
        # the cluster resources' source is named RESOURCES_SOURCE: no other source may be
        seen = {RESOURCES_SOURCE: "clusterResources"} if self.cluster_resources else {}
        names = [(f"volumes[{i}]", v.name or v.claim_name) for i, v in enumerate(self.volumes)]
        names += [(f"databases[{i}]", d.name) for i, d in enumerate(self.databases)]
        for where, name in names:
            if name is None:
                continue
            if name in seen:
                raise invalid(
                    f"{where}.name",
                    f"source name {name!r} is already used by {seen[name]}: give each a "
                    "unique name",
                )
            seen[name] = where
        return self
