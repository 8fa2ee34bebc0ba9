"""A pack's range read from an object store while its blobs are decoded and written.

A restore from an object store reads each pack in one request, up to a whole pack (every
request is a round trip, and billed). Read whole, a pack of small files stayed in memory
until the last of its ~17,000 files was written; two parts with three packs each in flight
held 100 MB. :class:`PackStream` sits between the fetch thread, which reads the response
body piece by piece (:meth:`Storage.get_stream`), and the worker that decodes and writes
the blobs in order of offset: at most ``ahead`` bytes wait between the two, so the download
still runs ahead of the writes, and a part holds a few MiB per pack instead of the pack.

The reading side (:meth:`fill`) and the consuming side (:meth:`take`) are two threads; a
blob larger than ``ahead`` is still read whole (the fetch thread goes past the bound while
the worker waits for its end). :meth:`close` lets go of the rest: the fetch thread stops
and closes the response.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Protocol

from safehold.storage import close_stream

__all__ = ["PackRange", "PackStream", "WholeRange"]


class PackRange(Protocol):
    """The bytes of a range of a pack, as a worker reads its blobs: in order of offset."""

    def take(self, offset: int, length: int) -> bytes | memoryview:
        """Bytes ``[offset, offset + length)`` of the range (fewer past its end)."""
        ...

    def close(self) -> None:
        """The worker is done with the range."""
        ...


class WholeRange:
    """A range read whole (from a local repository): its bytes, sliced."""

    __slots__ = ("data",)

    def __init__(self, data: memoryview) -> None:
        self.data = data

    def take(self, offset: int, length: int) -> memoryview:
        return self.data[offset : offset + length]

    def close(self) -> None:
        pass


class PackStream:
    """Bytes ``[0, length)`` of a range of a pack, handed from a fetch thread to a worker."""

    def __init__(self, pieces: Iterator[bytes], ahead: int) -> None:
        self._pieces = pieces
        self._ahead = ahead
        self._queue: deque[bytes] = deque()
        self._queued = 0  # bytes in the queue
        self._start = 0  # offset in the range of the queue's first byte
        self._wanted = 0  # the end of the range the worker waits for
        self._ended = False
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    # ------------------------------------------------------------ the fetch thread
    def fill(self) -> None:
        """Read the body to its end (or until :meth:`close`), at most ``ahead`` bytes ahead
        of what the worker took; a failure is the worker's to raise (:meth:`take`)."""
        try:
            for piece in self._pieces:
                with self._cond:
                    while self._full() and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        break
                    self._queue.append(piece)
                    self._queued += len(piece)
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - raised in the worker by take()
            with self._cond:
                self._error = exc
        finally:
            close_stream(self._pieces)
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _full(self) -> bool:
        end = self._start + self._queued
        return self._queued >= self._ahead and end >= self._wanted

    # ------------------------------------------------------------ the worker
    def take(self, offset: int, length: int) -> bytes | memoryview:
        """Bytes ``[offset, offset + length)`` of the range (fewer where the body ended
        early), dropping everything before ``offset``: offsets only grow. Raises the
        fetch thread's error when the body failed before those bytes arrived."""
        end = offset + length
        with self._cond:
            if end > self._wanted:
                self._wanted = end
                self._cond.notify_all()  # a fetch thread held at the bound may go on
            while True:
                self._drop_before(offset)
                if self._start + self._queued >= end or self._ended:
                    break
                self._cond.wait()
            if self._start + self._queued < end and self._error is not None:
                raise self._error
            return self._slice(offset, end)

    def _drop_before(self, offset: int) -> None:
        dropped = False
        while self._queue and self._start + len(self._queue[0]) <= offset:
            piece = self._queue.popleft()
            self._start += len(piece)
            self._queued -= len(piece)
            dropped = True
        if dropped:
            self._cond.notify_all()

    def _slice(self, offset: int, end: int) -> bytes | memoryview:
        first = self._queue[0] if self._queue else b""
        at = offset - self._start
        if at < 0:  # only after a bug in the caller: offsets must grow
            raise ValueError("PackStream.take: offsets must grow")
        if end - self._start <= len(first):
            return memoryview(first)[at : end - self._start]
        parts: list[bytes | memoryview] = []
        position = self._start
        for piece in self._queue:
            lo, hi = max(offset, position), min(end, position + len(piece))
            if lo < hi:
                parts.append(memoryview(piece)[lo - position : hi - position])
            position += len(piece)
            if position >= end:
                break
        return b"".join(parts)

    def close(self) -> None:
        """The worker is done with the range: the fetch thread stops reading it."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._queued = 0
            self._cond.notify_all()
