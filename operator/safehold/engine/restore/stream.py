"""A pack's range read from an object store while its blobs are decoded and written.

A restore from an object store reads each pack in one request, up to a whole pack (every
request is a round trip, and billed). Read whole, a pack of small files stayed in memory
until the last of its ~17,000 files was written: two parts with three packs each in flight
held 100 MB. Now a fetch thread sends the request and waits for the body's first piece (the
round trip, as before), then hands the open body to a worker as a :class:`PackStream`. The
worker pulls pieces (:meth:`Storage.get_stream`: 1 MiB from S3) as the blobs it decodes
need them, and lets go of each piece once its blobs are written. What has not been read
waits in the socket's buffers, where TCP holds the sender back. So a part holds a piece per
pack in flight, not the pack.

A first version read the body in the fetch thread into a bounded buffer that the worker
emptied: the two threads waking each other for every piece cost 5-10 % of the restore's
time (session 14 in docs/performance.md). Provider SDKs that read a range whole (GCS,
Azure) give one piece: then the pack is held whole, as before. A local repository's reads
stay whole too (:class:`WholeRange`): they are quick, and at most 4 MiB.
"""

from __future__ import annotations

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
    """A range of a pack as its body arrives (:meth:`Storage.get_stream`): the worker pulls
    the pieces a blob needs and lets go of those before it."""

    def __init__(self, pieces: Iterator[bytes], first: bytes = b"") -> None:
        self._pieces = pieces
        self._queue: deque[bytes] = deque([first] if first else [])
        self._queued = len(first)  # bytes in the queue
        self._start = 0  # offset in the range of the queue's first byte
        self._ended = False

    def take(self, offset: int, length: int) -> bytes | memoryview:
        """Bytes ``[offset, offset + length)`` of the range (fewer where the range ends),
        dropping everything before ``offset``: offsets only grow. A :class:`StorageError`
        when the body failed before those bytes arrived (retried already)."""
        end = offset + length
        self._drop_before(offset)
        while self._start + self._queued < end and not self._ended:
            piece = next(self._pieces, None)
            if piece is None:
                self._ended = True
                break
            self._queue.append(piece)
            self._queued += len(piece)
            self._drop_before(offset)
        return self._slice(offset, end)

    def _drop_before(self, offset: int) -> None:
        queue = self._queue
        while queue and self._start + len(queue[0]) <= offset:
            piece = queue.popleft()
            self._start += len(piece)
            self._queued -= len(piece)

    def _slice(self, offset: int, end: int) -> bytes | memoryview:
        at = offset - self._start
        if at < 0:  # only after a bug in the caller: offsets must grow
            raise ValueError("PackStream.take: offsets must grow")
        first = self._queue[0] if self._queue else b""
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
        """The worker is done with the range: the response is closed, read or not."""
        self._queue.clear()
        self._queued = 0
        close_stream(self._pieces)
