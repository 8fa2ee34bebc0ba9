"""A command loads the index while it opens the repository, before it takes its lock: a prune
that ends in between deletes packs that the loaded index still names. The lock's holder
checks the index again (``Repository.recheck_index``, format section 11), so a backup never
reuses a blob that is gone. Checked as a user would: the backup verifies and restores."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.engine.forget import forget_snapshots
from safehold.engine.prune import PruneOptions, prune_repository
from safehold.engine.retention import RetentionPolicy
from safehold.repo import Repository, RepositoryLock
from safehold.repo.index import IndexFile

PASSWORD = "correct horse battery staple"  # conftest's, used by make_repo


def test_a_prune_between_the_open_and_the_lock_is_seen_by_the_backup(
    tmp_path: Path, repo_factory: Callable[..., Repository]
) -> None:
    repo = repo_factory(tmp_path / "repo")
    gone = os.urandom(3_000)  # one chunk, which only the first snapshot holds
    first, second = tmp_path / "v1" / "vol", tmp_path / "v2" / "vol"
    for tree in (first, second):
        tree.mkdir(parents=True)
        (tree / "kept").write_bytes(b"in both snapshots")
    (first / "gone").write_bytes(gone)
    backup_paths(repo, [str(first)], BackupOptions(source="vol"))
    backup_paths(repo, [str(second)], BackupOptions(source="vol"))

    # Another command opens the repository (and loads the index, "gone" in it) ...
    late = Repository.open(repo.storage, PASSWORD)
    gone_id = late.keys.blob_id(gone)
    assert gone_id in late.index
    # ... while the first snapshot is forgotten and a prune deletes what only it used
    forget_snapshots(repo, RetentionPolicy(keep_last=1))
    prune_repository(repo, PruneOptions(grace=timedelta(0), max_unused=0))

    # then it takes its lock, and backs up the first version again
    with RepositoryLock(late, exclusive=False, operation="backup"):
        assert gone_id not in late.index
        snap = backup_paths(late, [str(first)], BackupOptions(source="vol")).snapshot

    fresh = Repository.open(repo.storage, PASSWORD)
    assert verify_repository(fresh, read_data_percent=100).ok
    out = tmp_path / "out"
    assert restore_snapshot(fresh, fresh.find_snapshot(snap.id), str(out)).errors == []
    assert (out / "vol" / "gone").read_bytes() == gone


def _opened_after_a_backup(
    tmp_path: Path, repo_factory: Callable[..., Repository]
) -> tuple[Repository, Path, Repository]:
    """A repository with one backup of ``src``, and a second handle opened after it."""
    repo = repo_factory(tmp_path / "repo")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(100_000))
    backup_paths(repo, [str(src)], BackupOptions(source="a"))
    return repo, src, Repository.open(repo.storage, PASSWORD)


def test_another_backups_index_objects_are_merged_without_loading_the_index_again(
    tmp_path: Path, repo_factory: Callable[..., Repository]
) -> None:
    repo, src, late = _opened_after_a_backup(tmp_path, repo_factory)
    index_before = late.index

    (src / "b").write_bytes(b := os.urandom(3_000))  # one chunk
    backup_paths(repo, [str(src)], BackupOptions(source="b"))  # another backup, meanwhile
    with RepositoryLock(late, exclusive=False, operation="backup"):
        assert late.keys.blob_id(b) in late.index
        assert late.index is index_before  # merged into, not loaded again
    assert late.recheck_index() is False  # nothing changed since


def test_an_index_object_that_supersedes_loads_the_index_again(
    tmp_path: Path, repo_factory: Callable[..., Repository]
) -> None:
    repo, _, late = _opened_after_a_backup(tmp_path, repo_factory)
    old = list(late.index_load.loaded)
    repo.write_index(IndexFile(supersedes=old))  # as a prune's last object, old not yet deleted

    assert late.recheck_index() is True
    assert len(late.index) == 0  # what the superseded objects named is no longer indexed
