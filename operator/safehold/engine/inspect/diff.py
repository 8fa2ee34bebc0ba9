"""Differences between two snapshots' trees, by tree ids alone (``safehold diff``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from safehold.engine.inspect.paths import Loader, join
from safehold.repo.tree import TreeNode
from safehold.repo.walk import blobs_of, subtree_of

__all__ = ["PREFIXES", "Change", "DiffTotals", "diff_trees"]

#: Node fields that make up its metadata for ``diff`` (not atime, ctime or inode: they
#: change without anything a person would call a change).
META_FIELDS = ("mode", "uid", "gid", "user", "group", "mtime_ns")
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
        blobs_of(node),
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
