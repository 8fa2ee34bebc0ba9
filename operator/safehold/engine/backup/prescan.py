"""The pre-scan: an lstat walk of the backed-up paths in a thread, for the ETA's totals.

A backup with a progress display and no parent to estimate from starts it as its pipeline
starts; it walks beside the backup and reports the files and bytes it found
(:func:`~.walk.scan_totals`: the walk's own scope rules, so the totals count exactly what
the backup stores). Otherwise no pre-scan runs.

It used to run in every backup as well, started before the repository opened, to warm the
kernel's cache of the tree's inodes while the key derived (session 13). Since the key
derives while the commands load (session 17), that thread only competed with the imports
and the storage's client for the GIL: without it, the small files' unchanged re-run to S3
took 1.49 s instead of 1.58 s with a cold cache and 1.05 s instead of 1.16 s with a warm
one (docs/performance.md, "The pre-scan retired (session 24)").
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from safehold.engine.backup.walk import scan_totals
from safehold.engine.patterns import PathFilter
from safehold.engine.progress import ProgressTracker

__all__ = ["Prescan"]


class Prescan:
    """The pre-scan of ``roots`` (absolute paths) under ``filt``, which gives ``tracker``
    its totals when the walk ends; :meth:`start` it, and :meth:`stop` it before the
    tracker's totals are set from the backup's own counts."""

    def __init__(
        self, roots: Sequence[str], filt: PathFilter | None, tracker: ProgressTracker
    ) -> None:
        self.roots = list(roots)
        self._filt = filt
        self._tracker = tracker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prescan", daemon=True)
        self.totals: tuple[int, int] | None = None
        """The files and bytes found, once the walk has ended (None before, or stopped)."""

    def start(self) -> Prescan:
        self._thread.start()
        return self

    def _run(self) -> None:
        totals = scan_totals(self.roots, self._stop, self._filt)
        if totals is not None:
            self._tracker.files_total, self._tracker.bytes_total = totals
        self.totals = totals

    def stop(self) -> None:
        """Stop walking (after the directory being read) and join the thread."""
        self._stop.set()
        self._thread.join()
