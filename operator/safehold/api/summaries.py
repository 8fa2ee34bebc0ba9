"""What each ``safehold --json`` command reports to the controller: the Job contract, typed.

A Job's result is the last JSON line the CLI prints (and writes to its pod's termination
message, trimmed to 4 KiB by whole items). These models name every key the controller
reads from it, one model per command the operator runs. Every field has a default, so the
partial summary of a failed command still parses; ``tests/controller/test_job_contract.py``
runs the real commands and checks that their output carries every field declared here and
that the controller's readers turn it into the status a user sees.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BackupHooksSummary",
    "BackupSummary",
    "DatabaseDumpCheck",
    "DatabaseTestSummary",
    "DumpCheckSummary",
    "ForgetSummary",
    "HookReport",
    "JobSummary",
    "ObjectLock",
    "PathError",
    "PitrCheckSummary",
    "PruneSummary",
    "ReplicateSummary",
    "RepositoryInfoSummary",
    "RepositoryInitSummary",
    "RestoreCheck",
    "RestoreSummary",
    "ScratchDatabase",
    "ScratchRestoreSummary",
    "SnapshotCheck",
    "SnapshotItem",
    "SnapshotsSummary",
    "SourceNewest",
    "TransferCounts",
    "VerifySummary",
    "WalArchiveSummary",
]


class _Summary(BaseModel):
    """Keys the controller does not read are ignored; values are checked by type."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class JobSummary(_Summary):
    """What every command reports, with what it cost: the CPU seconds of the process and
    its children (pg_dump, mysqldump, hooks) and the peak resident memory of the largest."""

    ok: bool = False
    exit_code: int | None = None
    error: str | None = None
    #: What kind of failure ``error`` is, where the exit code does not say (1 is every
    #: other error): a storage error's kind (``PermissionDenied``, ``NotFound``,
    #: ``TransientError`` after the retries, ``CertificateNotTrusted``...).
    reason: str | None = Field(default=None, max_length=64, pattern=r"^[A-Z][A-Za-z]*$")
    cpu_seconds: float | None = Field(default=None, ge=0)
    peak_memory_bytes: int | None = Field(default=None, ge=0)


class PathError(_Summary):
    path: str = ""
    error: str = ""


class SnapshotCheck(_Summary):
    """``backup --verify``: the new snapshot's structure (verification.afterBackup)."""

    ok: bool = False
    message: str = ""


class BackupSummary(JobSummary):
    """``safehold backup`` (and ``dump``): into ``BackupRun.status.sources[]``."""

    snapshot: str | None = None
    parent: str | None = None
    type: str | None = None
    total_files: int | None = Field(default=None, ge=0)
    bytes_read: int | None = Field(default=None, ge=0)
    bytes_new: int | None = Field(default=None, ge=0)
    bytes_stored: int | None = Field(default=None, ge=0)
    duration_s: float | None = None
    errors: int = 0
    error_list: list[PathError] = Field(default_factory=list)
    verify: SnapshotCheck | None = None


class RestoreCheck(_Summary):
    """``restore --verify``: the restored files read back and checked against the snapshot
    (the scheduled test restore reads it); ``problems`` lists the first 100 of
    ``problems_total``."""

    files: int | None = Field(default=None, ge=0)
    bytes: int | None = Field(default=None, ge=0)
    problems_total: int | None = Field(default=None, ge=0)
    problems: list[PathError] = Field(default_factory=list)


class HookReport(_Summary):
    """One Job-side hook as the backup reports it (``safehold backup --pre-hook ...``)."""

    name: str = "?"
    phase: str = "pre"
    exit_code: int | None = None
    duration_seconds: float | None = None
    timed_out: bool = False
    output: str | None = None
    on_error: str = "fail"
    ok: bool = False


class BackupHooksSummary(JobSummary):
    """``safehold backup`` with Job-side hooks: into ``BackupRun.status.sources[].hooks``."""

    hooks: list[HookReport] | None = None


class RestoreSummary(JobSummary):
    """``safehold restore``: into ``RestoreRequest.status``."""

    files: int | None = Field(default=None, ge=0)
    bytes_written: int | None = Field(default=None, ge=0)
    files_skipped: int | None = Field(default=None, ge=0)
    duration_s: float | None = Field(default=None, ge=0)
    #: The paths that could not be written or given their owner, mode or times.
    errors: int | None = Field(default=None, ge=0)
    error_list: list[PathError] = Field(default_factory=list)
    verify: RestoreCheck | None = None  # only with --verify


class PruneSummary(_Summary):
    bytes_freed: int | None = Field(default=None, ge=0)
    deferred: str = ""


class ForgetSummary(JobSummary):
    """``safehold forget --prune``: into ``BackupPolicy.status.lastRetention``."""

    keep: int | None = Field(default=None, ge=0)
    removed: int | None = Field(default=None, ge=0)
    locked: int | None = Field(default=None, ge=0)
    prune: PruneSummary | None = None


class TransferCounts(_Summary):
    copied_bytes: int | None = Field(default=None, ge=0)


class ReplicateSummary(JobSummary):
    """``safehold replicate``: into ``BackupPolicy.status.replication[]``."""

    total: TransferCounts = Field(default_factory=TransferCounts)
    snapshots_copied: int | None = Field(default=None, ge=0)
    site_newest: dict[str, str] = Field(default_factory=dict)
    snapshots_failed: dict[str, str] = Field(default_factory=dict)


