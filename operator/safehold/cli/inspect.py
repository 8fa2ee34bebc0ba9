"""``safehold ls``, ``find``, ``diff`` and ``cat``: looking inside snapshots (docs/cli.md).

Registered into the main parser by :func:`register` (listed in ``main.COMMANDS``); the work
is done by :mod:`safehold.engine.inspect`. The listings are the commands' output, so they
are printed with ``--quiet`` too; with ``--json`` each entry is one JSON line, and the
summary is the last line as for every command. Each command holds a shared repository lock
while it reads (a prune cannot delete what it is reading), unless ``--no-lock`` (a
repository on read-only storage).

``cat`` is restic's ``dump``: ``safehold dump`` is the database dump.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from argparse import Namespace
from collections.abc import Iterator
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, TextIO

from safehold.cli import exitcodes
from safehold.cli.context import UsageError, open_repo
from safehold.cli.hosts import add_host_filter
from safehold.cli.output import Output, human_size

if TYPE_CHECKING:
    from safehold.repo import Repository, Snapshot
    from safehold.repo.tree import TreeNode

__all__ = ["register", "run_cat", "run_diff", "run_find", "run_ls"]

_BEFORE_LATEST = re.compile(r"latest~([0-9]{1,6})")
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``ls``, ``find``, ``diff`` and ``cat`` to the ``safehold`` parser."""
    ls = sub.add_parser("ls", parents=[common], help="list what a snapshot holds under a path")
    ls.add_argument("snapshot", metavar="SNAPSHOT", help="an id (prefix), 'latest' or 'latest~N'")
    ls.add_argument(
        "path",
        nargs="?",
        default="/",
        metavar="PATH",
        help="a path of the snapshot as ls shows it, e.g. /data/dir (default: the root)",
    )
    ls.add_argument(
        "-R", "--recursive", action="store_true", help="everything below PATH, not one level"
    )
    ls.add_argument(
        "-l", "--long", action="store_true", help="mode, owner, size, modification time"
    )
    _snapshot_filters(ls)
    _no_lock(ls)
    ls.set_defaults(func=run_ls)

    find = sub.add_parser(
        "find", parents=[common], help="find paths matching a pattern across snapshots"
    )
    find.add_argument(
        "pattern",
        metavar="PATTERN",
        help="a pattern as for backup --include: '*.conf' (a name at any depth), "
        "'data/**/x.log', '/data/*.txt'",
    )
    find.add_argument(
        "--snapshot",
        action="append",
        default=[],
        metavar="ID",
        help="search only this snapshot (repeatable; default: every one)",
    )
    _snapshot_filters(find)
    _no_lock(find)
    find.set_defaults(func=run_find)

    diff = sub.add_parser("diff", parents=[common], help="what changed between two snapshots")
    diff.add_argument(
        "snapshot1",
        metavar="SNAP1",
        help="the older snapshot: an id (prefix), 'latest' or 'latest~N' (N before it)",
    )
    diff.add_argument("snapshot2", metavar="SNAP2", help="the newer snapshot")
    _snapshot_filters(diff)
    _no_lock(diff)
    diff.set_defaults(func=run_diff)

    cat = sub.add_parser(
        "cat",
        parents=[common],
        help="a file of a snapshot to stdout, or a directory as a tar stream (restic's dump)",
    )
    cat.add_argument("snapshot", metavar="SNAPSHOT", help="an id (prefix), 'latest' or 'latest~N'")
    cat.add_argument("path", metavar="PATH", help="a file or directory, e.g. /data/dir/file")
    cat.add_argument(
        "--archive",
        choices=("tar",),
        default="tar",
        help="the format of a directory (default and only one: tar)",
    )
    cat.add_argument(
        "--output",
        metavar="FILE",
        help="write to FILE (replaced when complete) instead of stdout",
    )
    cat.add_argument(
        "--force",
        action="store_true",
        help="write a tar stream to stdout even when it is a terminal",
    )
    _snapshot_filters(cat)
    _no_lock(cat)
    cat.set_defaults(func=run_cat)


def _find_snapshot(repo: Repository, ref: str, args: Namespace) -> Snapshot:
    """``latest``, ``latest~N`` (the Nth before the newest, of ``--source`` and with the
    ``--tag``s: ``diff latest~1 latest``), or an id or unique id prefix."""
    match = _BEFORE_LATEST.fullmatch(ref)
    newest = repo.find_snapshot(
        "latest" if match else ref, source=args.source, tags=args.tag, host=args.host
    )  # (damage and an empty repository are reported as for 'latest')
    if not match or not int(match.group(1)):
        return newest
    back = int(match.group(1))
    snaps = repo.snapshots(source=args.source, tags=args.tag, host=args.host)
    if back >= len(snaps):
        from safehold.repo import NoSuchSnapshot

        raise NoSuchSnapshot(
            f"{ref}: there are only {len(snaps)} snapshot(s)"
            + (f" of source {args.source!r}" if args.source else "")
            + (f" of host {args.host!r}" if args.host else "")
            + f", so the oldest is latest~{len(snaps) - 1}"
        )
    return snaps[-1 - back]


