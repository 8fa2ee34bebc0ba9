"""``safehold report``: per source, what the repository holds and how it grows (issue 18).

The figures and how each is computed: safehold.engine.inspect.report. As a table (times in
local time with the zone), ``--markdown`` (for a ticket or a wiki), or ``--json``.
"""

from __future__ import annotations

import argparse
import sys
from argparse import Namespace
from typing import Any

from safehold.cli import exitcodes
from safehold.cli.context import UsageError, open_repo
from safehold.cli.output import Output, human_size

__all__ = ["register", "report"]

_HEADERS = (
    "source", "snapshots", "first", "last", "size", "stored", "growth/week",
    "dedup", "compression",
)  # fmt: skip


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "report", parents=[common], help="per source: snapshots, size, growth, dedup ratios"
    )
    p.add_argument(
        "--source-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="only sources beginning with PREFIX, e.g. 'ns/policy/' (repeatable)",
    )
    p.add_argument(
        "--policy",
        metavar="FILE",
        help="also count the snapshots this retention policy (YAML or JSON, as forget "
        "--policy) keeps and forgets",
    )
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.set_defaults(func=report)


def _local(iso: str) -> str:
    from safehold.repo.snapshot import parse_time

    return parse_time(iso).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def _row(r: Any) -> list[str]:
    row = [
        r.source, str(r.snapshots), _local(r.first), _local(r.last),
        human_size(r.logical_bytes), human_size(r.stored_bytes),
        human_size(r.growth_bytes_per_week), _ratio(r.dedup_ratio), _ratio(r.compression_ratio),
    ]  # fmt: skip
    if r.keep is not None:
        row.append(f"{r.keep} / {r.forget}")
    return row


def report(args: Namespace, out: Output) -> int:
    from safehold.cli.maintenance import load_policy
    from safehold.engine.inspect.report import report_sources
    from safehold.repo.layout import DATA
    from safehold.repo.snapshot import source_filter

    if args.markdown and out.json:
        raise UsageError("--markdown or --json: one output at a time")
    if any(not p for p in args.source_prefix):
        raise UsageError("--source-prefix '': an empty prefix selects every source")
    retention = load_policy(args.policy, "--policy") if args.policy else None
    repo = open_repo(args, load_index=False)
    errors: dict[str, str] = {}
    selected = source_filter([], args.source_prefix)
    snaps = [s for s in repo.snapshots(errors=errors) if selected(s.source)]
    pack_bytes = sum(info.size for info in repo.storage.list(DATA))
    reports = report_sources(snaps, retention=retention)
    headers = [*_HEADERS, *(["keep / forget"] if retention is not None else [])]
    rows = [_row(r) for r in reports]
    if args.markdown and not out.json:  # unwrapped, whatever the terminal's width
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        sys.stdout.write("\n".join(lines) + "\n")
    else:
        table = out.new_table(*headers)
        for row in rows:
            table.add_row(*row)
        out.table(table)
    out.print(
        f"repository {repo.config.id[:16]} at {repo.location}: {len(snaps)} snapshot(s) of "
        f"{len(reports)} source(s), {human_size(pack_bytes)} stored in total"
    )
    for name, message in errors.items():
        out.warn(f"unreadable snapshot {name}: {message}")
    out.summary(
        {
            "ok": not errors,
            "repository": repo.config.id,
            "snapshots": len(snaps),
            "pack_bytes": pack_bytes,
            "sources": [r.to_dict() for r in reports],
            "unreadable": sorted(errors),
        }
    )
    return exitcodes.OK if not errors else exitcodes.DAMAGED
