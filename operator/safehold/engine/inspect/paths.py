"""Looking inside snapshots: paths, listings, pattern searches, differences and contents.

Pure functions over a :class:`~safehold.repo.Repository` (or only its tree loader), for
the ``ls``, ``find``, ``diff`` and ``cat`` commands (docs/cli.md, "Inspection"):

* a **path** of a snapshot is written from its root, as ``ls`` shows it: ``/data/dir/f``
  (the root tree holds one node per backed-up path, format section 9); the leading ``/``
  may be left out, and ``.`` names are ignored. :func:`resolve` finds its node or raises
  :class:`NoSuchPath` naming the nearest existing paths;
* :func:`iter_entries` lists what a directory holds, one level or all below it;
* :func:`find_entries` yields the paths that match a pattern of the backup's pattern
  language (:mod:`safehold.engine.patterns`), not descending into directories that cannot
  hold a match;
* :func:`diff_trees` compares two trees by their ids alone: an unchanged subtree (same
  id) is skipped without being read, and no data blob is read;
* :func:`read_file` yields a file's bytes blob by blob, each blob authenticated and
  checked against its id (:meth:`Repository.read_blob`); :func:`write_tar` writes a
  directory as a tar stream.

Every walk is iterative (an explicit stack): trees thousands of levels deep work.
"""

from __future__ import annotations

import difflib
import os
import stat
import tarfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import IO, TYPE_CHECKING, Any

from safehold.engine.patterns import PathFilter
from safehold.repo.errors import CorruptObject, RepositoryError
from safehold.repo.pack import BLOB_DATA
from safehold.repo.tree import TreeNode
from safehold.repo.walk import subtree_of, tree_loader

if TYPE_CHECKING:
    from safehold.repo.repository import Repository
    from safehold.repo.snapshot import Snapshot

__all__ = [
    "Change",
    "DiffTotals",
    "NoSuchPath",
    "cached_loader",
    "diff_trees",
    "entry_dict",
    "find_entries",
    "iter_entries",
    "join",
    "read_file",
    "resolve",
    "root_node",
    "split_path",
    "utc_time",
    "write_tar",
]

#: Loads a tree's nodes by its hex id.
Loader = Callable[[str], Sequence[TreeNode]]
#: Node fields that make up its metadata for ``diff`` (not atime, ctime or inode: they
#: change without anything a person would call a change).
META_FIELDS = ("mode", "uid", "gid", "user", "group", "mtime_ns")
#: Blobs read ahead of the one being written (an object store is latency-bound).
READ_AHEAD = 4


class NoSuchPath(RepositoryError):
    """A path that the snapshot does not hold; ``closest`` are existing paths near it."""

    def __init__(self, message: str, path: str, closest: list[str]) -> None:
        super().__init__(message)
        self.path = path
        self.closest = closest


def split_path(path: str) -> list[str]:
    """The names of a snapshot path (``/data/dir``, ``data/dir/``, ``./data``): empty and
    ``.`` names dropped, ``..`` going up (never above the root)."""
    names: list[str] = []
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if names:
                names.pop()
            continue
        names.append(name)
    return names


def join(parent: str, name: str) -> str:
    """``name`` under the snapshot path ``parent`` (``/`` is the root)."""
    return f"{parent.rstrip('/')}/{name}"


def root_node(snapshot: Snapshot) -> TreeNode:
    """The snapshot's root directory as a node (it has none of its own)."""
    return {"name": "/", "type": "dir", "subtree": snapshot.tree}


def cached_loader(repo: Repository, size: int = 256) -> Loader:
    """The repository's tree loader, remembering the last ``size`` trees (snapshots of one
    source share most of theirs; a few hundred trees of a large directory each stay well
    within memory)."""
    load = tree_loader(repo)
    return lru_cache(maxsize=size)(load)


def resolve(load: Loader, snapshot: Snapshot, path: str) -> tuple[str, TreeNode]:
    """(the path as ``ls`` shows it, its node); :class:`NoSuchPath` when the snapshot does
    not hold it, naming the existing paths with the nearest names."""
    node = root_node(snapshot)
    shown = "/"
    for name in split_path(path):
        sub = subtree_of(node)
        if node.get("type") != "dir" or sub is None:
            raise NoSuchPath(
                f"{join(shown, name)}: not in snapshot {snapshot.id[:12]}: {shown} is a "
                f"{node.get('type')}, not a directory",
                path,
                [shown],
            )
        nodes = load(sub)
        found = next((n for n in nodes if n["name"] == name), None)
        if found is None:
            names = [n["name"] for n in nodes]
            close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
            close = close or [n for n in names if n.lower().startswith(name[:1].lower())][:5]
            closest = [join(shown, n) for n in close]
            if closest:
                hint = "; the nearest: " + ", ".join(closest)
            elif names:
                hint = f"; {shown} holds {len(names)} entries ('safehold ls' lists them)"
            else:
                hint = f"; {shown} is empty"
            raise NoSuchPath(
                f"{join(shown, name)}: no such path in snapshot {snapshot.id[:12]}{hint}",
                path,
                closest,
            )
        node, shown = found, join(shown, name)
    return shown, node