def _snapshot_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", metavar="NAME", help="with 'latest' (find: only): this source")
    p.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="with 'latest': this tag"
    )
    add_host_filter(p, "with 'latest' (find: only): this host's")


def _no_lock(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-lock",
        action="store_true",
        help="take no repository lock (read-only storage; a prune running meanwhile may "
        "make reads fail)",
    )


@contextlib.contextmanager
def _reading(args: Namespace, operation: str) -> Iterator[Repository]:
    from safehold.repo import RepositoryLock

    repo = open_repo(args)
    if args.no_lock:
        yield repo
        return
    with RepositoryLock(repo, exclusive=False, operation=operation):
        yield repo


class _Lines:
    """Writes the listing: one line per entry, names as their bytes (a name that is not
    UTF-8 as it was stored), control characters escaped so that one entry stays one line.
    Stops quietly when the reader goes away (``safehold ls ... | head``)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.binary: IO[bytes] | None = getattr(stream, "buffer", None)

    def write(self, line: str) -> None:
        line = line.translate(_CONTROL) + "\n"
        if self.binary is None:
            self.stream.write(line.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        else:
            self.binary.write(line.encode("utf-8", "surrogateescape"))

    def json(self, doc: dict[str, Any]) -> None:
        self.stream.write(json.dumps(doc, sort_keys=True) + "\n")

    def flush(self) -> None:
        (self.binary or self.stream).flush()


def _local_time(ns: int) -> str:
    """A node's time in the local zone, the zone named (as ``snapshots`` shows times)."""
    return datetime.fromtimestamp(ns / 1e9).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _owner(node: TreeNode, name: str, number: str) -> str:
    return str(node.get(name) or node.get(number, "?"))


def _long_line(path: str, node: TreeNode) -> str:
    from safehold.engine.inspect import filemode

    kind = str(node.get("type"))
    size = int(node.get("size", 0)) if kind == "file" else 0
    line = (
        f"{filemode(kind, int(node.get('mode', 0)))} {_owner(node, 'user', 'uid'):>8} "
        f"{_owner(node, 'group', 'gid'):>8} {size:>12} {_local_time(int(node.get('mtime_ns', 0)))} "
        f"{path}"
    )
    if kind == "symlink":
        line += f" -> {node.get('target')}"
    return line


