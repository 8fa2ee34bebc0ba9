"""The repository config: format version and algorithms by name, in plain JSON.

It is readable without a password so that a tool can refuse an unknown version
before asking for one; it holds nothing secret, and its hash is sealed into every
key object so that tampering is detected once a key opens (format section 4).
"""

from __future__ import annotations

import json
import os
import re
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
#: The version ``repo init`` creates. Version 1 repositories are read and written as
#: version 1 (format section 13): a repository never changes version in place.
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)

_HEX_ID = re.compile(r"[0-9a-f]{64}")
_MAX_CONFIG = 64 * 1024
#: Largest chunk and pack a config may ask for: a chunk is held in memory whole.
_MAX_CHUNK = 256 * 1024 * 1024
_MAX_PACK = 4 * 1024 * 1024 * 1024 - 1

_KNOWN = {
    "hash": ("blake3",),
    "id_hash": ("blake3-keyed",),
    "cipher": ("aes-256-gcm",),
    "compression": ("zstd", "zstd-dict"),
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
    #: Whether backups may store blobs compressed with a dictionary (compression
    #: algorithm ``zstd-dict``, format section 6): new repositories do; a repository made
    #: before dictionaries (``zstd``) never does, so older Safehold can still read it.
    dictionaries: bool = False

    @classmethod
    def new(
        cls,
        *,
        chunker: ChunkerParams | None = None,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        pack_size: int = 16 * 1024 * 1024,
        object_lock_mode: str | None = None,
        object_lock_days: int = 0,
        dictionaries: bool = True,
    ) -> Config:
        return cls(
            id=os.urandom(32).hex(),
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            chunker=chunker or ChunkerParams(),
            compression_level=compression_level,
            pack_size=pack_size,
            object_lock_mode=object_lock_mode,
            object_lock_days=object_lock_days,
            dictionaries=dictionaries,
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
            "compression": {
                "algorithm": "zstd-dict" if self.dictionaries else "zstd",
                "level": self.compression_level,
            },
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
        """The config object's bytes, checked field by field (:class:`CorruptObject`
        names the field; :class:`UnsupportedRepository` an unknown version or algorithm)."""
        name = f"{where}/config"
        doc, version = _document(data, where)
        field = ""
        try:
            field = "compression"
            compression = _object(doc.get("compression"))
            field = "chunker"
            chunker = _object(doc.get("chunker"))
            found = {
                "hash": doc.get("hash"),
                "id_hash": doc.get("id_hash"),
                "cipher": doc.get("cipher"),
                "compression": compression.get("algorithm"),
                "chunker": chunker.get("algorithm"),
            }
            _check_known(found, where)
            field = "id"
            repo_id = doc.get("id")
            if type(repo_id) is not str or not _HEX_ID.fullmatch(repo_id):
                raise ValueError("is not 64 hex digits")
            field = "created"
            created = doc.get("created")
            if type(created) is not str or len(created) > 64:
                raise ValueError("is not a time")
            sizes = {}
            for key in ("min_size", "avg_size", "max_size"):
                field = f"chunker.{key}"
                sizes[key] = _int(chunker.get(key), 64, _MAX_CHUNK)
            field = "chunker"
            if not sizes["min_size"] <= sizes["avg_size"] <= sizes["max_size"]:
                raise ValueError("min_size <= avg_size <= max_size does not hold")
            field = "chunker.normalization"
            normalization = _int(chunker.get("normalization"), 0, 3)
            field = "compression.level"
            level = _int(compression.get("level", DEFAULT_COMPRESSION_LEVEL), -(2**17), 22)
            field = "pack_size"
            pack_size = _int(doc.get("pack_size", 16 * 1024 * 1024), 4096, _MAX_PACK)
            field = "object_lock"
            lock = doc.get("object_lock")
            mode: str | None = None
            days = 0
            if lock is not None:
                lock = _object(lock)
                mode = lock.get("mode")
                if mode not in ("governance", "compliance"):
                    raise ValueError("mode is not 'governance' or 'compliance'")
                field = "object_lock.days"
                days = _int(lock.get("days"), 1, 36500)
            return cls(
                id=repo_id,
                created=created,
                chunker=ChunkerParams(
                    min_size=sizes["min_size"],
                    avg_size=sizes["avg_size"],
                    max_size=sizes["max_size"],
                    normalization=normalization,
                    algorithm=str(chunker["algorithm"]),
                ),
                compression_level=level,
                pack_size=pack_size,
                version=version,
                object_lock_mode=mode,
                object_lock_days=days,
                dictionaries=found["compression"] == "zstd-dict",
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptObject(name, f"field {field!r} is missing or invalid ({exc})") from exc


def _document(data: bytes, where: str) -> tuple[dict[str, Any], int]:
    """The config's JSON object and its format version, once both are known to be ours."""
    name = f"{where}/config"
    if len(data) > _MAX_CONFIG:
        raise CorruptObject(name, f"is {len(data)} bytes, more than a config can be")
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise TypeError("not an object")
    except (ValueError, TypeError, RecursionError) as exc:
        raise CorruptObject(name, f"not a JSON object ({exc})") from exc
    if doc.get("format") != FORMAT_NAME:
        raise UnsupportedRepository(
            f"{where}: the config does not describe a Safehold repository "
            f"(format {str(doc.get('format'))[:80]!r}); check the --repo URL"
        )
    version = doc.get("version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise UnsupportedRepository(
            f"{where}: repository format version {repr(version)[:40]} is not supported by "
            f"this safehold (it reads versions {', '.join(map(str, SUPPORTED_VERSIONS))}); "
            "upgrade safehold to a release that reads it"
        )
    return doc, version


def _check_known(found: dict[str, object], where: str) -> None:
    """Refuse an algorithm (``found``: kind -> name) that this safehold does not know."""
    for key, value in found.items():
        if value not in _KNOWN[key]:
            raise UnsupportedRepository(
                f"{where}: the repository uses {key} algorithm {str(value)[:80]!r}, "
                f"which this safehold does not know (it knows {', '.join(_KNOWN[key])}); "
                "upgrade safehold"
            )


def _object(value: object) -> dict[str, Any]:
    if type(value) is not dict:
        raise TypeError("is not a JSON object")
    return value


def _int(value: object, low: int, high: int) -> int:
    """``value`` when it is an integer (not a bool, not a float) in ``low..high``."""
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"is not an integer from {low} to {high}")
    return value
