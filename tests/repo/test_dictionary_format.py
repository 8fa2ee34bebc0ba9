"""The format rules for dictionaries (sections 4, 6, 7): what a reader accepts and refuses."""

from __future__ import annotations

import json
import os
import pickle
import random

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo import Config, CorruptObject, UnsupportedRepository
from safehold.repo.crypto import blob_aad, seal
from safehold.repo.dictionary import Dictionary, train
from safehold.repo.pack import (
    BLOB_DATA,
    BLOB_DICT,
    FLAG_DICT,
    FLAG_ZSTD,
    BlobEncoder,
    PackBlob,
    decode_blob,
    pack_trailer,
    parse_pack_header,
)

KEY = AESGCM(bytes(32))


def _samples(n: int = 200) -> list[bytes]:
    rng = random.Random(1)
    words = ["port", "host", "timeout", "retries", "enabled", "path", "user", "level"]
    return [
        "".join(f"{rng.choice(words)} = {rng.randrange(1000)}\n" for _ in range(40)).encode()
        for _ in range(n)
    ]


def _dictionary() -> Dictionary:
    trained = train(_samples(), lambda data: bytes(32))
    assert trained is not None
    return trained


def _header(entries: list[tuple[int, int]]) -> tuple[bytes, int]:
    """A pack of blobs of (type, flags), each 40 bytes of nonce, body and tag."""
    blobs = [PackBlob(t, f, 40 * i, 40, 12, os.urandom(32)) for i, (t, f) in enumerate(entries)]
    tail = bytes(40 * len(blobs)) + pack_trailer(KEY, blobs)
    return tail, len(tail)


def test_a_pack_leading_with_its_dictionary_reads() -> None:
    tail, size = _header([(BLOB_DICT, 0), (BLOB_DATA, FLAG_ZSTD | FLAG_DICT), (BLOB_DATA, 0)])
    entries = parse_pack_header(KEY, tail, size, "p")
    assert [e.type for e in entries] == [BLOB_DICT, BLOB_DATA, BLOB_DATA]


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([(BLOB_DATA, FLAG_ZSTD | FLAG_DICT)], "needs a dictionary the pack lacks"),
        ([(BLOB_DATA, 0), (BLOB_DATA, FLAG_ZSTD | FLAG_DICT)], "needs a dictionary"),
        ([(BLOB_DATA, 0), (BLOB_DICT, 0)], "dictionary out of place"),
        ([(BLOB_DICT, FLAG_ZSTD)], "dictionary out of place"),
        ([(BLOB_DICT, 0), (BLOB_DICT, 0)], "dictionary out of place"),
        ([(BLOB_DICT, 0), (0x02, FLAG_ZSTD | FLAG_DICT)], "needs a dictionary"),
        ([(BLOB_DATA, FLAG_DICT)], "flags 0x2"),
        ([(0x04, 0)], "type 4"),
    ],
)
def test_a_pack_breaking_the_dictionary_rules_is_damaged(
    entries: list[tuple[int, int]], why: str
) -> None:
    tail, size = _header(entries)
    with pytest.raises(CorruptObject, match=why):
        parse_pack_header(KEY, tail, size, "p")


def test_a_blob_compressed_with_a_dictionary_needs_it() -> None:
    dictionary = _dictionary()
    data = _samples(1)[0]
    blob_id = os.urandom(32)
    (nonce, body), flags = BlobEncoder(KEY, 1, dictionary).encode(BLOB_DATA, blob_id, data)
    assert flags == FLAG_ZSTD | FLAG_DICT
    sealed = nonce + body
    assert decode_blob(KEY, BLOB_DATA, blob_id, flags, len(data), sealed, dictionary) == data
    with pytest.raises(ValueError, match="needs its pack's dictionary"):
        decode_blob(KEY, BLOB_DATA, blob_id, flags, len(data), sealed)
    # trees and big blobs are compressed as before
    (_, _), tree_flags = BlobEncoder(KEY, 1, dictionary).encode(0x02, blob_id, data)
    assert tree_flags == FLAG_ZSTD


def test_a_dictionary_survives_pickling() -> None:
    dictionary = _dictionary()
    again = pickle.loads(pickle.dumps(dictionary))  # noqa: S301 - our own bytes
    data = _samples(1)[0]
    packed = dictionary.compressor(1).compress(data)
    assert again.decompressor().decompress(packed) == data


def _config(algorithm: str) -> bytes:
    doc = json.loads(Config.new().to_bytes())
    doc["compression"]["algorithm"] = algorithm
    return json.dumps(doc).encode()


def test_the_config_names_dictionaries_and_older_names_read_as_before() -> None:
    assert Config.new().dictionaries
    assert b'"zstd-dict"' in Config.new().to_bytes()
    assert Config.from_bytes(_config("zstd-dict"), "r").dictionaries
    old = Config.from_bytes(_config("zstd"), "r")
    assert not old.dictionaries
    assert b'"zstd"' in old.to_bytes()
    with pytest.raises(UnsupportedRepository, match="compression algorithm 'zstd-dict2'"):
        Config.from_bytes(_config("zstd-dict2"), "r")


def test_a_sealed_dictionary_blob_opens_only_as_a_dictionary() -> None:
    dictionary = _dictionary()
    sealed = seal(KEY, blob_aad(BLOB_DICT, dictionary.id), dictionary.data)
    size = len(dictionary.data)
    assert decode_blob(KEY, BLOB_DICT, dictionary.id, 0, size, sealed) == dictionary.data
    with pytest.raises(Exception, match="authentication"):
        decode_blob(KEY, BLOB_DATA, dictionary.id, 0, size, sealed)
