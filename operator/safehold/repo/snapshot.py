"""Snapshot objects: small sealed JSON documents naming a root tree (format section 9)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo.crypto import AAD_SNAPSHOT, Sealer, SealError, open_sealed, seal
from safehold.repo.errors import CorruptObject
from safehold.repo.layout import object_id

__all__ = [
    "META_MAX_ENTRIES",
    "META_MAX_VALUE",
    "SNAPSHOT_TYPES",
    "Snapshot",
    "belongs_to",
    "check_host",
    "check_meta",
    "decode_snapshot",
    "encode_snapshot",
    "newest_per_source",
    "parse_time",
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
    #: The host the snapshot belongs to (``backup --host``, by default the machine's host
    #: name; format section 9): a source's incrementals and retention series are kept
    #: per host. None (unset) on snapshots written before the field existed: such a
    #: snapshot belongs to every host (:meth:`of_host`). ``hostname`` is the machine that
    #: wrote the snapshot, shown and never compared.
    host: str | None = None
    #: The compression dictionary the backup used (its blob id; format section 9), which
    #: the next backup of the source uses again. None: none (a small backup, a stream, a
    #: repository without dictionaries, or a snapshot older than dictionaries).
    dictionary: str | None = None
    #: the object's hash; set when read or written, not stored inside it
    id: str = ""

    @property
    def datetime(self) -> datetime:
        return datetime.fromisoformat(self.time.replace("Z", "+00:00"))

    def of_host(self, host: str | None) -> bool:
        """Whether the snapshot belongs to ``host`` (None: any host): :func:`belongs_to`."""
        return belongs_to(self.host, host)


def belongs_to(snapshot_host: str | None, host: str | None) -> bool:
    """Whether a snapshot of ``snapshot_host`` belongs to ``host`` (None: any host): the one
    host rule (format section 9) of the parent choice, ``latest``, ``--host`` filters and
    retention's series. A snapshot without a host belongs to every host, so that the
    snapshots written before hosts existed stay a source's parents and retention series."""
    return host is None or snapshot_host is None or snapshot_host == host


def encode_snapshot(aead: AESGCM | Sealer, snap: Snapshot) -> bytes:
    doc = asdict(snap)
    doc.pop("id")
    doc["meta"] = check_meta(snap.meta)
    if not doc["meta"]:
        del doc["meta"]  # the object stays as it was before meta existed
    if snap.host is None:
        del doc["host"]
    else:
        check_host(snap.host)
    if snap.dictionary is None:
        del doc["dictionary"]
    return seal(aead, AAD_SNAPSHOT, json.dumps(doc, sort_keys=True).encode())


_ID = re.compile(r"[0-9a-f]{64}")
#: Bounds of a snapshot's lists and strings (format section 9): generous for any real
#: backup, small enough that a hostile object cannot exhaust memory.
MAX_LIST = 10_000
MAX_STRING = 4096
MAX_SUMMARY = 64


def _string(doc: dict[str, Any], key: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if type(value) is not str or len(value) > MAX_STRING or "\x00" in value:
        raise ValueError(f"field {key!r} is not a string of at most {MAX_STRING} characters")
    return value


def _strings(doc: dict[str, Any], key: str) -> list[str]:
    value = doc.get(key, [])
    if type(value) is not list or len(value) > MAX_LIST:
        raise ValueError(f"field {key!r} is not a list of at most {MAX_LIST} strings")
    for item in value:
        if type(item) is not str or len(item) > MAX_STRING or "\x00" in item:
            raise ValueError(f"field {key!r} holds an item that is not a string")
    return value


def check_host(host: object) -> str:
    """``host`` when it is a snapshot's host (format section 9: a non-empty string of at
    most 4096 characters without NUL); :class:`ValueError` otherwise."""
    if type(host) is not str or not host or len(host) > MAX_STRING or "\x00" in host:
        raise ValueError(
            f"a host must be a non-empty string of at most {MAX_STRING} characters without "
            f"NUL, not {host!r:.100}"
        )
    return host


def _id(value: object, key: str) -> str:
    if type(value) is not str or not _ID.fullmatch(value):
        raise ValueError(f"field {key!r} is not an id of 64 hex digits")
    return value


def _summary(value: object) -> dict[str, Any]:
    if type(value) is not dict or len(value) > MAX_SUMMARY:
        raise ValueError(f"field 'summary' is not an object of at most {MAX_SUMMARY} entries")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError("field 'summary' has a key longer than 64 characters")
        kind = type(item)
        if kind is int:
            if not 0 <= item < 2**63:
                raise ValueError(f"summary {key!r} is out of range")
        elif kind is float:
            if not (math.isfinite(item) and item >= 0):
                raise ValueError(f"summary {key!r} is not a finite number")
        elif kind is str:
            if len(item) > MAX_STRING:
                raise ValueError(f"summary {key!r} is too long")
        elif item is not None and kind is not bool:
            raise ValueError(f"summary {key!r} is not a number or a string")
    return value


def _host(value: object) -> str:
    try:
        return check_host(value)
    except ValueError:
        raise ValueError(
            f"field 'host' is not a non-empty string of at most {MAX_STRING} characters without NUL"
        ) from None


def parse_time(value: object) -> datetime:
    """An RFC 3339 time with its offset (``...Z``); :class:`ValueError` otherwise."""
    if type(value) is not str or len(value) > 64:
        raise ValueError("is not an RFC 3339 time")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return moment


def decode_snapshot(aead: AESGCM | Sealer, data: bytes, name: str) -> Snapshot:
    """A snapshot object's content; :class:`CorruptObject` naming the object and the field
    when it fails authentication or breaks format section 9."""
    try:
        doc = json.loads(open_sealed(aead, AAD_SNAPSHOT, data))
    except SealError as exc:
        raise CorruptObject(name, "snapshot fails authentication") from exc
    except (ValueError, RecursionError) as exc:
        raise CorruptObject(name, "snapshot is not JSON") from exc
    try:
        if type(doc) is not dict:
            raise ValueError("not a JSON object")
        try:
            time = doc["time"]
            parse_time(time)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"field 'time' is not an RFC 3339 time ({exc})") from None
        kind = _string(doc, "type")
        if kind not in SNAPSHOT_TYPES:
            raise ValueError(f"field 'type' is not one of {', '.join(SNAPSHOT_TYPES)}")
        version = doc.get("version", 1)
        if type(version) is not int or not 1 <= version < 2**31:
            raise ValueError("field 'version' is not a positive integer")
        parent = doc.get("parent")
        try:
            meta = check_meta(doc.get("meta", {}))
        except ValueError as exc:
            raise ValueError(f"field 'meta': {exc}") from None
        snap = Snapshot(
            time=time,
            source=_string(doc, "source"),
            type=kind,
            tree=_id(doc.get("tree"), "tree"),
            paths=_strings(doc, "paths"),
            hostname=_string(doc, "hostname", ""),
            tags=_strings(doc, "tags"),
            parent=None if parent is None else _id(parent, "parent"),
            program=_string(doc, "program", ""),
            summary=_summary(doc.get("summary", {})),
            version=version,
            meta=meta,
            host=None if doc.get("host") is None else _host(doc["host"]),
            dictionary=_id(doc["dictionary"], "dictionary") if "dictionary" in doc else None,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObject(name, f"snapshot is malformed ({exc})") from exc
    snap.id = object_id(name)
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
