"""Property-based tests (hypothesis) for the chunker, the pack format and tree encoding."""

from __future__ import annotations

import io
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safehold.repo import BLOB_DATA, BLOB_TREE, BlobEncoder, ChunkerParams, MasterKeys
from safehold.repo.chunker import Chunker
from safehold.repo.crypto import SealError
from safehold.repo.errors import CorruptObject
from safehold.repo.pack import PackBlob, build_pack, decode_blob, parse_pack
from safehold.repo.tree import decode_tree, encode_tree

PARAMS = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)
KEYS = MasterKeys.generate()
AEAD = KEYS.aead()


class _Trickle(io.RawIOBase):
    """A stream that returns at most ``step`` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data = data
        self.pos = 0
        self.step = step

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.step, len(self.data) - self.pos)
        b[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def _data(seed: int, size: int, repeat: bool) -> bytes:
    rnd = os.urandom(size) if not repeat else (os.urandom(97) * (size // 97 + 1))[:size]
    return rnd if seed % 2 else bytes(size // 3) + rnd[: size - size // 3]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(0, 60_000),
    seed=st.integers(0, 3),
    repeat=st.booleans(),
    block=st.integers(4096, 20_000),
    step=st.integers(1, 9000),
)
def test_chunker_boundaries_do_not_depend_on_how_the_stream_is_read(
    size: int, seed: int, repeat: bool, block: int, step: int
) -> None:
    data = _data(seed, size, repeat)
    whole = [bytes(c) for c in Chunker(PARAMS, 7).chunks_of_bytes(data)]
    streamed = [
        bytes(c)
        for c in Chunker(PARAMS, 7, block_size=block).chunks_of(_Trickle(data, step).readinto)
    ]
    assert streamed == whole
    assert b"".join(streamed) == data
    assert all(len(c) <= PARAMS.max_size for c in streamed)
    assert all(len(c) >= PARAMS.min_size for c in streamed[:-1])


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(20_000, 60_000),
    cut=st.integers(0, 19_999),
    insert=st.binary(min_size=1, max_size=100),
)
def test_an_insert_changes_only_nearby_chunks(size: int, cut: int, insert: bytes) -> None:
    data = os.urandom(size)
    chunker = Chunker(PARAMS, 3)
    before = {bytes(c) for c in chunker.chunks_of_bytes(data)}
    after = [bytes(c) for c in chunker.chunks_of_bytes(data[:cut] + insert + data[cut:])]
    changed = [c for c in after if c not in before]
    assert sum(map(len, changed)) <= 3 * PARAMS.max_size


def test_the_chunker_seed_changes_the_boundaries() -> None:
    data = os.urandom(200_000)
    a = [len(c) for c in Chunker(PARAMS, 1).chunks_of_bytes(data)]
    b = [len(c) for c in Chunker(PARAMS, 2).chunks_of_bytes(data)]
    assert a != b


blobs_strategy = st.lists(
    st.tuples(
        st.sampled_from([BLOB_DATA, BLOB_TREE]), st.binary(min_size=0, max_size=3000), st.booleans()
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=50, deadline=None)
@given(blobs=blobs_strategy)
def test_pack_round_trip(blobs: list[tuple[int, bytes, bool]]) -> None:
    enc = BlobEncoder(AEAD, 3)
    entries: list[tuple[PackBlob, bytes]] = []
    plains: list[bytes] = []
    offset = 0
    for blob_type, plain, compressible in blobs:
        data = plain * 20 if compressible else plain
        blob_id = KEYS.blob_id(data)
        (nonce, ct), flags = enc.encode(blob_type, blob_id, data)
        sealed = nonce + ct
        entries.append(
            (PackBlob(blob_type, flags, offset, len(sealed), len(data), blob_id), sealed)
        )
        plains.append(data)
        offset += len(sealed)
    pack = build_pack(AEAD, entries)
    header = parse_pack(AEAD, pack, "p")
    assert header == [e for e, _ in entries]
    for entry, data in zip(header, plains, strict=True):
        sealed = pack[entry.offset : entry.offset + entry.stored]
        assert decode_blob(AEAD, entry.type, entry.id, entry.flags, entry.raw, sealed) == data


@settings(max_examples=50, deadline=None)
@given(blobs=blobs_strategy, where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_in_a_pack_is_detected(
    blobs: list[tuple[int, bytes, bool]], where: float, bit: int
) -> None:
    enc = BlobEncoder(AEAD, 3)
    entries: list[tuple[PackBlob, bytes]] = []
    offset = 0
    for blob_type, plain, _ in blobs:
        blob_id = KEYS.blob_id(plain)
        (nonce, ct), flags = enc.encode(blob_type, blob_id, plain)
        entries.append(
            (PackBlob(blob_type, flags, offset, 28 + len(ct), len(plain), blob_id), nonce + ct)
        )
        offset += 28 + len(ct)
    pack = bytearray(build_pack(AEAD, entries))
    pos = int(where * len(pack))
    pack[pos] ^= 1 << bit
    detected = False
    try:
        header = parse_pack(AEAD, bytes(pack), "p")
        for entry in header:
            decode_blob(
                AEAD,
                entry.type,
                entry.id,
                entry.flags,
                entry.raw,
                bytes(pack[entry.offset : entry.offset + entry.stored]),
            )
    except (CorruptObject, SealError, ValueError):
        detected = True
    assert detected


def test_a_blob_cannot_be_swapped_for_another() -> None:
    enc = BlobEncoder(AEAD, 3)
    a, b = b"a" * 100, b"b" * 100
    (na, ca), fa = enc.encode(BLOB_DATA, KEYS.blob_id(a), a)
    try:
        decode_blob(AEAD, BLOB_DATA, KEYS.blob_id(b), fa, 100, na + ca)
    except SealError:
        return
    raise AssertionError("a blob opened under another blob's id")


def test_incompressible_data_is_stored_as_is_and_text_is_compressed() -> None:
    enc = BlobEncoder(AEAD, 3)
    noise = os.urandom(300_000)
    (_, ct), flags = enc.encode(BLOB_DATA, KEYS.blob_id(noise), noise)
    assert flags == 0
    assert len(ct) == len(noise) + 16
    text = b"the quick brown fox " * 15_000
    (_, ct), flags = enc.encode(BLOB_DATA, KEYS.blob_id(text), text)
    assert flags == 1
    assert len(ct) < len(text) // 20


# what a directory can hold: no '/', no NUL, not '.' or '..' (the decoder refuses those)
names = (
    st.text(
        alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=30,
    )
    | st.binary(min_size=1, max_size=20)
    .filter(lambda b: b"/" not in b and b"\0" not in b)
    .map(os.fsdecode)
).filter(lambda n: n not in (".", ".."))

node_strategy = st.fixed_dictionaries(
    {
        "name": names,
        "type": st.sampled_from(["file", "dir", "symlink", "fifo"]),
        "mode": st.integers(0, 0o7777),
        "uid": st.integers(0, 2**32 - 1),
        "gid": st.integers(0, 2**32 - 1),
        "user": st.text(max_size=10),
        "group": st.text(max_size=10),
        "mtime_ns": st.integers(-(2**62), 2**62),
        "size": st.integers(0, 2**50),
        "content": st.lists(st.binary(min_size=32, max_size=32).map(bytes.hex), max_size=5),
    },
    optional={"target": names, "sparse": st.booleans(), "hardlink": names},
)


@settings(max_examples=100, deadline=None)
@given(nodes=st.lists(node_strategy, max_size=20, unique_by=lambda n: n["name"]))
def test_tree_encoding_round_trips_and_is_deterministic(nodes: list[dict[str, object]]) -> None:
    data = encode_tree(nodes)
    decoded = decode_tree(data)
    assert decoded == sorted(nodes, key=lambda n: str(n["name"]))
    assert encode_tree(list(reversed(nodes))) == data
    for node in decoded:
        os.fsencode(str(node["name"]))  # every name maps back to the original bytes
