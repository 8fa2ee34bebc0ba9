"""Fuzzing every decoder of the repository format (issue 15, item 5): random bytes, and
valid objects with one field replaced by a hostile value or a few bytes changed, give
either a valid object or the repository's corruption error (``CorruptObject``; for the
config and keys also ``UnsupportedRepository``), never another exception, within
bounded time (hypothesis' deadline) and memory (tracemalloc's peak)."""

from __future__ import annotations

import base64
import json
import os
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from functools import partial
from typing import Any

import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from safehold.repo import Config, MasterKeys
from safehold.repo.crypto import (
    AAD_INDEX,
    AAD_KEY,
    AAD_LOCK,
    AAD_PACK_HEADER,
    AAD_SNAPSHOT,
    SUBKEY_PREFIX,
    Sealer,
    blob_aad,
    object_hash,
    open_sealed,
    seal,
)
from safehold.repo.errors import CorruptObject, UnsupportedRepository
from safehold.repo.index import IndexFile, decode_index, encode_index
from safehold.repo.keys import (
    KeyOpenFailed,
    _kek,
    make_key_object,
    parse_key_object,
    unseal_key,
)
from safehold.repo.locks import decode_lock
from safehold.repo.pack import (
    HEADER_ENTRY,
    PackBlob,
    build_pack,
    decode_blob,
    pack_key,
    parse_pack,
)
from safehold.repo.snapshot import decode_snapshot
from safehold.repo.tree import decode_tree, encode_tree

KEYS = MasterKeys.generate()
AEAD = KEYS.aead()
CONFIG = Config.new()
CONFIG_BYTES = CONFIG.to_bytes()
KEY_BYTES = make_key_object(
    "pw", KEYS, repository_id=CONFIG.id, config_hash=object_hash(CONFIG_BYTES)
)
#: Most Python memory one decode may take: far more than any of these small objects needs,
#: far less than a hostile count would allocate (4 G ids of 32 bytes).
MAX_PEAK = 32 * 1024 * 1024

FUZZ = settings(
    max_examples=150,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextmanager
def _bounded_memory(allowed: int = 0) -> Iterator[None]:
    """Fail if the block's Python allocations peak above MAX_PEAK plus ``allowed`` (what the
    object legitimately says it holds)."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
        assert peak < MAX_PEAK + allowed, f"decoding took {peak} bytes"
    finally:
        tracemalloc.stop()


def _decodes_or_corrupt(decode: Callable[[], object], *also: type[Exception]) -> None:
    expected: tuple[type[Exception], ...] = (CorruptObject, *also)
    with _bounded_memory(), suppress(*expected):
        decode()


# --------------------------------------------------------------------------- hostile values
hostile = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([2**64, -(2**63) - 1, 2**4000, -1, 0]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
        st.sampled_from(["", "a/b", "a\x00b", ".", "..", "zz" * 32, "00" * 32, "x" * 5000]),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def _replace(doc: Any, path: list[str | int], value: object) -> Any:
    """``doc`` with the value at ``path`` (keys and list indexes) replaced."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict) and isinstance(head, str):
        return {**doc, head: _replace(doc.get(head), rest, value)}
    if isinstance(doc, list) and isinstance(head, int) and doc:
        copy = list(doc)
        copy[head % len(doc)] = _replace(copy[head % len(doc)], rest, value)
        return copy
    return value


def _paths(doc: Any, prefix: list[str | int] | None = None) -> list[list[str | int]]:
    """Every path into ``doc``, the root included."""
    prefix = prefix or []
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, [*prefix, key])
    elif isinstance(doc, list):
        for k, value in enumerate(doc):
            found += _paths(value, [*prefix, k])
    return found


@st.composite
def mutated_json(draw: st.DrawFn, doc: Any, extra_keys: list[str]) -> bytes:
    """``doc`` with one value (or a new key) replaced by a hostile value, as JSON."""
    paths = _paths(doc) + [[k] for k in extra_keys]
    path = draw(st.sampled_from(paths))
    mutated = _replace(doc, path, draw(hostile))
    return json.dumps(mutated).encode()


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes changed, cut short or extended."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        k = draw(st.integers(0, len(out) - 1))
        out[k] = draw(st.integers(0, 255))
    how = draw(st.sampled_from(["flip", "cut", "extend"]))
    if how == "cut":
        del out[draw(st.integers(0, len(out))) :]
    elif how == "extend":
        out += draw(st.binary(max_size=64))
    return bytes(out)


# --------------------------------------------------------------------------- config and keys
CONFIG_DOC = json.loads(CONFIG_BYTES)
KEY_DOC = json.loads(KEY_BYTES)


