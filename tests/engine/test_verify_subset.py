"""``verify --read-data-subset K/N``: the N parts are disjoint, together read every pack
once, are the same from run to run, and a damaged pack is found by the part holding it."""

from __future__ import annotations

import os
from pathlib import Path

from safehold.cli.main import main
from safehold.engine import BackupOptions, backup_paths, verify_repository
from safehold.engine.verify import in_subset
from safehold.repo import BLOB_DATA, Repository, pack_object_name


def test_the_parts_cover_every_pack_once_and_find_the_damage(
    repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"f{i}").write_bytes(os.urandom(400_000))
    backup_paths(repo, [str(src)], BackupOptions(source="s"))
    packs = set(repo.index.packs())
    assert len(packs) > 1
    parts = 3
    read = [verify_repository(repo, read_data_subset=(k, parts)).packs_read for k in (1, 2, 3)]
    assert sum(read) == len(packs)
    chosen = [{p for p in packs if in_subset(p, k, parts)} for k in (1, 2, 3)]
    assert set().union(*chosen) == packs
    assert sum(len(c) for c in chosen) == len(packs)
    assert read == [len(c) for c in chosen]

    # a pack of file data: damage to a tree pack fails every part (all parts read the trees)
    victim = min(loc.pack for _, loc in repo.index.items() if loc.type == BLOB_DATA)
    part = next(k for k in (1, 2, 3) if victim in chosen[k - 1])
    path = Path(repo.storage.location.removeprefix("file://")) / pack_object_name(victim)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    for k in (1, 2, 3):
        report = verify_repository(repo, read_data_subset=(k, parts))
        assert report.ok == (k != part)
    found = verify_repository(repo, read_data_subset=(part, parts)).summary()
    assert pack_object_name(victim) in found["objects"]


def test_the_cli_takes_k_of_n_and_refuses_nonsense(tmp_path: Path) -> None:
    for bad in ("0/3", "4/3", "x", "1/"):
        assert main(["verify", "--read-data-subset", bad, "--repo", str(tmp_path)]) == 2, bad