class VerifySummary(JobSummary):
    """``safehold verify``: into ``BackupPolicy.status.lastVerification``."""

    snapshots: int | None = Field(default=None, ge=0)
    packs: int | None = Field(default=None, ge=0)
    packs_read: int | None = Field(default=None, ge=0)
    bytes_read: int | None = Field(default=None, ge=0)
    damaged_objects: int = 0
    objects: dict[str, str] = Field(default_factory=dict)
    damaged: dict[str, dict[str, Any]] = Field(default_factory=dict)
    repair_hint: str = ""


class SourceNewest(_Summary):
    source: str = ""
    count: int = 0
    newest_time: str | None = None
    newest_id: str | None = None


class ObjectLock(_Summary):
    mode: str | None = None
    days: int | None = Field(default=None, ge=0)


class RepositoryInfoSummary(JobSummary):
    """``safehold repo init --if-absent`` / ``repo info``: into ``BackupLocation.status``."""

    location: str | None = None
    empty: bool = False
    object_lock: ObjectLock | None = None
    repository: str | None = None
    snapshots: int | None = Field(default=None, ge=0)
    pack_bytes: int | None = Field(default=None, ge=0)
    sources_newest: list[SourceNewest] = Field(default_factory=list)
    locks: int | None = Field(default=None, ge=0)
    #: Seconds since the oldest lock was written or refreshed, at the check (0: no lock).
    oldest_lock_age_seconds: int | None = Field(default=None, ge=0)


class RepositoryInitSummary(RepositoryInfoSummary):
    """``safehold repo init --if-absent``: also whether it created the repository."""

    initialized: bool = False


class SnapshotItem(_Summary):
    """One snapshot; an entry without an id or a source is passed over by its reader."""

    id: str = ""
    source: str = ""
    time: str | None = None
    tags: list[str] = Field(default_factory=list)
    meta: dict[str, str] = Field(default_factory=dict)


class SnapshotsSummary(JobSummary):
    """``safehold snapshots --latest``: a restore's snapshots resolved in a fresh cluster."""

    snapshots: list[SnapshotItem] = Field(default_factory=list)
    unreadable: list[str] = Field(default_factory=list)
    #: Set when the termination message cut ``snapshots``: the list's full length.
    snapshots_truncated: int | None = Field(default=None, ge=0)


class DatabaseDumpCheck(_Summary):
    """One database's dump, read to its end by ``restore-db --check``."""

    database: str = ""
    snapshot: str = ""
    engine: str = ""  # postgresql or mysql (MariaDB too), as database.engine in snapshots
    bytes: int = Field(default=0, ge=0)
    objects: int = Field(default=0, ge=0)  # pg: table-of-contents entries; mysql: statements
    tables: int = Field(default=0, ge=0)
    ok: bool = False
    error: str | None = None


class DumpCheckSummary(_Summary):
    """``restore-db --check``'s ``check`` key: totals over the databases, the first error."""

    engine: str = ""
    bytes: int = Field(default=0, ge=0)
    objects: int = Field(default=0, ge=0)
    tables: int = Field(default=0, ge=0)
    ok: bool = False
    error: str | None = None
    databases: list[DatabaseDumpCheck] = Field(default_factory=list)


class ScratchDatabase(_Summary):
    """One dump restored into a scratch database by ``restore-db --scratch``."""

    database: str = ""  # the dumped database
    snapshot: str = ""
    scratch_database: str = ""
    tables: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0)
    dropped: bool = False
    ok: bool = False
    error: str | None = None


class ScratchRestoreSummary(_Summary):
    """``restore-db --scratch``'s ``scratch`` key: totals, the first error, each restore."""

    database: str = ""  # the scratch databases' names, comma-separated
    tables: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0)
    dropped: bool = False  # every scratch database is gone again
    ok: bool = False
    error: str | None = None
    databases: list[ScratchDatabase] = Field(default_factory=list)
    leftovers_dropped: list[str] = Field(default_factory=list)


class DatabaseTestSummary(JobSummary):
    """``safehold restore-db --check`` / ``--scratch``: a database source's test restore.

    Exit code 4 with ``check.ok`` false: a dump is damaged or truncated; 1 with
    ``scratch.ok`` false: a dump did not restore (``scratch.error`` says why)."""

    check: DumpCheckSummary | None = None
    scratch: ScratchRestoreSummary | None = None


class WalArchiveSummary(JobSummary):
    """``safehold pg-archive-wal``: one drain of a PostgreSQL server's WAL."""

    snapshot: str | None = None
    end_lsn: str | None = None
    archived_until: str | None = None
    timeline: int | None = Field(default=None, ge=1)
    slot_created: bool = False
    gap: str | None = None
    bytes_new: int | None = Field(default=None, ge=0)


class PitrCheckSummary(JobSummary):
    """``safehold pg-restore-pitr --check``: the newest base backup and its WAL, read."""

    base_snapshot: str | None = None
    reachable_until: str | None = None
    wal_segments: int | None = Field(default=None, ge=0)
    files: int | None = Field(default=None, ge=0)
    bytes: int | None = Field(default=None, ge=0)
    #: A hole that stops restores short of the archive's newest WAL (the plan's warnings)
    warnings: list[str] = Field(default_factory=list)
