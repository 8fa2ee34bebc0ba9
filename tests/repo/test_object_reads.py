"""Opening a repository reads its index objects in background threads (repo/object_reads.py):
the reads overlap the key's derivation and each other, and the index is the same as read
one by one, also when an object disappears between the listing and its read."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import pytest

import safehold.repo.repository as repository_module
from safehold.engine import BackupOptions, backup_paths
from safehold.repo import BLOB_DATA, Config, Repository
from safehold.repo.index import IndexFile
from safehold.repo.pack import PackBlob
from safehold.storage import NotFound, Storage, open_storage
from safehold.storage.wrappers.base import ForwardingStorage

PASSWORD = "index reads password"
OBJECTS = 12


class _SlowReads(ForwardingStorage):
    """An object store's round trip for the objects under ``prefix`` (fault injection: 20 ms
    each), with a record of when reads started and how many were in flight at once."""

    def __init__(
        self, inner: Storage, events: list[str], gone: str = "", prefix: str = "index/"
    ) -> None:
        super().__init__(inner)
        self.events = events
        self.gone = gone
        self.prefix = prefix
        self.in_flight = 0
        self.most = 0
        self.lock = threading.Lock()

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if not name.startswith(self.prefix):
            return super().get(name, offset, length)
        with self.lock:
            self.events.append(f"{self.prefix.rstrip('/')} read")
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(0.02)
            if name == self.gone:
                raise NotFound(self.location, "no such object", name=name)
            return super().get(name, offset, length)
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, dict[bytes, str], list[str]]:
    """A repository with OBJECTS index objects of one pack and blob each."""
    root = tmp_path / "repo"
    repo = Repository.init(open_storage(root.as_uri()), PASSWORD, Config.new())
    blobs: dict[bytes, str] = {}
    names: list[str] = []
    for i in range(OBJECTS):
        blob, pack = os.urandom(32), f"{i:064x}"
        digest, _ = repo.write_index(IndexFile({pack: [PackBlob(BLOB_DATA, 0, 0, 10, 10, blob)]}))
        blobs[blob] = pack
        names.append(f"index/{digest}")
    return root, blobs, names


def test_index_objects_are_read_while_the_key_is_derived_and_in_parallel(
    written: tuple[Path, dict[bytes, str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, blobs, _ = written
    events: list[str] = []
    unseal = repository_module.unseal_key

    def recorded_unseal(*args: object, **kwargs: object) -> object:
        events.append("derive starts")
        time.sleep(1.0)  # a slower machine's derivation: the reads must not wait for it
        try:
            return unseal(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            events.append("derive ends")

    monkeypatch.setattr(repository_module, "unseal_key", recorded_unseal)
    storage = _SlowReads(open_storage(root.as_uri()), events)
    repo = Repository.open(storage, PASSWORD)
    assert events.index("index read") < events.index("derive ends")
    assert storage.most >= 2
    assert len(repo.index_load.loaded) == OBJECTS
    for blob, pack in blobs.items():
        loc = repo.index.lookup(blob)
        assert loc is not None
        assert loc.pack == pack
    # Every thread is gone once the open returns (a backup forks its workers next).
    assert not [t for t in threading.enumerate() if t.name.startswith("object-reads")]


def test_an_index_object_gone_since_the_listing_is_left_out(
    written: tuple[Path, dict[bytes, str], list[str]],
) -> None:
    root, _, names = written
    gone = names[3]
    storage = _SlowReads(open_storage(root.as_uri()), [], gone=gone)
    repo = Repository.open(storage, PASSWORD)
    assert len(repo.index_load.loaded) == OBJECTS - 1
    assert gone.removeprefix("index/") not in repo.index_load.loaded
    assert repo.index_load.damaged == {}
    assert len(repo.index) == OBJECTS - 1


def test_a_wrong_password_leaves_no_read_running(
    written: tuple[Path, dict[bytes, str], list[str]],
) -> None:
    root, _, _ = written
    with pytest.raises(repository_module.WrongPassword):
        Repository.open(_SlowReads(open_storage(root.as_uri()), []), "not the password")
    assert not [t for t in threading.enumerate() if t.name.startswith("object-reads")]


def test_snapshots_are_read_in_parallel_and_an_early_stop_leaves_no_thread(
    tmp_path: Path,
) -> None:
    root = tmp_path / "repo"
    repo = Repository.init(open_storage(root.as_uri()), PASSWORD, Config.new())
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("some data")
    for i in range(10):
        backup_paths(repo, [str(src)], BackupOptions(source=f"s{i}", processes=1))
    storage = _SlowReads(open_storage(root.as_uri()), [], prefix="snapshots/")
    opened = Repository.open(storage, PASSWORD, load_index=False)
    assert sorted(s.source for s in opened.snapshots()) == sorted(f"s{i}" for i in range(10))
    assert storage.most >= 2
    first = next(opened.iter_snapshots())  # the caller stops after one
    assert first.source.startswith("s")
    gc.collect()  # (the generator is closed when dropped; this makes sure it is)
    assert not [t for t in threading.enumerate() if t.name.startswith("object-reads")]
