"""Snapshot objects: small sealed JSON documents naming a root tree (format section 9)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo.crypto import AAD_SNAPSHOT, SealError, open_sealed, seal
from safehold.repo.errors import CorruptObject

__all__ = ["SNAPSHOT_TYPES", "Snapshot", "decode_snapshot", "encode_snapshot"]

SNAPSHOT_TYPES = ("full", "incremental", "differential", "stdin")


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
    #: the object's hash; set when read or written, not stored inside it
    id: str = ""

    @property
    def datetime(self) -> datetime:
        return datetime.fromisoformat(self.time.replace("Z", "+00:00"))


def encode_snapshot(aead: AESGCM, snap: Snapshot) -> bytes:
    doc = asdict(snap)
    doc.pop("id")
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
        )
    except SealError as exc:
        raise CorruptObject(name, "snapshot fails authentication") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObject(name, f"snapshot is malformed ({exc})") from exc
    snap.id = name.rsplit("/", 1)[-1]
    return snap
