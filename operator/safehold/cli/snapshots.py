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


def _local(s: Any) -> str:
    return str(s.datetime.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"))  # local, zone named


def _fold_drains(snaps: list[Any]) -> tuple[list[Any], dict[str, list[Any]]]:
    """The snapshots without the WAL archive's drains, and the drains by source, oldest
    first (the table's order)."""
    from safehold.engine.databases.physical import WAL_KIND

    listed: list[Any] = []
    drains: dict[str, list[Any]] = {}
    for s in snaps:
        if s.meta.get("source.kind") == WAL_KIND:
            drains.setdefault(s.source, []).append(s)
        else:
            listed.append(s)
    return listed, drains


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
    # a point-in-time source's archive drains every few minutes: hundreds a day, each one
    # a row would bury the snapshots a person restores from; --source lists them one by one
    listed, drains = (snaps, {}) if args.source or args.latest else _fold_drains(snaps)
    table = out.new_table("id", "time", "source", "host", "type", "tags", "files", "size", "added")
    for s in listed:
        table.add_row(
            s.id[:12],
            _local(s),
            s.source,
            s.host or "-",  # written before hosts existed: of every host
            s.type,
            ",".join(s.tags),
            str(s.summary.get("total_files", "")),
            human_size(int(s.summary.get("total_bytes", 0))),
            human_size(int(s.summary.get("bytes_new", 0))),
        )
    out.table(table)
    for source, group in drains.items():
        out.print(
            f"and {len(group)} WAL drain(s) of {source}, {_local(group[0])} to "
            f"{_local(group[-1])}, "
            f"{human_size(sum(int(d.summary.get('bytes_new', 0)) for d in group))} added "
            f"(each one: --source {source})"
        )
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
