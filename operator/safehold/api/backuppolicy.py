"""``BackupPolicy``: what to back up, when, how long to keep it, and where.

The controller creates a ``BackupRun`` at each schedule slot (in the slot's time zone),
applies the concurrency policy and prunes old runs by the history limits.

After each successful run of a policy with ``retention``, the controller starts one
retention Job that forgets the policy's snapshots the rules do not keep and prunes their
data (docs/operator.md); ``status.lastRetention`` reports it. Then one replication Job per
``replicateTo`` site copies the policy's new snapshots there, followed by the site's own
retention (docs/replication.md); ``status.replication`` reports each site.
With ``verification.cron``, one verify Job per location of the policy (the primary and
each ``replicateTo`` site) checks the repository on that schedule, reading a rotating part
of the data (docs/verify.md); ``status.lastVerification`` and the ``Verified`` condition
report it.

Missed slots (the operator was down) follow CronJob's rule: if the latest missed slot
is less than ``startingDeadlineSeconds`` old, one run is started for it, otherwise the
slot is skipped and counted in the ``Ready`` condition's message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from safehold.api.base import ApiModel
from safehold.api.checks import (
    CheckResult,
    ScratchDatabaseServer,
    TestRestore,
    TestRestoreResult,
    TestRestoreState,
    Verification,
    VerificationCheck,
    VerificationState,
)
from safehold.api.conditions import Conditions
from safehold.api.enums import BackupType
from safehold.api.errors import invalid
from safehold.api.jobs import JobSettings
from safehold.api.meta import CrdInfo, CustomResource, PrinterColumn
from safehold.api.references import DatabaseCredentials, LocalObjectReference
from safehold.api.selectors import LabelSelector
from safehold.api.sources import (
    ClusterResourcesSource,
    DatabaseSource,
    JobHooks,
    Sources,
    VolumeSnapshot,
    VolumeSource,
)
from safehold.api.types import (
    CronExpression,
    ResourceName,
    RetentionSpan,
    SourceName,
    TimeZone,
)

__all__ = [
    "BackupPolicy",
    "BackupPolicySpec",
    "BackupPolicyStatus",
    "CheckResult",
    "ClusterResourcesSource",
    "ConcurrencyPolicy",
    "DatabaseCredentials",
    "DatabaseSource",
    "Hook",
    "Hooks",
    "JobHooks",
    "ReplicationTarget",
    "Retention",
    "RetentionResult",
    "Schedule",
    "ScheduleSlot",
    "SiteReplication",
    "Sources",
    "TestRestore",
    "Verification",
    "VerificationCheck",
    "VerificationState",
    "VolumeSnapshot",
    "VolumeSource",
    "WalArchiveState",
    "WalSiteCopy",
]

ConcurrencyPolicy = Literal["Forbid", "Allow", "Replace"]


def _same_server(source: DatabaseSource, server: ScratchDatabaseServer) -> bool:
    default = 5432 if source.engine == "postgresql" else 3306
    return source.host.lower() == server.host.lower() and (source.port or default) == (
        server.port or default
    )


class Hook(ApiModel):
    """A command run in the pods of the policy's namespace that match, e.g. to flush writes."""

    name: SourceName
    """The hook's name in Events and results."""
    pod_selector: LabelSelector
    """The pods to run the command in (each matching pod, in the policy's namespace)."""
    container: str | None = Field(default=None, max_length=63)
    """The container to run in; empty means the pod's first container."""
    command: list[str] = Field(min_length=1, max_length=64)
    """The command and its arguments, run without a shell (add ``sh -c`` for one)."""
    timeout_seconds: int = Field(default=60, ge=1, le=3600)
    """How long the command may take."""
    on_error: Literal["Fail", "Continue"] = "Fail"
    """Fail fails the run (post hooks still run); Continue records a warning."""


class Hooks(ApiModel):
    """Commands around the backup: pre hooks before any source is read, post hooks after."""

    pre_backup: list[Hook] = Field(default_factory=list, max_length=16)
    """Run before the snapshot, e.g. ``fsfreeze`` or ``FLUSH TABLES WITH READ LOCK``."""
    post_backup: list[Hook] = Field(default_factory=list, max_length=16)
    """Run after the snapshot, also when it failed, e.g. to unfreeze."""


