"""``safehold repair index`` and ``safehold repair snapshots`` (docs/repair.md).

Registered into the main parser by :func:`register`. What verify reports as damage is
mended by ``repair index`` (the index rebuilt from the packs that exist), a new backup
(which stores the lost data again where the source still has it) and ``repair
snapshots`` (repaired copies of the snapshots that still reference lost data).
"""

from __future__ import annotations

import argparse
from argparse import Namespace
from typing import TYPE_CHECKING

from safehold.cli import exitcodes
from safehold.cli.audit import audited
from safehold.cli.context import open_repo
from safehold.cli.maintenance import _lock_options, _with_lock_wait
from safehold.cli.output import Output

if TYPE_CHECKING:
    from safehold.engine.repair import IndexRepairReport, SnapshotRepairReport

__all__ = ["register", "repair_index", "repair_snapshots"]

#: Lost paths printed per snapshot (the JSON summary lists more).
_PRINTED = 20


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``repair index`` and ``repair snapshots`` to the main parser's subcommands."""
    repair = sub.add_parser(
        "repair", help="mend a damaged repository: rebuild the index, repair snapshots"
    )
    repair_sub = repair.add_subparsers(dest="repair_command", metavar="SUBCOMMAND", required=True)
    index = repair_sub.add_parser(
        "index",
        parents=[common],
        help="rebuild the index from the packs that exist (drops lost data, adds unindexed packs)",
    )
    index.add_argument(
        "--read-data",
        action="store_true",
        help="read every pack whole and check every blob against its id, so that blobs "
        "damaged inside a pack are dropped too (default: read the pack headers)",
    )
    index.add_argument(
        "--dry-run", action="store_true", help="report what would change; change nothing"
    )
    _lock_options(index)
    index.set_defaults(func=audited("repair index", repair_index))
    snaps = repair_sub.add_parser(
        "snapshots",
        parents=[common],
        help="write repaired copies of snapshots that reference lost data",
    )
    snaps.add_argument(
        "--dry-run",
        action="store_true",
        help="list the damaged snapshots and what they lost; write nothing",
    )
    snaps.add_argument(
        "--forget",
        action="store_true",
        help="remove the originals once their repaired copies are written, snapshots with "
        "nothing left, and snapshot objects that cannot be read",
    )
    _lock_options(snaps)
    snaps.set_defaults(func=audited("repair snapshots", repair_snapshots))


def _print_index(out: Output, r: IndexRepairReport) -> None:
    damaged = f" ({len(r.index_damaged)} damaged)" if r.index_damaged else ""
    out.print(f"read {r.index_read} index object(s){damaged} and {r.packs} pack(s)")
    for name, message in sorted(r.index_damaged.items())[:_PRINTED]:
        out.warn(f"damaged index object {name}: {message.removeprefix(name + ': ')}")
    for pack in r.packs_missing[:_PRINTED]:
        out.warn(f"pack {pack} is named by the index but missing")
    for pack, why in sorted(r.packs_damaged.items())[:_PRINTED]:
        out.warn(f"pack {pack} is damaged: {why}")
    if r.packs_added:
        out.print(f"{r.packs_added} pack(s) no index named are added back")
    if r.blobs_salvaged:
        verb = "would salvage" if r.dry_run else "salvaged"
        out.print(
            f"{verb} {r.blobs_salvaged} good blob(s) of damaged packs into "
            f"{r.packs_written} new pack(s); the damaged packs stay unindexed (prune "
            "deletes them)"
        )
    if not r.changed:
        out.print(
            f"the index matches the packs: {r.packs_indexed} pack(s), {r.blobs} blob(s); "
            "nothing to repair"
        )
        if r.index_deleted:
            out.print(f"deleted {r.index_deleted} superseded index object(s)")
        return
    verb = "would index" if r.dry_run else "indexed"
    out.print(
        f"{verb} {r.packs_indexed} pack(s), {r.blobs} blob(s): {r.blobs_lost} blob(s) "
        f"lost, {r.blobs_added} added back"
    )
    if r.dry_run:
        out.print("dry run: nothing changed")
    else:
        out.print(f"wrote {r.index_written} index object(s), deleted {r.index_deleted} old one(s)")
    for name, until in sorted(r.locked.items())[:_PRINTED]:
        out.warn(f"{name} is under an object lock until {until}: kept (superseded, ignored)")
    if r.blobs_lost:
        out.print(
            "next: a new 'safehold backup' of each affected source stores the lost data "
            "again where the source still has it; then 'safehold repair snapshots --dry-run' "
            "lists what stays lost, and 'safehold repair snapshots --forget' replaces the "
            "snapshots that reference it by repaired copies"
        )


