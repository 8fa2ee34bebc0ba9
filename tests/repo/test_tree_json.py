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
from safehold.repo.tree import (
    NODE_TYPES,
    TreeNode,
    _decode_checked,
    _decode_typed,
    _loads,
    _Typed,
    decode_tree,
    encode_tree,
)

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


# ---------------------------------------------------------------- the typed fast path
# decode_tree reads a tree with msgspec's typed decoder when it can vouch for every field,
# and hands the rest to the checked path. The typed path must never accept what the
# checked path refuses, nor return anything else than it returns.

_I64 = 2**63
_EDGES: dict[str, list[object]] = {
    "name": ["", ".", "..", "a/b", "a\x00b", "x" * 4096, "x" * 4097, "é" * 4096, "é" * 4097],
    "type": ["door", "", "FILE"],
    "mode": [-1, 0, 0o7777, 0o10000],
    "uid": [-1, 0, 2**32 - 1, 2**32],
    "links": [-1, 2**32 - 1, 2**32],
    "mtime_ns": [-_I64 - 1, -_I64, _I64 - 1, _I64],
    "size": [-1, 0, _I64 - 1, _I64],
    "inode": [-1, _I64 - 1, _I64, 2**64 - 1, 2**64],
    "rdev": [-1, 2**64 - 1, 2**64],
    "user": ["", "x" * 4096, "x" * 4097, "a\x00b"],
    "content": [
        [],
        ["ab" * 32],
        ["AB" * 32],
        ["ab" * 31],
        ["ab" * 33],
        [" " + "ab" * 31 + "a"],
        ["ab" * 32, "zz" * 32],
        ["\u0661" * 64],
        "ab" * 32,
    ],
    "subtree": ["cd" * 32, "CD" * 32, "cd" * 31 + "c ", ["cd" * 32]],
    "target": ["", "f", "a\x00b", "x" * 65536, "x" * 65537],
    "hardlink": ["", "d/f", "a\x00b"],
    "sparse": [True, False, 0, 1],
    "later": [1, "a field this version does not know"],
}
_ANY = st.sampled_from([None, True, 1.0, 1.5, "s", [], {}, [1], 2**70])


@st.composite
def _nodes(draw: st.DrawFn) -> list[dict[str, Any]]:
    nodes = []
    for _ in range(draw(st.integers(0, 4))):
        node: dict[str, Any] = {**NODE, "name": draw(st.sampled_from(["a", "b", "c"]))}
        for _ in range(draw(st.integers(0, 2))):
            field = draw(st.sampled_from(sorted(_EDGES)))
            how = draw(st.integers(0, 5))  # mostly a value at an edge of the field's range
            if how == 0:
                node.pop(field, None)
            else:
                node[field] = draw(st.sampled_from(_EDGES[field]) if how > 1 else _ANY)
        nodes.append(node)
    return nodes


@settings(max_examples=1000, deadline=None)
@given(_nodes(), st.booleans())
def test_the_typed_path_returns_what_the_checked_path_returns(
    nodes: list[dict[str, Any]], ascii_only: bool
) -> None:
    data = json.dumps({"nodes": nodes}, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    typed = _decode_typed(data)
    if typed is None:
        return  # the checked path decides alone
    assert typed == _decode_checked(data, "tree x")  # accepted there too, and equal


@pytest.mark.parametrize(
    ("field", "value"), [(f, v) for f, values in _EDGES.items() for v in values], ids=repr
)
def test_every_edge_of_every_field_is_read_as_the_checked_path_reads_it(
    field: str, value: object
) -> None:
    data = json.dumps({"nodes": [{**NODE, field: value}]}).encode()
    typed = _decode_typed(data)
    try:
        checked: object = _decode_checked(data, "tree x")
    except CorruptObject:
        checked = None  # refused: the typed path must not have read it
    assert typed is None or typed == checked


def test_the_typed_path_knows_every_field_and_node_type_of_the_format() -> None:
    """Its Struct repeats the format's fields: one it lacked would send every tree that
    holds it to the checked path, one it added would read a field the format lacks."""
    assert {f.name for f in msgspec.structs.fields(_Typed)} == set(TreeNode.__annotations__)
    for kind in NODE_TYPES:
        data = encode_tree([{"name": "n", "type": kind}])
        assert _decode_typed(data) == [{"name": "n", "type": kind}]


def test_the_trees_this_version_writes_take_the_typed_path() -> None:
    nodes = [
        {**NODE, "name": "file"},
        {**NODE, "name": "empty", "content": [], "size": 0},
        {**NODE, "name": "sparse", "sparse": True, "content": ["ab" * 32] * 3},
        {**NODE, "name": "second", "hardlink": "d/file"},
        {
            **{k: v for k, v in NODE.items() if k not in ("size", "content")},
            "name": "dir",
            "type": "dir",
            "subtree": "cd" * 32,
        },
        {
            **{k: v for k, v in NODE.items() if k not in ("size", "content")},
            "name": "link",
            "type": "symlink",
            "target": "../file",
        },
        {
            **{k: v for k, v in NODE.items() if k not in ("size", "content")},
            "name": "dev",
            "type": "chardev",
            "rdev": 259,
        },
        {
            **{k: v for k, v in NODE.items() if k not in ("size", "content")},
            "name": "ünïcode",
            "type": "fifo",
        },
    ]
    data = encode_tree(nodes)
    typed = _decode_typed(data)
    assert typed == json.loads(data)["nodes"]
    assert [list(n) for n in typed or ()] == [list(n) for n in json.loads(data)["nodes"]]
    assert decode_tree(data) == json.loads(data)["nodes"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("inode", 2**64 - 1),  # beyond the typed path's int64 bounds, in the format's
        ("later", 1),  # a field a later version writes: kept, as readers must ignore it
        ("name", os.fsdecode(b"caf\xe9")),  # not UTF-8: msgspec refuses its escape
    ],
)
def test_what_the_typed_path_cannot_vouch_for_the_checked_path_reads(
    field: str, value: object
) -> None:
    data = encode_tree([{**NODE, field: value}])
    assert _decode_typed(data) is None
    assert decode_tree(data) == json.loads(data)["nodes"]
    assert decode_tree(data)[0][field] == value


def test_a_key_twice_in_a_node_decodes_as_json_reads_it() -> None:
    data = b'{"nodes":[{"name":"a","type":"file","size":1,"size":2}]}'
    assert decode_tree(data) == json.loads(data)["nodes"]