@FUZZ
@given(data=mutated_json(CONFIG_DOC, ["object_lock"]) | st.binary(max_size=200))
def test_config(data: bytes) -> None:
    _decodes_or_corrupt(lambda: Config.from_bytes(data, "mem://"), UnsupportedRepository)


@FUZZ
@given(data=mutated_json(KEY_DOC, ["version"]) | st.binary(max_size=200))
def test_key_object(data: bytes) -> None:
    def decode() -> None:
        key = parse_key_object(data, "keys/x")
        # what a parsed key may cost is bounded: derive it (a wrong password is fine)
        with suppress(KeyOpenFailed):
            unseal_key(key, "another password")

    _decodes_or_corrupt(decode, UnsupportedRepository)


PAYLOAD_DOC = {
    "repository": CONFIG.id,
    "config": object_hash(CONFIG_BYTES),
    "encrypt": base64.b64encode(KEYS.encrypt).decode(),
    "id": base64.b64encode(KEYS.id_key).decode(),
    "chunker_seed": KEYS.chunker_seed,
}
KEY = parse_key_object(KEY_BYTES, "keys/x")
KEK = _kek("pw", KEY.kdf)


@settings(max_examples=60, deadline=2000)
@given(payload=mutated_json(PAYLOAD_DOC, []) | st.binary(max_size=100))
def test_key_payload_under_the_right_password(payload: bytes) -> None:
    """A key whose sealed payload opens but holds hostile values (written by someone with
    the password): still only the corruption error."""
    key = replace(KEY, sealed=seal(KEK, AAD_KEY, payload))
    _decodes_or_corrupt(lambda: unseal_key(key, "pw"))


# --------------------------------------------------------------------------- sealed JSON
SNAPSHOT_DOC = {
    "version": 1,
    "time": "2026-11-26T06:41:02.123456Z",
    "source": "pvc/web",
    "tags": ["nightly"],
    "type": "incremental",
    "parent": "ab" * 32,
    "hostname": "h",
    "paths": ["/data"],
    "tree": "cd" * 32,
    "program": "safehold",
    "summary": {"files_new": 1, "duration_s": 1.5, "errors": 0},
    "meta": {"source.kind": "volume"},
}
LOCK_DOC = {
    "exclusive": False,
    "time": "2026-11-26T06:41:02Z",
    "hostname": "h",
    "pid": 12,
    "username": "u",
    "operation": "backup",
    "nonce": "00",
}


@FUZZ
@given(data=mutated_json(SNAPSHOT_DOC, ["summary", "meta", "parent"]) | st.binary(max_size=300))
def test_snapshot(data: bytes) -> None:
    sealed = seal(AEAD, AAD_SNAPSHOT, data)
    _decodes_or_corrupt(lambda: decode_snapshot(AEAD, sealed, "snapshots/x"))


@FUZZ
@given(data=mutated_bytes(seal(AEAD, AAD_SNAPSHOT, json.dumps(SNAPSHOT_DOC).encode())))
def test_snapshot_bytes(data: bytes) -> None:
    _decodes_or_corrupt(lambda: decode_snapshot(AEAD, data, "snapshots/x"))


@FUZZ
@given(data=mutated_json(LOCK_DOC, []) | st.binary(max_size=200))
def test_lock(data: bytes) -> None:
    sealed = seal(AEAD, AAD_LOCK, data)

    def decode() -> None:
        lock = decode_lock(AEAD, sealed, "locks/x")
        lock.stale()  # a decoded lock is usable: no naive time, no pid os.kill refuses
        lock.describe()

    _decodes_or_corrupt(decode)


# --------------------------------------------------------------------------- trees
NODE = {
    "name": "file.txt",
    "type": "file",
    "mode": 0o644,
    "uid": 1000,
    "gid": 1000,
    "user": "u",
    "group": "g",
    "mtime_ns": 1,
    "atime_ns": 2,
    "ctime_ns": 3,
    "inode": 4,
    "dev": 5,
    "links": 1,
    "size": 10,
    "content": ["ab" * 32],
}
TREE_DOC = {
    "nodes": [
        NODE,
        {**NODE, "name": "dir", "type": "dir", "subtree": "cd" * 32, "content": None},
        {**NODE, "name": "link", "type": "symlink", "target": "file.txt", "content": None},
    ]
}


@FUZZ
@given(
    data=mutated_json(TREE_DOC, ["nodes"])
    | mutated_bytes(encode_tree(TREE_DOC["nodes"]))
    | st.binary(max_size=200)
)
def test_tree(data: bytes) -> None:
    def decode() -> None:
        for node in decode_tree(data, "tree x"):
            # what the walkers rely on once a tree decoded
            for c in node.get("content") or ():
                assert len(bytes.fromhex(c)) == 32
            if node.get("subtree") is not None:
                assert len(bytes.fromhex(node["subtree"])) == 32
            assert "/" not in node["name"]
            assert "\x00" not in node["name"]

    _decodes_or_corrupt(decode)


