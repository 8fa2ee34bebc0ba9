"""Failures mid-backup (issue 15, item 8): the first pack that fails for good stops the
backup (no more uploads), the error the user sees names that cause and not a failed lock
cleanup, a lock refresh that fails for a while does not stop the backup, and a lock that
could not be refreshed for longer than the stale-lock age does."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from safehold.cli.main import main
from safehold.engine import BackupOptions, backup_paths, verify_repository
from safehold.repo import Repository, RepositoryLock
from safehold.repo import locks as locks_module
from safehold.repo.locks import LockLost
from safehold.storage import PermanentError, Storage, TransientError
from safehold.storage.wrappers import ForwardingStorage

PASSWORD = "correct horse battery staple"


class Failing(ForwardingStorage):
    """Creates and deletes of names that ``fails`` picks raise; data creates can be slowed."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.fails: Callable[[str, str], type[Exception] | None] = lambda op, name: None
        self.pack_delay = 0.0
        self.data_creates = 0
        self._lock = threading.Lock()

    def _check(self, operation: str, name: str) -> None:
        error = self.fails(operation, name)
        if error is not None:
            raise error(self.location, f"{operation} refused by the test", name=name)

    def create(self, name: str, data: bytes) -> None:
        if name.startswith("data/"):
            with self._lock:
                self.data_creates += 1
            if self.pack_delay:
                threading.Event().wait(self.pack_delay)
        self._check("create", name)
        self.inner.create(name, data)

    def delete(self, name: str) -> None:
        self._check("delete", name)
        self.inner.delete(name)


def _source(root: Path, megabytes: int = 12) -> Path:
    root.mkdir()
    for i in range(megabytes):
        (root / f"file-{i}").write_bytes(os.urandom(1024 * 1024))
    return root


@pytest.fixture
def failing(repo: Repository) -> tuple[Failing, Repository]:
    storage = Failing(repo.storage)
    return storage, Repository.open(storage, PASSWORD)


def test_no_pack_is_uploaded_after_one_failed_for_good(
    failing: tuple[Failing, Repository], repo: Repository, tmp_path: Path
) -> None:
    storage, broken = failing
    src = _source(tmp_path / "src")  # about 24 packs of 512 KiB
    storage.fails = lambda op, name: (
        PermanentError
        if op == "create" and name.startswith("data/") and storage.data_creates >= 3
        else None
    )
    with pytest.raises(PermanentError, match="create refused by the test"):
        backup_paths(broken, [str(src)], BackupOptions(source="s"))
    assert storage.data_creates == 3  # the failed pack was the last one tried
    fresh = Repository.open(repo.storage, PASSWORD)
    assert fresh.snapshots() == []
    assert verify_repository(fresh, read_data_percent=100).ok


def test_the_error_names_the_failed_upload_not_the_failed_lock_removal(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As in the issue: the pack fails for good, then the lock cannot be deleted either."""
    storage = Failing(repo.storage)
    storage.fails = lambda op, name: (
        PermanentError
        if op == "create" and name.startswith("data/") and storage.data_creates >= 2
        else TransientError
        if op == "delete" and name.startswith("locks/")
        else None
    )
    monkeypatch.setattr("safehold.storage.open_storage", lambda *a, **k: storage)
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    src = _source(tmp_path / "src", megabytes=4)
    code = main(["backup", "--repo", "file:///unused", str(src)])
    err = capsys.readouterr().err
    assert code == 1
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "data/" in error_lines[0]
    assert "create refused by the test" in error_lines[0]
    assert "warning: could not remove the repository lock locks/" in err
    assert "safehold repo unlock" in err


def test_a_lock_refresh_that_fails_for_a_while_does_not_stop_the_backup(
    failing: tuple[Failing, Repository], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, repo = failing
    monkeypatch.setattr(locks_module, "REFRESH_EVERY", timedelta(seconds=0.05))
    monkeypatch.setattr(locks_module, "RETRY_REFRESH_AFTER", timedelta(seconds=0.05))
    src = _source(tmp_path / "src", megabytes=6)
    storage.pack_delay = 0.05  # about 0.6 s of packs: several refreshes
    refreshes = {"failed": 0}

    def fails(op: str, name: str) -> type[Exception] | None:
        if op == "create" and name.startswith("locks/") and refreshes["failed"] < 3:
            refreshes["failed"] += 1
            return TransientError
        return None

    with RepositoryLock(repo, exclusive=False, operation="backup") as lock:
        storage.fails = fails
        result = backup_paths(repo, [str(src)], BackupOptions(source="s"))
        assert lock.lost is None
    assert refreshes["failed"] == 3
    assert result.snapshot.summary["files_new"] == 6
    assert list(storage.inner.list("locks/")) == []
    assert verify_repository(repo, read_data_percent=100).ok


def test_a_lock_not_refreshed_for_the_stale_age_stops_the_backup(
    failing: tuple[Failing, Repository], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, repo = failing
    monkeypatch.setattr(locks_module, "REFRESH_EVERY", timedelta(seconds=0.05))
    monkeypatch.setattr(locks_module, "RETRY_REFRESH_AFTER", timedelta(seconds=0.05))
    monkeypatch.setattr(locks_module, "STALE_AFTER", timedelta(seconds=0.3))
    src = _source(tmp_path / "src")
    storage.pack_delay = 0.1  # about 2.4 s of packs: the lock is lost on the way
    with RepositoryLock(repo, exclusive=False, operation="backup") as lock:
        storage.fails = lambda op, name: (
            TransientError if op == "create" and name.startswith("locks/") else None
        )
        with pytest.raises(LockLost) as caught:
            backup_paths(repo, [str(src)], BackupOptions(source="s"))
        assert lock.lost is caught.value
    message = str(caught.value)
    assert "could not be refreshed" in message
    assert "stale-lock age" in message
    assert "create refused by the test" in message  # and why
    assert storage.data_creates < 24  # stopped before the last pack
    assert Repository.open(storage.inner, PASSWORD).snapshots() == []
