"""The entry point: :func:`restore_snapshot` plans the selection, decides how many processes
restore (:mod:`~safehold.engine.restore.parts`), runs each part's
:class:`~safehold.engine.restore.finish.Restore`, and with ``RestoreOptions.verify`` reads
the result back (:mod:`~safehold.engine.restore.check`)."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import asdict
from typing import NoReturn

from safehold.engine.progress import FileCallback, ProgressCallback, ProgressTracker
from safehold.engine.restore import check
from safehold.engine.restore.finish import Restore
from safehold.engine.restore.options import RestoreOptions, RestoreResult
from safehold.engine.restore.parts import PartResult, Parts
from safehold.engine.restore.select import Selection, plan_selection
from safehold.engine.tuning import (
    PACK_READS_MAPPED,
    available_cpus,
    rare_gc,
    release_free_memory,
    tune_malloc,
)
from safehold.repo import Repository, Snapshot
from safehold.repo.prefetch import prefetch_trees
from safehold.storage.wrappers.bandwidth import download_limited

__all__ = ["restore_snapshot"]

#: Processes by default, however many CPUs: each walks the whole snapshot and holds its own
#: buffers, and beyond a few the disk, not the CPU, sets the pace.
_MAX_PROCESSES = 4


def _absent_or_empty(target: str) -> bool:
    """True when nothing of an earlier run can be under ``target``: it does not exist or is
    an empty directory. Then every file is new, which spares an ``lstat`` (and the checks
    for an earlier, interrupted run) per file: a restore into a directory just created for
    it (the usual case) is as fast as one into a path that did not exist."""
    try:
        with os.scandir(target) as it:
            return next(it, None) is None
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        return False


def restore_snapshot(
    repo: Repository,
    snap: Snapshot,
    target: str,
    options: RestoreOptions | None = None,
    progress: ProgressCallback | None = None,
    on_file: FileCallback | None = None,
) -> RestoreResult:
    """Restore ``snap`` under ``target`` (created if missing); ``on_file`` hears of each
    file ``restored`` (written) or ``skipped`` (complete from an earlier run).

    With ``options.includes``/``excludes``, only the selected entries are restored; a bad
    pattern raises :class:`~safehold.engine.patterns.PatternError` and a selection of nothing
    :class:`NothingSelected`, before ``target`` is touched. With ``options.verify``, the
    restored tree is then read back and checked against the snapshot (``result.check``)."""
    started = time.monotonic()
    options = options or RestoreOptions()
    selection = plan_selection(repo, snap.tree, options.includes, options.excludes)
    remote = not repo.storage.location.startswith("file:")
    if selection is None and remote:
        prefetch_trees(repo, snap.tree)  # a request per tree is a round trip per directory
    if remote:  # whole packs are read: mapped, each goes back when freed
        tune_malloc(mmap_threshold=PACK_READS_MAPPED)
    else:
        tune_malloc()
    fresh = _absent_or_empty(target)
    os.makedirs(target, exist_ok=True)
    chown_always = not fresh or bool(os.stat(target).st_mode & stat.S_ISGID)
    parts = Parts(_process_count(repo, options, fresh))
    if parts.count > 1:
        release_free_memory()  # before the fork: else every child shares, then copies, it
    with rare_gc():
        if parts.fork():  # before any thread of the restore starts
            _restore_part(repo, snap, target, options, parts, chown_always, selection, on_file)
        with ProgressTracker("restore", progress, on_file=on_file) as tracker:
            summary = snap.summary
            if selection is None:  # a selection's totals are not known: none is shown
                tracker.files_total = int(summary.get("total_files", 0)) or None
                tracker.bytes_total = int(summary.get("total_bytes", 0)) or None
            tracker.elsewhere = parts.progress_elsewhere
            r = Restore(repo, snap, target, options, tracker, parts, selection)
            r.chown_always = chown_always
            r.result.processes = parts.count
            if selection is not None:
                r.result.unmatched = [asdict(u) for u in selection.unmatched]
            try:
                r.walk(snap.tree, fresh)
                r.finish()
            finally:
                parts.abandon()  # only after a failure are parts left
                r.close()
    if options.verify:
        r.result.check = check.verify_restored(repo, snap, target, selection, progress)
    r.result.duration_s = time.monotonic() - started
    return r.result


def _process_count(repo: Repository, options: RestoreOptions, fresh: bool) -> int:
    """How many processes restore: one per CPU, at most :data:`_MAX_PROCESSES`, into a new
    target whose reads no bandwidth limit holds back (its bucket is one process's: forked
    parts would each get the whole limit, and the limit, not the CPU, sets the pace). Each
    child reopens the storage (``Storage.reopen``), so object stores fork as local
    repositories do."""
    if not fresh or not hasattr(os, "fork") or download_limited(repo.storage):
        return 1
    return options.processes or min(available_cpus(), _MAX_PROCESSES)


def _restore_part(
    repo: Repository,
    snap: Snapshot,
    target: str,
    options: RestoreOptions,
    parts: Parts,
    chown_always: bool,
    selection: Selection | None,
    on_file: FileCallback | None,
) -> NoReturn:
    """A child's share of the restore; it ends the process (see :meth:`Parts.exit`). Its
    ``on_file`` lines go to the output it shares with part 0, whole lines each."""
    tracker = ProgressTracker("restore", None, on_file=on_file)
    try:
        repo.storage.reopen()  # before any request: never one on the parent's connections
        r = Restore(repo, snap, target, options, tracker, parts, selection)
        r.chown_always = chown_always
        r.walk(snap.tree, True)
        r.drain()
        r.close()
    except BaseException as exc:  # noqa: BLE001 - reported by part 0
        parts.exit(None, exc)
    parts.publish(tracker.files_done, tracker.bytes_done)
    res = r.result
    parts.exit(PartResult(res.files, res.links, res.special, res.bytes_written, res.errors))
