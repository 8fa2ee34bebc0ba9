"""repair index and repair snapshots, case by case (docs/repair.md): salvaging the good
blobs of a damaged pack, a dry run that changes nothing, a damaged index object, a lost
directory and a lost root, and a version-1 repository that stays version 1."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.engine.prune import PruneOptions, prune_repository
from safehold.engine.repair import REPAIRED_TAG, RepairError, repair_index, repair_snapshots
from safehold.repo import (
    BLOB_DATA,
    LockConflict,
    Repository,
    RepositoryLock,
    Snapshot,
    pack_object_name,
)
from safehold.repo.pack import parse_pack
from safehold.storage import open_storage

FIXTURE = Path(__file__).parents[1] / "repo" / "fixtures" / "v1-repository"
FIXTURE_PASSWORD = "version one fixture password"


def _dir(repo: Repository) -> Path:
    return Path(repo.storage.location.removeprefix("file://"))


def _listing(repo: Repository) -> dict[str, int]:
    return {
        str(p.relative_to(_dir(repo))): p.stat().st_size
        for p in _dir(repo).rglob("*")
        if p.is_file() and "locks" not in p.parts
    }


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x20
    path.write_bytes(bytes(data))


def _source(root: Path) -> Path:
    (root / "docs" / "inner").mkdir(parents=True)
    for i in range(12):
        (root / "docs" / f"note-{i}.txt").write_bytes(os.urandom(2000 + i))
    (root / "docs" / "inner" / "leaf.txt").write_text("leaf\n")
    (root / "big.bin").write_bytes(os.urandom(400_000))
    return root


def _multi_blob_pack(repo: Repository) -> tuple[str, int, int, bytes]:
    """(pack, offset, stored, id) of a data blob in the pack holding the most blobs."""
    by_pack: dict[str, list[tuple[int, int, int, bytes]]] = {}
    for blob_id, loc in repo.index.items():
        by_pack.setdefault(loc.pack, []).append((loc.type, loc.offset, loc.stored, blob_id))
    pack = max(sorted(by_pack), key=lambda p: len(by_pack[p]))
    assert len(by_pack[pack]) >= 3
    _, offset, stored, blob_id = next(b for b in sorted(by_pack[pack]) if b[0] == BLOB_DATA)
    return pack, offset, stored, blob_id


def test_the_good_blobs_of_a_damaged_pack_are_salvaged_and_it_stays_unindexed(
    repo: Repository, tmp_path: Path
) -> None:
    src = _source(tmp_path / "src")
    backup_paths(repo, [str(src)], BackupOptions(source="s"))
    pack, offset, stored, lost = _multi_blob_pack(repo)
    _flip(_dir(repo) / pack_object_name(pack), offset + stored // 2)
    assert verify_repository(repo).ok  # only reading finds it

    before = _listing(repo)
    dry = repair_index(repo, read_data=True, dry_run=True)
    assert _listing(repo) == before  # a dry run changes nothing
    assert dry.packs_damaged == {pack: "its bytes do not match its name"}
    assert dry.blobs_lost == 1
    assert dry.blobs_salvaged >= 2

    # The header-only run cannot see damage inside a blob.
    assert not repair_index(repo).changed
    done = repair_index(repo, read_data=True)
    assert (done.blobs_lost, done.blobs_salvaged) == (1, dry.blobs_salvaged)
    assert done.packs_written == 1
    assert lost not in repo.index
    assert pack not in repo.index.packs()
    # Left unindexed, the damaged pack is not taken back by a later run, with or without
    # --read-data (packs no index names are read whole).
    assert not repair_index(repo).changed
    assert not repair_index(repo, read_data=True).changed
    report = verify_repository(repo, read_data_percent=100)
    assert report.unreferenced_packs == 1
    assert [i["path"] for items in report.damaged.values() for i in items] != []

    backup_paths(repo, [str(src)], BackupOptions(source="s", type="full"))
    assert verify_repository(repo, read_data_percent=100).ok  # stored again: whole
    # prune runs again, and deletes the damaged pack no index names any more
    pruned = prune_repository(repo, PruneOptions(grace=timedelta(0)))
    assert pruned.unindexed_deleted == 1
    assert not (_dir(repo) / pack_object_name(pack)).exists()
    assert verify_repository(repo, read_data_percent=100).ok


def test_repairs_take_the_exclusive_lock(repo: Repository, tmp_path: Path) -> None:
    backup_paths(repo, [str(_source(tmp_path / "src"))], BackupOptions(source="s"))
    with RepositoryLock(repo, exclusive=False, operation="backup"):
        with pytest.raises(LockConflict):
            repair_index(repo)
        with pytest.raises(LockConflict):
            repair_snapshots(repo)
        # a dry run takes a shared lock: it runs beside a backup
        assert not repair_index(repo, dry_run=True).changed
        assert repair_snapshots(repo, dry_run=True).items == []


def test_a_damaged_index_object_is_superseded_and_its_packs_come_back(
    repo: Repository, tmp_path: Path
) -> None:
    src = _source(tmp_path / "src")
    snap = backup_paths(repo, [str(src)], BackupOptions(source="s")).snapshot
    name = next(iter(repo.storage.list("index/"))).name
    _flip(_dir(repo) / name, 40)
    fresh = Repository.open(repo.storage, "correct horse battery staple")
    report = verify_repository(fresh)
    assert name in report.objects
    assert report.repair[0] == "safehold repair index"
    done = repair_index(fresh)
    assert done.index_damaged == {name: report.objects[name]}
    assert done.packs_added >= 1
    assert done.blobs_lost == 0
    assert verify_repository(fresh, read_data_percent=100).ok
    out = tmp_path / "out"
    assert restore_snapshot(fresh, snap, str(out)).errors == []
    assert (out / "src" / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


def _tree_of(repo: Repository, snap: Snapshot, *path: str) -> str:
    nodes = repo.load_tree(snap.tree)
    tree = snap.tree
    for part in path:
        tree = next(n for n in nodes if n["name"] == part)["subtree"]
        nodes = repo.load_tree(tree)
    return tree


def _drop_blob(repo: Repository, blob_hex: str) -> None:
    """Damage one blob inside its pack and repair the index with --read-data: that blob
    is lost, the others of its pack are salvaged."""
    loc = repo.index.lookup(bytes.fromhex(blob_hex))
    assert loc is not None
    _flip(_dir(repo) / pack_object_name(loc.pack), loc.offset + loc.stored // 2)
    assert repair_index(repo, read_data=True).blobs_lost == 1


def test_a_lost_directory_becomes_empty_and_a_lost_root_leaves_nothing(
    repo: Repository, tmp_path: Path
) -> None:
    src = _source(tmp_path / "src")
    options = BackupOptions(source="s", tags=["nightly"], host="web-1")
    snap = backup_paths(repo, [str(src)], options).snapshot
    inner = _tree_of(repo, snap, "src", "docs", "inner")
    other = _source(tmp_path / "other")
    gone = backup_paths(repo, [str(other)], BackupOptions(source="o")).snapshot
    _drop_blob(repo, inner)
    _drop_blob(repo, gone.tree)
    assert inner not in {b.hex() for b, _ in repo.index.items()}

    dry = repair_snapshots(repo, dry_run=True)
    by_id = {i.snapshot.id: i for i in dry.items}
    assert by_id[gone.id].root_lost
    item = by_id[snap.id]
    assert [p for p, _ in item.lost_dirs] == ["src/docs/inner"]

    report = repair_snapshots(repo)
    copy = repo.find_snapshot(next(i.repaired for i in report.items if i.snapshot.id == snap.id))
    assert copy.tags == ["nightly", REPAIRED_TAG]
    assert copy.host == "web-1"  # still its host's parent and retention series
    assert copy.meta["repair.original"] == snap.id
    assert copy.time == snap.time
    assert not next(i for i in report.items if i.snapshot.id == gone.id).repaired
    out = tmp_path / "out"
    assert restore_snapshot(repo, copy, str(out)).errors == []
    assert (out / "src" / "docs" / "inner").is_dir()
    assert list((out / "src" / "docs" / "inner").iterdir()) == []
    lost_other = {p for p, _ in item.lost_files}
    for path in src.rglob("*"):
        rel = path.relative_to(src.parent).as_posix()
        if path.is_file() and not rel.startswith("src/docs/inner/") and rel not in lost_other:
            assert (out / rel).read_bytes() == path.read_bytes(), rel

    forgot = repair_snapshots(repo, forget=True)
    assert all(i.forgotten for i in forgot.items)
    assert {s.id for s in repo.snapshots()} == {copy.id}
    assert verify_repository(repo, read_data_percent=100).ok


def test_a_version_1_repository_is_repaired_in_version_1(tmp_path: Path) -> None:
    repo_dir = tmp_path / "v1"
    shutil.copytree(FIXTURE, repo_dir)
    repo = Repository.open(open_storage(repo_dir.as_uri()), FIXTURE_PASSWORD)
    assert repo.config.version == 1
    src = _source(tmp_path / "src")
    snap = backup_paths(repo, [str(src)], BackupOptions(source="more")).snapshot
    inner = _tree_of(repo, snap, "src", "docs", "inner")
    _drop_blob(repo, inner)  # its pack's other blobs are salvaged into a new pack
    for p in repo.index.packs():  # each reads as a version-1 pack (no subkey prefix)
        data = (repo_dir / pack_object_name(p)).read_bytes()
        assert parse_pack(repo.aead.key_for(b""), data, p)
    report = repair_snapshots(repo, forget=True)
    assert report.trees_written >= 2
    again = Repository.open(open_storage(repo_dir.as_uri()), FIXTURE_PASSWORD)
    assert again.config.version == 1
    assert verify_repository(again, read_data_percent=100).ok


def test_a_damaged_tree_found_by_the_structure_check_asks_for_read_data(
    repo: Repository, tmp_path: Path
) -> None:
    """A tree blob that no longer opens is seen by the structure check; only a repair
    that reads blobs drops it, so that the next backup stores the tree again instead of
    deduplicating against the damaged copy."""
    src = _source(tmp_path / "src")
    snap = backup_paths(repo, [str(src)], BackupOptions(source="s")).snapshot
    inner = _tree_of(repo, snap, "src", "docs", "inner")
    loc = repo.index.lookup(bytes.fromhex(inner))
    assert loc is not None
    _flip(_dir(repo) / pack_object_name(loc.pack), loc.offset + loc.stored // 2)
    report = verify_repository(repo)
    assert [i["path"] for i in report.damaged[snap.id]] == ["src/docs/inner"]
    assert report.repair == [
        "safehold repair index --read-data",
        "safehold backup",
        "safehold repair snapshots --forget",
    ]
    assert repair_index(repo, read_data=True).blobs_lost == 1
    latest = backup_paths(repo, [str(src)], BackupOptions(source="s")).snapshot
    repair_snapshots(repo, forget=True)
    assert verify_repository(repo, read_data_percent=100).ok
    out = tmp_path / "out"
    assert restore_snapshot(repo, latest, str(out)).errors == []
    assert (out / "src" / "docs" / "inner" / "leaf.txt").read_text() == "leaf\n"


def test_a_superseded_damaged_index_object_is_ignored(repo: Repository, tmp_path: Path) -> None:
    """A damaged index object that the repaired index supersedes but that stays (an
    object lock kept it) is no damage any more, and is not rewritten again."""
    backup_paths(repo, [str(_source(tmp_path / "src"))], BackupOptions(source="s"))
    name = next(iter(repo.storage.list("index/"))).name
    _flip(_dir(repo) / name, 40)
    kept = (_dir(repo) / name).read_bytes()
    assert repair_index(repo).index_damaged
    (_dir(repo) / name).write_bytes(kept)  # as if its object lock had kept it
    fresh = Repository.open(repo.storage, "correct horse battery staple")
    assert fresh.index_load.damaged == {}
    assert verify_repository(fresh, read_data_percent=100).ok
    again = repair_index(fresh)
    assert not again.changed
    assert (again.index_damaged, again.index_written, again.index_deleted) == ({}, 0, 1)


def test_data_sealed_with_a_newer_key_is_not_taken_for_damage(
    repo: Repository, tmp_path: Path
) -> None:
    """A key object older than a rotation cannot read what was written after it (format
    section 5b; a recovery site that was not given the new key object). Neither repair
    takes that for damage: both refuse, say why, and change nothing."""
    password = "correct horse battery staple"
    backup_paths(repo, [str(_source(tmp_path / "old"))], BackupOptions(source="old"))
    old_key = repo.key_name
    old_bytes = repo.storage.get(old_key)
    repo.rotate_key(password)
    backup_paths(repo, [str(_source(tmp_path / "new"))], BackupOptions(source="new"))
    repo.storage.delete(repo.key_name)  # only the key from before the rotation is left
    repo.storage.put(old_key, old_bytes)
    stale = Repository.open(repo.storage, password)
    assert len(stale.keys.data_keys) == 1
    before = _listing(repo)
    with pytest.raises(RepairError, match="data key version 2"):
        repair_index(stale)
    with pytest.raises(RepairError, match="data key version 2"):
        repair_index(stale, read_data=True)
    with pytest.raises(RepairError, match="data key version 2"):
        repair_snapshots(stale, forget=True)
    assert _listing(repo) == before
