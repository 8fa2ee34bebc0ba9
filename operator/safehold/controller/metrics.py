"""Prometheus metrics of the operator, served on ``/metrics`` (``--metrics-port``).

Counters move when the operator records a transition in the cluster (a run becoming
Running, or final), which happens once per run even across restarts, because the
transition is only made when the stored status does not show it yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = [
    "BYTES_STORED",
    "EXPECTED_INTERVAL",
    "LAST_SUCCESS",
    "LEADER",
    "LOCATION_AVAILABLE",
    "LOCATION_LAST_VALIDATION",
    "LOCATION_SNAPSHOTS",
    "NEXT_SLOT",
    "OLDEST_LOCK_AGE",
    "REGISTRY",
    "REPLICATIONS",
    "REPLICATION_BYTES",
    "REPLICATION_LAG",
    "RESTORES",
    "RESTORES_STARTED",
    "RESTORE_BYTES",
    "RESTORE_DURATION",
    "RETENTIONS",
    "RETENTION_BYTES_FREED",
    "RETENTION_FORGOTTEN",
    "RUNS_FAILED",
    "RUNS_PARTIALLY_FAILED",
    "RUNS_QUEUED",
    "RUNS_STARTED",
    "RUNS_SUCCEEDED",
    "RUN_DURATION",
    "SOURCES",
    "SOURCE_BYTES_NEW",
    "SOURCE_BYTES_READ",
    "SOURCE_BYTES_STORED",
    "SOURCE_CPU",
    "SOURCE_DURATION",
    "SOURCE_ERRORS",
    "SOURCE_FILES",
    "SOURCE_PEAK_MEMORY",
    "TEST_RESTORE_DURATION",
    "TEST_RESTORE_FAILURES",
    "TEST_RESTORE_LAST_SUCCESS",
    "VERIFICATION_FAILURES",
    "VERIFICATION_LAST_SUCCESS",
    "WAL_ARCHIVED_UNTIL",
    "WAL_ARCHIVE_FAILURES",
    "WAL_ARCHIVE_INTERVAL",
    "WAL_REPLICATED_UNTIL",
    "WAL_REPLICATION_FAILURES",
    "forget",
    "record_sources",
    "serve",
]

REGISTRY = CollectorRegistry()
_RUN = ("namespace", "policy")

RUNS_STARTED = Counter(
    "safehold_backup_runs_started", "BackupRuns that started", _RUN, registry=REGISTRY
)
RUNS_SUCCEEDED = Counter(
    "safehold_backup_runs_succeeded", "BackupRuns that succeeded", _RUN, registry=REGISTRY
)
RUNS_FAILED = Counter(
    "safehold_backup_runs_failed",
    "BackupRuns that failed or partially failed",
    _RUN,
    registry=REGISTRY,
)
RUNS_QUEUED = Gauge(
    "safehold_backup_runs_queued",
    "BackupRuns waiting in the queue for a free place under the concurrency limits, by the "
    "location they will write to",
    ("namespace", "location"),
    registry=REGISTRY,
)
RUNS_PARTIALLY_FAILED = Counter(
    "safehold_backup_runs_partially_failed",
    "BackupRuns that partially failed (some sources saved, some not); also counted as failed",
    _RUN,
    registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "safehold_backup_run_duration_seconds",
    "Time from a run's start to its end",
    _RUN,
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "safehold_backup_last_success_timestamp_seconds",
    "When the policy's newest successful run completed (Unix time)",
    _RUN,
    registry=REGISTRY,
)
EXPECTED_INTERVAL = Gauge(
    "safehold_backup_policy_expected_interval_seconds",
    "The longest gap between two of the policy's next scheduled slots (from its schedule): "
    "how old its newest successful run may be before a slot was missed",
    _RUN,
    registry=REGISTRY,
)
NEXT_SLOT = Gauge(
    "safehold_backup_policy_next_slot_timestamp_seconds",
    "When the policy's next scheduled run is due (Unix time); in the past for long: the "
    "operator is not reconciling",
    _RUN,
    registry=REGISTRY,
)
LOCATION_AVAILABLE = Gauge(
    "safehold_location_available",
    "1 when the last check of the BackupLocation reached its repository, 0 when it did not",
    ("namespace", "location"),
    registry=REGISTRY,
)
BYTES_STORED = Gauge(
    "safehold_location_bytes_stored",
    "Bytes the repository at a BackupLocation occupies",
    ("namespace", "location"),
    registry=REGISTRY,
)
_SOURCE = (*_RUN, "source")
SOURCES = Counter(
    "safehold_backup_sources",
    "Sources of BackupRuns that ended, by result (Succeeded, Failed, Skipped)",
    (*_SOURCE, "result"),
    registry=REGISTRY,
)
SOURCE_FILES = Counter(
    "safehold_backup_source_files", "Files the source's backups saved", _SOURCE, registry=REGISTRY
)
SOURCE_BYTES_READ = Counter(
    "safehold_backup_source_read_bytes",
    "Bytes the source's backups read",
    _SOURCE,
    registry=REGISTRY,
)
SOURCE_BYTES_NEW = Counter(
    "safehold_backup_source_new_bytes",
    "Bytes the source's backups found new (before compression)",
    _SOURCE,
    registry=REGISTRY,
)
SOURCE_BYTES_STORED = Counter(
    "safehold_backup_source_stored_bytes",
    "Bytes the source's backups added to the repository (compressed, encrypted)",
    _SOURCE,
    registry=REGISTRY,
)
SOURCE_ERRORS = Counter(
    "safehold_backup_source_errors",
    "Items the source's backups could not read and skipped (a run then partially fails)",
    _SOURCE,
    registry=REGISTRY,
)
SOURCE_DURATION = Gauge(
    "safehold_backup_source_duration_seconds",
    "How long the source's last backup took",
    _SOURCE,
    registry=REGISTRY,
)
SOURCE_CPU = Counter(
    "safehold_backup_source_cpu_seconds",
    "CPU seconds the source's backup Jobs used, as each Job measured itself",
    _SOURCE,
    registry=REGISTRY,
)
SOURCE_PEAK_MEMORY = Gauge(
    "safehold_backup_source_peak_memory_bytes",
    "Peak resident memory of the source's last backup Job, as it measured itself",
    _SOURCE,
    registry=REGISTRY,
)
LOCATION_SNAPSHOTS = Gauge(
    "safehold_location_snapshots",
    "Snapshots in the repository at a BackupLocation, at its last check",
    ("namespace", "location"),
    registry=REGISTRY,
)
LOCATION_LAST_VALIDATION = Gauge(
    "safehold_location_last_validation_timestamp_seconds",
    "When the BackupLocation was last checked successfully (Unix time)",
    ("namespace", "location"),
    registry=REGISTRY,
)
OLDEST_LOCK_AGE = Gauge(
    "safehold_location_oldest_lock_age_seconds",
    "At the BackupLocation's last check, seconds since the oldest lock in its repository was "
    "written or refreshed (0: no lock); a live lock is refreshed every 5 minutes, so more than "
    "1800 is a lock a killed Job left behind, or one that cannot be read",
    ("namespace", "location"),
    registry=REGISTRY,
)
RESTORES_STARTED = Counter(
    "safehold_restores_started", "RestoreRequests that started", ("namespace",), registry=REGISTRY
)
RESTORES = Counter(
    "safehold_restores",
    "RestoreRequests finished, by result (Succeeded, PartiallyFailed, Failed)",
    ("namespace", "result"),
    registry=REGISTRY,
)
RESTORE_DURATION = Histogram(
    "safehold_restore_duration_seconds",
    "Time from a RestoreRequest's start to its end",
    ("namespace",),
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
    registry=REGISTRY,
)
RESTORE_BYTES = Counter(
    "safehold_restore_bytes",
    "Bytes RestoreRequests wrote",
    ("namespace",),
    registry=REGISTRY,
)

RETENTIONS = Counter(
    "safehold_retentions",
    "Retention Jobs (forget and prune after a successful run) finished, by result",
    (*_RUN, "result"),
    registry=REGISTRY,
)
RETENTION_FORGOTTEN = Counter(
    "safehold_retention_snapshots_forgotten",
    "Snapshots the policy's retention forgot",
    _RUN,
    registry=REGISTRY,
)
RETENTION_BYTES_FREED = Counter(
    "safehold_retention_bytes_freed",
    "Bytes the prune after a retention deleted from the repository",
    _RUN,
    registry=REGISTRY,
)

_SITE = (*_RUN, "location")
REPLICATIONS = Counter(
    "safehold_replications",
    "Replication Jobs (a policy's snapshots copied to a recovery site) finished, by result",
    (*_SITE, "result"),
    registry=REGISTRY,
)
REPLICATION_BYTES = Counter(
    "safehold_replication_bytes_transferred",
    "Bytes replication Jobs copied to a recovery site",
    _SITE,
    registry=REGISTRY,
)
REPLICATION_LAG = Gauge(
    "safehold_replication_lag_seconds",
    "How far the newest snapshot of the policy at a recovery site is behind the newest at "
    "the primary (0: the site holds the newest successful run)",
    _SITE,
    registry=REGISTRY,
)

VERIFICATION_LAST_SUCCESS = Gauge(
    "safehold_verification_last_success_timestamp_seconds",
    "When the last scheduled verification of the policy's repository at a location found "
    "no damage (Unix time)",
    _SITE,
    registry=REGISTRY,
)
VERIFICATION_FAILURES = Counter(
    "safehold_verification_failures",
    "Scheduled verifications at a location that found damage or could not run",
    _SITE,
    registry=REGISTRY,
)
_TESTED = ("namespace", "policy", "source")
WAL_ARCHIVED_UNTIL = Gauge(
    "safehold_wal_archived_until_timestamp_seconds",
    "Every transaction a pointInTime database source's server committed by this time is "
    "archived: the latest time a point-in-time restore reaches (Unix time)",
    _TESTED,
    registry=REGISTRY,
)
WAL_ARCHIVE_INTERVAL = Gauge(
    "safehold_wal_archive_interval_seconds",
    "The archiveInterval of a pointInTime database source: how far behind its archive may "
    "fall in normal operation",
    _TESTED,
    registry=REGISTRY,
)
WAL_ARCHIVE_FAILURES = Counter(
    "safehold_wal_archive_failures",
    "WAL archives of a pointInTime database source that failed or could not start",
    _TESTED,
    registry=REGISTRY,
)
WAL_REPLICATED_UNTIL = Gauge(
    "safehold_wal_replicated_until_timestamp_seconds",
    "Every transaction a pointInTime database source's server committed by this time is "
    "archived at the recovery site: the latest time a point-in-time restore from the site "
    "reaches (Unix time; 0 until a copy succeeds)",
    (*_TESTED, "location"),
    registry=REGISTRY,
)
WAL_REPLICATION_FAILURES = Counter(
    "safehold_wal_replication_failures",
    "Copies of a pointInTime database source's WAL archive to a recovery site that failed",
    (*_TESTED, "location"),
    registry=REGISTRY,
)
TEST_RESTORE_LAST_SUCCESS = Gauge(
    "safehold_test_restore_last_success_timestamp_seconds",
    "When the last scheduled test restore of the source restored and checked out (Unix time)",
    _TESTED,
    registry=REGISTRY,
)
TEST_RESTORE_DURATION = Gauge(
    "safehold_test_restore_duration_seconds",
    "How long the source's last successful test restore took, with the check of every file: "
    "a measured recovery time",
    _TESTED,
    registry=REGISTRY,
)
TEST_RESTORE_FAILURES = Counter(
    "safehold_test_restore_failures",
    "Scheduled test restores of the source that failed or found a difference",
    _TESTED,
    registry=REGISTRY,
)


def record_sources(namespace: str, policy: str, sources: Iterable[Any]) -> None:
    """Count each source of a run that ended (``BackupRun.status.sources[]`` entries)."""
    for s in sources:
        labels = (namespace, policy, s.name)
        SOURCES.labels(*labels, s.phase).inc()
        for counter, value in (
            (SOURCE_FILES, s.files),
            (SOURCE_BYTES_READ, s.bytes_read),
            (SOURCE_BYTES_NEW, s.bytes_new),
            (SOURCE_BYTES_STORED, s.bytes_stored),
            (SOURCE_CPU, s.cpu_seconds),
        ):
            if value:
                counter.labels(*labels).inc(value)
        if s.errors:
            SOURCE_ERRORS.labels(*labels).inc(s.errors)
        if s.duration_seconds is not None:
            SOURCE_DURATION.labels(*labels).set(s.duration_seconds)
        if s.peak_memory_bytes is not None:
            SOURCE_PEAK_MEMORY.labels(*labels).set(s.peak_memory_bytes)


LEADER = Gauge(
    "safehold_leader",
    "1 when this replica holds the leader Lease and acts, 0 while it waits (standby)",
    registry=REGISTRY,
)


def serve(port: int, address: str = "0.0.0.0") -> int:  # noqa: S104 - scraped from the pod IP
    """Serve ``/metrics`` on ``port`` (0: a free one); returns the port."""
    server, _thread = start_http_server(port, addr=address, registry=REGISTRY)
    return int(server.server_port)


def forget(namespace: str, **labels: str) -> None:
    """Remove every series whose labels are ``namespace`` and ``labels`` (e.g.
    ``policy="nightly"``) from every metric that has those labels: a deleted object keeps
    no gauge that an alert would fire on (SafeholdBackupMissing for a policy that is gone)."""
    wanted = {"namespace": namespace, **labels}
    for metric in _LABELLED:
        names: tuple[str, ...] = tuple(metric._labelnames)  # given at the metric's creation
        if not set(wanted) <= set(names):
            continue
        series = {
            tuple(sample.labels[n] for n in names)
            for family in metric.collect()
            for sample in family.samples
            if all(sample.labels.get(k) == v for k, v in wanted.items())
        }
        for values in series:
            with suppress(KeyError):
                metric.remove(*values)


_LABELLED: list[Counter | Gauge | Histogram] = [
    m for m in list(globals().values()) if isinstance(m, (Counter, Gauge, Histogram))
]
