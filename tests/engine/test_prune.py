"""Prune on real repositories: what it removes, repacks and keeps, checked the way a user
would (verify is clean, kept snapshots restore byte for byte, the storage shrank by what
prune said), plus the guards: damaged input, young packs, a real concurrent backup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.engine.forget import forget_snapshots
from safehold.engine.prune import PruneError, PruneOptions, prune_repository
from safehold.engine.retention import RetentionPolicy
from safehold.repo import Repository, RepositoryLock
from safehold.repo.blobset import CompactIdSet
from safehold.storage import open_storage

PASSWORD = "correct horse battery staple"  # conftest's, used by make_repo
NOW = PruneOptions(grace=timedelta(0))


def _versions(root: Path, count: int) -> list[Path]:
    """Source trees: a shared file, and per version a file of its own and a changed one."""
    shared = os.urandom(300_000)
    trees = []
    for v in range(count):
        tree = root / f"v{v}"
        tree.mkdir(parents=True)
        (tree / "shared.bin").write_bytes(shared)
        (tree / f"own-{v}.bin").write_bytes(os.urandom(400_000))
        (tree / "notes").mkdir()
        for i in range(20):
            (tree / "notes" / f"n{i}").write_bytes(os.urandom(500) if i == v else b"same %d" % i)
        trees.append(tree)
    return trees


def _stored(repo: Repository) -> int:
    return sum(i.size for i in repo.storage.list(""))


def _restores(repo: Repository, snap_id: str, tree: Path, out: Path) -> None:
    snap = repo.find_snapshot(snap_id)
    result = restore_snapshot(repo, snap, str(out))
    assert result.errors == []
    for path in tree.rglob("*"):
        if path.is_file():
            assert (out / tree.name / path.relative_to(tree)).read_bytes() == path.read_bytes()


@pytest.fixture
def populated(
    tmp_path: Path, repo_factory: Callable[..., Repository]
) -> tuple[Repository, list[Path], list[str]]:
    repo = repo_factory(tmp_path / "repo", pack_size=256 * 1024)
    trees = _versions(tmp_path / "src", 5)
    ids = []
    for tree in trees:
        opts = BackupOptions(source="vol", time=None)
        ids.append(backup_paths(repo, [str(tree)], opts).snapshot.id)
    return repo, trees, ids


def test_prune_frees_what_forgotten_snapshots_used_and_keeps_the_rest(
    populated: tuple[Repository, list[Path], list[str]], tmp_path: Path
) -> None:
    repo, trees, ids = populated
    forget_snapshots(repo, RetentionPolicy(keep_last=2))
    before = _stored(repo)
    dry = prune_repository(repo, PruneOptions(grace=timedelta(0), dry_run=True))
    assert _stored(repo) - before == 0, "a dry run changed the storage"
    assert dry.packs_deleted + dry.packs_repacked > 0
    report = prune_repository(repo, NOW)
    assert report.packs_deleted == dry.packs_deleted
    assert report.packs_repacked == dry.packs_repacked
    # The dry run's estimate of freed pack bytes is exact (index objects aside).
    assert report.bytes_freed == dry.bytes_freed
    assert report.bytes_freed > 2 * 400_000
    after = _stored(repo)
    assert before - after >= report.bytes_freed - 64 * 1024  # index objects differ a little
    fresh = Repository.open(open_storage(repo.location), PASSWORD)
    assert verify_repository(fresh, read_data_percent=100).ok
    for i in (3, 4):
        _restores(fresh, ids[i], trees[i], tmp_path / f"out{i}")
    # Nothing left to do: a second prune changes nothing.
    again = prune_repository(fresh, NOW)
    assert (again.packs_deleted, again.packs_repacked, again.unindexed_deleted) == (0, 0, 0)


def test_repack_threshold_decides_between_keeping_and_rewriting(
    populated: tuple[Repository, list[Path], list[str]],
) -> None:
    repo, _, _ = populated
    forget_snapshots(repo, RetentionPolicy(keep_last=4))
    lazy = prune_repository(repo, PruneOptions(grace=timedelta(0), max_unused=100, dry_run=True))
    eager = prune_repository(repo, PruneOptions(grace=timedelta(0), max_unused=0, dry_run=True))
    assert lazy.packs_repacked == 0
    assert eager.packs_repacked > 0
    assert eager.bytes_freed > lazy.bytes_freed
    report = prune_repository(repo, PruneOptions(grace=timedelta(0), max_unused=0))
    assert report.packs_written > 0
    assert verify_repository(Repository.open(repo.storage, PASSWORD), read_data_percent=100).ok


def test_young_packs_no_index_names_are_kept_for_the_grace_period(
    tmp_path: Path, repo_factory: Callable[..., Repository]
) -> None:
    repo = repo_factory(tmp_path / "repo")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(100_000))
    backup_paths(repo, [str(src)], BackupOptions(source="s"))
    # A pack a running backup has written but not indexed yet: bytes under a pack name.
    from safehold.repo.crypto import object_hash

    orphan = os.urandom(5000)
    name = repo.save_object("data", orphan)
    report = prune_repository(repo, PruneOptions(grace=timedelta(minutes=10)))
    assert report.kept_recent >= 1
    assert report.unindexed_deleted == 0
    assert any(i.name.endswith(name) for i in repo.storage.list("data/"))
    report = prune_repository(repo, NOW)
    assert report.unindexed_deleted == 1
    assert not any(i.name.endswith(object_hash(orphan)) for i in repo.storage.list("data/"))


def test_a_damaged_index_object_stops_prune_before_it_deletes_anything(
    populated: tuple[Repository, list[Path], list[str]],
) -> None:
    repo, _, _ = populated
    forget_snapshots(repo, RetentionPolicy(keep_last=1))
    index = next(iter(repo.storage.list("index/"))).name
    repo.storage.put(index, b"garbage")
    names = sorted(i.name for i in repo.storage.list(""))
    with pytest.raises(PruneError, match="prune deletes nothing") as err:
        prune_repository(repo, NOW)
    assert index in str(err.value)
    assert "safehold verify" in str(err.value)
    assert sorted(i.name for i in repo.storage.list("") if not i.name.startswith("locks/")) == [
        n for n in names if not n.startswith("locks/")
    ]


def test_an_interrupted_prune_is_finished_by_the_next(
    populated: tuple[Repository, list[Path], list[str]], tmp_path: Path
) -> None:
    """Leftovers of each crash point: superseded index objects still present, packs no
    longer indexed still present; the next prune removes them and all verifies."""
    repo, trees, ids = populated
    forget_snapshots(repo, RetentionPolicy(keep_last=1))
    copy = tmp_path / "copy"
    shutil.copytree(Path(repo.location.removeprefix("file://")), copy)
    full = prune_repository(repo, NOW)
    assert full.index_deleted > 0
    # Simulate the crash right after the new index was written: put the old index
    # objects back (they are superseded) and the deleted packs too.
    for path in (copy / "index").iterdir():
        shutil.copy2(path, Path(repo.location.removeprefix("file://")) / "index" / path.name)
    fresh = Repository.open(open_storage(repo.location), PASSWORD)
    assert verify_repository(fresh).ok
    second = prune_repository(fresh, NOW)
    assert second.index_deleted > 0
    assert second.index_written == 0
    assert len(list(fresh.storage.list("index/"))) == full.index_written
    _restores(fresh, ids[4], trees[4], tmp_path / "out")


def test_used_blob_set_takes_about_eight_bytes_per_id() -> None:
    ids = [os.urandom(32) for _ in range(200_000)]
    tracemalloc.start()
    used = CompactIdSet()
    for blob_id in ids:
        used.add(blob_id)
    assert len(used) == len(ids)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert current < 200_000 * 16, f"{current / 200_000:.1f} bytes per id"
    assert all(b in used for b in ids[:1000])
    assert not any(os.urandom(32) in used for _ in range(1000))


def _cli(repo: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "safehold", *args]


def test_a_concurrent_backup_whose_lock_prune_missed_loses_nothing(tmp_path: Path) -> None:
    """A real backup process runs; its lock is removed (as by a stale-lock race), so
    prune's exclusive lock succeeds. The grace period keeps the packs the backup has
    written but not yet indexed; the backup completes; everything verifies and restores."""
    repo_dir, src = tmp_path / "repo", tmp_path / "src"
    env = {
        **os.environ,
        "SAFEHOLD_REPOSITORY": repo_dir.as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
    }
    subprocess.run(_cli(repo_dir, "repo", "init", "--pack-size", "1"), env=env, check=True)
    src.mkdir()
    (src / "old").write_bytes(os.urandom(2_000_000))
    subprocess.run(_cli(repo_dir, "backup", str(src), "-q"), env=env, check=True)
    (src / "old").unlink()
    for i in range(12):
        (src / f"new-{i}").write_bytes(os.urandom(3_000_000))
    storage = open_storage(repo_dir.as_uri())
    packs_before = {i.name for i in storage.list("data/")}
    proc = subprocess.Popen(
        _cli(repo_dir, "backup", str(src), "--json"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len({i.name for i in storage.list("data/")} - packs_before) >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the backup finished before prune could race it"
        os.kill(proc.pid, signal.SIGSTOP)  # hold it mid-write while prune runs
        for lock in storage.list("locks/"):
            storage.delete(lock.name)  # the lock prune does not see
        prune = subprocess.run(
            _cli(repo_dir, "prune", "--json", "--max-unused", "0"),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(prune.stdout.strip().splitlines()[-1])
        assert report["kept_recent"] >= 2
        os.kill(proc.pid, signal.SIGCONT)
        _out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    repo = Repository.open(open_storage(repo_dir.as_uri()), PASSWORD)
    assert verify_repository(repo, read_data_percent=100).ok
    restore_snapshot(repo, repo.find_snapshot("latest"), str(tmp_path / "out"))
    for i in range(12):
        restored = tmp_path / "out" / "src" / f"new-{i}"
        assert restored.read_bytes() == (src / f"new-{i}").read_bytes()


def test_a_lock_taken_while_prune_runs_defers_the_pack_deletions(
    populated: tuple[Repository, list[Path], list[str]],
) -> None:
    """A backup that takes its lock after prune's (a race prune's own check cannot see)
    makes prune leave every pack for the next run."""
    repo, _, _ = populated
    forget_snapshots(repo, RetentionPolicy(keep_last=1))
    other = Repository.open(open_storage(repo.location), PASSWORD)
    real_write_index = repo.write_index
    held: list[RepositoryLock] = []

    def write_index_then_race(index_file: Any) -> tuple[str, int]:
        if not held:  # a backup starts right now, on another host, with a fresh lock
            lock = RepositoryLock(other, exclusive=False, operation="backup")
            lock.name = lock._write()
            held.append(lock)
        return real_write_index(index_file)

    repo.write_index = write_index_then_race  # type: ignore[method-assign]
    packs = sorted(i.name for i in repo.storage.list("data/"))
    report = prune_repository(repo, NOW)
    assert "next prune" in report.deferred
    assert report.packs_deleted == 0
    assert set(packs) <= {i.name for i in repo.storage.list("data/")}  # none deleted
    assert verify_repository(Repository.open(open_storage(repo.location), PASSWORD)).ok
    held[0].release()
    done = prune_repository(Repository.open(open_storage(repo.location), PASSWORD), NOW)
    assert done.unindexed_deleted > 0
    assert not done.deferred


def test_prune_waits_for_running_backups_but_a_dry_run_does_not(
    populated: tuple[Repository, list[Path], list[str]],
) -> None:
    from safehold.repo import LockConflict

    repo, _, _ = populated
    other = Repository.open(open_storage(repo.location), PASSWORD)
    with RepositoryLock(other, exclusive=False, operation="backup"):
        with pytest.raises(LockConflict, match="shared lock by backup"):
            prune_repository(repo, NOW)
        dry = prune_repository(repo, PruneOptions(grace=timedelta(0), dry_run=True))
        assert dry.dry_run