class ScheduleSlot(ApiModel):
    """A cron expression and the backup type of the runs it starts."""

    cron: CronExpression
    """Five fields (minute hour day-of-month month day-of-week) or @hourly, @daily,
    @weekly, @monthly, @yearly, in the schedule's time zone."""
    type: BackupType = "incremental"
    """full, incremental or differential (the runs' `type`; database sources are dumped
    whole every time)."""


class Schedule(ApiModel):
    """When runs start. When several slots fire in the same minute, one run starts, with
    the strongest of their types (full, then differential, then incremental)."""

    time_zone: TimeZone = "UTC"
    """The IANA time zone the cron expressions are read in, e.g. Europe/Berlin."""
    slots: list[ScheduleSlot] = Field(min_length=1, max_length=16)
    """For example a daily incremental and a weekly full backup."""


class Retention(ApiModel):
    """Which snapshots to keep after each successful run; the rest are forgotten and their
    unused data pruned. A snapshot kept by any rule is kept. Counts are per source."""

    keep_last: int | None = Field(default=None, ge=0, le=100000)
    """Keep the newest n snapshots."""
    keep_hourly: int | None = Field(default=None, ge=0, le=100000)
    """Keep the newest snapshot of each of the last n hours that have one."""
    keep_daily: int | None = Field(default=None, ge=0, le=100000)
    """Keep the newest snapshot of each of the last n days that have one."""
    keep_weekly: int | None = Field(default=None, ge=0, le=100000)
    """Keep the newest snapshot of each of the last n weeks that have one."""
    keep_monthly: int | None = Field(default=None, ge=0, le=100000)
    """Keep the newest snapshot of each of the last n months that have one."""
    keep_yearly: int | None = Field(default=None, ge=0, le=100000)
    """Keep the newest snapshot of each of the last n years that have one."""
    keep_within: RetentionSpan | None = None
    """Keep every snapshot no older than this before the newest snapshot of its source,
    e.g. 30d, 12h or 1y6mo: units y, mo (months), w, d, h, min (minutes); a bare m is
    refused as ambiguous."""
    keep_tags: list[str] = Field(default_factory=list, max_length=64)
    """Keep every snapshot with one of these tags (set on BackupRuns made by hand)."""
    time_zone: TimeZone | None = None
    """The IANA time zone in which hours, days, weeks, months and years are counted;
    default: `spec.schedule.timeZone`, else UTC."""

    @model_validator(mode="after")
    def _keeps_something(self) -> Retention:
        """A retention keeps something: at least one `keep*` count of 1 or more, or
        `keepWithin`, or `keepTags`."""
        counts = (
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        )
        if not any(counts) and not self.keep_within and not self.keep_tags:
            raise invalid(
                "keepLast",
                "this retention would delete every snapshot: set keepLast, keepDaily, ... "
                "to at least 1, or keepWithin, or remove retention to keep everything",
            )
        return self


class ReplicationTarget(ApiModel):
    """A recovery site of the policy, and how long it keeps the policy's snapshots."""

    name: ResourceName
    """The BackupLocation (role recovery-site) to copy to."""
    retention: Retention | None = None
    """The site's own retention, applied at the site after each replication (forget and
    prune there); empty means the policy's `retention`, and none at all keeps every
    snapshot the site receives."""


