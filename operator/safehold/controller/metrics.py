"""Prometheus metrics of the operator, served on ``/metrics`` (``--metrics-port``).

Counters move when the operator records a transition in the cluster (a run becoming
Running, or final), which happens once per run even across restarts, because the
transition is only made when the stored status does not show it yet.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = [
    "BYTES_STORED",
    "EXPECTED_INTERVAL",
    "LAST_SUCCESS",
    "LOCATION_AVAILABLE",
    "NEXT_SLOT",
    "REGISTRY",
    "RESTORES",
    "RETENTIONS",
    "RETENTION_BYTES_FREED",
    "RETENTION_FORGOTTEN",
    "RUNS_FAILED",
    "RUNS_PARTIALLY_FAILED",
    "RUNS_STARTED",
    "RUNS_SUCCEEDED",
    "RUN_DURATION",
    "TEST_RESTORE_DURATION",
    "TEST_RESTORE_FAILURES",
    "TEST_RESTORE_LAST_SUCCESS",
    "VERIFICATION_FAILURES",
    "VERIFICATION_LAST_SUCCESS",
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
RESTORES = Counter(
    "safehold_restores",
    "RestoreRequests finished, by result",
    ("namespace", "result"),
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


def serve(port: int, address: str = "0.0.0.0") -> int:  # noqa: S104 - scraped from the pod IP
    """Serve ``/metrics`` on ``port`` (0: a free one); returns the port."""
    server, _thread = start_http_server(port, addr=address, registry=REGISTRY)
    return int(server.server_port)
