"""Tree blobs are parsed by msgspec, and decode to exactly what :mod:`json` would give.

repo/tree.py reads trees with msgspec for speed and hands what msgspec refuses to
:mod:`json`. These tests hold it to that: any JSON text decodes as ``json.loads`` decodes
it (or fails as it fails), the documents msgspec refuses but a tree may hold still decode,
and real trees, names that are not UTF-8 included, round-trip.
"""

from __future__ import annotations

import json
import os
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.repo.errors import CorruptObject
from safehold.repo.tree import _loads, decode_tree, encode_tree

from .test_decoder_fuzz import NODE

_INTS = st.integers(min_value=-(2**80), max_value=2**80)
_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
_JSON = st.recursive(
    st.none() | st.booleans() | _INTS | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_TEXT, inner, max_size=5),
    max_leaves=30,
)


def _outcome(decode: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", repr(decode(data))  # repr: 1 and 1.0 are equal, but not the same
    except (ValueError, RecursionError) as exc:  # what decode_tree turns into CorruptObject
        return "refused", "too deep" if isinstance(exc, RecursionError) else "malformed"


@settings(max_examples=400, deadline=None)
@given(_JSON, st.booleans())
def test_any_document_decodes_as_json_decodes_it(value: Any, ascii_only: bool) -> None:
    # ensure_ascii=True (what encode_tree writes) escapes lone surrogates, which msgspec
    # refuses; False writes the characters themselves
    text = json.dumps(value, ensure_ascii=ascii_only)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate as a character is not UTF-8
        data = text.encode("utf-8", "surrogatepass")
    assert _outcome(_loads, data) == _outcome(json.loads, data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.from_regex(rb"\A[\[\]{}\":,0-9a-z\\ .eE+-]{0,40}\Z"))
def test_any_bytes_decode_or_are_refused_as_json_does(data: bytes) -> None:
    assert _outcome(_loads, data) == _outcome(json.loads, data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"nodes":[{"name":"caf\\udce9"}]}',  # the byte 0xE9 of a name that is not UTF-8
        b'{"nodes":[{"name":"\\ud800"}]}',
        b'{"f":NaN}',
        b'{"f":1e400}',
        b"\xef\xbb\xbf{}",
    ],
    ids=["surrogate-escape", "lone-high-surrogate", "nan", "infinity", "bom"],
)
def test_what_msgspec_refuses_is_read_by_json(data: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(data)
    assert _loads(data) == json.loads(data) or repr(_loads(data)) == repr(json.loads(data))


def _node(name: str, content: list[str]) -> dict[str, Any]:
    """A file node with every integer at an end of its range."""
    ends = {"mtime_ns": -(2**63), "atime_ns": 2**63 - 1, "inode": 2**64 - 1, "dev": 2**63}
    return {**NODE, **ends, "name": name, "content": content}


def test_a_tree_with_names_that_are_not_utf8_round_trips() -> None:
    names = [os.fsdecode(b"caf\xe9"), os.fsdecode(b"\xff\xfe"), "plain", "ünïcode", "日本"]
    ids = [os.urandom(32).hex() for _ in range(3)]
    nodes = [_node(name, ids) for name in names]
    data = encode_tree(nodes)
    decoded = decode_tree(data)
    assert decoded == sorted(nodes, key=lambda n: n["name"])
    assert {n["name"] for n in decoded} == set(names)
    # the bytes of each name come back as they were on the disk
    assert os.fsencode(decoded[0]["name"]) in {os.fsencode(n) for n in names}


def test_a_tree_msgspec_reads_decodes_as_before() -> None:
    nodes = [_node(f"f{i:04d}", [os.urandom(32).hex()]) for i in range(1000)]
    data = encode_tree(nodes)
    msgspec.json.decode(data)  # the fast path is taken
    assert decode_tree(data) == json.loads(data)["nodes"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("mtime_ns", -(2**63) - 1), ("inode", 2**64), ("dev", 2**70)],
)
def test_a_number_beyond_its_range_is_refused(field: str, value: int) -> None:
    node = dict(_node("f", []), **{field: value})
    data = json.dumps({"nodes": [node]}, separators=(",", ":")).encode()
    assert msgspec.json.decode(data)["nodes"][0][field] == value  # read exactly, then checked
    with pytest.raises(CorruptObject, match=f"'{field}' is not an integer in range"):
        decode_tree(data)


# ---------------------------------------------------------------- writing trees
def _json_tree(nodes: list[dict[str, Any]]) -> bytes:
    """What encode_tree wrote with json alone (and what a tree's id was computed from)."""
    doc = {"nodes": sorted(nodes, key=lambda n: str(n["name"]))}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# what nodes hold (format section 9): no floats, no bytes
_FIELDS = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.dictionaries(_TEXT, _FIELDS, max_size=6).map(lambda d: {**d, "name": str(d)[:30]}),
        max_size=6,
    )
)
def test_a_tree_is_written_byte_for_byte_as_json_wrote_it(nodes: list[dict[str, Any]]) -> None:
    """Its id must not change with the encoder: an unchanged directory is stored once
    across versions. Any names (escaped characters, beyond ASCII, not UTF-8), any keys."""
    assert encode_tree(nodes) == _json_tree(nodes)


@pytest.mark.parametrize(
    "name",
    ["plain", 'quote"d', "back\\slash", "tab\there", "del\x7f", "ünïcode", "日本", "caf\udce9"],
)
def test_names_json_escapes_are_written_as_json_writes_them(name: str) -> None:
    nodes = [_node(name, [os.urandom(32).hex()]), _node("other", [])]
    assert encode_tree(nodes) == _json_tree(nodes)
    assert decode_tree(encode_tree(nodes))[0]["name"] in {name, "other"}


def test_a_tree_of_a_thousand_files_is_written_as_before() -> None:
    nodes = [_node(f"f{i:04d}", [os.urandom(32).hex()]) for i in range(1000)]
    assert encode_tree(nodes) == _json_tree(nodes)