class BackupPolicySpec(ApiModel):
    """What to back up, when, how long to keep it, and where."""

    sources: Sources
    """What to back up."""
    schedule: Schedule | None = None
    """When to run; without a schedule, runs are only made by hand (a BackupRun)."""
    retention: Retention | None = None
    """How long to keep snapshots: after each successful run, a Job forgets the policy's
    snapshots these rules do not keep and prunes their data (docs/retention.md); without
    it, every snapshot is kept."""
    location: LocalObjectReference
    """The BackupLocation (role primary) that receives the backups."""
    replicate_to: list[ReplicationTarget] = Field(default_factory=list, max_length=8)
    """BackupLocations (role recovery-site) that receive a copy of the policy's snapshots
    after each successful run (and after the retention at the primary), one Job per site;
    `status.replication` and each run's `status.replication` report it
    (docs/replication.md)."""
    hooks: Hooks | None = None
    """Commands to run around the backup."""
    verification: Verification | None = None
    """Checks of the repository: `cron` schedules a verify Job per location
    (docs/verify.md), reported in `status.lastVerification` and the `Verified` condition."""
    test_restore: TestRestore | None = None
    """Scheduled test restores: the newest snapshot of each volume source restored into a
    scratch claim and compared file by file, each database dump checked (and restored into
    a scratch database); reported in `status.lastTestRestore` and the `RestoreTested`
    condition (docs/verify.md)."""
    job: JobSettings | None = None
    """Resources, deadline and placement of the backup Jobs."""
    concurrency_policy: ConcurrencyPolicy = "Forbid"
    """When a slot fires while a run is active: Forbid skips the new run, Allow runs both,
    Replace stops the active run and starts the new one."""
    starting_deadline_seconds: int | None = Field(default=None, ge=0)
    """A missed slot (operator down, run forbidden) still starts within this many seconds;
    later it is skipped. Empty means only the latest missed slot starts, however late."""
    successful_runs_history_limit: int = Field(default=3, ge=0, le=1000)
    """How many succeeded BackupRuns to keep (their snapshots are governed by retention)."""
    failed_runs_history_limit: int = Field(default=1, ge=0, le=1000)
    """How many failed or partially failed BackupRuns to keep."""
    suspend: bool = False
    """Stop starting new runs; active runs continue."""

    @model_validator(mode="after")
    def _test_restore_fits(self) -> BackupPolicySpec:
        """`testRestore.sources` name volume or database sources of the policy (any name
        while a volume source selects claims by label: their names are the claims'), and a
        scratch database server is never a server the policy backs up."""
        test = self.test_restore
        if test is None:
            return self
        by_selector = any(v.selector is not None for v in self.sources.volumes)
        known = {v.name or v.claim_name for v in self.sources.volumes}
        known |= {d.name for d in self.sources.databases}
        for index, name in enumerate(test.sources):
            if name not in known and not by_selector:
                raise invalid(
                    f"testRestore.sources[{index}]",
                    f"{name!r} is not a volume or database source of this policy "
                    f"(sources: {', '.join(sorted(n for n in known if n)) or 'none'})",
                )
        if not self.sources.volumes and not self.sources.databases:
            raise invalid(
                "testRestore",
                "the policy has no volume or database source to test: cluster resources "
                "are checked by verification",
            )
        for index, server in enumerate(test.scratch_databases):
            for source in self.sources.databases:
                if source.engine == server.engine and _same_server(source, server):
                    raise invalid(
                        f"testRestore.scratchDatabases[{index}].host",
                        f"{server.host} is the server of database source {source.name!r}: "
                        "a test restore creates and drops databases, so name a separate "
                        "scratch server",
                    )
        return self

    @model_validator(mode="after")
    def _replicas_differ(self) -> BackupPolicySpec:
        """Each `replicateTo` site is a different BackupLocation from `location` and the
        others."""
        seen = {self.location.name}
        for index, target in enumerate(self.replicate_to):
            if target.name in seen:
                raise invalid(
                    f"replicateTo[{index}].name",
                    f"{target.name!r} is already the location or another replica: each "
                    "recovery site must be a different BackupLocation",
                )
            seen.add(target.name)
        return self


