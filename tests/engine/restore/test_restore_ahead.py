"""The restore walk loads trees a bounded number ahead of it (safehold.engine.ahead): a
snapshot of many directories must not be held decoded in memory all at once, and the
restore must still equal the source, also with directories it skips."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from safehold.engine import BackupOptions, RestoreOptions, backup_paths, restore_snapshot
from safehold.engine.ahead import TREES_AHEAD, TreesAhead
from safehold.repo import Node, Repository


class _Loads:
    """A loader that records what it loaded and which trees were loaded and not yet taken."""

    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, tree_id: str) -> list[Node]:
        with self.lock:
            self.loaded.append(tree_id)
        return [{"name": tree_id}]


def test_trees_are_taken_in_depth_first_order_with_at_most_the_limit_ahead() -> None:
    loads = _Loads()
    with ThreadPoolExecutor(2) as pool:
        ahead = TreesAhead(pool, loads, limit=3)
        ahead.want(["a", "b", "c", "d", "e"])
        assert ahead.take("a") == [{"name": "a"}]
        ahead.want(["a1", "a2"])  # a's subdirectories come before b
        for tree in ["a1", "a2", "b", "c", "d", "e"]:
            assert ahead.take(tree) == [{"name": tree}]
        assert len(ahead) == 0
    # Each tree loaded once, in the walk's order: ahead of it, never all at once.
    assert sorted(loads.loaded) == sorted(["a", "b", "c", "d", "e", "a1", "a2"])
    assert loads.loaded.index("a1") < loads.loaded.index("e")


def test_a_tree_the_walk_goes_past_is_dropped_and_an_unexpected_one_loaded_now() -> None:
    loads = _Loads()
    with ThreadPoolExecutor(1) as pool:
        ahead = TreesAhead(pool, loads, limit=2)
        ahead.want(["x", "y", "z"])
        assert ahead.take("z") == [{"name": "z"}]  # x and y were skipped (not restored)
        assert len(ahead) == 0
        assert ahead.take("elsewhere") == [{"name": "elsewhere"}]


def test_the_same_tree_twice_is_taken_twice() -> None:
    """Identical directories share a tree id: each place takes it."""
    with ThreadPoolExecutor(2) as pool:
        ahead = TreesAhead(pool, _Loads(), limit=4)
        ahead.want(["same", "same", "other"])
        assert ahead.take("same") == ahead.take("same") == [{"name": "same"}]
        assert ahead.take("other") == [{"name": "other"}]


def test_a_restore_of_many_directories_holds_few_trees_ahead(
    repo: Repository,
    tmp_path: Path,
    same_tree: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """60 directories under one: before, all 60 were loaded as soon as their parent was
    opened; now at most TREES_AHEAD wait decoded for the walk."""
    src = tmp_path / "src"
    for d in range(60):
        sub = src / f"d{d:02}" / "inner"
        sub.mkdir(parents=True)
        (sub.parent / "f").write_bytes(f"file {d}".encode())
        (sub / "g").write_bytes(f"deeper {d}".encode())
    snap = backup_paths(repo, [str(src)], BackupOptions(source="many")).snapshot

    waiting: set[str] = set()
    most = [0]
    lock = threading.Lock()
    load = repo.load_tree

    def counting_load(tree_id: str) -> list[Node]:
        nodes = load(tree_id)
        with lock:
            waiting.add(tree_id)
            most[0] = max(most[0], len(waiting))
        return nodes

    real_take = TreesAhead.take

    def counting_take(self: TreesAhead, tree_id: str) -> list[Node]:
        nodes = real_take(self, tree_id)
        with lock:
            waiting.discard(tree_id)
        return nodes

    monkeypatch.setattr(repo, "load_tree", counting_load)
    monkeypatch.setattr(TreesAhead, "take", counting_take)
    result = restore_snapshot(repo, snap, str(tmp_path / "out"), RestoreOptions(processes=1))
    assert result.errors == []
    same_tree(src, tmp_path / "out" / "src")
    # The limit, plus the tree being taken: far fewer than the 121 directories.
    assert 1 < most[0] <= TREES_AHEAD + 1
