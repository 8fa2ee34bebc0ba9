"""The backup's counters, in one place: the counts of its snapshot summary and its errors."""

from __future__ import annotations

import threading

__all__ = ["BackupCounts"]


class BackupCounts(dict[str, int]):
    """The snapshot summary's counts (a dict: the walk adds to it by key, in one thread),
    the errors met, and what the big-file threads report under a lock until
    :meth:`merge_big` adds it at the end."""

    __slots__ = ("_big_failed", "_big_lock", "_big_read", "errors")

    def __init__(self) -> None:
        super().__init__()
        self._big_lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Back to zero, without errors (a walk starting over)."""
        self.update(
            files_new=0,
            files_changed=0,
            files_unmodified=0,
            dirs=0,
            bytes_read=0,
            total_bytes=0,
            total_files=0,
        )
        self.errors: list[dict[str, str]] = []
        self._big_read = 0
        self._big_failed: list[str] = []

    def error(self, path: str, exc: BaseException) -> None:
        """Record that ``path`` was left out (list.append is atomic: any thread may)."""
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.errors.append({"path": path, "error": reason})

    def big_read(self, nbytes: int, failed: str | None = None) -> None:
        """A big-file thread read ``nbytes``; ``failed``: the category it had been
        counted in, when the file could not be read after all."""
        with self._big_lock:
            self._big_read += nbytes
            if failed is not None:
                self._big_failed.append(failed)

    def merge_big(self) -> None:
        with self._big_lock:
            self["bytes_read"] += self._big_read
            self._big_read = 0
            for category in self._big_failed:
                self[category] -= 1
            self._big_failed = []
