"""The storage conformance suite: every guarantee in ``safehold.storage.base``, per provider.

Each test takes the ``backend`` fixture and so runs on the filesystem, SeaweedFS (S3),
fake-gcs-server (GCS) and Azurite (Azure), and on SeaweedFS through the bandwidth throttle
with a limit set (``s3-throttled``); ids name the backend (``test_roundtrip[s3-small]``).
Server gaps are strict expected failures for that server only (``GAPS`` in conftest.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from safehold.storage import (
    AlreadyExists,
    FileBody,
    NotFound,
    ObjectInfo,
    PermissionDenied,
    Storage,
)
from safehold.storage.base import innermost

MIB = 1024 * 1024
LISTING_OBJECTS = 2500


def payload(size: int, seed: str = "") -> bytes:
    """Deterministic, incompressible-looking bytes of ``size``."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.blake2b(f"{seed}:{counter}".encode(), digest_size=64).digest()
        counter += 1
    return bytes(out[:size])


def threshold(storage: Storage) -> int:
    """Above this size the provider uploads in parts (0 for the filesystem)."""
    return int(getattr(storage, "multipart_threshold", 0))


def names(storage: Storage, prefix: str = "") -> list[str]:
    return [info.name for info in storage.list(prefix)]


def race(workers: int, action: Callable[[int], Any]) -> list[Any]:
    """Run ``action(i)`` in ``workers`` threads released at the same instant; results or errors."""
    barrier = threading.Barrier(workers)

    def run(i: int) -> Any:
        barrier.wait()
        try:
            return action(i)
        except Exception as exc:  # noqa: BLE001 - the race's outcome is what we assert
            return exc

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, range(workers)))


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("size", ["empty", "small", "multipart"])
def test_roundtrip(backend: Any, size: str) -> None:
    storage = backend.open()
    length = {"empty": 0, "small": 4097, "multipart": 2 * threshold(storage) + 3 * MIB + 11}[size]
    data = payload(length, size)
    storage.put("obj", data)
    assert storage.get("obj") == data
    assert storage.stat("obj") == ObjectInfo("obj", length)
    assert list(storage.list()) == [ObjectInfo("obj", length)]


@pytest.mark.parametrize("staged", ["file", "memory"])
@pytest.mark.parametrize("size", ["empty", "pack", "multipart"])
def test_a_file_body_stores_the_files_bytes(
    backend: Any, size: str, staged: str, tmp_path: Path
) -> None:
    """A pack staged in a file (or in memory, where no temporary file could be made) is
    stored as those bytes by put and create, and the file stays usable for the caller."""
    storage = backend.open()
    length = {"empty": 0, "pack": 16 * MIB + 12345, "multipart": 2 * threshold(storage) + 77}
    data = payload(length[size], size)
    file: BinaryIO = (
        open(tmp_path / "staged", "w+b")  # noqa: SIM115 - closed below, as the writer does
        if staged == "file"
        else io.BytesIO()
    )
    with file:
        file.write(data)
        file.seek(7)  # where the caller left it does not matter
        storage.put("put", FileBody(file))
        storage.create("create", FileBody(file))
    assert storage.get("put") == data
    assert storage.get("create") == data
    assert storage.stat("create") == ObjectInfo("create", len(data))


def test_put_replaces_whole_object(backend: Any) -> None:
    storage = backend.open()
    storage.put("obj", payload(5000, "old"))
    storage.put("obj", b"new")
    assert storage.get("obj") == b"new"
    assert storage.stat("obj").size == 3


@pytest.mark.parametrize(
    ("offset", "length", "expect"),
    [
        (0, 10, slice(0, 10)),
        (100, 1, slice(100, 101)),
        (1000, None, slice(1000, None)),
        (4000, 500, slice(4000, 4096)),  # runs past the end: the bytes up to the end
        (4095, 10, slice(4095, 4096)),
        (4096, 10, slice(4096, 4096)),  # starts at the end: nothing
        (9000, 10, slice(4096, 4096)),  # starts past the end: nothing
        (0, 0, slice(0, 0)),
    ],
    ids=["head", "one-byte", "to-end", "past-end", "last-byte", "at-end", "beyond", "zero"],
)
def test_get_range(backend: Any, offset: int, length: int | None, expect: slice) -> None:
    storage = backend.open()
    data = payload(4096, "range")
    storage.put("obj", data)
    assert storage.get("obj", offset, length) == data[expect]