def test_a_deeply_nested_tree_is_corrupt_not_a_recursion_error() -> None:
    data = b'{"nodes": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    _decodes_or_corrupt(lambda: decode_tree(data, "tree x"))


# --------------------------------------------------------------------------- index
def _index_body() -> bytes:
    blobs = [PackBlob(1, 1, 0, 100, 200, os.urandom(32)), PackBlob(2, 0, 100, 50, 22, b"\1" * 32)]
    index = IndexFile({"ef" * 32: blobs}, ["01" * 32])
    sealed = encode_index(AEAD, index)
    return zstandard.ZstdDecompressor().decompress(open_sealed(AEAD, AAD_INDEX, sealed))


INDEX_BODY = _index_body()


@st.composite
def index_counts(draw: st.DrawFn) -> bytes:
    """A valid index body with one of its counts replaced by any u32 (a hostile count)."""
    body = bytearray(INDEX_BODY)
    where = draw(st.sampled_from([5, 5 + 4 + 32, 5 + 4 + 32 + 4 + 32]))
    count = draw(st.sampled_from([0, 2, 2**20, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1))
    struct.pack_into("<I", body, where, count)
    return bytes(body)


def _with_count(where: int, count: int) -> bytes:
    body = bytearray(INDEX_BODY)
    struct.pack_into("<I", body, where, count)
    return bytes(body)


@FUZZ
@given(body=index_counts() | mutated_bytes(INDEX_BODY) | st.binary(max_size=200))
@example(body=_with_count(5, 2**32 - 1))  # supersedes: 3.7 GB before MemoryError, once
@example(body=_with_count(41, 2**32 - 1))  # packs
@example(body=_with_count(77, 2**32 - 1))  # blobs of a pack
def test_index(body: bytes) -> None:
    sealed = seal(AEAD, AAD_INDEX, zstandard.ZstdCompressor().compress(body))
    _decodes_or_corrupt(lambda: decode_index(AEAD, sealed, "index/x"))


@FUZZ
@given(data=mutated_bytes(encode_index(AEAD, IndexFile({"ef" * 32: []}, []))))
def test_index_bytes(data: bytes) -> None:
    _decodes_or_corrupt(lambda: decode_index(AEAD, data, "index/x"))


def test_an_index_whose_zstd_frame_claims_a_huge_size_is_corrupt() -> None:
    frame = bytearray(zstandard.ZstdCompressor().compress(INDEX_BODY))
    unknown = zstandard.ZstdCompressor(write_content_size=False).compress(INDEX_BODY)
    for body in (bytes(frame), unknown):
        sealed = seal(AEAD, AAD_INDEX, body)
        _decodes_or_corrupt(partial(decode_index, AEAD, sealed, "index/x"))


# --------------------------------------------------------------------------- packs
BLOB = b"some blob data " * 20


def _pack(header: bytes, blobs: bytes) -> bytes:
    sealed = seal(AEAD, AAD_PACK_HEADER, header)
    return blobs + sealed + struct.pack("<I", len(sealed))


@FUZZ
@given(
    entries=st.lists(
        st.tuples(
            st.integers(0, 255),
            st.integers(0, 255),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
        ),
        max_size=6,
    ),
    blobs=st.binary(max_size=300),
    tail=st.binary(max_size=40),
)
def test_pack_header(entries: list[tuple[int, int, int, int]], blobs: bytes, tail: bytes) -> None:
    header = b"".join(HEADER_ENTRY.pack(t, f, s, r, b"\0" * 32) for t, f, s, r in entries)
    for data in (_pack(header, blobs), tail, _pack(header, blobs)[: len(tail)]):
        _decodes_or_corrupt(partial(parse_pack, AEAD, data, "data/x"))


@FUZZ
@given(raw=st.integers(0, 2**32 - 1), body=mutated_bytes(zstandard.ZstdCompressor().compress(BLOB)))
# found by CI: a frame without a stated size once made zstd allocate all ``raw`` bytes up front
@example(raw=33545214, body=b"(\xb5/\xfd\x00,\x00\xb5\x00\x00xsome blob data \x01\x00\x1a\xa2\xce:")
@example(
    raw=2**32 - 1, body=b"(\xb5/\xfd\x00,\x00\xb5\x00\x00xsome blob data \x01\x00\x1a\xa2\xce:"
)
def test_blob_body(raw: int, body: bytes) -> None:
    """A blob's body that opens but does not decompress to ``raw`` bytes is a ValueError
    (which Repository.read_blob reports as CorruptObject), never a zstd error."""
    blob_id = b"\7" * 32
    sealed = seal(AEAD, blob_aad(1, blob_id), body)
    # a frame that states exactly ``raw`` bytes may take them; any other claim may not
    try:
        stated = raw if zstandard.frame_content_size(body) == raw else 0
    except zstandard.ZstdError:
        stated = 0
    with _bounded_memory(stated), suppress(ValueError):
        decode_blob(AEAD, 1, blob_id, 1, raw, sealed)


# --------------------------------------------------------------------------- format version 2
# Every pack and sealed object starts with its subkey prefix, ``u32 key version || salt``
# (format section 5a): a hostile version or salt, or one cut short, is the corruption
# error like any other damage, and a key version the key lacks is never an IndexError.
ROTATED = KEYS.rotated()
SEALER2 = Sealer(2, ROTATED.data_keys)


@st.composite
def mutated_prefix(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with its subkey prefix changed: a hostile key version, salt bytes, or cut."""
    out = bytearray(data)
    how = draw(st.sampled_from(["version", "salt", "cut"]))
    if how == "version":
        version = draw(st.sampled_from([0, 3, 256, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1))
        out[:4] = struct.pack("<I", version)
    elif how == "salt":
        k = draw(st.integers(4, SUBKEY_PREFIX - 1))
        out[k] ^= draw(st.integers(1, 255))
    else:
        del out[draw(st.integers(0, SUBKEY_PREFIX)) :]
    return bytes(out)


V2_SNAPSHOT = SEALER2.seal_object(AAD_SNAPSHOT, json.dumps(SNAPSHOT_DOC).encode())
V2_INDEX = encode_index(SEALER2, IndexFile({"ef" * 32: []}, []))


@FUZZ
@given(data=mutated_prefix(V2_SNAPSHOT) | mutated_bytes(V2_SNAPSHOT))
def test_v2_snapshot_bytes(data: bytes) -> None:
    _decodes_or_corrupt(partial(decode_snapshot, SEALER2, data, "snapshots/x"))


@FUZZ
@given(data=mutated_prefix(V2_INDEX) | mutated_bytes(V2_INDEX))
def test_v2_index_bytes(data: bytes) -> None:
    _decodes_or_corrupt(partial(decode_index, SEALER2, data, "index/x"))


@FUZZ
@given(data=mutated_prefix(V2_SNAPSHOT) | mutated_bytes(V2_SNAPSHOT))
def test_v2_lock_bytes(data: bytes) -> None:
    _decodes_or_corrupt(partial(decode_lock, SEALER2, data, "locks/x"))


def _v2_pack() -> bytes:
    key = SEALER2.new_pack_key()
    blob_id = KEYS.blob_id(BLOB)
    sealed = seal(key.aead, blob_aad(1, blob_id), BLOB)
    entry = PackBlob(1, 0, SUBKEY_PREFIX, len(sealed), len(BLOB), blob_id)
    return build_pack(key.aead, [(entry, sealed)], key.prefix)


V2_PACK = _v2_pack()


def test_a_v2_pack_parses_and_its_blob_opens() -> None:
    (entry,) = parse_pack(SEALER2, V2_PACK, "data/x")
    assert entry.offset == SUBKEY_PREFIX
    aead = pack_key(SEALER2, V2_PACK, "data/x")
    sealed = V2_PACK[entry.offset : entry.offset + entry.stored]
    assert decode_blob(aead, 1, entry.id, entry.flags, entry.raw, sealed) == BLOB


@FUZZ
@given(data=mutated_prefix(V2_PACK) | mutated_bytes(V2_PACK))
def test_v2_pack(data: bytes) -> None:
    _decodes_or_corrupt(partial(parse_pack, SEALER2, data, "data/x"))
    _decodes_or_corrupt(partial(pack_key, SEALER2, data, "data/x"))


def _b64_keys(keys: tuple[bytes, ...]) -> list[str]:
    return [base64.b64encode(k).decode() for k in keys]


@settings(max_examples=60, deadline=2000)
@given(payload=mutated_json({**PAYLOAD_DOC, "newer_keys": _b64_keys(ROTATED.newer)}, []))
def test_key_payload_with_newer_keys(payload: bytes) -> None:
    """A rotated key's list of newer data keys, hostile: still only the corruption error."""
    key = replace(KEY, sealed=seal(KEK, AAD_KEY, payload))
    _decodes_or_corrupt(lambda: unseal_key(key, "pw"))
