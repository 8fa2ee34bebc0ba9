"""Snapshot objects: small sealed JSON documents naming a root tree (format section 9)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo.crypto import AAD_SNAPSHOT, SealError, open_sealed, seal
from safehold.repo.errors import CorruptObject

__all__ = [
    "META_MAX_ENTRIES",
    "META_MAX_VALUE",
    "SNAPSHOT_TYPES",
    "Snapshot",
    "check_meta",
    "decode_snapshot",
    "encode_snapshot",
    "newest_per_source",
    "source_filter",
]

SNAPSHOT_TYPES = ("full", "incremental", "differential", "stdin")

#: A metadata key: a letter or digit, then up to 62 letters, digits, ``.``, ``_``, ``/``, ``-``.
META_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
META_MAX_VALUE = 1024
META_MAX_ENTRIES = 32


def check_meta(meta: Mapping[str, object]) -> dict[str, str]:
    """``meta`` as a plain dict, or :class:`ValueError` saying which entry breaks the rules
    (format section 9: at most 32 entries, keys like ``claim.size``, string values of at
    most 1024 characters)."""
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta must be a mapping of strings, not {type(meta).__name__}")
    if len(meta) > META_MAX_ENTRIES:
        raise ValueError(f"meta has {len(meta)} entries; at most {META_MAX_ENTRIES} are allowed")
    checked: dict[str, str] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not META_KEY.fullmatch(key):
            raise ValueError(
                f"meta key {key!r} is not allowed: 1 to 63 characters, letters, digits and "
                "'._/-', beginning with a letter or digit"
            )
        if not isinstance(value, str):
            raise ValueError(f"meta value of {key!r} must be a string")
        if len(value) > META_MAX_VALUE:
            raise ValueError(
                f"meta value of {key!r} has {len(value)} characters; at most {META_MAX_VALUE}"
            )
        checked[key] = value
    return checked


@dataclass
class Snapshot:
    time: str
    source: str
    type: str
    tree: str
    paths: list[str]
    hostname: str
    tags: list[str] = field(default_factory=list)
    parent: str | None = None
    program: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    #: What a fresh cluster needs to re-create the source (``claim.size``, ``source.kind``,
    #: ...; format section 9); checked by :func:`check_meta`. Old snapshots have none.
    meta: dict[str, str] = field(default_factory=dict)
    #: the object's hash; set when read or written, not stored inside it
    id: str = ""

    @property
    def datetime(self) -> datetime:
        return datetime.fromisoformat(self.time.replace("Z", "+00:00"))


def encode_snapshot(aead: AESGCM, snap: Snapshot) -> bytes:
    doc = asdict(snap)
    doc.pop("id")
    doc["meta"] = check_meta(snap.meta)
    if not doc["meta"]:
        del doc["meta"]  # the object stays as it was before meta existed
    return seal(aead, AAD_SNAPSHOT, json.dumps(doc, sort_keys=True).encode())


def decode_snapshot(aead: AESGCM, data: bytes, name: str) -> Snapshot:
    try:
        doc = json.loads(open_sealed(aead, AAD_SNAPSHOT, data))
        snap = Snapshot(
            time=str(doc["time"]),
            source=str(doc["source"]),
            type=str(doc["type"]),
            tree=str(doc["tree"]),
            paths=[str(p) for p in doc.get("paths", [])],
            hostname=str(doc.get("hostname", "")),
            tags=[str(t) for t in doc.get("tags", [])],
            parent=doc.get("parent"),
            program=str(doc.get("program", "")),
            summary=dict(doc.get("summary", {})),
            version=int(doc.get("version", 1)),
            meta=check_meta(doc.get("meta", {})),
        )
    except SealError as exc:
        raise CorruptObject(name, "snapshot fails authentication") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObject(name, f"snapshot is malformed ({exc})") from exc
    snap.id = name.rsplit("/", 1)[-1]
    return snap


def source_filter(
    sources: Iterable[str] = (), prefixes: Iterable[str] = ()
) -> Callable[[str], bool]:
    """Whether a source name is selected by exact ``sources`` or by ``prefixes``; with
    neither, every source is. An empty prefix would select everything, so it is refused."""
    names = frozenset(sources)
    starts = tuple(prefixes)
    if any(not p for p in starts):
        raise ValueError("an empty source prefix would select every source: give a prefix")
    if not names and not starts:
        return lambda source: True
    return lambda source: source in names or source.startswith(starts)


def newest_per_source(snapshots: Iterable[Snapshot]) -> dict[str, Snapshot]:
    """The newest snapshot of each source (by time, then id), sorted by source name."""
    newest: dict[str, Snapshot] = {}
    for snap in snapshots:
        best = newest.get(snap.source)
        if best is None or (snap.datetime, snap.id) > (best.datetime, best.id):
            newest[snap.source] = snap
    return dict(sorted(newest.items()))