def iter_entries(
    load: Loader, path: str, node: TreeNode, *, recursive: bool = False
) -> Iterator[tuple[str, TreeNode]]:
    """What directory ``node`` (at ``path``) holds, as (path, node), in name order: one
    level, or with ``recursive`` all below it (each directory before what it holds). A
    node that is no directory lists itself."""
    sub = subtree_of(node)
    if node.get("type") != "dir" or sub is None:
        yield path, node
        return
    stack: list[tuple[str, Iterator[TreeNode]]] = [(path, iter(load(sub)))]
    while stack:
        base, nodes = stack[-1]
        child = next(nodes, None)
        if child is None:
            stack.pop()
            continue
        child_path = join(base, child["name"])
        yield child_path, child
        below = subtree_of(child)
        if recursive and below is not None:
            stack.append((child_path, iter(load(below))))


def find_entries(
    load: Loader, snapshot: Snapshot, pattern: PathFilter
) -> Iterator[tuple[str, TreeNode]]:
    """The entries of ``snapshot`` whose path from the root (without the leading ``/``)
    matches ``pattern`` (an include-only :class:`PathFilter`), in name order. Directories
    that cannot hold a match are not read."""
    stack: list[tuple[str, Iterator[TreeNode]]] = [("", iter(load(snapshot.tree)))]
    while stack:
        base, nodes = stack[-1]
        child = next(nodes, None)
        if child is None:
            stack.pop()
            continue
        rel = f"{base}/{child['name']}" if base else child["name"]
        if pattern.included(rel):
            yield "/" + rel, child
        below = subtree_of(child)
        if below is not None and pattern.may_include_under(rel):
            stack.append((rel, iter(load(below))))


# ------------------------------------------------------------------ diff
#: The mark of each kind of change (restic's).
PREFIXES = {"added": "+", "removed": "-", "changed": "M", "metadata": "U", "type": "T"}


@dataclass(frozen=True)
class Change:
    """One difference: ``kind`` is ``added``, ``removed``, ``changed`` (content),
    ``metadata`` (mode, owner or mtime only) or ``type`` (a file became a directory...)."""

    kind: str
    path: str
    old: TreeNode | None
    new: TreeNode | None

    @property
    def prefix(self) -> str:
        """``+`` added, ``-`` removed, ``M`` content, ``U`` metadata only, ``T`` type."""
        return PREFIXES[self.kind]

    @property
    def node(self) -> TreeNode:
        node = self.new if self.new is not None else self.old
        assert node is not None
        return node


@dataclass
class DiffTotals:
    """What :func:`diff_trees` found, counted."""

    added: int = 0
    removed: int = 0
    changed: int = 0
    metadata: int = 0
    type: int = 0
    bytes_added: int = 0
    bytes_removed: int = 0
    trees_read: int = 0
    by_type: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, change: Change) -> None:
        setattr(self, change.kind, getattr(self, change.kind) + 1)
        kind = str(change.node.get("type"))
        per = self.by_type.setdefault(kind, {})
        per[change.kind] = per.get(change.kind, 0) + 1
        if change.kind in ("added", "type") and change.new is not None:
            self.bytes_added += _file_size(change.new)
        if change.kind in ("removed", "type") and change.old is not None:
            self.bytes_removed += _file_size(change.old)
        if change.kind == "changed" and change.old is not None and change.new is not None:
            self.bytes_added += _file_size(change.new)
            self.bytes_removed += _file_size(change.old)

    def summary(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "metadata": self.metadata,
            "type_changed": self.type,
            "bytes_added": self.bytes_added,
            "bytes_removed": self.bytes_removed,
            "trees_read": self.trees_read,
            "by_type": self.by_type,
        }


def _file_size(node: TreeNode) -> int:
    return int(node.get("size", 0)) if node.get("type") == "file" else 0


