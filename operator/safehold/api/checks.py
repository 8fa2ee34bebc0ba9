"""A BackupPolicy's checks that its backups can be read back: ``verification`` (verify Jobs
on the repository at every location) and ``testRestore`` (scheduled restores into scratch
claims and scratch databases), with the status each keeps (docs/verify.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from safehold.api.base import ApiModel
from safehold.api.errors import invalid
from safehold.api.references import DatabaseCredentials
from safehold.api.types import CronExpression, SourceName, StorageClassName

__all__ = [
    "CheckResult",
    "ScratchDatabaseServer",
    "TestRestore",
    "TestRestoreCheck",
    "TestRestoreResult",
    "TestRestoreSource",
    "TestRestoreState",
    "Verification",
    "VerificationCheck",
    "VerificationState",
]


class Verification(ApiModel):
    """Checks that backups can be read back (docs/verify.md)."""

    after_backup: bool = True
    """Check each new snapshot's structure at the end of its backup Job (`safehold backup
    --verify`: its trees and every chunk indexed in a pack that exists; no data is read):
    the run's `status.sources[].verified`, and a damaged new snapshot fails its source
    (SnapshotDamaged). Volume sources; database and resource sources are covered by `cron`."""
    cron: CronExpression | None = None
    """A check of the repository at every location of the policy (the primary and each
    `replicateTo` site) on this schedule, in the time zone of `spec.schedule` (UTC without
    one): a verify Job per location checks the structure (every index, pack, snapshot and
    tree) and reads `readDataPercent` of the data. Not started while the policy is
    suspended, nor at a location while a retention (prune) runs there."""
    read_data_percent: int = Field(default=0, ge=0, le=100)
    """On each scheduled check, also read and decrypt this share of the stored packs: part
    K of N = 100 / readDataPercent (rounded down) parts by pack id, K moving on by one per
    check (kept in `status.verification`), so every pack is read once in N checks."""


class TestRestoreCheck(ApiModel):
    """Your own check of a restored volume, e.g. an application's integrity check: a
    container that runs after the restore was verified, with the scratch claim mounted
    read-write at ``/scratch``; the test passes when it exits 0. It gets no Secret, no
    service-account token and the Jobs' restricted security context, as uid 65532 unless
    ``runAsUser`` says otherwise."""

    image: str = Field(min_length=1, max_length=1024)
    """The container image."""
    command: list[str] = Field(min_length=1, max_length=64)
    """The command and its arguments, run without a shell (add ``sh -c`` for one)."""
    run_as_user: int | None = Field(default=None, ge=1, le=2147483647)
    """The user the check runs as (never root), e.g. the application's own, so that it may
    read files a restore as root gave back to their owner (spec.job.runAsRoot); default
    65532, the Jobs' user."""
    run_as_group: int | None = Field(default=None, ge=1, le=2147483647)
    """The check's group (never root); default 65532."""


class ScratchDatabaseServer(ApiModel):
    """A database server that dumps are restored into for the test: each dump goes into a
    new database with a unique name (``safehold_test_...``), which is dropped afterwards.
    Never the production server: the test creates and drops databases there."""

    engine: Literal["postgresql", "mysql"]
    """The server type; mysql also covers MariaDB. Dumps of database sources of this
    engine are restored here."""
    host: str = Field(min_length=1, max_length=253)
    """The scratch server's host name."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Its port; defaults to 5432 for postgresql and 3306 for mysql."""
    credentials_secret_ref: DatabaseCredentials
    """A user that may create and drop databases there."""


class TestRestore(ApiModel):
    """Scheduled test restores: the newest snapshot of each tested source is restored and
    checked, and everything made for the test is deleted afterwards (docs/verify.md)."""

    cron: CronExpression
    """When to test, in the time zone of `spec.schedule` (UTC without one)."""
    sources: list[SourceName] = Field(default_factory=list, max_length=64)
    """The volume and database sources to test, by name; empty tests every volume and
    database source (cluster resources are checked by `verification`)."""
    storage_class_name: StorageClassName | None = None
    """The StorageClass of the scratch claims; empty uses the cluster's default."""
    check: TestRestoreCheck | None = None
    """Your own check, run on each restored volume after Safehold's."""
    scratch_databases: list[ScratchDatabaseServer] = Field(default_factory=list, max_length=2)
    """A scratch server per engine: each tested dump is also restored into a scratch
    database there (and dropped). Without one, a dump is checked end to end (every entry
    of a PostgreSQL dump listed by pg_restore, a MariaDB/MySQL dump read to its end)."""

    @model_validator(mode="after")
    def _one_server_per_engine(self) -> TestRestore:
        """At most one scratch server per engine."""
        seen: set[str] = set()
        for index, server in enumerate(self.scratch_databases):
            if server.engine in seen:
                raise invalid(
                    f"scratchDatabases[{index}].engine",
                    f"a second scratch server for {server.engine}: give one per engine",
                )
            seen.add(server.engine)
        return self


class TestRestoreSource(ApiModel):
    """One source's test: a restore Job (and a scratch claim for a volume)."""

    source: str = Field(max_length=253)
    """The source tested."""
    kind: Literal["volume", "database"]
    """volume: restored into a scratch claim and every file compared with the snapshot;
    database: each dump checked end to end, and restored into a scratch database when
    `scratchDatabases` names a server for its engine."""
    run: str = Field(max_length=253)
    """The BackupRun whose snapshot (or dumps) is tested: the newest in which the source
    succeeded."""
    snapshot: str | None = Field(default=None, max_length=128)
    """The volume snapshot restored."""
    job: str | None = Field(default=None, max_length=63)
    """The test's Job (deleted when it ended)."""
    claim: str | None = Field(default=None, max_length=253)
    """The scratch claim (deleted when the test ended)."""
    result: Literal["Running", "Succeeded", "Failed"] = "Running"
    """Running until the Job ends."""
    reason: str | None = Field(default=None, max_length=128)
    """Why it failed, e.g. RestoreMismatch, CheckFailed, DumpDamaged, NoSnapshot."""
    message: str = Field(default="", max_length=2048)
    """What was checked, or what was wrong (the first paths that differ)."""
    files: int | None = Field(default=None, ge=0)
    """Files compared with the snapshot (volume), or dumps checked (database)."""
    bytes: int | None = Field(default=None, ge=0)
    """Bytes restored and read back."""
    restore_seconds: float | None = Field(default=None, ge=0)
    """How long the restore and its check took (the restore container's run time): a
    measured recovery time for this source."""
    completion_time: datetime | None = None
    """When the test ended."""


class TestRestoreState(ApiModel):
    """Where the scheduled test restores stand; kept in the status, so a restarted operator
    neither repeats a slot nor loses track of a scratch claim."""

    last_schedule_time: datetime | None = None
    """The slot of the last test started (or skipped while one still ran)."""
    next_schedule_time: datetime | None = None
    """The next slot."""
    start_time: datetime | None = None
    """When the current (or last) test started."""
    sources: list[TestRestoreSource] = Field(default_factory=list, max_length=96)
    """The current (or last) test, one entry per source."""


class TestRestoreResult(ApiModel):
    """The outcome of the last scheduled test restore."""

    time: datetime
    """When it finished."""
    result: Literal["Succeeded", "Failed"]
    """Succeeded when every tested source restored and checked out."""
    message: str = Field(default="", max_length=4096)
    """What was tested, or what was wrong, per source."""
    run: str | None = Field(default=None, max_length=253)
    """The newest BackupRun tested."""
    files: int = Field(default=0, ge=0)
    """Files compared with their snapshots, over every volume source."""
    bytes: int = Field(default=0, ge=0)
    """Bytes restored and read back."""
    duration_seconds: float | None = Field(default=None, ge=0)
    """The longest restore (with its check) of one source: the recovery time measured."""
    sources: list[TestRestoreSource] = Field(default_factory=list, max_length=96)
    """Each source's test."""


class CheckResult(ApiModel):
    """The outcome of the last scheduled verification."""

    time: datetime
    """When it finished."""
    result: Literal["Succeeded", "Failed"]
    """Whether everything checked out."""
    message: str = Field(default="", max_length=4096)
    """What was checked, or what was wrong: for a verification, per location, the damaged
    packs, snapshots and paths, and the repair verify suggests (docs/repair.md)."""
    read_data_percent: int | None = Field(default=None, ge=0, le=100)
    """The share of the data it was to read."""
    subset: str | None = Field(default=None, max_length=32)
    """The part of the packs it read, K/N (empty: structure only)."""
    locations: list[VerificationCheck] = Field(default_factory=list, max_length=9)
    """Each location's check."""


class VerificationCheck(ApiModel):
    """One location's verify Job of a scheduled verification."""

    location: str = Field(max_length=253)
    """The BackupLocation checked (the primary or a recovery site)."""
    job: str | None = Field(default=None, max_length=63)
    """The verify Job."""
    result: Literal["Running", "Succeeded", "Failed"] = "Running"
    """Running until the Job ends."""
    reason: str | None = Field(default=None, max_length=128)
    """Why it failed, e.g. RepositoryDamaged, RepositoryLocked, WrongPassword."""
    message: str = Field(default="", max_length=2048)
    """What was checked, or what is damaged and which repair to run."""
    completion_time: datetime | None = None
    """When the Job ended."""
    packs_read: int | None = Field(default=None, ge=0)
    """Packs read and decrypted."""
    bytes_read: int | None = Field(default=None, ge=0)
    """Bytes read."""


class VerificationState(ApiModel):
    """Where the scheduled verification stands; kept in the status, so an operator restart
    neither repeats a slot nor restarts the rotation."""

    last_schedule_time: datetime | None = None
    """The slot of the last check started (or skipped while one still ran)."""
    next_schedule_time: datetime | None = None
    """The next slot."""
    next_subset: int = Field(default=1, ge=1, le=100)
    """The part K of the packs the next check reads."""
    parts: int = Field(default=1, ge=1, le=100)
    """N, the number of parts (100 / readDataPercent, rounded down)."""
    subset: str | None = Field(default=None, max_length=32)
    """The part the current (or last) check reads, K/N."""
    start_time: datetime | None = None
    """When the current (or last) check started."""
    checks: list[VerificationCheck] = Field(default_factory=list, max_length=9)
    """The current (or last) check's Jobs, one per location."""
