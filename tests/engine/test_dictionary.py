"""Compression dictionaries (format sections 6 and 7): many small text files are stored
smaller, read back byte for byte through every reader (restore, verify, prune, repair),
and the dictionary is kept in each pack whose blobs need it."""

from __future__ import annotations

import random
import shutil
from datetime import timedelta
from pathlib import Path

from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.engine.forget import forget_snapshots
from safehold.engine.prune import PruneOptions, prune_repository
from safehold.engine.repair import repair_index
from safehold.engine.replicate import replicate
from safehold.engine.retention import RetentionPolicy
from safehold.repo import ChunkerParams, Config, Repository
from safehold.repo.layout import pack_object_name
from safehold.repo.pack import BLOB_DICT, FLAG_DICT, PackBlob, parse_pack
from safehold.storage import open_storage

PASSWORD = "correct horse battery staple"  # conftest's
_STEMS = ["alpha", "beta", "gamma", "delta", "kappa", "sigma", "omega"]
_WORDS = [f"{w}{i}" for i, w in enumerate(_STEMS * 9)]


def _text(rng: random.Random, size: int) -> bytes:
    lines = []
    while sum(map(len, lines)) < size:
        key = rng.choice(_WORDS)
        lines.append(f"{key}.{rng.choice(_WORDS)} = {rng.randrange(100000)} # {key} setting\n")
    return "".join(lines).encode()[:size]


def small_files(root: Path, count: int, seed: int, *, marker: bytes = b"") -> Path:
    """``count`` files of 200 B to 3 KiB of configuration-like text in 20 directories."""
    rng = random.Random(seed)
    for i in range(count):
        path = root / f"d{i % 20:02d}" / f"f{seed}-{i:04d}.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(marker + _text(rng, rng.randint(200, 3000)))
    return root


def _repo(path: Path, *, dictionaries: bool = True) -> Repository:
    config = Config.new(
        chunker=ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024),
        pack_size=256 * 1024,
        dictionaries=dictionaries,
    )
    return Repository.init(open_storage(path.as_uri()), PASSWORD, config)


def _packs(repo: Repository) -> dict[str, list[PackBlob]]:
    out = {}
    for pack in repo.index.packs():
        data = repo.storage.get(pack_object_name(pack))
        out[pack] = parse_pack(repo.aead, data, pack)
    return out


def _stored(repo: Repository) -> int:
    return sum(i.size for i in repo.storage.list("data"))


def _same(src: Path, out: Path) -> None:
    files = sorted(p for p in src.rglob("*") if p.is_file())
    assert files
    for p in files:
        assert (out / src.name / p.relative_to(src)).read_bytes() == p.read_bytes(), p


def test_small_text_files_are_stored_smaller_and_restored_byte_for_byte(tmp_path: Path) -> None:
    src = small_files(tmp_path / "src", 600, seed=1)
    plain = _repo(tmp_path / "plain", dictionaries=False)
    backup_paths(plain, [str(src)])
    repo = _repo(tmp_path / "repo")
    snap = backup_paths(repo, [str(src)]).snapshot

    assert _stored(repo) < 0.93 * _stored(plain), (_stored(repo), _stored(plain))
    assert snap.dictionary is not None
    assert plain.find_snapshot("latest").dictionary is None
    # every pack with blobs compressed with the dictionary holds it, first
    packs = _packs(repo)
    with_dict = [blobs for blobs in packs.values() if any(b.flags & FLAG_DICT for b in blobs)]
    assert with_dict
    for blobs in with_dict:
        assert blobs[0].type == BLOB_DICT
        assert blobs[0].id.hex() == snap.dictionary
    assert not any(b.flags & FLAG_DICT for blobs in _packs(plain).values() for b in blobs)

    fresh = Repository.open(open_storage(repo.location), PASSWORD)
    assert (
        restore_snapshot(fresh, fresh.find_snapshot("latest"), str(tmp_path / "out")).errors == []
    )
    _same(src, tmp_path / "out")
    assert verify_repository(fresh, read_data_percent=100).ok


