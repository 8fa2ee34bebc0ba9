"""repo/walk.py: the one tree walk and used-blob set (verify, prune and replicate share it)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from safehold.repo.errors import CorruptObject
from safehold.repo.snapshot import Snapshot
from safehold.repo.tree import TreeNode
from safehold.repo.walk import SnapshotTreeError, used_blobs, walk_trees


def _id(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()  # spread like real ids


def _chain(depth: int) -> dict[str, list[TreeNode]]:
    """Trees 0..depth-1, each holding one file (blob 10**6+i) and the next tree."""
    trees: dict[str, list[TreeNode]] = {}
    for i in range(depth):
        nodes: list[TreeNode] = [{"name": "f", "type": "file", "content": [_id(10**6 + i)]}]
        if i + 1 < depth:
            nodes.append({"name": "d", "type": "dir", "subtree": _id(i + 1)})
        trees[_id(i)] = nodes
    return trees


def test_walk_is_iterative_and_visits_each_tree_once() -> None:
    trees = _chain(5000)
    loads: list[str] = []

    def load(tree: str) -> Sequence[TreeNode]:
        loads.append(tree)
        return trees[tree]

    seen: set[str] = set()
    order = [tree for tree, _ in walk_trees(load, [_id(0), _id(0)], seen)]
    assert order == [_id(i) for i in range(5000)]  # parents first, each once
    assert seen == set(trees)
    assert len(loads) == 5000
    assert list(walk_trees(load, [_id(0)], seen)) == []  # seen trees are skipped


def test_used_blobs_holds_trees_and_data_of_every_snapshot() -> None:
    trees = _chain(2000)
    snap = Snapshot(
        time="2026-01-01T00:00:00Z", source="s", type="full", tree=_id(0), paths=[], hostname="h"
    )
    used = used_blobs(trees.__getitem__, [snap, snap])
    assert len(used) == 4000
    assert bytes.fromhex(_id(1999)) in used
    assert bytes.fromhex(_id(10**6 + 1999)) in used


def test_an_unreadable_tree_names_its_snapshot() -> None:
    snap = Snapshot(
        time="2026-01-01T00:00:00Z", source="s", type="full", tree=_id(0), paths=[], hostname="h"
    )

    def load(tree: str) -> Sequence[TreeNode]:
        raise CorruptObject(f"tree {tree}", "gone")

    with pytest.raises(SnapshotTreeError) as caught:
        used_blobs(load, [snap])
    assert caught.value.snapshot is snap
    assert "gone" in str(caught.value)