class RetentionResult(ApiModel):
    """The last retention Job of the policy: forget (the policy's own snapshots) and prune."""

    run: str = Field(max_length=253)
    """The successful BackupRun after which it ran."""
    job: str | None = Field(default=None, max_length=63)
    """The Job that applies it."""
    result: Literal["Running", "Succeeded", "Failed"]
    """Running until the Job ends; Failed leaves the next successful run to try again."""
    start_time: datetime | None = None
    """When the Job was created."""
    completion_time: datetime | None = None
    """When it finished."""
    reason: str | None = Field(default=None, max_length=128)
    """Why it failed, e.g. RepositoryLocked (another operation held the repository lock
    for longer than the Job waits), WrongPassword, DeadlineExceeded."""
    message: str = Field(default="", max_length=4096)
    """What was done, or what went wrong (never a secret)."""
    snapshots_kept: int | None = Field(default=None, ge=0)
    """The policy's snapshots the rules keep."""
    snapshots_forgotten: int | None = Field(default=None, ge=0)
    """Snapshots removed (forgotten)."""
    snapshots_locked: int | None = Field(default=None, ge=0)
    """Snapshots to forget that an object lock still protects (forgotten by a later run)."""
    bytes_freed: int | None = Field(default=None, ge=0)
    """Bytes prune removed from the storage (packs younger than its grace period of 2 h,
    which a backup may still be writing, are freed by a later run)."""


class SiteReplication(ApiModel):
    """The replication of the policy's snapshots to one recovery site."""

    location: str = Field(max_length=253)
    """The recovery site's BackupLocation."""
    run: str = Field(max_length=253)
    """The successful BackupRun whose snapshots (and every older one the site lacks) are
    being, or were last, copied."""
    job: str | None = Field(default=None, max_length=63)
    """The replication Job of the current attempt."""
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] = "Pending"
    """Pending: waiting for the primary's retention or a Job's turn; Failed with
    `nextAttemptTime` set: retried then."""
    attempts: int = Field(default=0, ge=0)
    """Attempts made for this run (at most 5; the next successful run catches up)."""
    start_time: datetime | None = None
    """When the current attempt's Job was created."""
    completion_time: datetime | None = None
    """When the last attempt finished."""
    next_attempt_time: datetime | None = None
    """When a failed attempt is tried again (bounded exponential back-off)."""
    reason: str | None = Field(default=None, max_length=128)
    """Why the last attempt failed, e.g. WrongPassword, RepositoryNotFound, SiteNotReady."""
    message: str = Field(default="", max_length=4096)
    """What was copied, or what went wrong (never a secret)."""
    bytes_transferred: int | None = Field(default=None, ge=0)
    """Bytes the last successful attempt copied to the site."""
    snapshots_copied: int | None = Field(default=None, ge=0)
    """Snapshots the last successful attempt copied."""
    last_success_time: datetime | None = None
    """When a replication to this site last succeeded."""
    newest_snapshot_time: datetime | None = None
    """The time of the policy's newest snapshot at the site after the last success: the
    recovery point objective, read against the newest at the primary."""
    retention: RetentionResult | None = None
    """The site's retention after the last successful replication."""


class WalSiteCopy(ApiModel):
    """The WAL archive of one source copied to one recovery site (``replicateTo``)."""

    location: str = Field(max_length=253)
    """The recovery site's BackupLocation."""
    job: str | None = Field(default=None, max_length=63)
    """The copy Job running now, or the last one."""
    result: Literal["Running", "Succeeded", "Failed"] | None = None
    """The last copy's outcome (Running while its Job runs)."""
    copying_until: datetime | None = None
    """While a copy runs: the primary's ``archivedUntil`` it carries to the site."""
    replicated_until: datetime | None = None
    """Every transaction committed by this time is archived at the site: the latest time a
    point-in-time restore from the site alone reaches."""
    last_success_time: datetime | None = None
    """When a copy to this site last succeeded."""
    reason: str | None = Field(default=None, max_length=128)
    """Why the last copy failed, or could not start yet."""
    message: str | None = Field(default=None, max_length=4096)
    """What the last copy did, or what went wrong (never a secret)."""