def test_a_backup_without_enough_small_files_trains_no_dictionary(tmp_path: Path) -> None:
    src = small_files(tmp_path / "src", 20, seed=2)
    repo = _repo(tmp_path / "repo")
    assert backup_paths(repo, [str(src)]).snapshot.dictionary is None
    assert not any(b.type == BLOB_DICT for blobs in _packs(repo).values() for b in blobs)


def test_the_next_backup_uses_its_parents_dictionary(tmp_path: Path) -> None:
    src = small_files(tmp_path / "src", 300, seed=3)
    repo = _repo(tmp_path / "repo")
    first = backup_paths(repo, [str(src)]).snapshot
    small_files(src, 300, seed=4)  # new files beside the old
    second = backup_paths(repo, [str(src)]).snapshot
    assert second.parent == first.id
    assert second.dictionary == first.dictionary is not None
    ids = {b.id for blobs in _packs(repo).values() for b in blobs if b.type == BLOB_DICT}
    assert ids == {bytes.fromhex(first.dictionary)}


def test_excluded_files_never_reach_the_dictionary(tmp_path: Path) -> None:
    marker = b"TOPSECRET-6f1d2a-" * 8
    src = small_files(tmp_path / "src", 200, seed=5)
    small_files(src / "keys", 200, seed=6, marker=marker)

    def dictionary(exclude: list[str], name: str) -> bytes:
        repo = _repo(tmp_path / name)
        snap = backup_paths(repo, [str(src)], BackupOptions(exclude=exclude)).snapshot
        assert snap.dictionary is not None
        return repo.dictionary(bytes.fromhex(snap.dictionary)).data

    assert b"TOPSECRET-6f1d2a" in dictionary([], "all")  # the check below can fail
    assert b"TOPSECRET-6f1d2a" not in dictionary(["keys"], "without")


def test_prune_repacks_blobs_with_their_dictionary(tmp_path: Path) -> None:
    src = small_files(tmp_path / "src", 400, seed=7)
    repo = _repo(tmp_path / "repo")
    backup_paths(repo, [str(src)], BackupOptions(source="vol"))
    for path in sorted((src / "d00").iterdir()) + sorted((src / "d01").iterdir()):
        path.unlink()
    small_files(src, 100, seed=8)
    backup_paths(repo, [str(src)], BackupOptions(source="vol"))
    forget_snapshots(repo, RetentionPolicy(keep_last=1))

    options = PruneOptions(grace=timedelta(0), max_unused=0)
    dry = prune_repository(repo, PruneOptions(grace=timedelta(0), max_unused=0, dry_run=True))
    report = prune_repository(repo, options)
    assert report.packs_repacked > 0
    assert report.bytes_freed == dry.bytes_freed  # the estimate packs dictionaries too
    fresh = Repository.open(open_storage(repo.location), PASSWORD)
    for blobs in _packs(fresh).values():
        if any(b.flags & FLAG_DICT for b in blobs):
            assert blobs[0].type == BLOB_DICT
    assert verify_repository(fresh, read_data_percent=100).ok
    assert (
        restore_snapshot(fresh, fresh.find_snapshot("latest"), str(tmp_path / "out")).errors == []
    )
    _same(src, tmp_path / "out")
    again = prune_repository(fresh, options)  # the dictionaries count as used
    assert (again.packs_deleted, again.packs_repacked) == (0, 0)


def _damage_dictionary(repo: Repository, pack: str, blobs: list[PackBlob]) -> None:
    path = Path(repo.location.removeprefix("file://")) / pack_object_name(pack)
    data = bytearray(path.read_bytes())
    data[blobs[0].offset + 40] ^= 0xFF
    path.chmod(0o600)
    path.write_bytes(bytes(data))


