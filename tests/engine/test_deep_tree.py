"""A directory tree 2,000 levels deep backs up, verifies and restores (issue 15, item 6):
every walk of a tree is iterative, so depth is bounded by memory, not by Python's
recursion limit (about 500 levels used to fail every backup of such a volume)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.engine import BackupOptions, RestoreOptions, backup_paths, restore_snapshot
from safehold.engine.prune import prune_repository
from safehold.engine.verify import verify_repository
from safehold.repo import Repository

DEPTH = 2000


def _remove_deep(root: str) -> None:
    """Remove a tree of any depth (shutil.rmtree and os.walk recurse), deepest first."""
    dirs = [root]
    k = 0
    while k < len(dirs):
        with os.scandir(dirs[k]) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    dirs.append(entry.path)
                else:
                    os.unlink(entry.path)
        k += 1
    for path in reversed(dirs):
        os.rmdir(path)


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A directory with a short path: 2,000 levels of ``/d`` are 4,000 characters, close
    to PATH_MAX (4096), which the backup and the restore use whole."""
    base = tempfile.mkdtemp(prefix="deep", dir="/tmp")
    yield base
    for name in ("src", "out"):
        if os.path.isdir(os.path.join(base, name)):
            _remove_deep(os.path.join(base, name))
    os.rmdir(base)


def _deep_tree(root: str) -> str:
    leaf = root
    os.mkdir(leaf)
    for _ in range(DEPTH):  # os.makedirs recurses once per level
        leaf = os.path.join(leaf, "d")
        os.mkdir(leaf)
    with open(os.path.join(leaf, "f"), "wb") as f:
        f.write(b"at the bottom\n")
    with open(os.path.join(root, "top"), "wb") as f:
        f.write(b"at the top\n")
    return leaf


def test_a_tree_2000_levels_deep_backs_up_and_verifies(repo: Repository, short_dir: str) -> None:
    assert sys.getrecursionlimit() < DEPTH  # the test means something
    src = os.path.join(short_dir, "src")
    _deep_tree(src)

    result = backup_paths(repo, [src], BackupOptions(source="deep"))
    assert not result.errors
    assert result.snapshot.summary["dirs"] == DEPTH + 1
    assert result.snapshot.summary["total_files"] == 2
    again = backup_paths(repo, [src], BackupOptions(source="deep"))  # incremental: parent trees
    assert again.snapshot.summary["files_unmodified"] == 2

    report = verify_repository(repo, read_data_percent=100)
    assert report.ok, report.summary()
    assert report.snapshots == 2
    assert prune_repository(repo).snapshots == 2  # its used-blob walk reaches the bottom


def test_a_tree_2000_levels_deep_restores(repo: Repository, short_dir: str) -> None:
    src = os.path.join(short_dir, "src")
    _deep_tree(src)
    snap = backup_paths(repo, [src], BackupOptions(source="deep")).snapshot
    out = os.path.join(short_dir, "out")
    restored = restore_snapshot(repo, snap, out, RestoreOptions(processes=1))
    assert not restored.errors
    bottom = Path(out, "src", *(["d"] * DEPTH), "f")
    assert bottom.read_bytes() == b"at the bottom\n"
    assert Path(out, "src", "top").read_bytes() == b"at the top\n"
