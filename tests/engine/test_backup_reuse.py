"""An unchanged directory's tree is the parent snapshot's (engine/backup/trees.py,
same_as_parent; walk.py, _same_file): a backup takes it over without encoding it again, and
must store exactly the snapshot it would have stored without the shortcut: the same tree ids,
a change anywhere below a directory (content, mode, times, an entry added or removed)
changing its id and its ancestors', and a lost tree blob stored again."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import safehold.engine.backup.trees as trees_module
import safehold.engine.backup.walk as walk_module
from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.repo import Repository, Snapshot

from .conftest import PASSWORD
from .test_backup_shares import _many_dirs

ONE = BackupOptions(source="app", processes=1)
TWO = BackupOptions(source="app", processes=2)


def _settled(repo: Repository, tmp_path: Path) -> tuple[Path, Snapshot]:
    """The source, and a snapshot of it after the listings have settled directory atimes."""
    src = _many_dirs(tmp_path / "src")
    backup_paths(repo, [str(src)], ONE)
    return src, backup_paths(repo, [str(src)], ONE).snapshot


def _subtrees(repo: Repository, tree_id: str, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, tree id) of every directory below ``tree_id``."""
    for node in repo.load_tree(tree_id):
        sub = node.get("subtree")
        if node.get("type") == "dir" and isinstance(sub, str):
            path = f"{prefix}/{node['name']}"
            yield path, sub
            yield from _subtrees(repo, sub, path)


def _without_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walk_module, "same_as_parent", lambda nodes, parents: False)
    monkeypatch.setattr(walk_module.Walker, "_same_file", lambda self, path, parent, st: None)


@pytest.mark.parametrize("options", [ONE, TWO], ids=["one process", "worker processes"])
def test_an_unchanged_rerun_takes_over_the_parents_trees(
    repo: Repository, tmp_path: Path, options: BackupOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, parent = _settled(repo, tmp_path)
    encoded: list[int] = []
    encode = trees_module.encode_tree

    def counting(nodes: list[dict[str, object]]) -> bytes:
        encoded.append(len(nodes))
        return encode(nodes)

    monkeypatch.setattr(trees_module, "encode_tree", counting)
    again = backup_paths(repo, [str(src)], options).snapshot
    assert again.tree == parent.tree
    assert again.summary["files_unmodified"] == again.summary["total_files"]
    if options.processes == 1:  # (workers count in their own processes)
        assert encoded == [1]  # only the snapshot's root, which names the backed-up path


@pytest.mark.parametrize("options", [ONE, TWO], ids=["one process", "worker processes"])
def test_a_change_deep_down_gives_the_tree_a_backup_without_the_shortcut_gives(
    repo: Repository,
    tmp_path: Path,
    options: BackupOptions,
    monkeypatch: pytest.MonkeyPatch,
    same_tree: Callable[..., None],
) -> None:
    src, parent = _settled(repo, tmp_path)
    before = dict(_subtrees(repo, parent.tree))
    (src / "d05" / "nested" / "deeper" / "leaf").chmod(0o600)  # metadata only
    os.utime(src / "d02" / "f004", ns=(1_000_000_000, 2_000_000_000))  # times only
    (src / "d04" / "f010").unlink()  # an entry removed
    (src / "d06" / "nested" / "new").write_text("an entry added\n")
    for _ in os.walk(src):  # list the changed directories now: no backup changes an atime
        pass
    reused = backup_paths(repo, [str(src)], options).snapshot
    with monkeypatch.context() as m:
        _without_reuse(m)
        plain = backup_paths(repo, [str(src)], options).snapshot
    assert reused.tree == plain.tree != parent.tree
    after = dict(_subtrees(repo, reused.tree))
    changed = {path for path, tree in after.items() if before.get(path) != tree}
    top = "/top"
    assert changed == {
        top,
        f"{top}/d05",
        f"{top}/d05/nested",
        f"{top}/d05/nested/deeper",
        f"{top}/d02",
        f"{top}/d04",
        f"{top}/d06",
        f"{top}/d06/nested",
    }
    restore_snapshot(repo, reused, str(tmp_path / "out"))
    same_tree(src, tmp_path / "out" / "top", check_times=False)
    leaf = tmp_path / "out" / "top" / "d05" / "nested" / "deeper" / "leaf"
    assert leaf.stat().st_mode & 0o777 == 0o600


def test_a_tree_lost_from_the_repository_is_stored_again(repo: Repository, tmp_path: Path) -> None:
    """A parent's tree whose blob the index no longer has (a damaged pack that repair
    dropped) is not taken over: the backup stores it again, and the repository verifies."""
    src, parent = _settled(repo, tmp_path)
    lost = dict(_subtrees(repo, parent.tree))["/top/d03"]
    del repo.index._blobs[bytes.fromhex(lost)]  # what 'repair index' leaves after a lost pack
    again = backup_paths(repo, [str(src)], ONE).snapshot
    assert again.tree == parent.tree  # the same bytes, stored once more
    assert bytes.fromhex(lost) in repo.index
    reopened = Repository.open(repo.storage, PASSWORD)
    assert verify_repository(reopened, read_data_percent=100).ok