def test_a_damaged_dictionary_is_reported_and_another_copy_stands_in(tmp_path: Path) -> None:
    src = small_files(tmp_path / "src", 800, seed=9)
    repo = _repo(tmp_path / "repo")
    backup_paths(repo, [str(src)])
    with_dict = {
        p: blobs for p, blobs in _packs(repo).items() if any(b.flags & FLAG_DICT for b in blobs)
    }
    assert len(with_dict) >= 2, "the test needs two packs holding the dictionary"
    damaged = sorted(with_dict)[-1]
    _damage_dictionary(repo, damaged, with_dict[damaged])

    fresh = Repository.open(open_storage(repo.location), PASSWORD)
    report = verify_repository(fresh, read_data_percent=100)
    name = pack_object_name(damaged)
    assert "dictionary is damaged" in report.objects[name]
    assert not report.damaged  # every blob still reads, through another copy
    out = tmp_path / "out"
    assert restore_snapshot(fresh, fresh.find_snapshot("latest"), str(out)).errors == []
    _same(src, out)

    # repair index --read-data salvages the damaged pack's blobs with a good copy
    repaired = repair_index(fresh, read_data=True)
    assert damaged in repaired.packs_damaged
    assert repaired.blobs_salvaged > 0
    again = Repository.open(open_storage(repo.location), PASSWORD)
    for blobs in _packs(again).values():
        if any(b.flags & FLAG_DICT for b in blobs):
            assert blobs[0].type == BLOB_DICT


def test_the_only_copy_of_a_dictionary_damaged_fails_its_blobs_by_name(tmp_path: Path) -> None:
    src = small_files(tmp_path / "src", 100, seed=10)
    repo = _repo(tmp_path / "repo", dictionaries=True)
    backup_paths(repo, [str(src)])
    with_dict = {
        p: blobs for p, blobs in _packs(repo).items() if any(b.flags & FLAG_DICT for b in blobs)
    }
    assert len(with_dict) == 1
    [(pack, blobs)] = with_dict.items()
    _damage_dictionary(repo, pack, blobs)
    fresh = Repository.open(open_storage(repo.location), PASSWORD)
    report = verify_repository(fresh, read_data_percent=100)
    assert not report.ok
    assert report.damaged
    result = restore_snapshot(fresh, fresh.find_snapshot("latest"), str(tmp_path / "out"))
    assert result.errors
    assert all(pack in e["error"] for e in result.errors), result.errors[:3]


def test_a_repository_made_before_dictionaries_stores_none(tmp_path: Path) -> None:
    """A repository made before dictionaries (compression ``zstd``) is written as before."""
    src = small_files(tmp_path / "src", 200, seed=11)
    repo = _repo(tmp_path / "repo", dictionaries=False)
    assert b'"zstd"' in repo.storage.get("config")
    assert backup_paths(repo, [str(src)]).snapshot.dictionary is None
    assert not any(b.flags & FLAG_DICT for blobs in _packs(repo).values() for b in blobs)


def test_a_replica_holds_every_packs_dictionary_and_restores_alone(tmp_path: Path) -> None:
    src = small_files(tmp_path / "src", 800, seed=12)
    repo = _repo(tmp_path / "repo")
    backup_paths(repo, [str(src)])
    assert sum(any(b.flags & FLAG_DICT for b in blobs) for blobs in _packs(repo).values()) >= 2

    replicate(repo, open_storage((tmp_path / "site").as_uri()), PASSWORD)
    shutil.rmtree(tmp_path / "repo")  # the primary is gone
    replica = Repository.open(open_storage((tmp_path / "site").as_uri()), PASSWORD)
    for pack in replica.index.packs():  # the site's index names each pack's dictionary
        blobs = parse_pack(replica.aead, replica.storage.get(pack_object_name(pack)), pack)
        if any(b.flags & FLAG_DICT for b in blobs):
            assert replica.index.dictionary_of(pack) == blobs[0]
    assert verify_repository(replica, read_data_percent=100).ok
    out = tmp_path / "out"
    assert restore_snapshot(replica, replica.find_snapshot("latest"), str(out)).errors == []
    _same(src, out)
