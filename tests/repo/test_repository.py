"""Opening repositories: passwords and keys, versions, tampering, locks, the index."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from safehold.repo import (
    BLOB_DATA,
    BlobEncoder,
    BlobWriter,
    Config,
    CorruptObject,
    LockConflict,
    Repository,
    RepositoryExists,
    RepositoryLock,
    RepositoryNotFound,
    UnsupportedRepository,
    WrongPassword,
    list_locks,
    unlock,
)
from safehold.repo.crypto import AAD_LOCK, object_hash, seal
from safehold.repo.index import IndexFile
from safehold.repo.pack import PackBlob
from safehold.storage import ObjectInfo, Storage, open_storage
from safehold.storage.wrappers import ForwardingStorage

PW = "first password"


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return open_storage((tmp_path / "repo").as_uri())


def _init(storage: Storage) -> Repository:
    return Repository.init(storage, PW)


def test_a_wrong_password_is_refused_clearly(storage: Storage) -> None:
    _init(storage)
    with pytest.raises(WrongPassword, match="SAFEHOLD_PASSWORD or --password-file"):
        Repository.open(storage, "not it")


def test_no_repository_says_how_to_create_one(storage: Storage) -> None:
    with pytest.raises(RepositoryNotFound, match="safehold repo init"):
        Repository.open(storage, PW)


def test_init_twice_is_refused(storage: Storage) -> None:
    _init(storage)
    with pytest.raises(RepositoryExists):
        _init(storage)


def test_keys_can_be_added_listed_and_removed_without_touching_data(storage: Storage) -> None:
    repo = _init(storage)
    data_before = sorted(i.name for i in storage.list("data/"))
    new_id = repo.add_key("second password")
    assert len(repo.list_keys()) == 2
    again = Repository.open(storage, "second password")
    assert again.keys == repo.keys
    # change the password: add the new one, remove the old one
    old_id = repo.key_name.rsplit("/", 1)[-1]
    again.remove_key(old_id[:12])
    with pytest.raises(WrongPassword):
        Repository.open(storage, PW)
    assert Repository.open(storage, "second password").config.id == repo.config.id
    assert [k.id for k in again.list_keys()] == [new_id]
    with pytest.raises(Exception, match="last key"):
        again.remove_key(new_id)
    assert sorted(i.name for i in storage.list("data/")) == data_before


def test_an_unknown_format_version_is_refused_before_any_password(storage: Storage) -> None:
    _init(storage)
    doc = json.loads(storage.get("config"))
    doc["version"] = 7
    storage.put("config", json.dumps(doc).encode())
    with pytest.raises(UnsupportedRepository, match=r"version 7 .* upgrade safehold"):
        Repository.read_config(storage)
    with pytest.raises(UnsupportedRepository):
        Repository.open(storage, "any password at all")


def test_an_unknown_algorithm_is_refused(storage: Storage) -> None:
    _init(storage)
    doc = json.loads(storage.get("config"))
    doc["cipher"] = "rot13"
    storage.put("config", json.dumps(doc).encode())
    with pytest.raises(UnsupportedRepository, match="cipher algorithm 'rot13'"):
        Repository.open(storage, PW)


def test_a_tampered_config_is_detected(storage: Storage) -> None:
    _init(storage)
    doc = json.loads(storage.get("config"))
    doc["chunker"]["avg_size"] = 262144  # valid, but not what the keys sealed
    storage.put("config", json.dumps(doc).encode())
    with pytest.raises(CorruptObject, match="config does not match"):
        Repository.open(storage, PW)


def test_config_records_algorithms_and_chunker_by_name(storage: Storage) -> None:
    _init(storage)
    doc = json.loads(storage.get("config"))
    assert doc["format"] == "safehold-repository"
    assert doc["version"] == 2
    assert doc["cipher"] == "aes-256-gcm"
    assert doc["compression"]["algorithm"] == "zstd-dict"  # zstd, with dictionaries
    assert doc["chunker"]["algorithm"] == "fastcdc-2020"
    assert doc["chunker"]["avg_size"] > 0
    assert "key" not in json.dumps(doc).lower().replace("keyed", "")


def test_every_object_is_named_by_the_hash_of_its_bytes(storage: Storage, tmp_path: Path) -> None:
    repo = _init(storage)
    writer = BlobWriter(repo, pack_size=10_000)
    enc = BlobEncoder(repo.aead, 3)
    for _ in range(5):
        data = os.urandom(4000)
        blob_id = repo.keys.blob_id(data)
        assert writer.claim(blob_id)
        sealed, flags = enc.encode(BLOB_DATA, blob_id, data)
        writer.add(BLOB_DATA, blob_id, sealed, flags, len(data))
    writer.flush()
    writer.close()
    names = [i.name for i in storage.list("")]
    assert any(n.startswith("data/") for n in names)
    assert any(n.startswith("index/") for n in names)
    for name in names:
        if name == "config":
            continue
        assert name.rsplit("/", 1)[-1] == object_hash(storage.get(name)), name


def test_superseded_index_objects_are_ignored(storage: Storage) -> None:
    repo = _init(storage)
    old_id, _ = repo.write_index(IndexFile())
    repo.write_index(IndexFile(supersedes=[old_id]))
    load = Repository.open(storage, PW).index_load
    assert old_id not in load.loaded
    assert len(load.loaded) == 1


@pytest.mark.parametrize("order", ["listed first", "listed last"])
def test_a_superseded_index_object_leaves_nothing_in_the_index(
    storage: Storage, order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Index objects are merged as they are read: one that supersedes an object merged
    before it (listed earlier) must take that object's entries out again."""
    repo = _init(storage)
    stale, fresh = os.urandom(32), os.urandom(32)
    old_id, _ = repo.write_index(IndexFile({"a" * 64: [PackBlob(BLOB_DATA, 0, 0, 10, 10, stale)]}))
    new_id, _ = repo.write_index(
        IndexFile({"b" * 64: [PackBlob(BLOB_DATA, 0, 0, 20, 20, fresh)]}, supersedes=[old_id])
    )
    listed = storage.list
    first = old_id if order == "listed first" else new_id

    def in_order(prefix: str) -> list[ObjectInfo]:
        infos = list(listed(prefix))
        return sorted(infos, key=lambda i: not i.name.endswith(first))

    monkeypatch.setattr(storage, "list", in_order)
    opened = Repository.open(storage, PW)
    assert opened.index_load.loaded == [new_id]
    assert opened.index.lookup(stale) is None
    loc = opened.index.lookup(fresh)
    assert loc is not None
    assert (loc.pack, loc.stored) == ("b" * 64, 20)