@pytest.mark.parametrize(
    ("offset", "length", "expect"),
    [
        (0, None, slice(0, None)),
        (100, 3 * MIB, slice(100, 3 * MIB + 100)),
        (MIB - 1, 2, slice(MIB - 1, MIB + 1)),
        (4 * MIB - 10, 100, slice(4 * MIB - 10, None)),  # runs past the end
        (4 * MIB, 10, slice(4 * MIB, 4 * MIB)),  # starts at the end: nothing
        (5 * MIB, None, slice(4 * MIB, 4 * MIB)),  # starts past the end: nothing
        (0, 0, slice(0, 0)),
    ],
    ids=["whole", "inside", "across-a-piece", "past-end", "at-end", "beyond", "zero"],
)
def test_get_stream_gives_what_get_gives(
    backend: Any, offset: int, length: int | None, expect: slice
) -> None:
    storage = backend.open()
    data = payload(4 * MIB, "stream")
    storage.put("obj", data)
    pieces = list(storage.get_stream("obj", offset, length))
    assert b"".join(pieces) == data[expect] == storage.get("obj", offset, length)
    assert all(pieces), "no empty pieces"


def test_a_stream_closed_early_leaves_the_storage_working(backend: Any) -> None:
    storage = backend.open()
    data = payload(3 * MIB, "early")
    storage.put("obj", data)
    for _ in range(40):  # more than a connection pool holds, were they not given back
        stream = storage.get_stream("obj")
        assert next(stream)
        stream.close()
    assert storage.get("obj") == data


def test_get_range_of_multipart_object(backend: Any) -> None:
    storage = backend.open()
    part = max(threshold(storage), MIB)
    data = payload(2 * part + 1000, "big-range")
    storage.put("big", data)
    # A range that spans the boundary between the first and the second part.
    assert storage.get("big", part - 100, 200) == data[part - 100 : part + 100]
    assert storage.get("big", 2 * part, None) == data[2 * part :]


# ---------------------------------------------------------------- missing objects


def test_missing_object_is_not_found(backend: Any) -> None:
    storage = backend.open()
    for call in (
        lambda: storage.get("missing"),
        lambda: storage.get("missing", 10, 10),
        lambda: storage.get("missing", 0, 0),
        lambda: b"".join(storage.get_stream("missing")),
        lambda: b"".join(storage.get_stream("missing", 10, 10)),
        lambda: storage.stat("missing"),
    ):
        with pytest.raises(NotFound) as caught:
            call()
        assert caught.value.location == storage.location
        assert storage.location in str(caught.value)
        assert "missing" in str(caught.value)


def test_delete_missing_object_is_not_an_error(backend: Any) -> None:
    storage = backend.open()
    storage.delete("never-existed")
    storage.put("obj", b"x")
    storage.delete("obj")
    storage.delete("obj")
    with pytest.raises(NotFound):
        storage.get("obj")
    assert names(storage) == []


# ---------------------------------------------------------------- listing


_MANY: dict[str, str] = {}  # backend -> the prefix that holds the listing objects


@pytest.fixture
def many(backend: Any) -> tuple[Storage, list[str]]:
    """A storage holding LISTING_OBJECTS small objects, written by 16 threads once per backend."""
    wanted = sorted(f"data/{i % 16:02x}/{i:06d}" for i in range(LISTING_OBJECTS))
    if backend.backend in _MANY:
        return backend.open(_MANY[backend.backend]), wanted
    storage = backend.open()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: storage.put(n, n.encode()), wanted))
    _MANY[backend.backend] = storage.location.rsplit("/", 1)[1]
    return storage, wanted


def test_list_thousands_sorted_and_complete(many: tuple[Storage, list[str]]) -> None:
    storage, wanted = many
    listed = list(storage.list())
    assert [i.name for i in listed] == wanted
    assert all(i.size == len(i.name) for i in listed)
    assert names(storage, "data/0a/") == [n for n in wanted if n.startswith("data/0a/")]
    assert names(storage, "data/0a/00001") == [n for n in wanted if n.startswith("data/0a/00001")]


def test_list_is_a_lazy_stream(many: tuple[Storage, list[str]]) -> None:
    storage, wanted = many
    stream = storage.list()
    assert isinstance(stream, Iterator)
    assert next(stream).name == wanted[0]  # the first page arrives before the rest is fetched
    assert len(list(stream)) == len(wanted) - 1


