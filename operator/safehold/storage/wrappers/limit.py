"""Bound how many operations run on a storage at once.

Object stores throttle (S3's 503 SlowDown) and connection pools are finite; a semaphore in
front of the storage keeps a thread pool of any size within ``limit`` concurrent requests.
A listing or a stream holds a slot only while it fetches, not while the caller consumes it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TypeVar

from safehold.storage.base import ObjectInfo, Storage, close_stream
from safehold.storage.body import Body
from safehold.storage.wrappers.base import ForwardingStorage

__all__ = ["LimitedStorage"]

T = TypeVar("T")


class LimitedStorage(ForwardingStorage):
    """At most ``limit`` calls into ``inner`` at a time; the others wait their turn."""

    def __init__(self, inner: Storage, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        super().__init__(inner)
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def put(self, name: str, data: Body) -> None:
        with self._slots:
            self.inner.put(name, data)

    def create(self, name: str, data: Body) -> None:
        with self._slots:
            self.inner.create(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        with self._slots:
            return self.inner.get(name, offset, length)

    def stat(self, name: str) -> ObjectInfo:
        with self._slots:
            return self.inner.stat(name)

    def delete(self, name: str) -> None:
        with self._slots:
            self.inner.delete(name)

    def copy_from(self, source: Storage, name: str) -> bool:
        with self._slots:
            return self.inner.copy_from(source, name)

    def get_stream(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self._one_at_a_time(self.inner.get_stream(name, offset, length))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._one_at_a_time(self.inner.list(prefix))

    def _one_at_a_time(self, items: Iterator[T]) -> Iterator[T]:
        """``items`` (a listing's pages, a stream's pieces), a slot held while each is
        fetched, not while the caller has it; closed when the caller stops early."""
        try:
            while True:
                with self._slots:
                    item = next(items, None)
                if item is None:
                    return
                yield item
        finally:
            close_stream(items)
