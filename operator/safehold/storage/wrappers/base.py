"""A storage that forwards every call to another: the base of every wrapper.

Wrappers override the operations they change and inherit the rest, so each one stays small
and they stack in any order (see :func:`safehold.storage.wrappers.wrap`).
"""

from __future__ import annotations

from collections.abc import Iterator

from safehold.storage.base import ObjectInfo, Storage
from safehold.storage.body import Body
from safehold.storage.object_lock import ObjectLock

__all__ = ["ForwardingStorage"]


class ForwardingStorage(Storage):
    """Forwards to ``inner``; the location (and the provider's attributes) are the inner's."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.location = inner.location
        self.object_lock = inner.object_lock
        self.uploads_in_flight = inner.uploads_in_flight

    @property
    def provider(self) -> str:
        """The URL scheme of the innermost storage: file, s3, gs or azure."""
        return self.location.split("://", 1)[0]

    def put(self, name: str, data: Body) -> None:
        self.inner.put(name, data)

    def create(self, name: str, data: Body) -> None:
        self.inner.create(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.get(name, offset, length)

    # get_stream is not forwarded: a wrapper that changes ``get`` (a test's fault injection)
    # would be bypassed. Storage's default reads through this wrapper's ``get``; each
    # wrapper that passes a stream on overrides get_stream itself.

    def stat(self, name: str) -> ObjectInfo:
        return self.inner.stat(name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def copy_from(self, source: Storage, name: str) -> bool:
        return self.inner.copy_from(source, name)

    def close(self) -> None:
        self.inner.close()

    def reopen(self) -> None:
        self.inner.reopen()

    def check_reachable(self) -> None:
        self.inner.check_reachable()

    def check_object_lock(self) -> None:
        self.inner.check_object_lock()

    def set_object_lock(self, lock: ObjectLock | None) -> None:
        self.inner.set_object_lock(lock)
        self.object_lock = self.inner.object_lock

    def __getattr__(self, attribute: str) -> object:
        # Provider details (multipart_threshold, endpoint, ...) stay reachable through wrappers.
        if attribute == "inner":
            raise AttributeError(attribute)
        return getattr(self.inner, attribute)