def test_list_paginates(backend: Any) -> None:
    """Small pages: names across page boundaries are neither lost nor repeated."""
    prefix = f"pages-{os.urandom(4).hex()}"
    overrides = {} if backend.backend == "filesystem" else {"page_size": "7"}
    storage = backend.open(prefix, **overrides)
    wanted = sorted(f"p/{i:03d}" for i in range(60))
    for name in wanted:
        storage.put(name, b"")
    assert names(storage) == wanted
    assert names(storage, "p/01") == [n for n in wanted if n.startswith("p/01")]


def test_list_prefix_is_a_string_prefix(backend: Any) -> None:
    storage = backend.open()
    for name in ("data/a", "data/ab", "data/ac/b", "data/b", "datum"):
        storage.put(name, b"1")
    assert names(storage, "data/a") == ["data/a", "data/ab", "data/ac/b"]
    assert names(storage, "data/") == ["data/a", "data/ab", "data/ac/b", "data/b"]
    assert names(storage, "dat") == ["data/a", "data/ab", "data/ac/b", "data/b", "datum"]
    assert names(storage, "nothing") == []


def test_a_name_may_also_prefix_other_names(backend: Any) -> None:
    storage = backend.open()
    storage.put("data/a", b"1")
    storage.put("data/a/b", b"2")
    assert names(storage, "data/a") == ["data/a", "data/a/b"]
    assert storage.get("data/a") == b"1"


def test_prefix_isolation(backend: Any) -> None:
    """Locations whose prefixes share a beginning see only their own objects."""
    base = f"iso-{os.urandom(4).hex()}"
    outer, sibling, inner = (
        backend.open(base),
        backend.open(base + "2"),
        backend.open(base + "/inner"),
    )
    outer.put("x", b"outer")
    sibling.put("x", b"sibling")
    inner.put("y", b"inner")
    assert names(outer) == ["inner/y", "x"]
    assert names(sibling) == ["x"]
    assert names(inner) == ["y"]
    assert outer.get("x") == b"outer"
    assert sibling.get("x") == b"sibling"
    assert outer.get("inner/y") == b"inner"
    with pytest.raises(NotFound):
        inner.get("x")
    sibling.delete("x")
    assert outer.get("x") == b"outer"


# ---------------------------------------------------------------- put-if-absent


def test_create_refuses_existing(backend: Any) -> None:
    storage = backend.open()
    storage.create("lock", b"first")
    with pytest.raises(AlreadyExists) as caught:
        storage.create("lock", b"second")
    assert "lock" in str(caught.value)
    assert storage.location in str(caught.value)
    assert storage.get("lock") == b"first"


def test_create_large_refuses_existing(backend: Any) -> None:
    storage = backend.open()
    size = threshold(storage) + MIB + 5
    storage.create("pack", payload(size, "first"))
    with pytest.raises(AlreadyExists):
        storage.create("pack", payload(size, "second"))
    assert storage.get("pack") == payload(size, "first")


def test_create_race_has_exactly_one_winner(backend: Any) -> None:
    storage = backend.open()
    for round_ in range(3):
        name = f"locks/{round_}"
        outcomes = race(8, lambda i, n=name: storage.create(n, f"writer-{i}".encode()))
        winners = [i for i, out in enumerate(outcomes) if out is None]
        losers = [out for out in outcomes if isinstance(out, AlreadyExists)]
        assert len(winners) == 1, outcomes
        assert len(losers) == 7, outcomes
        assert storage.get(name) == f"writer-{winners[0]}".encode()


# ---------------------------------------------------------------- names


UNICODE_NAMES = [
    "ünïcødé/名前/ファイル.bin",
    "emoji/😀-🚀",
    "spaces and symbols/a b+c=d,e;f@g!h~i(j)k'l",
    "percent/%20%2F%zz",
    "mixed/Ünïcode-Ω-ß",
]
DEEP_NAME = "/".join(f"level{i:02d}" for i in range(40)) + "/leaf"


@pytest.mark.parametrize("name", [*UNICODE_NAMES, DEEP_NAME], ids=lambda n: n[:12])
def test_unusual_names_roundtrip(backend: Any, name: str) -> None:
    storage = backend.open()
    data = name.encode() * 3
    storage.put(name, data)
    assert storage.get(name) == data
    assert storage.stat(name).size == len(data)
    assert names(storage) == [name]
    assert names(storage, name[:5]) == [name]
    storage.delete(name)
    assert names(storage) == []