def test_shared_locks_coexist_and_exclusive_locks_conflict(storage: Storage) -> None:
    repo = _init(storage)
    other = Repository.open(storage, PW)
    with RepositoryLock(repo, exclusive=False, operation="backup"):
        with RepositoryLock(other, exclusive=False, operation="restore"):
            assert len(list_locks(repo)) == 2
        with pytest.raises(LockConflict, match=r"shared lock by backup .*'safehold repo unlock'"):
            RepositoryLock(other, exclusive=True, operation="prune").acquire()
    with (
        RepositoryLock(repo, exclusive=True, operation="prune"),
        pytest.raises(LockConflict, match="exclusive lock by prune"),
    ):
        RepositoryLock(other, exclusive=False, operation="backup").acquire()
    assert list_locks(repo) == []


def test_taking_a_lock_reads_only_the_others(storage: Storage) -> None:
    """Each command takes a lock: it reads the others' (to see a conflict), never its own
    back (a GET per command on an object store, for what it already knows)."""
    read: list[str] = []

    class Reads(ForwardingStorage):
        def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
            read.append(name)
            return super().get(name, offset, length)

    _init(storage)
    repo = Repository.open(Reads(storage), PW)
    read.clear()
    with RepositoryLock(repo, exclusive=False, operation="backup") as first:
        assert [n for n in read if n.startswith("locks/")] == []
        with RepositoryLock(repo, exclusive=False, operation="restore"):
            assert [n for n in read if n.startswith("locks/")] == [first.name]


def _stale_lock(repo: Repository, exclusive: bool) -> str:
    doc = {
        "exclusive": exclusive,
        "time": (datetime.now(UTC) - timedelta(hours=2)).isoformat(),
        "hostname": "crashed-job",
        "pid": 1,
        "operation": "backup",
        "nonce": "x",
    }
    data = seal(repo.aead, AAD_LOCK, json.dumps(doc).encode())
    name = f"locks/{object_hash(data)}"
    repo.storage.create(name, data)
    return name


def test_a_stale_lock_of_a_crashed_job_blocks_nothing_and_unlock_removes_it(
    storage: Storage,
) -> None:
    repo = _init(storage)
    stale = _stale_lock(repo, exclusive=True)
    with RepositoryLock(repo, exclusive=True, operation="prune"):
        pass
    removed = unlock(repo)
    assert [lock.name for lock in removed] == [stale]
    assert list_locks(repo) == []


def test_a_lock_of_a_dead_process_on_this_host_is_stale(storage: Storage) -> None:
    repo = _init(storage)
    lock = RepositoryLock(repo, exclusive=True, operation="prune").acquire()
    lock._stop.set()  # simulate the holder vanishing: keep its object, forget the process
    info = next(iter(list_locks(repo)))
    assert not info.stale()
    dead = type(info)(info.name, True, info.time, info.hostname, 2**22 + 12345, "prune")
    assert dead.stale()
    lock.release()


def test_config_cannot_be_created_where_keys_exist(storage: Storage) -> None:
    _init(storage)
    storage.delete("config")
    with pytest.raises(RepositoryExists):
        Repository.init(storage, PW, Config.new())
