"""Damage the repository the ways storage fails, and check that verify says exactly what
is lost, and that undamaged snapshots still restore."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.repo import Repository, Snapshot, pack_object_name
from safehold.repo.index import decode_index


@pytest.fixture
def two_snapshots(repo: Repository, tmp_path: Path) -> tuple[Path, Path, Snapshot, Snapshot]:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "sub").mkdir(parents=True)
        for i in range(6):
            (root / "sub" / f"file-{i}").write_bytes(os.urandom(150_000))
        (root / "big").write_bytes(os.urandom(1_200_000))
    snap_a = backup_paths(repo, [str(a)], BackupOptions(source="a")).snapshot
    snap_b = backup_paths(repo, [str(b)], BackupOptions(source="b")).snapshot
    return a, b, snap_a, snap_b


def _pack_of(repo: Repository, snap: Snapshot, *path: str) -> str:
    """The pack holding the first chunk of the file at ``path`` in ``snap``."""
    return _chunk_of(repo, snap, *path)[0]


def _chunk_of(repo: Repository, snap: Snapshot, *path: str) -> tuple[str, int]:
    """(pack, offset in it) of the first chunk of the file at ``path`` in ``snap``."""
    tree = snap.tree
    nodes = repo.load_tree(tree)
    for part in path[:-1]:
        node = next(n for n in nodes if n["name"] == part)
        nodes = repo.load_tree(node["subtree"])
    node = next(n for n in nodes if n["name"] == path[-1])
    loc = repo.index.lookup(bytes.fromhex(node["content"][0]))
    assert loc is not None
    return loc.pack, loc.offset


def _damaged_paths(report_items: list[dict[str, str]]) -> set[str]:
    return {i["path"] for i in report_items}


def test_flipped_bits_in_a_pack_name_the_damaged_snapshot_and_files(
    repo: Repository,
    tmp_path: Path,
    two_snapshots: tuple[Path, Path, Snapshot, Snapshot],
    same_tree: Callable[..., None],
) -> None:
    a, b, snap_a, snap_b = two_snapshots
    pack, offset = _chunk_of(repo, snap_b, "b", "sub", "file-2")
    path = Path(repo.storage.location.removeprefix("file://")) / pack_object_name(pack)
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0x10
    path.write_bytes(bytes(data))

    assert verify_repository(repo).ok  # the structure is intact: only reading finds it
    report = verify_repository(repo, read_data_percent=100)
    assert not report.ok
    assert list(report.damaged) == [snap_b.id]
    damaged = _damaged_paths(report.damaged[snap_b.id])
    assert damaged == {"b/sub/file-2"}
    assert pack_object_name(pack) in report.objects
    # the other snapshot restores perfectly
    restore_snapshot(repo, snap_a, str(tmp_path / "out-a"))
    same_tree(a, tmp_path / "out-a" / "a")
    # the damaged one restores everything but the damaged files, and says which
    result = restore_snapshot(repo, snap_b, str(tmp_path / "out-b"))
    bad = {Path(e["path"]).relative_to(tmp_path / "out-b").as_posix() for e in result.errors}
    assert bad == damaged
    assert (tmp_path / "out-b" / "b" / "big").read_bytes() == (b / "big").read_bytes()


def test_a_truncated_pack_is_found_by_the_structure_check(
    repo: Repository, two_snapshots: tuple[Path, Path, Snapshot, Snapshot]
) -> None:
    _, _, snap_a, snap_b = two_snapshots
    pack, offset = _chunk_of(repo, snap_a, "a", "big")
    path = Path(repo.storage.location.removeprefix("file://")) / pack_object_name(pack)
    os.truncate(path, offset + 10)  # cut inside the first chunk of a/big
    report = verify_repository(repo)
    assert not report.ok
    assert "truncated" in report.objects[pack_object_name(pack)]
    assert snap_a.id in report.damaged
    assert snap_b.id not in report.damaged
    assert "a/big" in _damaged_paths(report.damaged[snap_a.id])


def test_a_deleted_index_object_loses_exactly_its_packs(
    repo: Repository,
    tmp_path: Path,
    two_snapshots: tuple[Path, Path, Snapshot, Snapshot],
    same_tree: Callable[..., None],
) -> None:
    a, _, snap_a, snap_b = two_snapshots
    pack = _pack_of(repo, snap_b, "b", "big")
    for info in list(repo.storage.list("index/")):
        index = repo.storage.get(info.name)
        if pack in decode_index(repo.aead, index, info.name).packs:
            repo.storage.delete(info.name)
    fresh = Repository.open(repo.storage, "correct horse battery staple")
    report = verify_repository(fresh)
    assert not report.ok
    assert list(report.damaged) == [snap_b.id]
    assert report.unreferenced_packs >= 1  # the data is still there, for a later index repair
    restore_snapshot(fresh, snap_a, str(tmp_path / "out-a"))
    same_tree(a, tmp_path / "out-a" / "a")


def test_a_damaged_index_object_is_reported(
    repo: Repository, two_snapshots: tuple[Path, Path, Snapshot, Snapshot]
) -> None:
    name = next(iter(repo.storage.list("index/"))).name
    path = Path(repo.storage.location.removeprefix("file://")) / name
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    report = verify_repository(repo)
    assert name in report.objects
    assert not report.ok