class WalArchiveState(ApiModel):
    """The WAL archive of one database source with ``pointInTime``."""

    source: SourceName
    """The database source."""
    job: str | None = Field(default=None, max_length=63)
    """The archive Job running now, or the last one."""
    result: Literal["Running", "Succeeded", "Failed"] | None = None
    """The last archive's outcome (Running while its Job runs)."""
    start_time: datetime | None = None
    """When the running or last archive Job was created."""
    archived_until: datetime | None = None
    """Every transaction the server committed by this time is in the repository: the latest
    time a point-in-time restore can reach (with a base backup that ended before it)."""
    timeline: int | None = Field(default=None, ge=1)
    """The server's timeline at the last archive: 1 until a restore or a failover; a higher
    one says the archive follows the restored or promoted server (and restores to the end
    follow it too)."""
    last_success_time: datetime | None = None
    """When an archive last succeeded."""
    next_archive_time: datetime | None = None
    """When the next archive starts (every ``pointInTime.archiveInterval``)."""
    reason: str | None = Field(default=None, max_length=128)
    """Why the last archive failed, or WalGap when the server had lost WAL since the one
    before (no restore crosses it from older base backups: take a BackupRun)."""
    message: str | None = Field(default=None, max_length=4096)
    """What the last archive stored, or what went wrong (never a secret)."""
    sites: list[WalSiteCopy] = Field(default_factory=list, max_length=8)
    """The archive's copies to the policy's recovery sites, one per ``replicateTo`` entry:
    after each archive, its WAL is copied to every site a run's replication has reached."""


class BackupPolicyStatus(ApiModel):
    """The schedule's state, written by the controller."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` this status describes."""
    conditions: Conditions = Field(default_factory=list)
    """Ready is True when the policy is valid, its locations exist and it is scheduled."""
    last_schedule_time: datetime | None = None
    """The slot time of the last run the schedule started."""
    next_schedule_time: datetime | None = None
    """The next slot time, or empty when suspended or unscheduled."""
    last_successful_run: str | None = Field(default=None, max_length=253)
    """The name of the newest BackupRun that succeeded."""
    last_success_time: datetime | None = None
    """When that run completed."""
    active_runs: list[LocalObjectReference] = Field(default_factory=list, max_length=64)
    """BackupRuns of this policy that have not finished."""
    last_verification: CheckResult | None = None
    """The last scheduled repository check (`spec.verification.cron`), once every
    location's Job ended."""
    verification: VerificationState | None = None
    """The scheduled verification's state: its rotation and running Jobs."""
    last_test_restore: TestRestoreResult | None = None
    """The last scheduled test restore (`spec.testRestore.cron`), once every source's Job
    ended."""
    test_restore: TestRestoreState | None = None
    """The scheduled test restore's state: its slot and running Jobs."""
    last_retention: RetentionResult | None = None
    """The last retention (forget and prune) after a successful run."""
    wal_archive: list[WalArchiveState] = Field(default_factory=list, max_length=32)
    """The WAL archive of each database source with pointInTime."""
    replication: list[SiteReplication] = Field(default_factory=list, max_length=8)
    """One entry per `replicateTo` site."""


class BackupPolicy(CustomResource):
    """What to back up, on which schedule, how long to keep it, and where."""

    crd = CrdInfo(
        kind="BackupPolicy",
        plural="backuppolicies",
        singular="backuppolicy",
        short_names=("bp", "bpol"),
        printer_columns=(
            PrinterColumn("Location", "string", ".spec.location.name", "The BackupLocation"),
            PrinterColumn(
                "Schedule", "string", ".spec.schedule.slots[0].cron", "The first schedule slot"
            ),
            PrinterColumn("Suspend", "boolean", ".spec.suspend", "Whether runs are suspended"),
            PrinterColumn(
                "Ready",
                "string",
                '.status.conditions[?(@.type=="Ready")].status',
                "Whether the policy is scheduled",
            ),
            PrinterColumn(
                "Last Success", "date", ".status.lastSuccessTime", "The last successful run"
            ),
            PrinterColumn(
                "Next", "string", ".status.nextScheduleTime", "The next slot", priority=1
            ),
            PrinterColumn(
                "WAL Archived",
                "date",
                ".status.walArchive[0].archivedUntil",
                "How far point-in-time restores of the first pointInTime source reach",
                priority=1,
            ),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Age"),
        ),
    )

    kind: Literal["BackupPolicy"] = "BackupPolicy"
    """``BackupPolicy``."""
    spec: BackupPolicySpec
    """What, when, how long, where."""
    status: BackupPolicyStatus | None = None
    """Written by the controller."""
