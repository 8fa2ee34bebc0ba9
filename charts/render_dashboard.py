"""Render the Grafana dashboard, ``charts/safehold/dashboards/safehold.json``, from code.

Built with Grafana's own dashboard SDK (``grafana-foundation-sdk``) rather than edited as
JSON, so a panel is a few readable lines and every query is a PromQL string this module
lists in :data:`PANELS` (the tests run each against a real Prometheus). The chart ships the
JSON as a ConfigMap that Grafana's dashboard sidecar picks up (``grafanaDashboard.enabled``,
docs/monitoring.md). ``--check`` writes nothing and exits 1 when the committed file differs,
as ``render_manifest.py`` does.

Run from anywhere: ``.venv/bin/python charts/render_dashboard.py [--check]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DASHBOARD", "PANELS", "POINT_IN_TIME", "Panel", "build", "main"]

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "charts" / "safehold" / "dashboards" / "safehold.json"
UID = "safehold-overview"


@dataclass(frozen=True)
class Panel:
    """One panel: its row, title, kind (timeseries, stat or table), unit and queries
    (PromQL, legend)."""

    row: str
    title: str
    kind: str
    unit: str
    queries: tuple[tuple[str, str], ...]
    description: str = ""


_BY_POLICY = "{{namespace}}/{{policy}}"
_BY_SOURCE = "{{namespace}}/{{policy}}/{{source}}"
#: The row of the pointInTime database sources' WAL archive
POINT_IN_TIME = "Point-in-time recovery"
_BY_LOCATION = "{{namespace}}/{{location}}"

PANELS: tuple[Panel, ...] = (
    Panel("Backups", "Runs ended per hour", "timeseries", "short", (
        ("sum by (namespace, policy) (increase(safehold_backup_runs_succeeded_total[1h]))",
         f"{_BY_POLICY} succeeded"),
        ("sum by (namespace, policy) (increase(safehold_backup_runs_failed_total[1h]))",
         f"{_BY_POLICY} failed"),
    ), "BackupRuns that ended Succeeded, or Failed and PartiallyFailed, in the last hour"),
    Panel("Backups", "Time since the last successful backup", "table", "s", (
        ("time() - safehold_backup_last_success_timestamp_seconds", _BY_POLICY),
    ), "Per policy; compare with its schedule"),
    Panel("Backups", "Mean run duration", "timeseries", "s", (
        ("safehold_backup_run_duration_seconds_sum / safehold_backup_run_duration_seconds_count",
         _BY_POLICY),
    )),
    Panel("Backups", "Stored per source", "timeseries", "bytes", (
        ("sum by (namespace, policy, source) (safehold_backup_source_stored_bytes_total)",
         "{{namespace}}/{{policy}}/{{source}}"),
    ), "What each source's backups added to the repository (compressed, encrypted)"),
    Panel("Backups", "Runs waiting in the queue", "timeseries", "short", (
        ("safehold_backup_runs_queued", _BY_LOCATION),
    ), "BackupRuns waiting for a place under the concurrency limits, by the location they "
       "write to (only with limits set)"),
    Panel("Storage", "Repository size", "timeseries", "bytes", (
        ("safehold_location_bytes_stored", _BY_LOCATION),
    )),
    Panel("Storage", "Snapshots", "stat", "short", (
        ("safehold_location_snapshots", _BY_LOCATION),
    )),
    Panel("Storage", "Time since the last check of each location", "stat", "s", (
        ("time() - safehold_location_last_validation_timestamp_seconds", _BY_LOCATION),
    )),
    Panel("Storage", "Oldest lock at the last check", "stat", "s", (
        ("safehold_location_oldest_lock_age_seconds", _BY_LOCATION),
    ), "Over 30 minutes: a lock a killed Job left behind (safehold repo unlock)"),
    Panel("Recovery", "Restores ended", "stat", "short", (
        ("sum by (namespace, result) (safehold_restores_total)", "{{namespace}} {{result}}"),
    )),
    Panel("Recovery", "Replication lag", "timeseries", "s", (
        ("safehold_replication_lag_seconds", "{{namespace}}/{{policy}} to {{location}}"),
    ), "How far each recovery site's newest snapshot is behind the primary's"),
    Panel("Recovery", "Time since the last clean verification", "stat", "s", (
        ("time() - safehold_verification_last_success_timestamp_seconds",
         "{{namespace}}/{{policy}} at {{location}}"),
    )),
    Panel("Recovery", "Time since the last successful test restore", "stat", "s", (
        ("time() - safehold_test_restore_last_success_timestamp_seconds",
         "{{namespace}}/{{policy}}/{{source}}"),
    )),
    Panel("Recovery", "Measured recovery time (test restores)", "table", "s", (
        ("safehold_test_restore_duration_seconds", "{{namespace}}/{{policy}}/{{source}}"),
    )),
    Panel(POINT_IN_TIME, "Time since the WAL archived", "stat", "s", (
        ("time() - safehold_wal_archived_until_timestamp_seconds", _BY_SOURCE),
    ), "Per pointInTime database source: the transactions a point-in-time restore could not "
       "bring back now; compare with its archiveInterval"),
    Panel(POINT_IN_TIME, "Time since the WAL at each recovery site", "stat", "s", (
        ("time() - safehold_wal_replicated_until_timestamp_seconds",
         _BY_SOURCE + " at {{location}}"),
    ), "What a point-in-time restore from the site alone could not bring back now (decades "
       "until a first copy succeeds)"),
)  # fmt: skip


def _panel(spec: Panel, number: int, datasource: Any) -> Any:
    from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries

    kinds = {"timeseries": timeseries.Panel, "stat": stat.Panel, "table": table.Panel}
    panel = kinds[spec.kind]().id(number).title(spec.title).unit(spec.unit).datasource(datasource)
    if spec.description:
        panel = panel.description(spec.description)
    for i, (expr, legend) in enumerate(spec.queries):
        query = prometheus.Dataquery().ref_id("ABCDEFGH"[i]).expr(expr).legend_format(legend)
        if spec.kind == "table":
            query = query.instant()
        panel = panel.with_target(query)
    return panel


def build() -> dict[str, Any]:
    """The dashboard as JSON data."""
    from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, Row
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    datasource = DataSourceRef(type_val="prometheus", uid="${datasource}")
    dashboard = (
        Dashboard("Safehold")
        .uid(UID)
        .tags(["safehold", "backup"])
        .refresh("1m")
        .time("now-24h", "now")
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    row = None
    number = 0
    for spec in PANELS:
        if spec.row != row:
            row = spec.row
            number += 1
            dashboard = dashboard.with_row(Row(row).id(number))
        number += 1
        dashboard = dashboard.with_panel(_panel(spec, number, datasource))
    data: dict[str, Any] = json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))
    return data


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not DASHBOARD.exists() or DASHBOARD.read_text() != text:
            print(f"{DASHBOARD} is stale: run charts/render_dashboard.py", file=sys.stderr)
            return 1
        return 0
    DASHBOARD.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD.write_text(text)
    print(f"wrote {DASHBOARD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
