"""Paths of a snapshot, listings and pattern searches (``ls``, ``find``), and entries
as people and JSON see them.
"""

from __future__ import annotations

import difflib
import stat
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from safehold.engine.patterns import PathFilter
from safehold.repo.errors import RepositoryError
from safehold.repo.tree import TreeNode
from safehold.repo.walk import subtree_of, tree_loader

if TYPE_CHECKING:
    from safehold.repo.repository import Repository
    from safehold.repo.snapshot import Snapshot

__all__ = [
    "TYPE_BITS",
    "Loader",
    "NoSuchPath",
    "cached_loader",
    "entry_dict",
    "filemode",
    "find_entries",
    "iter_entries",
    "join",
    "resolve",
    "root_node",
    "split_path",
    "utc_time",
]

#: Loads a tree's nodes by its hex id.
Loader = Callable[[str], Sequence[TreeNode]]


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


#: A tree entry's type as the bits of ``st_mode`` (ls -l and the mounted file system).
TYPE_BITS = {
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
    return stat.filemode(TYPE_BITS.get(kind, 0) | (mode & 0o7777))
