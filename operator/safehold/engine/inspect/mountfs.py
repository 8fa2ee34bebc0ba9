"""The read-only file system of ``safehold mount``, free of any FUSE binding.

:class:`SnapshotFS` answers the questions a file system is asked (attributes, a
directory's names, a symlink's target, bytes at an offset) about paths of this layout
(docs/cli.md, "mount")::

    /snapshots/<source>/<time>/...   each snapshot by source, then by its local time
    /snapshots/<source>/latest       a symlink to the source's newest <time>
    /ids/<short id>/...              each snapshot by the first 12 hex digits of its id

``<source>`` is the source name with ``%`` written ``%25`` and ``/`` written ``%2F`` (a
source such as ``prod/nightly/data`` is one directory); ``<time>`` is the snapshot's time
in the local zone, ``2026-12-04T21:15:57+01:00``, and two snapshots of one source in the
same second are told apart by ``-1``, ``-2``... in (time, id) order.

Trees are read through the inspection commands' loader (:func:`cached_loader`); each
directory's names are kept as a dict so that a lookup costs one hash. A file's bytes are
read one data blob at a time: a blob's offset in the file comes from the index's sizes,
so no blob before the one asked for is read, and each open file keeps its current blob.
The snapshot list is read again when the root, ``snapshots`` or ``ids`` is listed (at
most once a second); the index is reloaded when new snapshots appeared.

Inode numbers are a hash of (snapshot id, path): the names of one hard-linked inode (a
node's ``hardlink``, format section 9) share one, and nothing in two snapshots does, so
``tar``, ``cp -a`` and ``du`` see hard links as in the source and nothing else as one.
Errors are :class:`OSError` with an errno (``ENOENT``, ``ENOTDIR``, ``EIO`` for a damaged
object, which is logged): the binding returns it to the kernel.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from typing import TYPE_CHECKING

from safehold.engine.inspect.paths import TYPE_BITS, cached_loader, root_node, split_path
from safehold.repo.errors import RepositoryError
from safehold.repo.pack import BLOB_DATA
from safehold.repo.walk import blobs_of, subtree_of

if TYPE_CHECKING:
    from safehold.repo.repository import Repository
    from safehold.repo.snapshot import Snapshot
    from safehold.repo.tree import TreeNode

__all__ = ["SHORT_ID", "Attributes", "SnapshotFS", "source_dir_name", "time_dir_name"]

log = logging.getLogger(__name__)

#: Hex digits of a snapshot id under ``ids/`` (as the commands' messages shorten ids).
SHORT_ID = 12
#: The directories the layout adds above the snapshots' own trees.
TOP = ("snapshots", "ids")
LATEST = "latest"
#: Seconds between two readings of the snapshot list.
REFRESH_EVERY = 1.0

#: A path's attributes as the binding takes them: ``st_mode``, ``st_ino``, ``st_nlink``,
#: ``st_size``, ``st_uid``, ``st_gid``, ``st_mtime``/``st_atime``/``st_ctime`` (ns).
Attributes = dict[str, int]


def source_dir_name(source: str) -> str:
    """The directory name of a source under ``snapshots/`` (``%`` and ``/`` escaped;
    a source of ``.`` or ``..`` or none at all has its dots or emptiness escaped too)."""
    name = source.replace("%", "%25").replace("/", "%2F")
    if name in ("", ".", ".."):
        name = name.replace(".", "%2E") or "%00"
    return name


def time_dir_name(snap: Snapshot) -> str:
    """The snapshot's time in the local zone, to the second, with its offset."""
    return snap.datetime.astimezone().isoformat(timespec="seconds")


def _inode(*parts: str) -> int:
    digest = hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogateescape"), digest_size=8)
    return (int.from_bytes(digest.digest(), "little") >> 1) or 2  # 1 is the root's


@dataclass
class _Listing:
    """One reading of the snapshot list, as the layout names its snapshots."""

    by_id: dict[str, Snapshot] = field(default_factory=dict)  # short id -> snapshot
    #: source dir name -> time dir name -> snapshot, oldest first
    by_source: dict[str, dict[str, Snapshot]] = field(default_factory=dict)
    newest_ns: int = 0

    @classmethod
    def of(cls, snaps: list[Snapshot]) -> _Listing:
        listing = cls()
        for snap in sorted(snaps, key=lambda s: (s.datetime, s.id)):
            listing.by_id[snap.id[:SHORT_ID]] = snap
            times = listing.by_source.setdefault(source_dir_name(snap.source), {})
            name, n = time_dir_name(snap), 0
            while name in times:
                n += 1
                name = f"{time_dir_name(snap)}-{n}"
            times[name] = snap
            listing.newest_ns = max(listing.newest_ns, _ns(snap))
        return listing


