"""The vocabulary of PostgreSQL's physical backups, shared by the archive, the base backup,
the restore and retention: the snapshots' sources and kinds, WAL positions (LSNs) and the
names of WAL segments. Pure functions; nothing here touches a server or a repository.
"""

from __future__ import annotations

__all__ = [
    "BASE_FILE",
    "BASE_KIND",
    "WAL_KIND",
    "base_source",
    "format_lsn",
    "parse_history",
    "parse_lsn",
    "record_end",
    "segment_name",
    "segment_number",
    "wal_source",
]

#: The one file of a base backup's snapshot: pg_basebackup's tar.
BASE_FILE = "base.tar"
#: ``source.kind`` of a base backup's snapshot, and of a WAL archive drain's.
BASE_KIND = "postgresql-base"
WAL_KIND = "postgresql-wal"


def wal_source(prefix: str) -> str:
    """The snapshot source of a server's WAL archive."""
    return f"{prefix}/pg/wal"


def base_source(prefix: str) -> str:
    """The snapshot source of a server's base backups."""
    return f"{prefix}/pg/base"


def parse_lsn(text: str) -> int:
    """``'0/3016598'`` as a number; a ValueError for anything else."""
    high, sep, low = text.strip().partition("/")
    if not sep or not high or not low:
        raise ValueError(f"{text!r} is not a PostgreSQL LSN (like 0/3016598)")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    """An LSN as PostgreSQL writes it."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


#: The sizes of a WAL page's header: the first page of a segment has the long one
#: (PostgreSQL's SizeOfXLogLongPHD and SizeOfXLogShortPHD).
LONG_PAGE_HEADER = 40
SHORT_PAGE_HEADER = 24


def record_end(insert: int, block_size: int, segment_size: int) -> int:
    """The end of the last WAL record, from the insert position (``pg_current_wal_insert_lsn``).

    Where the last record ended at a page's start, the insert position points past the page's
    header, where the next record will begin: bytes no record has written yet. A receiver
    told to wait for them would wait for the server's next record.
    """
    if insert % segment_size == LONG_PAGE_HEADER:
        return insert - LONG_PAGE_HEADER
    if insert % block_size == SHORT_PAGE_HEADER:
        return insert - SHORT_PAGE_HEADER
    return insert


def segment_name(timeline: int, lsn: int, segment_size: int) -> str:
    """The name of the WAL segment that holds ``lsn`` (PostgreSQL's ``XLogFileName``)."""
    per_id = 0x100000000 // segment_size
    number = lsn // segment_size
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"


def segment_number(name: str, segment_size: int) -> int:
    """The position of segment ``name`` (without ``.partial``) in its timeline."""
    per_id = 0x100000000 // segment_size
    return int(name[8:16], 16) * per_id + int(name[16:24], 16)


def parse_history(text: str) -> list[tuple[int, int]]:
    """A timeline history file (``00000003.history``) as the timelines before it, oldest
    first, each with the position where the next one forked from it: the file's lines
    ``1	0/3000158	before 2026-...`` (comments and blank lines skipped). The last pair
    says where the file's own timeline began."""
    steps = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            steps.append((int(fields[0]), parse_lsn(fields[1])))
    return steps
