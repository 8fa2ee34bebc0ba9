"""``safehold snapshots``: list snapshots, and pick the ones a restore in a fresh cluster needs.

``--source-prefix`` selects one policy's sources (``namespace/policy/``), ``--before`` a point
in time, ``--latest`` the newest snapshot of each source: what the operator asks when no
BackupRun object says which snapshot to restore (docs/cli.md).
"""

from __future__ import annotations

import argparse
from argparse import Namespace
from typing import Any

from safehold.cli import exitcodes
from safehold.cli.context import UsageError, open_repo, parse_time_option
from safehold.cli.hosts import add_host_filter
from safehold.cli.output import Output, human_size

__all__ = ["register", "snapshot_item", "snapshots"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser("snapshots", parents=[common], help="list snapshots")
    p.add_argument("--source", metavar="NAME", help="only snapshots of this source")
    p.add_argument(
        "--source-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="only snapshots whose source begins with PREFIX, e.g. 'ns/policy/' "
        "(repeatable; ORed with --source)",
    )
    p.add_argument("--tag", action="append", default=[], metavar="TAG")
    add_host_filter(p, "only snapshots of this host (and those without a host, older than hosts)")
    p.add_argument(
        "--before",
        metavar="ISO8601",
        help="only snapshots taken at or before this time (no zone: UTC)",
    )
    p.add_argument(
        "--latest",
        action="store_true",
        help="only the newest snapshot of each source (after the other filters)",
    )
    p.set_defaults(func=snapshots)


def snapshot_item(s: Any) -> dict[str, Any]:
    """One snapshot as the JSON summary lists it."""
    return {
        "id": s.id,
        "time": s.time,
        "source": s.source,
        "host": s.host,
        "type": s.type,
        "tags": s.tags,
        "parent": s.parent,
        "files": s.summary.get("total_files"),
        "bytes": s.summary.get("total_bytes"),
        "meta": s.meta,
    }


def snapshots(args: Namespace, out: Output) -> int:
    from safehold.repo.snapshot import newest_per_source, source_filter

    if any(not p for p in args.source_prefix):
        raise UsageError("--source-prefix '': an empty prefix selects every source")
    before = parse_time_option(args.before, "--before")
    selected = source_filter([args.source] if args.source else [], args.source_prefix)
    repo = open_repo(args, load_index=False)
    errors: dict[str, str] = {}
    snaps = [
        s
        for s in repo.snapshots(tags=args.tag, host=args.host, errors=errors)
        if selected(s.source) and (before is None or s.datetime <= before)
    ]
    if args.latest:  # one per source, by source name
        snaps = list(newest_per_source(snaps).values())
    table = out.new_table("id", "time", "source", "host", "type", "tags", "files", "size", "added")
    for s in snaps:
        table.add_row(
            s.id[:12],
            s.datetime.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),  # local, zone named
            s.source,
            s.host or "-",  # written before hosts existed: of every host
            s.type,
            ",".join(s.tags),
            str(s.summary.get("total_files", "")),
            human_size(int(s.summary.get("total_bytes", 0))),
            human_size(int(s.summary.get("bytes_new", 0))),
        )
    out.table(table)
    for name, message in errors.items():
        out.warn(f"unreadable snapshot {name}: {message}")
    out.summary(
        {
            "ok": not errors,
            "count": len(snaps),
            "snapshots": [snapshot_item(s) for s in snaps],
            "unreadable": sorted(errors),
        }
    )
    return exitcodes.OK if not errors else exitcodes.DAMAGED
