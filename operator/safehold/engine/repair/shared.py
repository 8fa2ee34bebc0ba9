"""What the index repair and the snapshot repair share: their errors, the check that an
object is not damaged but sealed with a newer data key, and deleting under object locks."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from safehold.repo.crypto import MAX_KEY_VERSIONS
from safehold.repo.errors import RepositoryError
from safehold.repo.repository import Repository
from safehold.storage import NotFound, ObjectLocked

__all__ = [
    "HEX",
    "META_LOST",
    "META_ORIGINAL",
    "META_TIME",
    "NEWER_KEY",
    "REPAIRED_TAG",
    "IndexFirst",
    "RepairError",
    "check_key_version",
    "delete_object",
    "iso",
]

#: The tag every repaired copy of a snapshot gets.
REPAIRED_TAG = "repaired"
#: ``meta`` keys of a repaired copy: the original's id, and what it lost.
META_ORIGINAL = "repair.original"
META_LOST = "repair.lost"
META_TIME = "repair.time"
HEX = re.compile(r"^[0-9a-f]{64}$")


class RepairError(RepositoryError):
    """A repair cannot go on (the message says what to do first); nothing was changed."""


class IndexFirst(RepairError):
    """``repair snapshots`` refused: the index names data that is not there."""


#: How a reader says that something is sealed with a data key version its key lacks.
NEWER_KEY = "which this key does not hold"


def check_key_version(repo: Repository, name: str, head: bytes) -> None:
    """:class:`RepairError` when ``head`` (an object's or pack's first bytes) names a data
    key version newer than the key that opened the repository holds (format section 5b):
    such an object is not damaged, and a repair must not drop it or its data."""
    if repo.aead.prefix_size == 0 or len(head) < 4:
        return
    version = int.from_bytes(head[:4], "little")
    held = len(repo.keys.data_keys)
    if held < version <= MAX_KEY_VERSIONS:
        raise RepairError(
            f"{repo.location}: {name} is sealed with data key version {version}, which the "
            f"key that opened the repository does not hold (it holds 1 to {held}): the key "
            "object predates a rotation, the data is not damaged. Open the repository with a "
            "key object that holds it (at a recovery site: copy the primary's new key object "
            "there, docs/replication.md), then run the repair again; nothing was changed"
        )


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def delete_object(
    repo: Repository, name: str, modified: datetime | None
) -> tuple[bool, str | None]:
    """Delete object ``name`` (written at ``modified``) unless an object lock holds it:
    whether it was deleted, and when the lock ends if one holds it."""
    days = repo.object_lock_days
    now = datetime.now(UTC)
    if days:
        expiry = (modified or now) + timedelta(days=days)
        if expiry > now:
            return False, iso(expiry)
    try:
        repo.storage.delete(name)
    except ObjectLocked:
        return False, "unknown (the server refused the delete)"
    except NotFound:
        return False, None
    return True, None