def _broken_pipe() -> int:
    """The reader of stdout went away: no more output, no error (as ``ls | head``)."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return exitcodes.OK


# ------------------------------------------------------------------ ls
def run_ls(args: Namespace, out: Output) -> int:
    from safehold.engine.inspect import cached_loader, entry_dict, iter_entries, resolve

    lines = _Lines(out.stdout)
    with _reading(args, "ls") as repo:
        snap = _find_snapshot(repo, args.snapshot, args)
        load = cached_loader(repo)
        path, node = resolve(load, snap, args.path)
        count = 0
        try:
            for entry_path, entry in iter_entries(load, path, node, recursive=args.recursive):
                count += 1
                if out.json:
                    lines.json(entry_dict(entry_path, entry))
                elif args.long:
                    lines.write(_long_line(entry_path, entry))
                else:
                    lines.write(entry_path)
            lines.flush()
        except BrokenPipeError:
            return _broken_pipe()
    out.summary({"ok": True, "snapshot": snap.id, "path": path, "count": count})
    return exitcodes.OK


# ------------------------------------------------------------------ find
def _find_snapshots(args: Namespace, repo: Repository, errors: dict[str, str]) -> list[Snapshot]:
    if args.snapshot:
        found: dict[str, Snapshot] = {}
        for ref in args.snapshot:
            snap = _find_snapshot(repo, ref, args)
            found[snap.id] = snap
        snaps = list(found.values())
    else:
        snaps = repo.snapshots(source=args.source, tags=args.tag, host=args.host, errors=errors)
    snaps.sort(key=lambda s: (s.datetime, s.id), reverse=True)  # newest first
    return snaps


def run_find(args: Namespace, out: Output) -> int:
    from safehold.engine.inspect import cached_loader, entry_dict, find_entries
    from safehold.engine.patterns import PathFilter, PatternError, check_pattern
    from safehold.repo import CorruptObject

    try:
        check_pattern(args.pattern)
    except PatternError as exc:
        raise UsageError(f"PATTERN {exc}") from None
    pattern = PathFilter(include=[args.pattern])
    lines = _Lines(out.stdout)
    errors: dict[str, str] = {}
    damaged: list[str] = []
    matches = 0
    with _reading(args, "find") as repo:
        snaps = _find_snapshots(args, repo, errors)
        load = cached_loader(repo)
        try:
            for snap in snaps:
                when = snap.datetime.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
                try:
                    for path, node in find_entries(load, snap, pattern):
                        matches += 1
                        if out.json:
                            lines.json(
                                {"snapshot": snap.id, "time": snap.time, "source": snap.source}
                                | entry_dict(path, node)
                            )
                            continue
                        size = (
                            human_size(int(node.get("size", 0)))
                            if node.get("type") == "file"
                            else str(node.get("type"))
                        )
                        lines.write(f"{snap.id[:12]}  {when}  {path}  {size}")
                except CorruptObject as exc:
                    damaged.append(f"snapshot {snap.id[:12]}: {exc}")
            lines.flush()
        except BrokenPipeError:
            return _broken_pipe()
    for name, message in errors.items():
        out.warn(f"unreadable snapshot {name}: {message}")
    for message in damaged:
        out.warn(f"{message} (the rest of that snapshot was not searched)")
    problems = len(errors) + len(damaged)
    code = exitcodes.DAMAGED if problems else exitcodes.OK
    if not out.json and not out.quiet:
        print(
            f"{matches} match(es) in {len(snaps)} snapshot(s)"
            + (f"; {problems} could not be read" if problems else ""),
            file=sys.stderr,
        )
    out.summary(
        {
            "ok": not problems,
            "pattern": args.pattern,
            "snapshots": len(snaps),
            "matches": matches,
            "unreadable": sorted(errors),
            "damaged": damaged,
            "exit_code": code,
        }
    )
    return code


# ------------------------------------------------------------------ diff
def run_diff(args: Namespace, out: Output) -> int:
    from safehold.engine.inspect import DiffTotals, cached_loader, diff_trees, entry_dict

    lines = _Lines(out.stdout)
    totals = DiffTotals()
    with _reading(args, "diff") as repo:
        old = _find_snapshot(repo, args.snapshot1, args)
        new = _find_snapshot(repo, args.snapshot2, args)
        load = cached_loader(repo)
        try:
            for change in diff_trees(load, old.tree, new.tree, totals):
                node = change.node
                if out.json:
                    doc = {"change": change.kind} | entry_dict(change.path, node)
                    if change.kind == "type" and change.old is not None:
                        doc["old_type"] = change.old.get("type")
                    lines.json(doc)
                else:
                    slash = "/" if node.get("type") == "dir" else ""
                    lines.write(f"{change.prefix}    {change.path}{slash}")
            lines.flush()
        except BrokenPipeError:
            return _broken_pipe()
    out.print(
        f"{totals.added} added, {totals.removed} removed, {totals.changed} changed, "
        f"{totals.metadata} metadata only, {totals.type} type changed; "
        f"{human_size(totals.bytes_added)} added, {human_size(totals.bytes_removed)} removed"
    )
    out.summary({"ok": True, "snapshot1": old.id, "snapshot2": new.id, **totals.summary()})
    return exitcodes.OK


# ------------------------------------------------------------------ cat
def run_cat(args: Namespace, out: Output) -> int:
    from safehold.engine.inspect import cached_loader, read_file, resolve, write_tar

    with _reading(args, "cat") as repo:
        snap = _find_snapshot(repo, args.snapshot, args)
        load = cached_loader(repo)
        path, node = resolve(load, snap, args.path)
        kind = node.get("type")
        if kind not in ("file", "dir"):
            target = f" to {node.get('target')}" if kind == "symlink" else ""
            raise UsageError(
                f"{path} is a {kind}{target}: cat writes a file's bytes or a directory as "
                "tar (cat its directory to keep it)"
            )
        if kind == "dir" and args.output is None and sys.stdout.isatty() and not args.force:
            raise UsageError(
                f"{path} is a directory: its tar stream is not written to a terminal; "
                "use --output FILE, a pipe (| tar -x), or --force"
            )
        skipped: list[str] = []
        written = 0
        entries = 0
        with _destination(args.output) as stream:
            try:
                if kind == "file":
                    for chunk in read_file(repo, node, path):
                        stream.write(chunk)
                        written += len(chunk)
                    entries = 1
                else:
                    entries = write_tar(
                        repo,
                        load,
                        path,
                        node,
                        stream,
                        lambda p, why: skipped.append(f"{p}: {why}"),
                    )
                stream.flush()
            except BrokenPipeError:
                return _broken_pipe()
    out.warn_first(skipped, "entries left out of the tar stream")
    what = "file" if kind == "file" else "tar stream"
    if args.output:
        out.print(f"wrote {what} {path} of snapshot {snap.id[:12]} to {args.output}")
    doc = {
        "ok": True,
        "snapshot": snap.id,
        "path": path,
        "type": kind,
        "entries": entries,
        "skipped": skipped,
        "output": args.output,
    }
    if kind == "file":
        doc["bytes"] = written
    if args.output:
        out.summary(doc)
    elif out.termination_log:  # stdout holds the data, never a summary
        _termination_only(out, doc)
    return exitcodes.OK


def _termination_only(out: Output, doc: dict[str, Any]) -> None:
    json_mode, out.json = out.json, False
    try:
        out.summary(doc)
    finally:
        out.json = json_mode


@contextlib.contextmanager
def _destination(output: str | None) -> Iterator[IO[bytes]]:
    """stdout's bytes, or FILE written under a temporary name and renamed when complete
    (a failed ``cat`` leaves no partial FILE)."""
    if output is None:
        sys.stdout.flush()
        yield sys.stdout.buffer
        return
    partial = f"{output}.partial"
    try:
        with open(partial, "wb") as f:
            yield f
        os.replace(partial, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
