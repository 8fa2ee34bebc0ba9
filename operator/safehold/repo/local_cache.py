"""A local copy of the repository objects every command reads again: the local cache.

On an object store, each command would otherwise download, every time, every index
object (to open the repository), every snapshot object (to list or pick one) and the
packs of trees of the parent snapshot (an incremental backup compares against them; a
restore, ``ls`` and ``diff`` walk them). These objects are content-addressed (their name
is hex(BLAKE3(bytes)), format section 3), so a copy is valid for as long as the object
exists, and checking a copy against its name is cheap. :class:`LocalCache` is a storage
wrapper around the repository's storage that serves ``get`` of those objects from a
directory, and keeps what it downloads or what this process writes:

* ``index/*`` and ``snapshots/*``: every one, by name;
* packs of trees: the packs the loaded index says hold a tree blob
  (:meth:`keep_packs`), and the packs of trees this process writes (:meth:`remember`).
  A ranged read of such a pack downloads it whole, once, and serves ranges from the file.

What keeps the copies right, and never lets the cache fail a command:

* A copy is checked against its name before its first use in a process; a copy that does
  not match is deleted and the object read from storage again.
* Files are written to a temporary name and renamed: processes sharing a cache (two
  commands, a restore's parts) never see half a file.
* A listing of ``index/`` or ``snapshots/`` drops the copies of objects it no longer
  shows (forgotten or pruned from another host); :meth:`keep_packs` drops packs that are
  no longer packs of trees of the index; ``delete`` drops the copy of what it deletes.
* A cache that cannot be written (a full disk, no permission) is left alone with one
  warning: the command goes on reading storage.
* The caches of other repositories that no command opened for :data:`UNUSED_DAYS` are
  deleted when a repository's cache is opened.

The copies are the stored objects, encrypted as in the repository. Layout:
``<cache dir>/<repository id>/{index,snapshots,data}/<id>``, and a ``CACHEDIR.TAG`` in
the cache directory so that backup tools skip it. :mod:`~safehold.repo.early_key` adds
``<cache dir>/<repository id>/key`` and ``<cache dir>/locations/``. docs/cli.md ("Local
cache") describes where it is and when commands use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3

from safehold.repo import layout
from safehold.repo.crypto import object_hash
from safehold.storage import Body, Storage, body_bytes
from safehold.storage.base import ObjectInfo
from safehold.storage.wrappers import ForwardingStorage

__all__ = [
    "CACHEDIR_TAG",
    "LOCATIONS",
    "UNUSED_DAYS",
    "CachedRepository",
    "LocalCache",
    "cached_repositories",
    "remove_unused",
    "write_whole",
]

log = logging.getLogger(__name__)

#: The Cache Directory Tagging Specification's file (https://bford.info/cachedir/).
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by safehold.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
#: The directory of pointers from a location to the id of the repository last opened there
#: (repo/early_key.py); the repository's cache directory holds the key that opened it.
LOCATIONS = "locations"
#: The kinds kept, by the name prefix of their objects, as directories of the cache.
_KINDS = {layout.INDEX: "index", layout.SNAPSHOTS: "snapshots", layout.DATA: "data"}
#: Temporary files older than this are left by a killed process: removed.
_STALE_TMP_SECONDS = 3600
_TMP = ".tmp-"
#: The cache of a repository no command has opened for this many days is deleted.
UNUSED_DAYS = 30
_REPOSITORY_ID = re.compile(r"[0-9a-f]{64}")


class LocalCache(ForwardingStorage):
    """``inner`` (a repository's storage) with the objects named above kept in ``directory``
    (the cache directory of this repository: ``<cache dir>/<repository id>``)."""

    def __init__(self, inner: Storage, directory: Path) -> None:
        super().__init__(inner)
        self.directory = directory
        #: Ids of the packs kept: the packs of trees (:meth:`keep_packs`, :meth:`remember`).
        self._packs: set[str] = set()
        #: Paths checked against their names in this process.
        self._checked: set[str] = set()
        #: One download per object at a time: the others wait for its copy.
        self._downloads: dict[str, threading.Lock] = {}
        self._downloads_lock = threading.Lock()
        self._writable = True
        self._setup()

    def _setup(self) -> None:
        try:
            # encrypted copies, yet nobody else's business: the user's alone, as restic's
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for kind in _KINDS.values():
                (self.directory / kind).mkdir(mode=0o700, parents=True, exist_ok=True)
            tag = self.directory.parent / "CACHEDIR.TAG"
            if not tag.exists():
                self._write(tag, CACHEDIR_TAG.encode())
            os.utime(self.directory)  # used now: see _drop_unused
        except OSError as exc:
            self._unwritable(exc)
            return
        self._drop_unused()

    def _drop_unused(self) -> None:
        """Delete the caches of other repositories that no command used for
        :data:`UNUSED_DAYS` (a repository deleted, moved, or backed up from elsewhere now):
        without this they would stay on the disk for ever."""
        remove_unused(self.directory.parent, UNUSED_DAYS, keep=self.directory)

    def _unwritable(self, exc: OSError) -> None:
        if self._writable:
            self._writable = False
            log.warning(
                "the local cache %s cannot be written (%s); going on without it",
                self.directory,
                exc.strerror or exc,
            )

    # ------------------------------------------------------------ which objects
    def _path(self, name: str) -> Path | None:
        """The copy's path when ``name`` is kept here, else None."""
        for prefix, kind in _KINDS.items():
            if name.startswith(prefix):
                object_id = layout.object_id(name)
                if kind == "data" and object_id not in self._packs:
                    return None
                return self.directory / kind / object_id
        return None

    def dictionary(self, dict_id: str) -> bytes | None:
        """The sealed copy of dictionary ``dict_id`` kept here (:meth:`keep_dictionary`),
        or None: the next backup of a source compresses with its parent's dictionary
        without a request for it."""
        try:
            return (self.directory / "dictionaries" / dict_id).read_bytes()
        except OSError:
            return None

    def keep_dictionary(self, dict_id: str, sealed: bytes) -> None:
        """Keep a dictionary, sealed as an object of the repository (the cache holds
        nothing in plain text). A few KiB each, one per source's chain of backups."""
        if self._writable:
            directory = self.directory / "dictionaries"
            try:
                directory.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                self._unwritable(exc)
                return
            try:  # named by its id, not its hash: the opening checks it (seal and id)
                self._write(directory / dict_id, sealed)
            except OSError as exc:
                self._unwritable(exc)

    def keep_packs(self, packs: Iterable[str]) -> None:
        """Keep these packs (the packs of trees of the index just loaded) from now on, and
        drop the copies of packs not among them (pruned, or no longer in the index)."""
        self._packs = set(packs)
        self._sweep(self.directory / "data", self._packs)

    def holds_packs(self) -> bool:
        """Whether a copy of every pack kept (:meth:`keep_packs`) is here: then reading
        trees ahead has nothing to download (the copies are checked at their first read,
        as always)."""
        try:
            with os.scandir(self.directory / "data") as entries:
                here = {entry.name for entry in entries}
        except OSError:
            return False
        return self._writable and self._packs <= here

    def remember(self, name: str, data: bytes) -> None:
        """Keep a pack this process has just written (a pack of trees): the next backup
        compares against its trees without downloading it."""
        self._packs.add(layout.object_id(name))
        path = self._path(name)
        if path is not None:
            self._store(path, data)

    # ------------------------------------------------------------ storage operations
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        if path is None or not self._writable:
            return self.inner.get(name, offset, length)
        whole = None
        if str(path) not in self._checked:
            # once per object and process, whatever the number of threads asking: check the
            # copy, or download the object whole and keep it
            with self._download_lock(name):
                if str(path) not in self._checked:
                    whole = self._check_or_fetch(name, path)
            with self._downloads_lock:
                self._downloads.pop(name, None)
        if whole is not None:
            end = len(whole) if length is None else offset + length
            return whole if offset == 0 and end >= len(whole) else whole[offset:end]
        data = _pread(path, offset, length)
        # None: no copy after all (removed by another process meanwhile, or not writable)
        return self.inner.get(name, offset, length) if data is None else data

    def get_stream(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """What this cache keeps comes from :meth:`get` (whole); the rest streams on."""
        if self._path(name) is None or not self._writable:
            yield from self.inner.get_stream(name, offset, length)
        else:
            yield self.get(name, offset, length)

    def put(self, name: str, data: Body) -> None:
        self.inner.put(name, data)
        self._keep_written(name, data)

    def create(self, name: str, data: Body) -> None:
        self.inner.create(name, data)
        self._keep_written(name, data)

    def delete(self, name: str) -> None:
        self.inner.delete(name)
        path = self._path(name)
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
            self._checked.discard(str(path))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        kind = _KINDS.get(prefix)
        if kind is None or kind == "data":
            yield from self.inner.list(prefix)
            return
        listed: set[str] = set()
        for info in self.inner.list(prefix):
            listed.add(layout.object_id(info.name))
            yield info
        # Only after a whole listing: what it did not show is gone from the repository.
        self._sweep(self.directory / kind, listed)

    # ------------------------------------------------------------ files
    def _keep_written(self, name: str, data: Body) -> None:
        if name.startswith(layout.DATA):
            return  # a pack of trees is kept by remember(): only the writer knows its blobs
        path = self._path(name)
        if path is not None:
            self._store(path, body_bytes(data))

    def _download_lock(self, name: str) -> threading.Lock:
        with self._downloads_lock:
            return self._downloads.setdefault(name, threading.Lock())

    def _check_or_fetch(self, name: str, path: Path) -> bytes | None:
        """Check the copy at ``path`` against its name (None: it is good), or download the
        object and keep it (its bytes). A damaged copy is deleted and downloaded again."""
        digest = _file_hash(path)
        if digest == path.name:
            self._checked.add(str(path))
            return None
        if digest is not None:
            log.warning("the local cache's copy %s is damaged: read again", path)
            with contextlib.suppress(OSError):
                path.unlink()
        whole = self.inner.get(name)
        self._store(path, whole)
        return whole

    def _store(self, path: Path, data: bytes) -> None:
        """Keep ``data`` as the copy at ``path`` when it matches its name (bytes that do not
        are damaged in storage: the caller, which checks them too, reports it)."""
        if not self._writable or object_hash(data) != path.name:
            return
        try:
            self._write(path, data)
        except OSError as exc:
            self._unwritable(exc)
            return
        self._checked.add(str(path))

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        write_whole(path, data)

    def _sweep(self, directory: Path, keep: set[str]) -> None:
        """Delete the copies in ``directory`` whose ids are not in ``keep``, and temporary
        files a killed process left."""
        if not self._writable:
            return
        now = time.time()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.name.startswith(_TMP):
                    if now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
                        os.unlink(entry.path)
                elif entry.name not in keep:
                    os.unlink(entry.path)
                    self._checked.discard(entry.path)
            except OSError:
                continue


def write_whole(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Write ``path`` whole: a temporary name, then a rename, so that processes sharing the
    cache never see half a file. ``mode``: before the umask."""
    tmp = path.with_name(f"{_TMP}{path.name[:16]}-{secrets.token_hex(4)}")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _file_hash(path: Path) -> str | None:
    """hex(BLAKE3) of the file's bytes, read a MiB at a time; None when it cannot be read."""
    hasher = blake3.blake3(max_threads=1)
    try:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(1 << 20):
                hasher.update(chunk)
    except OSError:
        return None
    return hasher.hexdigest()


def _pread(path: Path, offset: int, length: int | None) -> bytes | None:
    """``length`` bytes of the file from ``offset`` (to its end when None); None when it
    cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if length is None:
            length = os.fstat(fd).st_size - offset
        return os.pread(fd, max(length, 0), offset)
    except OSError:
        return None
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the caches of a directory


@dataclass(frozen=True)
class CachedRepository:
    """The cache of one repository in a cache directory. ``last_used``: when a command
    last opened it (the directory's mtime, set at each open); ``size``: its files' bytes."""

    id: str
    path: Path
    last_used: float
    size: int


def cached_repositories(cache_dir: Path) -> list[CachedRepository]:
    """The repositories' caches in ``cache_dir``, most recently used first (none when it
    does not exist). Only directories named like a repository id are caches."""
    found = [
        CachedRepository(entry.name, Path(entry.path), last_used, _size(Path(entry.path)))
        for entry, last_used in _caches(cache_dir)
    ]
    return sorted(found, key=lambda c: c.last_used, reverse=True)


def remove_unused(
    cache_dir: Path, max_age_days: float, *, keep: Path | None = None
) -> list[CachedRepository]:
    """Delete the caches in ``cache_dir`` that no command opened for ``max_age_days``
    (except ``keep``); return them, with the bytes each held."""
    limit = time.time() - max_age_days * 86400
    removed: list[CachedRepository] = []
    for entry, last_used in _caches(cache_dir):
        if last_used >= limit or (keep is not None and entry.path == str(keep)):
            continue
        path = Path(entry.path)
        size = _size(path)
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(CachedRepository(entry.name, path, last_used, size))
    if removed:
        _drop_locations_of(cache_dir, {c.id for c in removed})
    return removed


def _drop_locations_of(cache_dir: Path, ids: set[str]) -> None:
    """Delete the pointers from locations to the repositories ``ids`` (repo/early_key.py),
    whose caches, with the key each remembered, were just deleted."""
    try:
        pointers = list(os.scandir(cache_dir / LOCATIONS))
    except OSError:
        return
    for pointer in pointers:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if Path(pointer.path).read_text().strip() in ids:
                os.unlink(pointer.path)


def _caches(cache_dir: Path) -> Iterator[tuple[os.DirEntry[str], float]]:
    try:
        entries = list(os.scandir(cache_dir))
    except OSError:
        return
    for entry in entries:
        try:
            if _REPOSITORY_ID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                yield entry, entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