def _metadata(node: TreeNode) -> tuple[Any, ...]:
    return tuple(node.get(f) for f in META_FIELDS)


def _content(node: TreeNode) -> tuple[Any, ...]:
    """What a node holds, apart from its metadata and its subtree."""
    return (
        node.get("content") or [],
        node.get("size"),
        node.get("target"),
        node.get("rdev"),
    )


def diff_trees(
    load: Loader, old_tree: str, new_tree: str, totals: DiffTotals | None = None
) -> Iterator[Change]:
    """The differences from tree ``old_tree`` to ``new_tree`` (snapshot roots), in path
    order, reading trees only: a subtree whose id is the same on both sides is skipped
    unread. Everything under an added or removed directory is listed too. ``totals``
    (when given) counts them."""
    totals = totals if totals is not None else DiffTotals()

    def loaded(tree: str | None) -> Sequence[TreeNode]:
        if tree is None:
            return []
        totals.trees_read += 1
        return load(tree)

    # Each frame: (path, the pairs of nodes of one directory still to compare). A side
    # of None: the entry is only on the other side (added or removed with all below).
    stack: list[Iterator[tuple[str, TreeNode | None, TreeNode | None]]] = []

    def push(path: str, old: str | None, new: str | None) -> None:
        old_nodes = {n["name"]: n for n in loaded(old)}
        new_nodes = {n["name"]: n for n in loaded(new)}
        names = sorted(old_nodes.keys() | new_nodes.keys())
        stack.append((join(path, name), old_nodes.get(name), new_nodes.get(name)) for name in names)

    if old_tree != new_tree:
        push("/", old_tree, new_tree)
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        path, old, new = item
        change: Change | None = None
        old_sub = subtree_of(old) if old is not None else None
        new_sub = subtree_of(new) if new is not None else None
        if old is None:
            change = Change("added", path, None, new)
        elif new is None:
            change = Change("removed", path, old, None)
        elif old.get("type") != new.get("type"):
            change = Change("type", path, old, new)
        elif _content(old) != _content(new):
            change = Change("changed", path, old, new)
        elif _metadata(old) != _metadata(new) and (
            old_sub == new_sub
            or (old.get("mode"), old.get("uid"), old.get("gid"))
            != (new.get("mode"), new.get("uid"), new.get("gid"))
        ):
            # a directory's mtime changes with what it holds, which is listed below it;
            # alone (same subtree), or with its mode or owner, it is a change of its own
            change = Change("metadata", path, old, new)
        if change is not None:
            totals.count(change)
            yield change
        if old_sub != new_sub:
            push(path, old_sub, new_sub)


# ------------------------------------------------------------------ contents
def read_file(repo: Repository, node: TreeNode, path: str = "") -> Iterator[bytes]:
    """The bytes of file ``node``, one data blob at a time, in order (a few read ahead),
    each authenticated and checked against its id; :class:`CorruptObject` when one cannot
    be read or the blobs do not add up to the node's size."""
    blobs = [bytes.fromhex(b) for b in node.get("content") or []]
    size = int(node.get("size", 0))
    done = 0
    if not blobs:
        if size:
            raise CorruptObject(path or str(node.get("name")), f"lists no data for {size} bytes")
        return
    with ThreadPoolExecutor(max_workers=READ_AHEAD) as pool:
        pending: deque[Future[bytes]] = deque()
        ahead = iter(blobs)
        try:
            for blob in ahead:
                pending.append(pool.submit(repo.read_blob, blob, BLOB_DATA))
                if len(pending) >= READ_AHEAD:
                    break
            while pending:
                data = pending.popleft().result()
                nxt = next(ahead, None)
                if nxt is not None:
                    pending.append(pool.submit(repo.read_blob, nxt, BLOB_DATA))
                done += len(data)
                if done > size:
                    break
                yield data
        finally:
            for future in pending:
                future.cancel()
    if done != size:
        raise CorruptObject(
            path or str(node.get("name")),
            f"its data blobs hold {done} bytes or more, the snapshot says {size}",
        )


