"""No index object holds more than ``INDEX_MAX_BLOBS`` blobs, whoever writes it: prune and
``repair index`` rewrite the whole index and replication indexes a site's packs, and a bound
in packs alone let a repository of small files' packs (16,000 blobs each) get index objects
past what readers accept (format section 8: 1 GiB of entries), which would leave it
unreadable. Checked on real repositories with the
bound made small, then the way a user would: verify reads everything, the snapshot restores."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

import safehold.repo.index as index_module
from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.engine.forget import forget_snapshots
from safehold.engine.prune import PruneOptions, prune_repository
from safehold.engine.repair.index import repair_index
from safehold.engine.replicate import replicate
from safehold.engine.retention import RetentionPolicy
from safehold.repo import Repository
from safehold.repo.index import decode_index, split_packs
from safehold.repo.pack import PackBlob
from safehold.storage import open_storage

PASSWORD = "correct horse battery staple"  # conftest's, used by make_repo
BOUND = 300


def _small_files(root: Path, count: int) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"f{i:04}").write_bytes(os.urandom(40 + i % 90))
    return root


def _blobs_per_index_object(repo: Repository) -> list[int]:
    return [
        sum(
            len(entries)
            for entries in decode_index(repo.aead, repo.storage.get(i.name), i.name).packs.values()
        )
        for i in repo.storage.list("index/")
    ]


@pytest.fixture
def small_files_repo(
    tmp_path: Path, repo_factory: Callable[..., Repository], monkeypatch: pytest.MonkeyPatch
) -> tuple[Repository, Path, str]:
    """Packs of about 4 kB of small files' blobs (30 to 40 each), two snapshots."""
    monkeypatch.setattr(index_module, "INDEX_MAX_BLOBS", BOUND)
    repo = repo_factory(tmp_path / "repo", pack_size=4096)
    first = _small_files(tmp_path / "first", 300)
    backup_paths(repo, [str(first)], BackupOptions(source="s"))
    kept = _small_files(tmp_path / "kept", 1500)
    snap = backup_paths(repo, [str(kept)], BackupOptions(source="s")).snapshot
    return repo, kept, snap.id


def _check(repo: Repository, src: Path, snap_id: str, out: Path) -> None:
    counts = _blobs_per_index_object(repo)
    assert max(counts) <= BOUND, counts
    assert len(counts) >= 5, counts  # 1,500 files' blobs (and their trees) in several
    fresh = Repository.open(repo.storage, PASSWORD)
    assert verify_repository(fresh, read_data_percent=100).ok
    assert restore_snapshot(fresh, fresh.find_snapshot(snap_id), str(out)).errors == []
    for path in src.iterdir():
        assert (out / src.name / path.name).read_bytes() == path.read_bytes()


def test_prune_writes_index_objects_of_at_most_the_bound(
    small_files_repo: tuple[Repository, Path, str], tmp_path: Path
) -> None:
    repo, kept, snap_id = small_files_repo
    forget_snapshots(repo, RetentionPolicy(keep_last=1))
    report = prune_repository(repo, PruneOptions(grace=timedelta(0), max_unused=0))
    assert report.index_written >= 5
    _check(repo, kept, snap_id, tmp_path / "out")


def test_repair_index_writes_index_objects_of_at_most_the_bound(
    small_files_repo: tuple[Repository, Path, str], tmp_path: Path
) -> None:
    repo, kept, snap_id = small_files_repo
    lost = next(iter(repo.storage.list("index/"))).name
    repo.storage.delete(lost)  # its packs are in no index object: repair indexes them again
    report = repair_index(repo)
    assert report.packs_added >= 1
    assert report.index_written >= 5
    _check(repo, kept, snap_id, tmp_path / "out")


def test_replication_indexes_a_site_in_index_objects_of_at_most_the_bound(
    small_files_repo: tuple[Repository, Path, str], tmp_path: Path
) -> None:
    repo, kept, snap_id = small_files_repo
    site = open_storage((tmp_path / "site").as_uri())
    replicate(repo, site, PASSWORD)
    _check(Repository.open(site, PASSWORD), kept, snap_id, tmp_path / "out")


def _pack(blobs: int) -> list[PackBlob]:
    return [PackBlob(0, 0, 0, 1, 1, bytes(32))] * blobs


def test_split_packs_fills_each_object_up_to_the_bound_in_order() -> None:
    packs = [("a", _pack(4)), ("b", _pack(5)), ("c", _pack(1)), ("d", _pack(12)), ("e", _pack(3))]
    chunks = split_packs(packs, max_blobs=10)
    # a pack of more than the bound goes alone; no object is left empty but the only one
    assert [list(c) for c in chunks] == [["a", "b", "c"], ["d"], ["e"]]
    assert split_packs([], max_blobs=10) == [{}]