def repair_index(args: Namespace, out: Output) -> int:
    from safehold.engine.repair import repair_index as run

    repo = open_repo(args, load_index=False, cache=False)  # repairs storage, not copies
    with out.progress("repair index") as bar:
        report = _with_lock_wait(
            args,
            out,
            "repair index",
            lambda: run(
                repo, read_data=args.read_data, dry_run=args.dry_run, progress=bar.callback()
            ),
        )
    _print_index(out, report)
    out.summary({"ok": True, **report.summary()})
    return exitcodes.OK


def _print_snapshots(out: Output, r: SnapshotRepairReport) -> None:
    for item in r.items:
        snap = item.snapshot
        out.print(
            f"snapshot {snap.id[:12]} ({snap.source}, {snap.time}): "
            f"{len(item.lost_files)} file(s) and {len(item.lost_dirs)} directory(ies) lost"
        )
        lost = sorted(
            [(p, "file", e) for p, e in item.lost_files]
            + [(p, "directory", e) for p, e in item.lost_dirs]
        )
        for path, kind, error in lost[:_PRINTED]:
            out.print(f"  {kind} {path or '/'}: {error}")
        if len(lost) > _PRINTED:
            out.print(f"  ... and {len(lost) - _PRINTED} more (--json lists them)")
        if item.root_lost:
            action = "its root directory is lost: no copy; " + (
                "forgotten" if item.forgotten else "'repair snapshots --forget' removes it"
            )
        elif r.dry_run:
            action = "would write a repaired copy (tag 'repaired') without them"
        else:
            verb = "is" if item.existed else "written as"
            action = f"repaired copy {verb} {item.repaired[:12]}"
            if item.forgotten:
                action += "; the original is forgotten"
        if item.locked_until:
            action += f"; the original is under an object lock until {item.locked_until}"
        out.print(f"  -> {action}")
    for name, message in sorted(r.unreadable.items()):
        gone = name in r.unreadable_removed
        what = "removed" if gone else "'repair snapshots --forget' removes it"
        out.warn(
            f"snapshot object {name} cannot be read ({message.removeprefix(name + ': ')}): {what}"
        )
    damaged = len(r.items)
    if not damaged and not r.unreadable:
        out.print(f"checked {r.snapshots} snapshot(s): none references lost data")
        return
    repaired = sum(1 for i in r.items if i.repaired)
    if r.dry_run:
        out.print(
            f"dry run: {damaged} of {r.snapshots} snapshot(s) reference lost data; nothing changed"
        )
    else:
        forgotten = sum(1 for i in r.items if i.forgotten) + len(r.unreadable_removed)
        out.print(
            f"{damaged} of {r.snapshots} snapshot(s) referenced lost data: {repaired} "
            f"repaired, {forgotten} snapshot object(s) forgotten"
        )


def repair_snapshots(args: Namespace, out: Output) -> int:
    from safehold.engine.repair import IndexFirst
    from safehold.engine.repair import repair_snapshots as run

    if args.dry_run and args.forget:
        args.forget = False  # a dry run removes nothing; it says what --forget would
    repo = open_repo(args, load_index=False, cache=False)  # repairs storage, not copies
    try:
        report = _with_lock_wait(
            args,
            out,
            "repair snapshots",
            lambda: run(repo, dry_run=args.dry_run, forget=args.forget),
        )
    except IndexFirst as exc:
        out.error(str(exc))
        out.summary({"ok": False, "error": str(exc), "exit_code": exitcodes.DAMAGED})
        return exitcodes.DAMAGED
    _print_snapshots(out, report)
    out.summary({"ok": True, **report.summary()})
    return exitcodes.OK
