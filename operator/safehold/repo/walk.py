"""The one walk over stored trees, and the set of blobs that snapshots use.

Readers that follow a snapshot's trees (prune's used-blob set, replicate's packs to copy,
verify's damaged paths) share what a node refers to and how trees are reached:

* :func:`subtree_of` and :func:`blobs_of` say what one node refers to: the ``subtree`` of
  any node that names one, the ``content`` of any node that lists it (the backup writes
  them only on directories and files; a reader that counts references, such as prune,
  must not miss one on another node, so every reader counts them alike);
* :func:`walk_trees` visits every tree reachable from some roots once, with an explicit
  stack (trees thousands of levels deep work; recursion failed at about 1,000), skipping
  the trees a caller has seen already (snapshots share most of their trees);
* :func:`used_blobs` is the set of every tree and data blob of some snapshots.

Nodes are :class:`~safehold.repo.tree.TreeNode` (format section 9).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, cast

from safehold.repo.blobset import CompactIdSet
from safehold.repo.errors import CorruptObject
from safehold.repo.tree import TreeNode

if TYPE_CHECKING:
    from safehold.repo.repository import Repository
    from safehold.repo.snapshot import Snapshot

__all__ = [
    "SnapshotTreeError",
    "blobs_of",
    "subtree_of",
    "tree_loader",
    "used_blobs",
    "walk_trees",
]

#: Loads a tree's nodes by its hex id (:class:`CorruptObject` when it cannot).
TreeLoader = Callable[[str], Sequence[TreeNode]]


class SnapshotTreeError(CorruptObject):
    """A tree of ``snapshot`` cannot be read (the cause is chained)."""

    def __init__(self, snapshot: Snapshot, cause: CorruptObject) -> None:
        Exception.__init__(self, str(cause))  # the cause's message, unchanged
        self.name = cause.name
        self.snapshot = snapshot
        self.cause = cause


def tree_loader(repo: Repository) -> TreeLoader:
    """``repo.load_tree`` seen as the loader of checked :class:`TreeNode` lists."""
    return cast(TreeLoader, repo.load_tree)


def subtree_of(node: TreeNode) -> str | None:
    """The hex id of the tree ``node`` refers to, if any."""
    return node.get("subtree") or None


def blobs_of(node: TreeNode) -> list[str]:
    """The hex ids of the data blobs ``node`` lists (none for most nodes but files)."""
    return node.get("content") or []


def walk_trees(
    load: TreeLoader, roots: Iterable[str], seen: set[str] | None = None
) -> Iterator[tuple[str, Sequence[TreeNode]]]:
    """Each tree reachable from ``roots`` (hex ids) once, as (id, nodes), parents first.

    Trees in ``seen`` are skipped with everything below them, and every tree visited is
    added to it before it is loaded (so pass a copy when a failed walk must mark nothing).
    Errors of ``load`` propagate.
    """
    seen = set() if seen is None else seen
    stack = list(roots)
    stack.reverse()
    while stack:
        tree = stack.pop()
        if tree in seen:
            continue
        seen.add(tree)
        nodes = load(tree)
        yield tree, nodes
        below = [sub for node in nodes if (sub := subtree_of(node)) is not None]
        below.reverse()  # children in node order
        stack.extend(below)


def used_blobs(
    load: TreeLoader, snapshots: Iterable[Snapshot], used: CompactIdSet | None = None
) -> CompactIdSet:
    """Every tree and data blob the snapshots reach (a tree shared by two is walked once).

    :class:`SnapshotTreeError` names the snapshot of a tree that cannot be read.
    """
    used = CompactIdSet() if used is None else used
    seen: set[str] = set()
    for snap in snapshots:
        try:
            for tree, nodes in walk_trees(load, [snap.tree], seen):
                used.add(bytes.fromhex(tree))
                for node in nodes:
                    for blob in blobs_of(node):
                        used.add(bytes.fromhex(blob))
        except SnapshotTreeError:
            raise
        except CorruptObject as exc:
            raise SnapshotTreeError(snap, exc) from exc
    return used
