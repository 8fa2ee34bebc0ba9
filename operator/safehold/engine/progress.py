"""Progress events: counters the engine bumps, reported periodically to a callback.

The engine never prints. A reporter thread samples the counters every
``interval`` seconds and hands a :class:`ProgressEvent` to the callback; the CLI
renders it as a rich bar or as a JSON line, and a Job can forward it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FileCallback", "ProgressCallback", "ProgressEvent", "ProgressTracker"]


@dataclass(frozen=True)
class ProgressEvent:
    operation: str
    files_done: int
    files_total: int | None
    bytes_done: int
    bytes_total: int | None
    elapsed_s: float
    rate_bps: float
    eta_s: float | None
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["event"] = "progress"
        doc["elapsed_s"] = round(self.elapsed_s, 3)
        doc["rate_bps"] = round(self.rate_bps)
        doc["eta_s"] = None if self.eta_s is None else round(self.eta_s, 1)
        return doc


ProgressCallback = Callable[[ProgressEvent], None]
#: ``(event, path)`` for each file an operation handles: backup's ``new``, ``changed``,
#: ``unchanged``; restore's ``restored``, ``skipped``. Called from the operation's threads.
FileCallback = Callable[[str, str], None]


class ProgressTracker:
    """Counters plus an optional reporter thread. Increments are plain int adds (GIL-atomic
    enough for reporting; exact totals come from the operation's own summary)."""

    def __init__(
        self,
        operation: str,
        callback: ProgressCallback | None,
        interval: float = 0.5,
        on_file: FileCallback | None = None,
    ) -> None:
        self.operation = operation
        self.callback = callback
        #: told of each file (:data:`FileCallback`), for ``-v``; None: nobody asks
        self.on_file = on_file
        self.interval = interval
        self.files_done = 0
        self.bytes_done = 0
        self.files_total: int | None = None
        self.bytes_total: int | None = None
        self.start = time.monotonic()
        #: Files and bytes done by other processes working on the same operation.
        self.elsewhere: Callable[[], tuple[int, int]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProgressTracker:
        if self.callback is not None:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.callback is not None and exc[0] is None:
            self.callback(self.event(final=True))

    def file(self, event: str, path: str) -> None:
        """Tell ``on_file`` of a file handled (``new``, ``restored``, ...)."""
        if self.on_file is not None:
            self.on_file(event, path)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.callback is not None:
                self.callback(self.event())

    def event(self, *, final: bool = False) -> ProgressEvent:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        files, done = self.files_done, self.bytes_done
        if self.elsewhere is not None:
            other_files, other_bytes = self.elsewhere()
            files, done = files + other_files, done + other_bytes
        rate = done / elapsed
        eta = None
        if self.bytes_total is not None and rate > 0:
            eta = max(self.bytes_total - done, 0) / rate
        return ProgressEvent(
            self.operation,
            files,
            self.files_total,
            done,
            self.bytes_total,
            elapsed,
            rate,
            eta,
            final,
        )
