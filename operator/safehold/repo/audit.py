"""Audit records: sealed, write-once, chained objects under ``audit/`` (format section 15).

Each record says who did what to the repository, when, and with which result; it names
the record its writer saw last (``previous``), so a deleted record leaves a dangling
reference that :func:`check_chain` reports. Concurrent writers may fork the chain: a fork
is fine, a missing record is not.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from safehold.repo.crypto import Sealer, SealError, object_hash, open_sealed, seal
from safehold.repo.errors import CorruptObject
from safehold.repo.layout import AUDIT, audit_name, object_id
from safehold.storage import AlreadyExists, NotFound, Storage

__all__ = [
    "AAD_AUDIT",
    "AUDIT",
    "AuditRecord",
    "check_chain",
    "decode_record",
    "encode_record",
    "newest_record",
    "read_records",
    "write_record",
]

AAD_AUDIT = b"safehold/v1/audit"
_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_STRING = 4096
#: Write times in a listing this close to the newest may be as new (a second's resolution).
_SAME_TIME = timedelta(seconds=1)


@dataclass
class AuditRecord:
    """One operation on the repository (format section 15)."""

    operation: str
    started: str
    ended: str
    result: str  # "ok" or "failed"
    host: str
    user: str
    error: str = ""
    #: the custom resource that caused a Job: namespace, kind, name, uid (empty otherwise)
    cause: dict[str, str] = field(default_factory=dict)
    snapshots: list[str] = field(default_factory=list)
    #: counts where the operation has them (files, bytes)
    counts: dict[str, int] = field(default_factory=dict)
    #: id of the newest record the writer saw; "" for the first
    previous: str = ""
    version: int = 1
    #: the object's id; set when read or written, not stored inside it
    id: str = ""

    @property
    def datetime(self) -> datetime:
        return datetime.fromisoformat(self.ended.replace("Z", "+00:00"))


def encode_record(aead: Sealer, record: AuditRecord) -> bytes:
    doc = asdict(record)
    doc.pop("id")
    return seal(aead, AAD_AUDIT, json.dumps(doc, sort_keys=True).encode())


def _text(value: object, key: str) -> str:
    if type(value) is not str or len(value) > _MAX_STRING:
        raise ValueError(f"field {key!r} is not a string")
    return value


def decode_record(aead: Sealer, data: bytes, name: str) -> AuditRecord:
    """The record in ``data``; :class:`CorruptObject` when it fails authentication (it was
    changed) or breaks section 15."""
    try:
        doc = json.loads(open_sealed(aead, AAD_AUDIT, data))
    except SealError as exc:
        raise CorruptObject(name, "audit record was changed: it fails authentication") from exc
    except (ValueError, RecursionError) as exc:
        raise CorruptObject(name, "audit record is not JSON") from exc
    try:
        if type(doc) is not dict:
            raise ValueError("not a JSON object")
        texts = {k: _text(doc.get(k, ""), k) for k in ("operation", "started", "ended")}
        for key in ("started", "ended"):
            datetime.fromisoformat(texts[key].replace("Z", "+00:00"))
        previous = _text(doc.get("previous", ""), "previous")
        if previous and not _HEX.fullmatch(previous):
            raise ValueError("field 'previous' is not an id")
        cause, counts, snaps = doc.get("cause", {}), doc.get("counts", {}), doc.get("snapshots")
        if type(cause) is not dict or not all(type(v) is str for v in cause.values()):
            raise ValueError("field 'cause' is not an object of strings")
        if type(counts) is not dict or not all(type(v) is int for v in counts.values()):
            raise ValueError("field 'counts' is not an object of integers")
        if type(snaps) is not list or not all(type(s) is str for s in snaps):
            raise ValueError("field 'snapshots' is not a list of strings")
        record = AuditRecord(
            **texts,
            result=_text(doc.get("result"), "result"),
            host=_text(doc.get("host", ""), "host"),
            user=_text(doc.get("user", ""), "user"),
            error=_text(doc.get("error", ""), "error"),
            cause=cause,
            snapshots=snaps,
            counts=counts,
            previous=previous,
            version=int(doc.get("version", 1)),
        )
    except (ValueError, TypeError) as exc:
        raise CorruptObject(name, f"audit record is malformed ({exc})") from exc
    record.id = object_id(name)
    return record


def read_records(
    storage: Storage, aead: Sealer, errors: dict[str, str] | None = None
) -> list[AuditRecord]:
    """Every readable record, oldest first (by end time, then id); a record that fails its
    checks goes to ``errors`` (name -> message)."""
    records: list[AuditRecord] = []
    for info in storage.list(AUDIT):
        digest = object_id(info.name)
        if not _HEX.fullmatch(digest):
            continue
        try:
            records.append(_read_record(storage, aead, info.name))
        except CorruptObject as exc:
            if errors is not None:
                errors[info.name] = str(exc)
        except NotFound:
            continue
    records.sort(key=lambda r: (r.datetime, r.id))
    return records


def newest_record(storage: Storage, aead: Sealer) -> str:
    """The id of the newest record ("" when there is none), read from as few objects as
    the listing allows: a record is written when its operation ends, so the newest one is
    among those the listing shows written last. Their write times may have a resolution
    of a second (S3), so the records written within a second of the last are read and
    ordered as readers order them (``ended``, then id); the trail's other records, one per
    command ever run, are not read (they once were: a GET each, at the end of every
    command). A damaged record that is newest is named all the same: it is there, which is
    all the chain says (:func:`check_chain` reports it as damaged, not as missing)."""
    listed = [i for i in storage.list(AUDIT) if _HEX.fullmatch(object_id(i.name))]
    if not listed:
        return ""
    times = [i.modified for i in listed if i.modified is not None]
    if len(times) == len(listed):
        last = max(times)
        listed = [i for i in listed if i.modified and last - i.modified <= _SAME_TIME]
    if len(listed) == 1:
        return object_id(listed[0].name)
    records: list[AuditRecord] = []
    for info in listed:
        with contextlib.suppress(CorruptObject, NotFound):
            records.append(_read_record(storage, aead, info.name))
    if not records:
        return max(object_id(i.name) for i in listed)
    return max(records, key=lambda r: (r.datetime, r.id)).id


def _read_record(storage: Storage, aead: Sealer, name: str) -> AuditRecord:
    data = storage.get(name)
    if object_hash(data) != object_id(name):
        raise CorruptObject(name, "audit record was changed: its bytes do not match its name")
    return decode_record(aead, data, name)


def write_record(storage: Storage, aead: Sealer, record: AuditRecord) -> str:
    """Chain ``record`` to the newest record there is (:func:`newest_record`) and write it
    once; its id."""
    record.previous = newest_record(storage, aead)
    data = encode_record(aead, record)
    record.id = object_hash(data)
    with contextlib.suppress(AlreadyExists):  # the same bytes are there (content-addressed)
        storage.create(audit_name(record.id), data)
    return record.id


def check_chain(storage: Storage, aead: Sealer) -> dict[str, str]:
    """Problems of the audit trail, name -> message: records that fail authentication or
    are malformed (changed), and references to records that are gone (deleted)."""
    errors: dict[str, str] = {}
    records = read_records(storage, aead, errors)
    present = {r.id for r in records} | {object_id(name) for name in errors}
    for record in records:
        if record.previous and record.previous not in present:
            errors[audit_name(record.previous)] = (
                f"audit record is missing (deleted?): record {record.id[:12]} "
                f"({record.operation}, {record.ended}) names it as its previous one"
            )
    return errors
