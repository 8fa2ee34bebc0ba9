"""The trees a real backup writes are read by the typed fast path of repo/tree.py (the
checked path is for trees it cannot vouch for), and restore to the same files."""

from __future__ import annotations

import os
from pathlib import Path

from safehold.engine import BackupOptions, backup_paths, restore_snapshot
from safehold.repo import Repository
from safehold.repo import tree as tree_module

from .conftest import assert_same_tree, make_tree


def test_a_backups_trees_take_the_typed_path_but_where_a_name_is_not_utf8(
    repo: Repository, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", big=100_000)  # every kind of entry, one name not UTF-8
    snap = backup_paths(repo, [str(src)], BackupOptions(source="app")).snapshot
    typed: list[str] = []
    checked: list[str] = []
    stack = [snap.tree]
    while stack:
        tree_id = stack.pop()
        data = repo.tree_bytes(tree_id)
        nodes = tree_module._decode_typed(data)
        (checked if nodes is None else typed).append(tree_id)
        nodes = tree_module.decode_tree(data)
        stack += [n["subtree"] for n in nodes if n["type"] == "dir"]
        if any(os.fsencode(n["name"]) == b"latin1-\xe9t\xe9" for n in nodes):
            assert tree_id in checked
    assert len(checked) == 1  # the directory holding the name that is not UTF-8
    assert len(typed) == 5  # the snapshot's root, docs, docs/deep, docs/deep/er, empty-dir
    restore_snapshot(repo, snap, str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out" / "src")
