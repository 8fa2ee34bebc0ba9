"""Object names and prefixes of a repository: the one place that knows the layout.

Normative description: section 3 ("Object names and layout") of
``docs/design/repository-format.md``::

    config                    the repository config (plain JSON, section 4)
    keys/<hash>               key objects (JSON, section 5)
    data/<hash[0:2]>/<hash>   packs (section 7)
    index/<hash>              index objects (section 8)
    snapshots/<hash>          snapshot objects (section 9)
    locks/<hash>              lock objects (section 11)
    audit/<hash>              audit records (section 15)

``<hash>`` is an object's id: hex(BLAKE3(stored bytes)). Code that names, lists or parses
object names uses these constants and functions, never a literal ``"data/"`` or a
``rsplit("/", 1)`` of its own.
"""

from __future__ import annotations

__all__ = [
    "AUDIT",
    "CONFIG",
    "DATA",
    "INDEX",
    "KEYS",
    "LOCKS",
    "SNAPSHOTS",
    "audit_name",
    "index_name",
    "key_name",
    "lock_name",
    "object_id",
    "object_name",
    "pack_object_name",
    "snapshot_name",
]

#: The repository config, the one fixed name (written with create-if-absent).
CONFIG = "config"
#: Prefixes of the content-addressed objects, to list them (``storage.list(DATA)``).
KEYS = "keys/"
DATA = "data/"
INDEX = "index/"
SNAPSHOTS = "snapshots/"
LOCKS = "locks/"
AUDIT = "audit/"


def object_id(name: str) -> str:
    """The id (hash) of a content-addressed object: the last part of its name."""
    return name.rsplit("/", 1)[-1]


def pack_object_name(pack: str) -> str:
    """The object name of the pack ``pack`` (its id): ``data/<id[0:2]>/<id>``."""
    return f"{DATA}{pack[:2]}/{pack}"


def key_name(key_id: str) -> str:
    return KEYS + key_id


def index_name(index_id: str) -> str:
    return INDEX + index_id


def snapshot_name(snapshot_id: str) -> str:
    return SNAPSHOTS + snapshot_id


def lock_name(lock_id: str) -> str:
    return LOCKS + lock_id


def audit_name(record_id: str) -> str:
    return AUDIT + record_id


def object_name(kind: str, object_id: str) -> str:
    """The name of the object ``object_id`` of ``kind``: a prefix without its slash
    (``"data"``, ``"index"``, ``"snapshots"``, ``"keys"``, ``"locks"``)."""
    return pack_object_name(object_id) if kind == DATA[:-1] else f"{kind}/{object_id}"
