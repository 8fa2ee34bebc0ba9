"""The repository config: format version and algorithms by name, in plain JSON.

It is readable without a password so that a tool can refuse an unknown version
before asking for one; it holds nothing secret, and its hash is sealed into every
key object so that tampering is detected once a key opens (format section 4).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from safehold.repo.errors import CorruptObject, UnsupportedRepository

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "ChunkerParams",
    "Config",
]

FORMAT_NAME = "safehold-repository"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)

_KNOWN = {
    "hash": ("blake3",),
    "id_hash": ("blake3-keyed",),
    "cipher": ("aes-256-gcm",),
    "compression": ("zstd",),
    "chunker": ("fastcdc-2020",),
}


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC parameters, fixed for the life of a repository (they decide dedup)."""

    min_size: int = 128 * 1024
    avg_size: int = 512 * 1024
    max_size: int = 2 * 1024 * 1024
    normalization: int = 1
    algorithm: str = "fastcdc-2020"


#: zstd level 1: on the benchmark data it stores 0.1 % more than level 3 for ~45 % faster
#: compression, the largest single cost of a full backup (docs/performance.md).
DEFAULT_COMPRESSION_LEVEL = 1


@dataclass(frozen=True)
class Config:
    id: str
    created: str
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    compression_level: int = DEFAULT_COMPRESSION_LEVEL
    pack_size: int = 16 * 1024 * 1024
    version: int = FORMAT_VERSION
    #: Object lock (docs/immutability.md): "governance" or "compliance", and days; None: off.
    object_lock_mode: str | None = None
    object_lock_days: int = 0

    @classmethod
    def new(
        cls,
        *,
        chunker: ChunkerParams | None = None,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        pack_size: int = 16 * 1024 * 1024,
        object_lock_mode: str | None = None,
        object_lock_days: int = 0,
    ) -> Config:
        return cls(
            id=os.urandom(32).hex(),
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            chunker=chunker or ChunkerParams(),
            compression_level=compression_level,
            pack_size=pack_size,
            object_lock_mode=object_lock_mode,
            object_lock_days=object_lock_days,
        )

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": self.version,
            "id": self.id,
            "created": self.created,
            "hash": "blake3",
            "id_hash": "blake3-keyed",
            "cipher": "aes-256-gcm",
            "compression": {"algorithm": "zstd", "level": self.compression_level},
            "chunker": {
                "algorithm": self.chunker.algorithm,
                "min_size": self.chunker.min_size,
                "avg_size": self.chunker.avg_size,
                "max_size": self.chunker.max_size,
                "normalization": self.chunker.normalization,
            },
            "pack_size": self.pack_size,
        }
        if self.object_lock_mode:
            doc["object_lock"] = {"mode": self.object_lock_mode, "days": self.object_lock_days}
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Config:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise TypeError("not an object")
        except (ValueError, TypeError) as exc:
            raise CorruptObject(f"{where}/config", f"not a JSON object ({exc})") from exc
        if doc.get("format") != FORMAT_NAME:
            raise UnsupportedRepository(
                f"{where}: the config does not describe a Safehold repository "
                f"(format {doc.get('format')!r}); check the --repo URL"
            )
        version = doc.get("version")
        if version not in SUPPORTED_VERSIONS:
            raise UnsupportedRepository(
                f"{where}: repository format version {version!r} is not supported by this "
                f"safehold (it reads versions {', '.join(map(str, SUPPORTED_VERSIONS))}); "
                "upgrade safehold to a release that reads it"
            )
        try:
            compression = doc["compression"]
            chunker = doc["chunker"]
            lock = doc.get("object_lock")
            found = {
                "hash": doc["hash"],
                "id_hash": doc["id_hash"],
                "cipher": doc["cipher"],
                "compression": compression["algorithm"],
                "chunker": chunker["algorithm"],
            }
            for key, value in found.items():
                if value not in _KNOWN[key]:
                    raise UnsupportedRepository(
                        f"{where}: the repository uses {key} algorithm {value!r}, which this "
                        f"safehold does not know (it knows {', '.join(_KNOWN[key])}); "
                        "upgrade safehold"
                    )
            return cls(
                id=str(doc["id"]),
                created=str(doc["created"]),
                chunker=ChunkerParams(
                    min_size=int(chunker["min_size"]),
                    avg_size=int(chunker["avg_size"]),
                    max_size=int(chunker["max_size"]),
                    normalization=int(chunker["normalization"]),
                    algorithm=str(chunker["algorithm"]),
                ),
                compression_level=int(compression.get("level", DEFAULT_COMPRESSION_LEVEL)),
                pack_size=int(doc.get("pack_size", 16 * 1024 * 1024)),
                version=int(version),
                object_lock_mode=str(lock["mode"]) if lock else None,
                object_lock_days=int(lock["days"]) if lock else 0,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptObject(f"{where}/config", f"missing or invalid field {exc}") from exc
