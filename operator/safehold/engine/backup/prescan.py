"""The pre-scan: an lstat walk of the backed-up paths in a thread, ahead of the backup.

It has two uses:

* **A warm cache.** The CLI starts it before the repository opens. Opening derives the key
  (Argon2id, a tenth of a second; scrypt, a third, for keys made before 2026-12-06; both
  without the GIL). Meanwhile the pre-scan reads the tree's directories and inodes into the
  kernel's cache, so the backup's walk finds them there. With a cold cache, seven runs each,
  alternating: an incremental backup of the bench's mixed set 1.84 -> 1.72 s (medians),
  100,000 small files unchanged 1.77 -> 1.54 s (docs/performance.md, "The pre-scan (session
  13)").
* **The ETA's totals.** A backup with a progress display and no parent to estimate from
  lets it finish and reports its counts (:func:`~.walk.scan_totals`: the walk's own scope
  rules).

Otherwise it stops as the backup's pipeline starts: walking on would compete with the
backup's walk for the GIL. :meth:`Prescan.stop` joins the thread, so that the worker
processes the pipeline forks next are forked from a process of one thread. (Counting for
the ETA, it walks on beside the backup, as the ETA's scan always did.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from safehold.engine.backup.options import BackupOptions
from safehold.engine.backup.walk import scan_totals
from safehold.engine.patterns import PathFilter, PatternError, compile_patterns
from safehold.engine.progress import ProgressTracker

__all__ = ["Prescan"]


class Prescan:
    """The pre-scan of ``paths`` under ``filt``; :meth:`start` it, then :meth:`stop` it
    or let it :meth:`report_to` a tracker."""

    def __init__(self, paths: Sequence[str], filt: PathFilter | None = None) -> None:
        self.roots = [os.path.abspath(p) for p in paths]
        self._filt = filt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prescan", daemon=True)
        self._lock = threading.Lock()
        self._totals: tuple[int, int] | None = None
        self._tracker: ProgressTracker | None = None

    @classmethod
    def for_backup(cls, paths: Sequence[str], options: BackupOptions) -> Prescan:
        """The pre-scan of a backup of ``paths`` with ``options``' patterns; one that
        walks nothing when they are bad (the backup refuses them, with the reason)."""
        try:
            return cls(paths, compile_patterns(options.include, options.exclude))
        except PatternError:
            return cls([])

    def start(self) -> Prescan:
        if self.roots:
            self._thread.start()
        return self

    def __enter__(self) -> Prescan:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        totals = scan_totals(self.roots, self._stop, self._filt)
        with self._lock:
            self._totals = totals
            self._report()

    @property
    def totals(self) -> tuple[int, int] | None:
        """The files and bytes found, once the walk has ended (None before, or stopped)."""
        return self._totals

    def _report(self) -> None:
        if self._tracker is not None and self._totals is not None:
            self._tracker.files_total, self._tracker.bytes_total = self._totals

    def report_to(self, tracker: ProgressTracker) -> None:
        """Give ``tracker`` the totals when the walk ends (now, if it has)."""
        with self._lock:
            self._tracker = tracker
            self._report()

    def stop(self) -> None:
        """Stop walking (after the directory being read) and join the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
