"""The storage interface: six operations that every provider implements.

A storage holds immutable objects under ``/``-separated names relative to the
location's prefix (for example ``data/3f/3fa4...``). It knows nothing about
repositories; the ``repo`` layer decides the names and what goes in them.

Guarantees every provider gives (the conformance suite in
``tests/storage/test_conformance.py`` checks each one on a real server):

* **Atomic puts.** A reader sees either no object or the whole object, never a
  partial one, even if the writer crashes mid-upload.
* **Read-after-write.** Once ``put`` or ``create`` returns, ``get``, ``stat`` and
  ``list`` in any process see the object. Once ``delete`` returns, they do not.
* **Atomic create.** ``create`` (put-if-absent) succeeds for exactly one of any
  number of concurrent callers; the others get :class:`AlreadyExists`. Locks and
  never-overwrite-data rest on this.
* **List consistency.** ``list`` yields every object whose name starts with the
  prefix that existed for the whole listing, in lexicographic order of name,
  streamed page by page (never loaded into memory at once). It is a plain string
  prefix: ``list("data/a")`` also yields ``data/ab``.
* **Idempotent delete.** Deleting a missing object is not an error.

``put`` and ``create`` take :data:`~safehold.storage.body.Body`: bytes, or a
:class:`~safehold.storage.body.FileBody` (a pack staged in a file), which a provider sends
from the file where it can and reads whole where it cannot; either way the stored object
holds the same bytes.

One optional capability has a default that every provider gets: ``get_stream``, ``get``'s
bytes in pieces as they arrive. A provider whose SDK streams a response body (S3) overrides
it; the others read the range whole and hand it over as one piece.

Errors (from :mod:`safehold.storage.errors`): :class:`NotFound`,
:class:`AlreadyExists`, :class:`PermissionDenied`, :class:`TransientError`
(retry it), :class:`PermanentError`. No SDK exception escapes a provider.

Behaviour that is not storage (retry, concurrency limits, metrics, fault
injection) lives in wrappers around a ``Storage`` (:mod:`safehold.storage.wrappers`),
never in the providers.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from safehold.storage.body import Body
from safehold.storage.errors import ObjectLockUnsupported
from safehold.storage.object_lock import ObjectLock

__all__ = ["ObjectInfo", "Storage", "close_stream", "innermost"]

_CANNOT_LOCK = (
    "this provider cannot lock objects (object lock / retention); use s3://, gs:// or "
    "azure:// for an immutable repository (docs/immutability.md)"
)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What ``stat`` and ``list`` report about one object.

    ``modified`` is when the object was written (UTC), when the provider reports it
    (all four do); prune uses it to tell a pack a running backup just wrote from an old
    leftover, and to compute when an object lock expires, without an extra request.
    """

    name: str
    size: int
    #: Not part of equality: two listings of the same objects compare equal.
    modified: datetime | None = field(default=None, compare=False)


