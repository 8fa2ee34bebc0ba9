"""Tree blobs: one directory as deterministic JSON (format section 9).

Deterministic (sorted nodes, sorted keys, compact) so that an unchanged directory
encodes to the same bytes, gets the same id and is stored once.
"""

from __future__ import annotations

import json
from typing import Any

from safehold.repo.errors import CorruptObject

__all__ = ["NODE_TYPES", "Node", "decode_tree", "encode_tree"]

NODE_TYPES = ("file", "dir", "symlink", "dev", "chardev", "fifo", "socket")

#: A node is a plain dict (fast to build and to encode); see the format for its fields.
Node = dict[str, Any]


def encode_tree(nodes: list[Node]) -> bytes:
    nodes = sorted(nodes, key=lambda n: str(n["name"]))
    # check_circular off: nodes are plain data built by the engine, and the check costs
    # a dict operation per container (tens of thousands per backup)
    return json.dumps(
        {"nodes": nodes}, sort_keys=True, separators=(",", ":"), check_circular=False
    ).encode()


def decode_tree(data: bytes, name: str = "tree") -> list[Node]:
    try:
        doc = json.loads(data)
        nodes = doc["nodes"]
        if not isinstance(nodes, list):
            raise TypeError("nodes is not a list")
        for node in nodes:
            if not isinstance(node, dict) or not isinstance(node.get("name"), str):
                raise TypeError("a node has no name")
            if node.get("type") not in NODE_TYPES:
                raise TypeError(f"unknown node type {node.get('type')!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObject(name, f"tree blob is malformed ({exc})") from exc
    return nodes
