"""The backup's entry points: a directory tree or a stream into a new snapshot."""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime
from typing import Any, BinaryIO

from safehold import __version__
from safehold.engine.backup.dictionary import choose_dictionary
from safehold.engine.backup.options import BackupError, BackupOptions, BackupResult
from safehold.engine.backup.pipeline import BackupPipeline
from safehold.engine.backup.prescan import Prescan
from safehold.engine.patterns import PatternError, compile_patterns
from safehold.engine.progress import FileCallback, ProgressCallback, ProgressTracker
from safehold.engine.tuning import rare_gc, tune_malloc
from safehold.repo import (
    CorruptObject,
    Node,
    Repository,
    Snapshot,
    check_meta,
)
from safehold.repo.locks import check_lock
from safehold.repo.prefetch import prefetch_trees
from safehold.repo.snapshot import check_host

__all__ = ["backup_paths", "backup_stream"]


def _now_iso(when: datetime | None = None) -> str:
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _choose_parent(
    repo: Repository, source: str, requested: str | None, host: str
) -> tuple[str, Snapshot | None]:
    """The snapshot's type and parent: the newest snapshot of the same source and host
    (one written before hosts existed is of every host, format section 9)."""
    history = [s for s in repo.snapshots(source=source, host=host) if s.type != "stdin"]
    if requested == "full":
        return "full", None
    if requested == "differential":
        fulls = [s for s in history if s.type == "full"]
        return ("differential", fulls[-1]) if fulls else ("full", None)
    if history:
        return "incremental", history[-1]
    return "full", None


def _check_meta(options: BackupOptions) -> None:
    """Refuse bad metadata or host before any work: it would make an unreadable snapshot."""
    try:
        check_meta(options.meta)
        check_host(options.snapshot_host)
    except ValueError as exc:
        raise BackupError(str(exc)) from None


def _snapshot(
    repo: Repository,
    b: BackupPipeline,
    *,
    tree: str,
    source: str,
    kind: str,
    parent: Snapshot | None,
    paths: list[str],
    options: BackupOptions,
    started: float,
) -> Snapshot:
    summary: dict[str, Any] = {
        **b.counts,
        "bytes_new": b.writer.stats.raw_new,
        "bytes_stored": b.writer.stats.stored,
        "blobs_new": b.writer.stats.blobs_new,
        "duration_s": round(time.monotonic() - started, 3),
        "errors": len(b.errors),
    }
    # the next backup of the source uses it again, if it is stored (some pack holds it)
    used = b.writer.dictionary
    snap = Snapshot(
        time=_now_iso(options.time),
        source=source,
        type=kind,
        tree=tree,
        paths=paths,
        hostname=socket.gethostname(),
        host=options.snapshot_host,
        tags=sorted(set(options.tags)),
        parent=parent.id if parent else None,
        program=f"safehold {__version__}",
        summary=summary,
        meta=dict(options.meta),
        dictionary=used.id.hex() if used is not None and used.id in repo.index else None,
    )
    check_lock(repo)  # a lost lock: prune may have removed what the snapshot names
    repo.save_snapshot(snap)
    return snap


def backup_paths(
    repo: Repository,
    paths: list[str],
    options: BackupOptions | None = None,
    progress: ProgressCallback | None = None,
    on_file: FileCallback | None = None,
) -> BackupResult:
    """Back up files and directory trees into a new snapshot; ``on_file`` hears of each
    file: ``new``, ``changed`` (read) or ``unchanged`` (the parent's chunks reused)."""
    options = options or BackupOptions()
    if not paths:
        raise BackupError("no paths to back up")
    _check_meta(options)
    try:
        filt = compile_patterns(options.include, options.exclude)
    except PatternError as exc:
        raise BackupError(str(exc)) from None
    abspaths = [os.path.abspath(p) for p in paths]
    roots: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for p in abspaths:
        name = os.path.basename(p.rstrip("/")) or "root"
        if name in seen:
            raise BackupError(
                f"{seen[name]} and {p} would both appear as {name!r} at the top of the snapshot; "
                "back them up as separate sources, or back up their common parent"
            )
        seen[name] = p
        roots.append((p, name))
    source = options.source or ",".join(abspaths)
    kind, parent = _choose_parent(repo, source, options.type, options.snapshot_host)
    parent_root: dict[str, Node] = {}
    if parent is not None:
        if not repo.storage.location.startswith("file:"):  # not a request per directory
            prefetch_trees(repo, parent.tree)
        try:
            parent_root = {n["name"]: n for n in repo.load_tree(parent.tree)}
        except CorruptObject:
            parent_root = {}
    started = time.monotonic()
    tune_malloc()
    with rare_gc(), ProgressTracker("backup", progress, on_file=on_file) as tracker:
        estimate = parent.summary if parent is not None else {}
        prescan = None
        if estimate.get("total_files") and estimate.get("total_bytes") is not None:
            # An incremental's totals are close to its parent's: that estimate spares a
            # whole pre-scan (an lstat per file, competing with the backup).
            tracker.files_total = int(estimate["total_files"])
            tracker.bytes_total = int(estimate["total_bytes"])
        elif progress is not None:
            prescan = Prescan(abspaths, filt, tracker).start()
        try:
            dictionary = choose_dictionary(repo, parent, abspaths, filt)
            b = BackupPipeline(repo, options, tracker, dictionary)
            b.filter = filt
            tree = b.run(roots, parent_root)
        finally:
            if prescan is not None:
                prescan.stop()
        tracker.files_total = b.counts["total_files"]
        tracker.bytes_total = b.counts["total_bytes"]
        snap = _snapshot(
            repo,
            b,
            tree=tree,
            source=source,
            kind=kind,
            parent=parent,
            paths=abspaths,
            options=options,
            started=started,
        )
    return BackupResult(snap, b.errors)


def backup_stream(
    repo: Repository,
    stream: BinaryIO,
    name: str,
    options: BackupOptions | None = None,
    progress: ProgressCallback | None = None,
) -> BackupResult:
    """Back up a byte stream (a database dump on stdin) as one file named ``name``."""
    options = options or BackupOptions()
    _check_meta(options)
    if options.include or options.exclude:
        raise BackupError("include and exclude patterns apply to paths, not to a stream")
    if not name or "/" in name or name in (".", ".."):
        raise BackupError(f"--stdin-name {name!r} must be a plain file name, without '/'")
    source = options.source or name
    started = time.monotonic()
    tune_malloc()
    with rare_gc(), ProgressTracker("backup", progress) as tracker:
        b = BackupPipeline(repo, options, tracker)
        tree = b.run_stream(stream, name)
        if not b.counts["bytes_read"]:
            # `pg_dump ... | safehold backup --stdin` whose producer failed: an empty
            # snapshot saved as a success would be the newest "backup" of the database.
            raise BackupError(
                "standard input was empty: no snapshot was saved (did the command writing "
                "to the pipe fail? check its exit status, e.g. with 'set -o pipefail')"
            )
        snap = _snapshot(
            repo,
            b,
            tree=tree,
            source=source,
            kind="stdin",
            parent=None,
            paths=[name],
            options=options,
            started=started,
        )
    return BackupResult(snap, b.errors)
