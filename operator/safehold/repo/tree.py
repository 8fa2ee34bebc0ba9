"""Tree blobs: one directory as deterministic JSON (format section 9).

Deterministic (sorted nodes, sorted keys, compact) so that an unchanged directory
encodes to the same bytes, gets the same id and is stored once.
"""

from __future__ import annotations

import json
import re
from operator import itemgetter
from typing import Annotated, Any, Literal, TypedDict

import msgspec
from msgspec import UNSET, Meta, UnsetType

from safehold.repo.errors import CorruptObject

__all__ = ["NODE_TYPES", "Node", "TreeNode", "decode_tree", "encode_tree"]

NODE_TYPES = ("file", "dir", "symlink", "dev", "chardev", "fifo", "socket")

#: A node is a plain dict (fast to build and to encode); see the format for its fields.
#: The backup builds nodes in this form (with values that are not yet the format's while
#: their content is read); readers of stored trees see them as :class:`TreeNode`.
Node = dict[str, Any]


class TreeNode(TypedDict, total=False):
    """A node of a stored tree as :func:`decode_tree` checked it (format section 9).

    A TypedDict, so the plain dicts the JSON decoder builds are the nodes: it costs
    nothing at run time (a dataclass would cost one object per file on every tree read).
    ``name``, ``type`` and the metadata are in every node; the rest depend on the type.
    """

    name: str
    type: str  # one of NODE_TYPES
    mode: int
    uid: int
    gid: int
    user: str
    group: str
    mtime_ns: int
    atime_ns: int
    ctime_ns: int
    inode: int
    dev: int
    links: int
    size: int  # file
    content: list[str]  # file: hex ids of its data blobs, in order
    sparse: bool  # file
    hardlink: str  # file: the path of the inode's first name in the snapshot
    subtree: str  # dir: hex id of its tree blob
    target: str  # symlink
    rdev: int  # dev, chardev


_ENCODER = msgspec.json.Encoder(order="sorted")
#: Bytes :func:`json.dumps` (ASCII only) would write otherwise than msgspec: a character it
#: escapes (quote, backslash, control characters, DEL) or one beyond ASCII.
_ESCAPED = re.compile(rb"[\\\x7f-\xff]")


def encode_tree(nodes: list[Node]) -> bytes:
    """The tree of ``nodes``: exactly the bytes of :func:`json.dumps` with sorted keys,
    compact separators and ASCII escapes, so that an unchanged directory keeps its id
    across versions.

    msgspec writes a tree of 1,000 files eight times as fast (a full backup of 100,000
    small files spent 7 % of its walking processes' time in :mod:`json`;
    docs/performance.md, session 22) and, for the printable ASCII that names and ids
    mostly are, the same bytes. A tree it writes otherwise (a name beyond ASCII or with a
    character JSON escapes, a name that is not UTF-8) or cannot write is written by
    :mod:`json`. Nodes hold no floats or bytes (format section 9: integers, strings,
    booleans and lists of them), which the two would write differently."""
    doc = {"nodes": sorted(nodes, key=lambda n: str(n["name"]))}
    try:
        data = _ENCODER.encode(doc)
    except (UnicodeEncodeError, msgspec.EncodeError, TypeError, OverflowError):
        data = None
    if data is None or _ESCAPED.search(data):
        # check_circular off: nodes are plain data built by the engine, and the check
        # costs a dict operation per container (tens of thousands per backup)
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), check_circular=False).encode()
    return data


_ID_LIST = re.compile(r"(?:[0-9a-f]{64},)*[0-9a-f]{64}")
_ID = re.compile(r"[0-9a-f]{64}")
#: Integer fields and their allowed range (inclusive); times may be before 1970.
_U32 = 2**32 - 1
_U64 = 2**64 - 1
_I64 = 2**63
_INTS: dict[str, tuple[int, int]] = {
    "mode": (0, 0o7777),
    "uid": (0, 2**32 - 1),
    "gid": (0, 2**32 - 1),
    "mtime_ns": (-(2**63), 2**63 - 1),
    "atime_ns": (-(2**63), 2**63 - 1),
    "ctime_ns": (-(2**63), 2**63 - 1),
    "inode": (0, _U64),
    "dev": (0, _U64),
    "links": (0, 2**32 - 1),
    "size": (0, 2**63 - 1),
    "rdev": (0, _U64),
}
_COMMON = itemgetter(
    "mode",
    "uid",
    "gid",
    "links",
    "inode",
    "dev",
    "mtime_ns",
    "atime_ns",
    "ctime_ns",
    "user",
    "group",
)
_STRINGS = ("user", "group")
#: Longest name or link target kept (Linux: 255-byte names, 4096-byte paths; a name
#: that is not UTF-8 takes one character per byte).
MAX_NAME = 4096
MAX_TARGET = 65536


def _comma_join(content: list[Any]) -> str:
    """The ids of ``content`` joined by commas, matched by ``_ID_LIST`` in one C-level
    pass (not a Python check per chunk); an empty string when an item is not a string."""
    try:
        return ",".join(content)
    except TypeError:
        return ""