def test_unicode_names_list_in_code_point_order(backend: Any) -> None:
    storage = backend.open()
    wanted = ["a/Z", "a/b/c", "a/z", "a/é", "a/ÿ", "a/中", "a/😀"]
    for name in reversed(wanted):
        storage.put(name, b"1")
    assert names(storage) == sorted(wanted) == wanted


# ---------------------------------------------------------------- concurrency


def test_concurrent_writers(backend: Any) -> None:
    """Writers on distinct names all land; writers on one name leave one whole payload."""
    storage = backend.open()
    size = 256 * 1024

    def write(i: int) -> None:
        for j in range(10):
            storage.put(f"own/{i}/{j}", payload(1000, f"{i}-{j}"))
        storage.put("shared", payload(size, f"shared-{i}"))

    outcomes = race(8, write)
    assert outcomes == [None] * 8
    assert len(names(storage, "own/")) == 80
    for i in range(8):
        assert storage.get(f"own/{i}/9") == payload(1000, f"{i}-9")
    shared = storage.get("shared")
    assert shared in [payload(size, f"shared-{i}") for i in range(8)]


def test_readers_never_see_partial_objects(backend: Any) -> None:
    """While one thread replaces an object, readers get one whole version or the other."""
    storage = backend.open()
    versions = [payload(300 * 1024, f"v{i}") for i in range(2)]
    storage.put("obj", versions[0])
    stop = threading.Event()
    seen: list[bytes] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(storage.get("obj"))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        for i in range(10):
            storage.put("obj", versions[(i + 1) % 2])
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert seen
    assert all(data in versions for data in seen)


# ---------------------------------------------------------------- permissions


def test_writes_with_read_only_credentials_are_denied(backend: Any) -> None:
    prefix = f"ro-{os.urandom(4).hex()}"
    writer = backend.open(prefix)
    writer.put("existing", b"data")
    reader = backend.open_read_only(prefix)
    with pytest.raises(PermissionDenied) as caught:
        reader.put("new", b"data")
    message = str(caught.value)
    assert reader.location in message
    assert "check" in message
    # A pack-sized body from its file, as a backup sends one: the refusal is still the
    # answer, even when the server answers before the body is sent and closes the link.
    with tempfile.TemporaryFile() as file:
        file.write(payload(17 * 1024 * 1024, "denied"))
        file.flush()
        with pytest.raises(PermissionDenied):
            reader.create("data/pack", FileBody(file))
    if backend.store is not None:  # the cloud credentials may still read
        assert reader.get("existing") == b"data"
        assert names(reader) == ["existing"]


# ---------------------------------------------------------------- server-side copy


def test_copy_from_copies_inside_the_service_or_writes_nothing(backend: Any) -> None:
    """``copy_from`` (wrapped, as the CLI opens storages): the object stores copy between
    two prefixes of their bucket server side, byte for byte; the filesystem has no
    server-side path and says so without writing; a missing source is NotFound."""
    from safehold.storage import open_storage

    data = payload(300_000, "copy")
    source = backend.open()
    source.put("data/ab/obj", data)
    target = open_storage(backend.url(f"copy-{os.urandom(4).hex()}"), backend.options(), wrap=True)
    backend.opened.append(target)
    copied = target.copy_from(source, "data/ab/obj")
    assert copied is (backend.store is not None)
    if copied:
        assert target.get("data/ab/obj") == data
        with pytest.raises(NotFound):
            target.copy_from(source, "data/ab/missing")
    else:
        assert names(target) == []


# ---------------------------------------------------------------- a forked process's storage


def test_reopen_gives_new_connections_and_keeps_the_objects(backend: Any) -> None:
    """What a forked restore part does first (Storage.reopen): new SDK clients, the same
    objects, location and object lock."""
    storage: Storage = backend.open()
    storage.put("kept", b"before")
    provider = innermost(storage)
    clients = {a: provider.__dict__[a] for a in getattr(provider, "connections", ())}
    lock, location = storage.object_lock, storage.location
    storage.reopen()
    assert all(provider.__dict__[a] is not old for a, old in clients.items())
    assert (storage.object_lock, storage.location) == (lock, location)
    assert storage.get("kept") == b"before"
    storage.put("after", b"x")
    assert names(storage) == ["after", "kept"]