def _ns(snap: Snapshot) -> int:
    return int(snap.datetime.timestamp() * 1_000_000_000)


@dataclass
class _Open:
    """An open file: its node, where each blob starts, and the blob last read."""

    node: TreeNode
    blobs: list[bytes]
    starts: list[int]  # starts[i]: the file offset of blobs[i]; the last entry: the size
    current: int = -1
    data: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock)


class SnapshotFS:
    """The layout over one repository (see the module's docstring). Its methods take
    paths of the mount (``/snapshots/...``) and are safe to call from several threads."""

    def __init__(self, repo: Repository, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.repo = repo
        self.clock = clock
        self.uid, self.gid = os.getuid(), os.getgid()
        self.load = cached_loader(repo, size=1024)
        self.children = lru_cache(maxsize=1024)(self._children)
        self.files: dict[int, _Open] = {}
        self._next_fh = 1
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self.listing = _Listing()
        self.refresh(force=True)

    # ------------------------------------------------------------ the snapshot list
    def refresh(self, *, force: bool = False) -> None:
        """Read the snapshot list again (at most once every :data:`REFRESH_EVERY`
        seconds unless ``force``); reload the index when a snapshot is new."""
        with self._lock:
            now = self.clock()
            if not force and now - self._read_at < REFRESH_EVERY:
                return
            self._read_at = now
            errors: dict[str, str] = {}
            snaps = self.repo.snapshots(errors=errors)
            for name, message in sorted(errors.items()):
                log.warning("snapshot %s cannot be read and is not shown: %s", name, message)
            known = {s.id for s in self.listing.by_id.values()}
            if not force and any(s.id not in known for s in snaps):
                self.repo.load_index()
            self.listing = _Listing.of(snaps)

    # ------------------------------------------------------------ paths
    def _children(self, tree: str) -> dict[str, TreeNode]:
        return {node["name"]: node for node in self.load(tree)}

    def _snapshot_of(self, names: list[str]) -> tuple[Snapshot | None, int]:
        """The snapshot a path is in and how many names lead to its root; (None, depth
        of the layout's own directory) above the snapshots; ENOENT when there is none."""
        listing = self.listing
        if not names:
            return None, 0
        if names[0] == "ids" and len(names) >= 2:
            snap = listing.by_id.get(names[1])
            if snap is None:
                raise OSError(errno.ENOENT, "no such snapshot id")
            return snap, 2
        if names[0] == "snapshots" and len(names) >= 3:
            times = listing.by_source.get(names[1])
            snap = None if times is None else times.get(names[2])
            if snap is None:
                raise OSError(errno.ENOENT, "no such snapshot")
            return snap, 3
        if names[0] in TOP and (len(names) == 1 or names[0] == "ids"):
            return None, len(names)
        if names[0] == "snapshots" and names[1] in listing.by_source:
            return None, 2
        raise OSError(errno.ENOENT, "no such path")

    def node(self, path: str) -> tuple[Snapshot | None, str, TreeNode | None]:
        """(snapshot, path inside it, its node) for a path in a snapshot; (None, path,
        None) for a directory of the layout; ENOENT or ENOTDIR when there is none."""
        names = split_path(path)
        snap, depth = self._snapshot_of(names)
        if snap is None:
            return None, path, None
        node = root_node(snap)
        inner = ""
        for name in names[depth:]:
            sub = subtree_of(node)
            if sub is None:
                raise OSError(errno.ENOTDIR, "not a directory")
            found = self._tree(sub).get(name)
            if found is None:
                raise OSError(errno.ENOENT, "no such path")
            node, inner = found, f"{inner}/{name}"
        return snap, inner or "/", node

    def _tree(self, tree: str) -> dict[str, TreeNode]:
        """A directory's nodes by name; a damaged tree is logged and is EIO."""
        try:
            return self.children(tree)
        except RepositoryError as exc:
            log.warning("%s", exc)
            raise OSError(errno.EIO, str(exc)) from exc

    def _blob(self, blob: bytes) -> bytes:
        """A data blob, checked; a damaged one is logged and is EIO."""
        try:
            return self.repo.read_blob(blob, BLOB_DATA)
        except RepositoryError as exc:
            log.warning("%s", exc)
            raise OSError(errno.EIO, str(exc)) from exc

    # ------------------------------------------------------------ operations
    def getattr(self, path: str) -> Attributes:
        names = split_path(path)
        if len(names) == 3 and names[0] == "snapshots" and names[2] == LATEST:
            times = self.listing.by_source.get(names[1])
            if times:
                newest = list(times)[-1]
                return self._layout_attrs(path, stat.S_IFLNK | 0o777, len(newest), times[newest])
        snap, inner, node = self.node(path)
        if node is None:
            return self._layout_attrs(path, stat.S_IFDIR | 0o555, 0, None)
        assert snap is not None
        return self._node_attrs(snap, inner, node)

    def _layout_attrs(self, path: str, mode: int, size: int, snap: Snapshot | None) -> Attributes:
        when = _ns(snap) if snap is not None else self.listing.newest_ns
        return {
            "st_mode": mode,
            "st_ino": 1 if path in ("", "/") else _inode("layout", path),
            "st_nlink": 2 if stat.S_ISDIR(mode) else 1,
            "st_size": size,
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_mtime": when,
            "st_atime": when,
            "st_ctime": when,
        }

    def _node_attrs(self, snap: Snapshot, inner: str, node: TreeNode) -> Attributes:
        kind = str(node.get("type"))
        first = node.get("hardlink")
        key = "/" + first.lstrip("/") if first else inner
        if kind == "file":
            size = int(node.get("size", 0))
        elif kind == "symlink":
            size = len(str(node.get("target", "")).encode("utf-8", "surrogateescape"))
        else:
            size = 0
        mtime = int(node.get("mtime_ns", _ns(snap)))
        attrs = {
            "st_mode": TYPE_BITS.get(kind, stat.S_IFREG) | (int(node.get("mode", 0o755)) & 0o7777),
            "st_ino": _inode(snap.id, key),
            "st_nlink": {"file": int(node.get("links", 1)), "dir": 2}.get(kind, 1),
            "st_size": size,
            "st_uid": int(node.get("uid", self.uid)),
            "st_gid": int(node.get("gid", self.gid)),
            "st_mtime": mtime,
            "st_atime": int(node.get("atime_ns", mtime)),
            "st_ctime": int(node.get("ctime_ns", mtime)),
            "st_blocks": (size + 511) // 512,
        }
        if kind in ("dev", "chardev"):
            attrs["st_rdev"] = int(node.get("rdev", 0))
        return attrs

    def readdir(self, path: str) -> list[str]:
        """The names a directory holds (without ``.`` and ``..``)."""
        names = split_path(path)
        if len(names) <= 1:  # the root, snapshots, ids
            self.refresh()
        if not names:
            return list(TOP)
        _snap, _inner, node = self.node(path)
        if node is None:
            if names == ["snapshots"]:
                return list(self.listing.by_source)
            if names == ["ids"]:
                return list(self.listing.by_id)
            return [*self.listing.by_source[names[1]], LATEST]
        sub = subtree_of(node)
        if sub is None:
            raise OSError(errno.ENOTDIR, "not a directory")
        return list(self._tree(sub))

    def readlink(self, path: str) -> str:
        names = split_path(path)
        if len(names) == 3 and names[0] == "snapshots" and names[2] == LATEST:
            times = self.listing.by_source.get(names[1])
            if times:
                return list(times)[-1]
        _snap, _inner, node = self.node(path)
        if node is None or node.get("type") != "symlink":
            raise OSError(errno.EINVAL, "not a symlink")
        return str(node.get("target", ""))

    def open(self, path: str, flags: int) -> int:
        """A handle for reading a file; EROFS when asked to write."""
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT):
            raise OSError(errno.EROFS, "read-only file system")
        _snap, inner, node = self.node(path)
        if node is None or node.get("type") == "dir":
            raise OSError(errno.EISDIR, "is a directory")
        if node.get("type") != "file":
            raise OSError(errno.EINVAL, "not a regular file")
        blobs = [bytes.fromhex(b) for b in blobs_of(node)]
        sizes = []
        for blob in blobs:
            loc = self.repo.index.lookup(blob)
            if loc is None:
                log.warning("%s: blob %s is in no index object", inner, blob.hex())
                raise OSError(errno.EIO, "blob is in no index object")
            sizes.append(loc.raw)
        opened = _Open(node, blobs, [0, *accumulate(sizes)])
        with self._lock:
            fh, self._next_fh = self._next_fh, self._next_fh + 1
            self.files[fh] = opened
        return fh

    def read(self, fh: int, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset``, reading only the blobs they lie in."""
        opened = self.files.get(fh)
        if opened is None:
            raise OSError(errno.EBADF, "not an open file")
        end = min(offset + size, opened.starts[-1], int(opened.node.get("size", 0)))
        parts: list[bytes] = []
        with opened.lock:
            while offset < end:
                i = bisect_right(opened.starts, offset) - 1
                if i != opened.current:
                    opened.data = self._blob(opened.blobs[i])
                    opened.current = i
                start = offset - opened.starts[i]
                piece = opened.data[start : start + end - offset]
                if not piece:
                    break
                parts.append(piece)
                offset += len(piece)
        return b"".join(parts)

    def release(self, fh: int) -> None:
        with self._lock:
            self.files.pop(fh, None)

    def statfs(self) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}