def _path(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_TARGET and "\x00" not in value


def _check_fields(node: Node, name: str) -> None:
    """Check the integer and owner-name fields one by one (those present)."""
    for key, (low, high) in _INTS.items():
        value = node.get(key)
        if value is not None and (type(value) is not int or not low <= value <= high):
            raise ValueError(f"node {name[:80]!r} field {key!r} is not an integer in range")
    for key in _STRINGS:
        value = node.get(key)
        if value is not None and (type(value) is not str or len(value) > MAX_NAME):
            raise ValueError(f"node {name[:80]!r} field {key!r} is not a string")


def _check_node(node: object) -> str:
    """The node's name; :class:`ValueError` naming the field that breaks format section 9."""
    if type(node) is not dict:
        raise ValueError("a node is not an object")
    name = node.get("name")
    if type(name) is not str or not name or len(name) > MAX_NAME:
        raise ValueError(f"a node has no valid name ({str(name)[:80]!r})")
    if "/" in name or "\x00" in name or name in (".", ".."):
        raise ValueError(f"node name {name[:80]!r} holds '/' or NUL, or is '.' or '..'")
    kind = node.get("type")
    if kind not in NODE_TYPES:
        raise ValueError(f"node {name[:80]!r} has unknown type {str(kind)[:40]!r}")
    try:
        mode, uid, gid, links, inode, dev, mtime, atime, ctime, user, group = _COMMON(node)
    except KeyError:  # some missing (allowed): check field by field
        _check_fields(node, name)
    else:
        # the fields every writer sets, checked inline: a loop over them costs twice the
        # JSON parse of the node
        i64 = _I64
        if not (
            type(mode) is int
            and type(uid) is int
            and type(gid) is int
            and type(links) is int
            and type(inode) is int
            and type(dev) is int
            and type(mtime) is int
            and type(atime) is int
            and type(ctime) is int
            and type(user) is str
            and type(group) is str
            and 0 <= mode <= 0o7777
            and 0 <= uid <= _U32
            and 0 <= gid <= _U32
            and 0 <= links <= _U32
            and 0 <= inode <= _U64
            and 0 <= dev <= _U64
            and -i64 <= mtime < i64
            and -i64 <= atime < i64
            and -i64 <= ctime < i64
            and len(user) <= MAX_NAME
            and len(group) <= MAX_NAME
        ):
            _check_fields(node, name)  # raises, naming the field
    # optional fields, unrolled (this runs once per node of every tree read)
    size = node.get("size")
    if size is not None and (type(size) is not int or not 0 <= size < _I64):
        raise ValueError(f"node {name[:80]!r} field 'size' is not an integer in range")
    rdev = node.get("rdev")
    if rdev is not None and (type(rdev) is not int or not 0 <= rdev <= _U64):
        raise ValueError(f"node {name[:80]!r} field 'rdev' is not an integer in range")
    target = node.get("target")
    if target is not None and not _path(target):
        raise ValueError(f"node {name[:80]!r} field 'target' is not a path without NUL")
    hardlink = node.get("hardlink")
    if hardlink is not None and not _path(hardlink):
        raise ValueError(f"node {name[:80]!r} field 'hardlink' is not a path without NUL")
    content = node.get("content")
    if content is not None and not (
        type(content) is list and (not content or _ID_LIST.fullmatch(_comma_join(content)))
    ):
        raise ValueError(f"node {name[:80]!r} field 'content' is not a list of blob ids")
    subtree = node.get("subtree")
    if subtree is not None and (type(subtree) is not str or not _ID.fullmatch(subtree)):
        raise ValueError(f"node {name[:80]!r} field 'subtree' is not a blob id")
    sparse = node.get("sparse")
    if sparse is not None and type(sparse) is not bool:
        raise ValueError(f"node {name[:80]!r} field 'sparse' is not true or false")
    return name


def _loads(data: bytes) -> Any:
    """The JSON document ``data``, as :func:`json.loads` reads it.

    msgspec parses a tree of 1,000 files four times as fast as :mod:`json` (a restore and an
    incremental backup decode every tree of the snapshot, 31 MB for 100,000 files; docs/
    performance.md, session 21), into the same objects, integers of any size included. It
    refuses some documents :mod:`json` reads, and a tree may hold one: the escaped lone
    surrogates that stand for the bytes of a name that is not UTF-8 (``"\\udcff"``), as
    well as NaN, numbers beyond a double and a byte order mark. Those are read again by
    :mod:`json`, so what a tree decodes to, and which trees are malformed, stay
    :mod:`json`'s."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:  # ValidationError (a number out of range) is one too
        return json.loads(data)


# ---------------------------------------------------------------- the typed fast path
# The fields of format section 9 as msgspec's typed decoder checks them while it parses,
# in C. Every bound is the checked path's (_check_node) or narrower: what falls outside is
# handed to the checked path, which accepts it or names the field.
_Int64 = Annotated[int, Meta(ge=-_I64, le=_I64 - 1)]
_U32Int = Annotated[int, Meta(ge=0, le=_U32)]
#: u64 fields up to 2**63 - 1 (msgspec's bounds are int64's): beyond, the checked path reads them
_U63Int = Annotated[int, Meta(ge=0, le=_I64 - 1)]
_Owner = Annotated[str, Meta(max_length=MAX_NAME)]
_Path = Annotated[str, Meta(min_length=1, max_length=MAX_TARGET)]
_Id = Annotated[str, Meta(min_length=64, max_length=64)]  # hex checked per tree, at once


class _Typed(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A node as the typed decoder reads it. A field it does not know, a ``null`` or a
    value of another type sends the whole tree to the checked path. The fields are in the
    order a tree stores its keys (sorted), so the dicts made of them keep that order too."""

    atime_ns: _Int64 | UnsetType = UNSET
    content: list[_Id] | UnsetType = UNSET
    ctime_ns: _Int64 | UnsetType = UNSET
    dev: _U63Int | UnsetType = UNSET
    gid: _U32Int | UnsetType = UNSET
    group: _Owner | UnsetType = UNSET
    hardlink: _Path | UnsetType = UNSET
    inode: _U63Int | UnsetType = UNSET
    links: _U32Int | UnsetType = UNSET
    mode: Annotated[int, Meta(ge=0, le=0o7777)] | UnsetType = UNSET
    mtime_ns: _Int64 | UnsetType = UNSET
    name: Annotated[str, Meta(min_length=1, max_length=MAX_NAME)]
    rdev: _U63Int | UnsetType = UNSET
    size: Annotated[int, Meta(ge=0, le=_I64 - 1)] | UnsetType = UNSET
    sparse: bool | UnsetType = UNSET
    subtree: _Id | UnsetType = UNSET
    target: _Path | UnsetType = UNSET
    type: Literal["file", "dir", "symlink", "dev", "chardev", "fifo", "socket"]
    uid: _U32Int | UnsetType = UNSET
    user: _Owner | UnsetType = UNSET


class _TypedTree(msgspec.Struct):
    nodes: list[_Typed]


_TYPED = msgspec.json.Decoder(_TypedTree)


def _decode_typed(data: bytes) -> list[Node] | None:
    """The nodes of ``data`` when the typed decoder and a few checks per tree vouch for every
    field, as plain dicts equal to what the checked path returns; else None (the checked
    path decides, and names what is wrong).

    Checking a node in Python (:func:`_check_node`) cost about twice the parse of the node;
    this costs about half the checked path's time (docs/performance.md, session 26). What
    the typed decoder cannot say in C is checked here once per tree, not once per node: no
    NUL in any string (JSON escapes it as ``\\u0000``), no '/' in a name, no name
    twice, no '.' or '..', ids of lower-case hex."""
    if b"\\u0000" in data:
        return None
    try:
        typed = _TYPED.decode(data).nodes
    except msgspec.DecodeError:  # ValidationError too: a field the checked path must see
        return None
    names = [node.name for node in typed]
    unique = set(names)
    if len(unique) != len(names) or "." in unique or ".." in unique or "/" in "".join(names):
        return None
    ids: list[str] = []
    for node in typed:
        if node.content is not UNSET:
            ids += node.content
        if node.subtree is not UNSET:
            ids.append(node.subtree)
    if not _lower_hex("".join(ids)):
        return None
    nodes: list[Node] = msgspec.to_builtins(typed)  # UNSET fields left out: the stored keys
    return nodes


def _lower_hex(text: str) -> bool:
    """``text`` is lower-case hex digits only. :meth:`bytes.fromhex` reads them in C, four
    times as fast as a regular expression; it also skips whitespace (then fewer bytes come
    out) and takes upper case (looked for apart)."""
    try:
        whole = len(bytes.fromhex(text)) * 2 == len(text)
    except ValueError:
        return False
    return whole and not any(digit in text for digit in "ABCDEF")


def decode_tree(data: bytes, name: str = "tree") -> list[Node]:
    """The nodes of a tree blob; :class:`CorruptObject` naming the tree and the field when
    it breaks format section 9 (names with '/' or NUL, ids that are not 64 hex digits,
    numbers out of range, duplicate names).

    A tree of the fields this version writes is read by the typed fast path
    (:func:`_decode_typed`); any other (a field unknown here, a name that is not UTF-8, a
    malformed tree) by the checked path: JSON decoded, then every node checked."""
    nodes = _decode_typed(data)
    return nodes if nodes is not None else _decode_checked(data, name)


def _decode_checked(data: bytes, name: str) -> list[Node]:
    """The nodes of a tree blob, each checked in Python: any tree, the malformed refused."""
    try:
        doc = _loads(data)
        if type(doc) is not dict:
            raise TypeError("not a JSON object")
        nodes = doc["nodes"]
        if type(nodes) is not list:
            raise TypeError("nodes is not a list")
        names = set(map(_check_node, nodes))
        if len(names) != len(nodes):
            raise ValueError("two nodes have the same name")
    except RecursionError as exc:  # JSON nested thousands deep
        raise CorruptObject(name, "tree blob is malformed (nested too deeply)") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObject(name, f"tree blob is malformed ({exc})") from exc
    return nodes