class Storage(abc.ABC):
    """A flat namespace of immutable objects at one location."""

    #: The location as a URL with any secret removed; used in every error message.
    location: str
    #: The object lock applied to what ``put``/``create`` write (None: none); see
    #: :mod:`safehold.storage.object_lock` and docs/immutability.md.
    object_lock: ObjectLock | None = None
    #: How many packs a backup uploads at once (``repo/writer.py``): one where a write is a
    #: local copy; more where each waits on a round trip and one connection's rate
    #: (docs/performance.md, "Uploads in flight per provider").
    uploads_in_flight: int = 1

    @abc.abstractmethod
    def put(self, name: str, data: Body) -> None:
        """Store ``data`` under ``name``, replacing any object of that name, atomically."""

    @abc.abstractmethod
    def create(self, name: str, data: Body) -> None:
        """Store ``data`` under ``name`` only if no object has that name.

        Raises :class:`AlreadyExists` otherwise. Atomic across processes and hosts.
        """

    @abc.abstractmethod
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return the object's bytes, or ``length`` bytes from ``offset``.

        A range that runs past the end returns the bytes up to the end.
        Raises :class:`NotFound` when the object does not exist.
        """

    def get_stream(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """``get``'s bytes in pieces, as they arrive: joined, the same bytes ``get`` returns.

        For a reader that consumes a large range piece by piece (a restore decodes a pack's
        blobs as its body arrives, engine/restore/stream.py): it then holds a piece at a time,
        not the whole range. Raises what ``get`` raises, from the first ``next``; a failure
        part-way raises a :class:`StorageError` too. The caller reads it to the end or closes
        it (which releases the connection). No piece is empty: an empty range yields none.
        The default reads the range whole, in one piece.
        """
        data = self.get(name, offset, length)
        if data:
            yield data

    @abc.abstractmethod
    def stat(self, name: str) -> ObjectInfo:
        """Return the object's size. Raises :class:`NotFound`."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose name starts with ``prefix``, sorted by name."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove the object. Removing a missing object is not an error."""

    def set_object_lock(self, lock: ObjectLock | None) -> None:
        """Lock every object written from now on (except ``lock.exempt`` prefixes).

        Providers that can enforce a lock override this; the default refuses, so a
        repository that records an object lock is never written unlocked by mistake.
        """
        if lock is not None:
            raise ObjectLockUnsupported(self.location, _CANNOT_LOCK)
        self.object_lock = None

    def check_reachable(self) -> None:
        """Check that the location exists and these credentials may list it.

        Raises :class:`NotFound` when the bucket, container or directory does not exist and
        :class:`PermissionDenied` when listing is refused; an empty location passes. The
        default lists one page; a provider whose listing of a missing location is simply
        empty (a directory) overrides it.
        """
        for _ in self.list(""):
            break

    def check_object_lock(self) -> None:
        """Check that the bucket (container) can lock the objects written to it.

        Raises :class:`ObjectLockUnsupported` with how to enable it (docs/immutability.md).
        The default refuses: a provider that can lock objects asks its bucket.
        """
        raise ObjectLockUnsupported(self.location, _CANNOT_LOCK)

    def copy_from(self, source: Storage, name: str) -> bool:
        """Copy object ``name`` of ``source`` (wrapped or not) to the same name here, inside
        the service, without its bytes passing through this process: an optional capability
        (S3 CopyObject, GCS objects.rewrite, Azure Copy Blob).

        True: done. False, having written nothing: no server-side path between the two
        (another provider, endpoint or account; credentials that may not read the source;
        an object lock this storage must apply on write): stream through ``get`` and
        ``create`` instead. A :class:`StorageError` otherwise (:class:`NotFound` when the
        source object is missing). A copy replaces an object of that name, harmless for
        content-addressed objects; callers verify it, since its bytes never passed through
        them. Wrappers apply to it as to every operation. The default has no path."""
        return False

    def reopen(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Give this process connections of its own, as if the storage had just been opened.

        A process made with ``fork`` calls it before its first request (a forked restore,
        :mod:`safehold.engine.restore.parts`): an SDK client's pooled connections are
        sockets the parent shares, and two processes talking on one socket mix up their
        replies. Only the child's copy changes; the parent keeps its connections. Settings
        (object lock, options) stay. The default holds no connections: nothing to do."""

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release connections. The storage must not be used afterwards."""

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def innermost(storage: Storage) -> Storage:
    """The provider under any stack of wrappers (each wrapper keeps it in ``inner``)."""
    for _ in range(32):
        inner = storage.__dict__.get("inner")
        if not isinstance(inner, Storage):
            break
        storage = inner
    return storage


def close_stream(pieces: Iterator[object]) -> None:
    """Close a :meth:`Storage.get_stream` iterator (a generator: its ``finally`` releases
    the connection) whether or not it was read to the end."""
    closer = getattr(pieces, "close", None)
    if closer is not None:
        closer()
