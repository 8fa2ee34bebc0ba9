"""What the object-store providers (S3, GCS, Azure) share, so each keeps only its SDK.

An :class:`ObjectStore` keeps objects under ``prefix/`` in one bucket (an Azure container):
it maps object names to the store's keys and back, reads the options every cloud provider
has (``page_size``), keeps the object lock and gives each upload its provider's lock mode
and retain-until time (``_lock_for``), and implements the parts of the interface that need
no SDK: ``put`` and ``create`` are one upload, a zero-length ``get`` is a ``stat``, and
``list`` strips the prefix from the keys the provider lists. A provider implements
``_upload``, ``_read`` and ``_list`` with its SDK, plus ``stat``, ``delete`` and ``close``,
optionally ``_copy_within`` (a server-side copy from another store of the same provider),
and translates its SDK's errors itself. It names the attributes that hold its SDK's clients in
``connections``: ``reopen`` (in a forked process) takes fresh ones from a store opened anew
from the same location and options.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import ClassVar

from safehold.storage.base import ObjectInfo, Storage, innermost
from safehold.storage.body import Body
from safehold.storage.errors import InvalidLocation
from safehold.storage.object_lock import ObjectLock
from safehold.storage.options import option_int
from safehold.storage.registry import BY_SCHEME, Location

__all__ = ["MULTIPART_THRESHOLD", "ObjectStore"]

#: Objects up to this size go up in one request (option ``multipart_threshold``): above a
#: pack's 16 MiB, so that a pack is one PUT, not four requests (S3: create, two parts,
#: complete) or three (GCS's resumable upload, Azure's blocks). Requests are billed, and a
#: backup to S3 sent 62 where restic sent 25 (docs/performance.md, issue 19).
MULTIPART_THRESHOLD = 32 * 1024 * 1024


class ObjectStore(Storage):
    """Objects under ``prefix/`` in one bucket; the subclass talks to the server."""

    #: The provider's names of the lock modes (``governance``, ``compliance``).
    lock_mode_names: ClassVar[Mapping[str, str]]
    #: The attributes that hold the SDK's clients (and their pooled connections).
    connections: ClassVar[tuple[str, ...]]
    #: A pack upload waits on a round trip and on one connection's rate: four at once keep
    #: a distant bucket's link busy. Each holds its pack in memory where the client reads a
    #: file body whole (GCS, Azure); S3 sends from the file and takes more.
    uploads_in_flight = 4

    def __init__(self, location: Location, *, endpoint: str, multipart_threshold: int) -> None:
        self.opened_from = location
        self.location = location.url
        self.prefix = f"{location.prefix}/" if location.prefix else ""
        #: The server, for messages (never a credential).
        self.endpoint = endpoint
        self.multipart_threshold = multipart_threshold
        self.page_size = option_int(location, "page_size", 1000)

    def _key(self, name: str) -> str:
        """The object's key in the bucket: ``name`` under the prefix."""
        if not name or name.startswith("/"):
            raise InvalidLocation(self.location, "invalid object name", name=name)
        return self.prefix + name

    # -- the interface
    def put(self, name: str, data: Body) -> None:
        self._upload(name, data, create=False)

    def create(self, name: str, data: Body) -> None:
        self._upload(name, data, create=True)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:  # nothing to read, but a missing object is still NotFound
            self.stat(name)
            return b""
        return self._read(name, offset, length)

    def reopen(self) -> None:
        """New SDK clients, from the provider's ``open`` with the same location and options
        (credentials are looked up again, as at the first open); everything else stays."""
        module = importlib.import_module(BY_SCHEME[self.opened_from.scheme].module)
        fresh = module.open(self.opened_from)
        for attribute in self.connections:
            setattr(self, attribute, getattr(fresh, attribute))

    def copy_from(self, source: Storage, name: str) -> bool:
        """A server-side copy between two stores of this provider (see ``Storage``): never
        to a store that must lock what it writes, which a copy would not do."""
        origin = innermost(source)
        if type(origin) is not type(self) or self.object_lock is not None:
            return False
        return self._copy_within(origin, name)

    def _copy_within(self, origin: ObjectStore, name: str) -> bool:
        """Copy ``name`` from ``origin``, a store of the same provider, inside the service;
        False when the two cannot (another endpoint or account, no read access)."""
        return False

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip = len(self.prefix)
        for key, size, modified in self._list(self.prefix + prefix):
            yield ObjectInfo(key[strip:], size, modified)

    def set_object_lock(self, lock: ObjectLock | None) -> None:
        """Lock every later put and create with ``lock``: the provider sends the lock
        with the upload, and the bucket (container) must have object lock enabled."""
        self.object_lock = lock

    def _lock_for(self, name: str) -> tuple[str, datetime] | None:
        """The provider's lock mode and the retain-until time to send with an upload of
        ``name`` now; None when it goes up unlocked (no lock set, or an exempt name)."""
        lock = self.object_lock
        if lock is None or not lock.applies_to(name):
            return None
        return self.lock_mode_names[lock.mode], lock.until()

    # -- what the provider implements with its SDK, raising only storage errors
    @abc.abstractmethod
    def _upload(self, name: str, data: Body, *, create: bool) -> None:
        """Write the object atomically; with ``create``, only if absent (else AlreadyExists).
        A :class:`FileBody` is sent from its file where the SDK can read one."""

    @abc.abstractmethod
    def _read(self, name: str, offset: int, length: int | None) -> bytes:
        """``get`` of a non-empty range (``length`` None: to the end)."""

    @abc.abstractmethod
    def _list(self, prefix: str) -> Iterator[tuple[str, int, datetime | None]]:
        """Key, size and modification time of every object whose key starts with ``prefix``,
        in order of key, page by page."""