class _Reader:
    """A file's blobs as the file object :meth:`tarfile.TarFile.addfile` reads."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buffer) < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        if n < 0:
            out, self.buffer = self.buffer, b""
        else:
            out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


_TAR_TYPES = {
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
    "dev": tarfile.BLKTYPE,
}


def _tar_info(name: str, node: TreeNode) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = int(node.get("mode", 0o644)) & 0o7777
    info.uid = int(node.get("uid", 0))
    info.gid = int(node.get("gid", 0))
    info.uname = str(node.get("user", ""))
    info.gname = str(node.get("group", ""))
    info.mtime = int(node.get("mtime_ns", 0)) / 1e9
    kind = str(node.get("type"))
    if kind == "file":
        info.type = tarfile.REGTYPE
        info.size = int(node.get("size", 0))
    else:
        info.type = _TAR_TYPES[kind]
    if kind == "symlink":
        info.linkname = str(node.get("target", ""))
    if kind in ("chardev", "dev"):
        rdev = int(node.get("rdev", 0))
        info.devmajor, info.devminor = os.major(rdev), os.minor(rdev)
    return info


def write_tar(
    repo: Repository,
    load: Loader,
    path: str,
    node: TreeNode,
    stream: IO[bytes],
    skipped: Callable[[str, str], None] | None = None,
) -> int:
    """Write the directory ``node`` (at snapshot path ``path``) and all it holds to
    ``stream`` as a tar stream (PAX: modes, owners, mtimes, symlinks, hard links within
    it), its entries named from the directory's own name (``/data/docs`` gives
    ``docs/...``; the root gives its backed-up paths). Sockets cannot be in a tar: each
    is passed to ``skipped`` (path, why). Returns the number of entries written."""
    base = split_path(path)
    top = base[-1] if base else ""
    strip = len("/".join(base[:-1])) + 2 if len(base) > 1 else 1  # "/parent/" or "/"

    def tar_name(snapshot_path: str) -> str:
        return snapshot_path[strip:] if base else snapshot_path.lstrip("/")

    count = 0
    linked: set[str] = set()  # first names of hard-linked files written so far
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        entries: Iterator[tuple[str, TreeNode]] = iter_entries(load, path, node, recursive=True)
        if top:
            entries = _chain_first((path, node), entries)
        for entry_path, entry in entries:
            kind = str(entry.get("type"))
            if kind not in _TAR_TYPES and kind != "file":
                if skipped is not None:
                    skipped(entry_path, f"a {kind} cannot be written to a tar stream")
                continue
            info = _tar_info(tar_name(entry_path), entry)
            count += 1
            if kind != "file":
                tar.addfile(info)
                continue
            first = entry.get("hardlink")
            if first is not None and "/" + first.lstrip("/") in linked:
                info.type = tarfile.LNKTYPE
                info.linkname = tar_name("/" + first.lstrip("/"))
                info.size = 0
                tar.addfile(info)
                continue
            if int(entry.get("links", 1)) > 1:
                linked.add(entry_path)
            tar.addfile(info, _Reader(read_file(repo, entry, entry_path)))
    return count


def _chain_first(
    first: tuple[str, TreeNode], rest: Iterator[tuple[str, TreeNode]]
) -> Iterator[tuple[str, TreeNode]]:
    yield first
    yield from rest


# ------------------------------------------------------------------ for people and JSON
def utc_time(ns: int) -> str:
    """Nanoseconds since the epoch as UTC ISO 8601 (``2026-11-26T06:41:02.123456Z``)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    when = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)
    return when.isoformat().replace("+00:00", "Z")


def entry_dict(path: str, node: TreeNode) -> dict[str, Any]:
    """One entry as the commands' JSON lines give it."""
    mode = int(node.get("mode", 0))
    kind = str(node.get("type"))
    doc: dict[str, Any] = {
        "path": path,
        "name": node.get("name"),
        "type": kind,
        "mode": mode,
        "permissions": filemode(kind, mode),
        "size": int(node.get("size", 0)) if kind == "file" else None,
        "mtime": utc_time(int(node.get("mtime_ns", 0))),
        "uid": node.get("uid"),
        "gid": node.get("gid"),
        "user": node.get("user") or None,
        "group": node.get("group") or None,
    }
    if kind == "symlink":
        doc["target"] = node.get("target")
    if node.get("hardlink"):
        doc["hardlink"] = "/" + str(node.get("hardlink")).lstrip("/")
    return doc


_TYPE_BITS = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "fifo": stat.S_IFIFO,
    "socket": stat.S_IFSOCK,
    "dev": stat.S_IFBLK,
    "chardev": stat.S_IFCHR,
}


def filemode(kind: str, mode: int) -> str:
    """``-rw-r--r--``, ``drwxr-xr-x``, ``lrwxrwxrwx``... as ``ls -l`` writes them."""
    return stat.filemode(_TYPE_BITS.get(kind, 0) | (mode & 0o7777))
