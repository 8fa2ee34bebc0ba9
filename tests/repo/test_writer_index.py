"""When a backup writes its index objects (format section 8, ``repo/writer.py``): once the packs
stored since the last one hold ``index_bytes`` or ``index_blobs``, and at the end. A backup
that is killed before its end leaves the packs of every index object written so far usable;
a backup that is not writes few index objects, each a request for every later reader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from safehold.repo import BLOB_DATA, BlobEncoder, BlobWriter, Repository
from safehold.repo.index import decode_index
from safehold.storage import Storage, open_storage

PW = "index objects"


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return open_storage((tmp_path / "repo").as_uri())


def _repo(storage: Storage) -> Repository:
    return Repository.init(storage, PW)


def _write(writer: BlobWriter, repo: Repository, count: int, size: int) -> list[bytes]:
    enc = BlobEncoder(repo.aead, 3)
    ids = []
    for _ in range(count):
        data = os.urandom(size)  # incompressible: every blob stores about ``size`` bytes
        blob_id = repo.keys.blob_id(data)
        assert writer.claim(blob_id)
        sealed, flags = enc.encode(BLOB_DATA, blob_id, data)
        writer.add(BLOB_DATA, blob_id, sealed, flags, len(data))
        ids.append(blob_id)
    return ids


def _index_objects(repo: Repository) -> list[dict[str, int]]:
    """Per index object: its packs, their blobs and their stored bytes."""
    sizes = {i.name.rsplit("/", 1)[-1]: i.size for i in repo.storage.list("data/")}
    found = []
    for info in repo.storage.list("index/"):
        index = decode_index(repo.aead, repo.storage.get(info.name), info.name)
        found.append(
            {
                "packs": len(index.packs),
                "blobs": sum(len(e) for e in index.packs.values()),
                "bytes": sum(sizes[p] for p in index.packs),
            }
        )
    return found


def test_an_index_object_is_written_once_the_unindexed_packs_hold_index_bytes(
    storage: Storage,
) -> None:
    repo = _repo(storage)
    # packs of two blobs (about 10 kB), uploaded one at a time, in order; an index object
    # once 25 kB of them are stored: after every third pack
    writer = BlobWriter(repo, max_uploads=1, pack_size=10_000, index_bytes=25_000)
    _write(writer, repo, 20, 5_000)
    writer.close()  # every full pack uploaded, but no flush: as a backup killed here

    objects = _index_objects(repo)
    assert sum(1 for _ in storage.list("data/")) == 10
    assert [o["packs"] for o in objects] == [3, 3, 3], objects
    assert all(o["bytes"] >= 25_000 for o in objects), objects


def test_an_index_object_is_written_once_the_unindexed_packs_hold_index_blobs(
    storage: Storage,
) -> None:
    repo = _repo(storage)
    writer = BlobWriter(repo, max_uploads=1, pack_size=10_000, index_blobs=50)
    _write(writer, repo, 114, 500)  # 6 packs of 19 blobs (19 sealed blobs fill 10 kB)
    writer.close()

    # a third pack would make 57: the first two are indexed before it joins them
    assert [o["blobs"] for o in _index_objects(repo)] == [38, 38]


def test_the_end_of_a_backup_indexes_every_pack_left(storage: Storage) -> None:
    repo = _repo(storage)
    writer = BlobWriter(repo, max_uploads=1, pack_size=10_000, index_bytes=25_000)
    _write(writer, repo, 21, 5_000)  # 10 full packs and one of a single blob
    writer.flush()
    writer.close()

    objects = _index_objects(repo)
    assert sorted(o["packs"] for o in objects) == [2, 3, 3, 3], objects  # listed by name
    assert sum(1 for _ in storage.list("data/")) == 11


def test_blobs_of_an_index_object_written_before_a_crash_are_reused(storage: Storage) -> None:
    """What a killed backup leaves: the packs that an index object names are in the
    repository for the next backup, which stores their blobs no second time; the packs
    after the last index object are stored again."""
    repo = _repo(storage)
    writer = BlobWriter(repo, max_uploads=1, pack_size=10_000, index_bytes=25_000)
    ids = _write(writer, repo, 20, 5_000)
    writer.close()  # killed before the end

    again = Repository.open(storage, PW)
    reused = [blob_id in again.index for blob_id in ids]
    assert reused == [True] * 18 + [False] * 2
    next_writer = BlobWriter(again, pack_size=10_000)
    assert [next_writer.claim(b) for b in ids] == [not r for r in reused]
    next_writer.close()


def test_a_backup_of_many_packs_writes_one_index_object(tmp_path: Path) -> None:
    """The real command, packs of 1 MiB: more than 16 packs of data, then one index object at
    the end (it wrote one every 8 packs before issue 19's session 27)."""
    repo, src = tmp_path / "repo", tmp_path / "src"
    env = {**os.environ, "SAFEHOLD_REPOSITORY": repo.as_uri(), "SAFEHOLD_PASSWORD": PW}
    safehold = [sys.executable, "-m", "safehold"]
    subprocess.run([*safehold, "repo", "init", "--pack-size", "1"], env=env, check=True)
    src.mkdir()
    for i in range(6):
        (src / f"f{i}").write_bytes(os.urandom(4 << 20))
    subprocess.run(
        [*safehold, "backup", "--quiet", str(src)], env=env, check=True, capture_output=True
    )

    opened = Repository.open(open_storage(repo.as_uri()), PW)
    packs = sum(1 for _ in opened.storage.list("data/"))
    assert packs >= 16  # the old rule wrote an index object every 8 packs
    objects = _index_objects(opened)
    assert len(objects) == 1
    assert objects[0]["packs"] == packs
