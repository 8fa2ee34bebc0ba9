"""Storage that fails mid-backup: the error is clear, the repository stays valid, the next
backup succeeds; with the retry wrapper, transient failures and lost responses are absorbed
(objects are content-addressed, so writing one twice is harmless)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.repo import Repository
from safehold.storage import StorageError
from safehold.storage.wrappers.retry import RetryingStorage, RetryPolicy
from testground.faults import FaultyStorage

PASSWORD = "correct horse battery staple"


def _data(root: Path) -> Path:
    root.mkdir()
    for i in range(4):
        (root / f"big-{i}").write_bytes(os.urandom(700_000))
    for i in range(30):
        (root / f"small-{i}").write_bytes(os.urandom(3000))
    return root


def test_a_failing_pack_upload_fails_the_backup_cleanly(repo: Repository, tmp_path: Path) -> None:
    src = _data(tmp_path / "src")
    faulty = FaultyStorage(repo.storage).fail("create", nth=3, times=1000)
    broken = Repository.open(faulty, PASSWORD)
    with pytest.raises(StorageError, match="injected fault"):
        backup_paths(broken, [str(src)], BackupOptions(source="s"))
    # nothing half-written is visible: the repository verifies, and has no snapshot
    fresh = Repository.open(repo.storage, PASSWORD)
    assert verify_repository(fresh, read_data_percent=100).ok
    assert fresh.snapshots() == []
    snap = backup_paths(fresh, [str(src)], BackupOptions(source="s")).snapshot
    restore_snapshot(fresh, snap, str(tmp_path / "out"))
    for path in src.iterdir():
        assert (tmp_path / "out" / "src" / path.name).read_bytes() == path.read_bytes()


def test_retries_absorb_transient_failures_and_lost_responses(
    repo: Repository, tmp_path: Path
) -> None:
    src = _data(tmp_path / "src")
    faulty = (
        FaultyStorage(repo.storage)
        .fail("create", nth=2, times=2)  # refused twice
        .fail_after("create", nth=6, times=1)  # stored, but the answer was lost
        .fail("get", nth=3, times=1)
    )
    retrying = RetryingStorage(faulty, RetryPolicy(base_delay=0.001, max_delay=0.01))
    repo_r = Repository.open(retrying, PASSWORD)
    snap = backup_paths(repo_r, [str(src)], BackupOptions(source="s")).snapshot
    assert retrying.retries >= 3
    result = restore_snapshot(repo_r, snap, str(tmp_path / "out"))
    assert result.errors == []
    assert verify_repository(Repository.open(repo.storage, PASSWORD), read_data_percent=100).ok


def test_a_corrupted_read_during_restore_is_caught_not_written(
    repo: Repository, tmp_path: Path
) -> None:
    src = _data(tmp_path / "src")
    snap = backup_paths(repo, [str(src)], BackupOptions(source="s")).snapshot
    faulty = FaultyStorage(repo.storage)
    reader = Repository.open(faulty, PASSWORD)
    faulty.corrupt("get", nth=faulty.calls["get"] + 3, times=1)  # a pack read, after the trees
    result = restore_snapshot(reader, snap, str(tmp_path / "out"))
    assert len(result.errors) >= 1
    assert all("damaged" in e["error"] for e in result.errors)
    # a second run with a healthy storage finishes the job
    again = restore_snapshot(repo, snap, str(tmp_path / "out"))
    assert again.errors == []
    for path in src.iterdir():
        assert (tmp_path / "out" / "src" / path.name).read_bytes() == path.read_bytes()
