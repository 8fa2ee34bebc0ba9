"""PostgreSQL's write-ahead log (WAL) in the repository: the archive and what a restore reads.

Point-in-time recovery needs a physical base backup (:mod:`.basebackup`) and every WAL
segment from that backup's start to the moment restored to. This module keeps the segments:

- **Names.** An LSN (``0/3016598``) lies in the segment named by its timeline and its
  position divided by the segment size (:func:`segment_name`), as PostgreSQL names them.
- **The archive** (:func:`archive_wal`) is a drain, run as often as the recovery point
  objective asks (every few minutes): it reads the server's WAL position and clock, streams
  the WAL up to that position with ``pg_receivewal --endpos`` into a private directory, and
  stores the segments as one snapshot of source ``PREFIX/pg/wal``. The snapshot records
  ``pg.archived_until``: the server's time when the position was read, so every
  transaction committed by then is in the archive.
- **No gap.** A physical replication slot (``safehold`` by default) keeps the server from
  recycling WAL the archive has not stored. pg_receivewal does not use the slot (it would
  move it as soon as a segment is on local disk); the drain moves it with
  ``pg_replication_slot_advance`` only after the snapshot is written, so a drain killed at
  any point loses nothing: the next one starts where the last snapshot ends. That snapshot's
  last segment, often a ``.partial`` one, is put back into the directory first, and
  pg_receivewal resumes from it.
- **A new timeline** (a server restored from this archive, or a standby promoted after a
  failover: the same system, a higher timeline) starts its archive at the segment it
  forked in, so that restores can follow it from the old server's base backups; a server
  on an older timeline than the archive holds is refused (one server per source).
- **A gap anyway** (the slot dropped or invalidated by ``max_slot_wal_keep_size``): the
  server no longer has the segment the archive would resume from. The drain then starts at
  the server's current segment and says so (:class:`ArchiveResult.gap`); restores cannot
  cross it, and the next base backup starts a chain that can.

Nothing here connects to the server but through the client tools (psql, pg_receivewal),
with the password in :class:`~.client.DatabaseClient`'s private file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from safehold.engine.databases.client import Connection, DatabaseClient, DumpError, StderrTail
from safehold.engine.databases.physical import (
    WAL_KIND,
    format_lsn,
    parse_history,
    parse_lsn,
    record_end,
    segment_name,
    wal_source,
)
from safehold.engine.databases.restore import read_chunks
from safehold.repo import Repository, Snapshot

__all__ = [
    "ArchiveOptions",
    "ArchiveResult",
    "Segment",
    "ServerIdentity",
    "WalArchive",
    "archive_wal",
    "read_archive",
    "refuse_older_timeline",
    "server_identity",
]

DEFAULT_SLOT = "safehold"
#: How long one drain may wait for the server to stream the WAL up to the position it read.
DRAIN_TIMEOUT_S = 300
_SEGMENT = re.compile(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial)?")
_HISTORY = re.compile(r"[0-9A-F]{8}\.history")
_SLOT = re.compile(r"[a-z0-9_]{1,63}")


@dataclass(frozen=True)
class ServerIdentity:
    """What ``IDENTIFY_SYSTEM`` and the settings say of a server."""

    system: str  # the system identifier: a restored copy keeps it, another cluster has its own
    timeline: int
    segment_size: int


def server_identity(client: DatabaseClient) -> ServerIdentity:
    """The server's system identifier, current timeline and WAL segment size."""
    rows = client.rows("IDENTIFY_SYSTEM", "dbname=postgres replication=true")
    if not rows or len(rows[0]) < 2:
        raise DumpError(f"the {client.conn.where} did not identify itself (IDENTIFY_SYSTEM)")
    system, timeline = rows[0][0], int(rows[0][1])
    size = client.query("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")
    return ServerIdentity(system, timeline, int(size[0]))


@dataclass(frozen=True)
class Segment:
    """One WAL file of the archive: where its bytes are in the repository."""

    name: str  # as PostgreSQL names it, without .partial
    partial: bool
    snapshot: Snapshot
    content: tuple[bytes, ...]  # chunk ids

    def read(self, repo: Repository) -> Iterable[bytes]:
        return read_chunks(repo, list(self.content))


@dataclass
class WalArchive:
    """What a repository holds of one server's WAL under a prefix, by segment name."""

    segments: dict[str, Segment] = field(default_factory=dict)
    histories: dict[str, Segment] = field(default_factory=dict)
    snapshots: list[Snapshot] = field(default_factory=list)  # oldest first


def _wal_nodes(repo: Repository, snap: Snapshot) -> list[dict[str, Any]]:
    """The files of a WAL snapshot: its one top directory's entries."""
    top = repo.load_tree(snap.tree)
    nodes: list[dict[str, Any]] = []
    for node in top:
        if node.get("type") == "dir" and node.get("subtree"):
            nodes += [n for n in repo.load_tree(str(node["subtree"])) if n.get("type") == "file"]
    return nodes


def read_archive(repo: Repository, prefix: str, system: str | None = None) -> WalArchive:
    """Every WAL segment stored under ``prefix`` (of server ``system`` when given): a
    complete segment wins over a partial one; of two partial ones, the newer snapshot's."""
    archive = WalArchive()
    for snap in repo.snapshots(source=wal_source(prefix)):
        if system is not None and snap.meta.get("pg.system") != system:
            continue
        archive.snapshots.append(snap)
        for node in _wal_nodes(repo, snap):
            name = str(node.get("name", ""))
            content = tuple(bytes.fromhex(c) for c in node.get("content", []))
            if _HISTORY.fullmatch(name):
                archive.histories[name] = Segment(name, False, snap, content)
                continue
            m = _SEGMENT.fullmatch(name)
            if m is None:
                continue
            plain, partial = name.removesuffix(".partial"), bool(m.group(4))
            old = archive.segments.get(plain)
            if old is None or old.partial:  # snapshots come oldest first
                archive.segments[plain] = Segment(plain, partial, snap, content)
    return archive


@dataclass
class ArchiveOptions:
    prefix: str
    slot: str = DEFAULT_SLOT
    time: datetime | None = None
    meta: dict[str, str] = field(default_factory=dict)
    host: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class ArchiveResult:
    snapshot: Snapshot
    segments: list[str]  # the files stored, as named in the snapshot
    end_lsn: str
    archived_until: str
    timeline: int  # the server's: 1 until a restore or a failover
    slot_created: bool = False
    #: Set when the server no longer had the WAL the archive would resume from: the
    #: segment after which WAL is missing, and why.
    gap: str | None = None
    duration_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "snapshot": s.id,
            "source": s.source,
            "segments": self.segments,
            "end_lsn": self.end_lsn,
            "archived_until": self.archived_until,
            "timeline": self.timeline,
            "slot_created": self.slot_created,
            "gap": self.gap,
            "bytes_read": int(s.summary.get("bytes_read", 0)),
            "bytes_new": int(s.summary.get("bytes_new", 0)),
            "bytes_stored": int(s.summary.get("bytes_stored", 0)),
            "duration_s": round(self.duration_s, 3),
        }


def _ensure_slot(client: DatabaseClient, slot: str) -> bool:
    """Create the physical slot, reserving WAL at once, unless it exists; True if created."""
    # the name is checked against _SLOT (letters, digits, underscores) before any query
    sql = f"SELECT slot_type FROM pg_replication_slots WHERE slot_name = '{slot}'"  # noqa: S608
    rows = client.query(sql)
    if rows:
        if rows[0] != "physical":
            raise DumpError(
                f"replication slot {slot!r} on the {client.conn.where} is a {rows[0]} slot, "
                "not a physical one: choose another name with --slot"
            )
        return False
    client.query(f"SELECT pg_create_physical_replication_slot('{slot}', true)")
    return True


def refuse_older_timeline(
    repo: Repository,
    prefix: str,
    ident: ServerIdentity,
    where: str,
    drains: list[Snapshot] | None = None,
) -> None:
    """One server per source: a server whose timeline is older than one the archive's
    drains (``drains``, read when None) hold is the history a restore or a failover left
    (the original, still running next to its restored copy). Archived or backed up into
    the same source, it would mix with the newer server's history, which restores to the
    end follow."""
    if drains is None:
        drains = [
            s
            for s in repo.snapshots(source=wal_source(prefix))
            if s.meta.get("pg.system") == ident.system
        ]
    newest = max((int(s.meta.get("pg.timeline", "0")) for s in drains), default=0)
    if newest > ident.timeline:
        raise DumpError(
            f"the archive under source {prefix!r} holds timeline {newest} of this server's "
            f"history (a server restored from it, or promoted), and the {where} runs on "
            f"timeline {ident.timeline}, the history that left behind: archive one server "
            "per source, and this one into a source of its own (then take its base backup "
            "there); nothing was stored"
        )


def _fork(client: DatabaseClient, ident: ServerIdentity) -> int:
    """Where the server's timeline began: the fork position on the last line of its
    history file, which ``TIMELINE_HISTORY`` sends as its second column."""
    rows = client.rows(f"TIMELINE_HISTORY {ident.timeline}", "dbname=postgres replication=true")
    if not rows or len(rows[0]) < 2:
        raise DumpError(f"the {client.conn.where} sent no history of timeline {ident.timeline}")
    # psql prints the file's lines as they are: the second and later come as rows of their own
    steps = parse_history("\n".join([rows[0][1], *(" ".join(row) for row in rows[1:])]))
    if not steps:
        raise DumpError(f"the {client.conn.where}'s history of timeline {ident.timeline} is empty")
    return steps[-1][1]


def _seed(
    repo: Repository,
    archive: WalArchive,
    directory: str,
    client: DatabaseClient,
    ident: ServerIdentity,
) -> str | None:
    """Put the archive's last segment of the server's timeline back into ``directory`` for
    pg_receivewal to resume from; its stored name, or None when the archive holds none
    and pg_receivewal starts at the server's current segment.

    Only the server's own timeline: a server restored to a point in time runs on a new
    timeline that forked from the old one, and the old timeline's last segment can hold
    WAL past the fork that this server never had. Seeded, pg_receivewal would resume from
    there and, its end position already behind it, store nothing of the new timeline.

    A new timeline's first drain starts at the segment it forked in instead (an empty
    ``.partial`` of it: pg_receivewal begins a partial segment at its start), so that the
    archive holds the new timeline without a hole from the fork on, whatever the server
    wrote before its first drain: a restore from the old server's base backups replays
    the old timeline up to the fork, then this one.
    """
    own = [s for s in archive.segments.values() if int(s.name[:8], 16) == ident.timeline]
    if not own:
        if ident.timeline == 1 or not archive.snapshots:
            return None  # a server archived for the first time: from now on
        name = segment_name(ident.timeline, _fork(client, ident), ident.segment_size) + ".partial"
        open(os.path.join(directory, name), "wb").close()
        return name
    last = max(own, key=lambda s: s.name)
    name = last.name + (".partial" if last.partial else "")
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        for chunk in last.read(repo):
            f.write(chunk)
    return name


def _receive(client: DatabaseClient, directory: str, end: int) -> tuple[int, str]:
    """pg_receivewal into ``directory`` up to ``end``; its exit code and stderr.

    pg_receivewal stops once it has received WAL *past* ``--endpos``; WAL exactly up to it
    would leave it waiting for the server's next record (the background writer's, many
    seconds later on an idle server). So it is given ``end - 1``: it stops as soon as it
    holds everything up to ``end``. It does not fsync: what it writes is stored in the
    repository before anything depends on it.
    """
    proc = client.popen(
        "pg_receivewal",
        ["-D", directory, "--endpos", format_lsn(end - 1), "--no-loop", "--no-sync", "--verbose"],
    )
    assert proc.stderr is not None
    tail = StderrTail(proc.stderr, client.conn.password)
    try:
        code = proc.wait(timeout=DRAIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise DumpError(
            f"pg_receivewal did not reach {format_lsn(end)} on the {client.conn.where} in "
            f"{DRAIN_TIMEOUT_S} s: {tail.text() or 'no message'}"
        ) from None
    return code, tail.text()


def _mark_end(client: DatabaseClient, segment_size: int) -> tuple[int, str]:
    """Where this drain ends: the WAL position, and the server's time before it.

    A restore to a time stops at the first transaction that committed after it; WAL that
    ends with no such commit makes PostgreSQL fail the recovery ("recovery ended before
    configured recovery target was reached"). So the drain commits a transaction of its own
    (``txid_current()`` gives it an id, and so a commit record) after reading the time, and
    the drain's end covers that commit: every time up to ``until`` is then reachable with
    this drain's WAL.

    A transaction that wrote nothing else commits asynchronously: its commit record reaches
    the flush position only when the WAL writer flushes it (within three
    ``wal_writer_delay``), so the flush position read at once may not hold it yet (restores
    to ``until`` then failed whenever the WAL writer was late). The end is the insert
    position after the commit instead, and the receiver waits until the server sends it.
    """
    until = client.query(
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    )[0]
    client.query("SELECT txid_current()")
    insert, block = client.rows(
        "SELECT pg_current_wal_insert_lsn(), current_setting('wal_block_size')"
    )[0]
    return record_end(parse_lsn(insert), int(block), segment_size), until


def archive_wal(repo: Repository, conn: Connection, options: ArchiveOptions) -> ArchiveResult:
    """One drain of the server's WAL into a snapshot (see the module's rules)."""
    # here, not at the top: a restore reads the archive through this module and needs no
    # backup engine
    from safehold.engine.backup import BackupOptions, backup_paths

    if not _SLOT.fullmatch(options.slot):
        raise DumpError(
            f"slot name {options.slot!r}: 1 to 63 lower-case letters, digits and underscores"
        )
    started = time.monotonic()
    base = os.environ.get("SAFEHOLD_TMPDIR") or None
    with DatabaseClient(conn) as client, tempfile.TemporaryDirectory(dir=base) as tmp:
        ident = server_identity(client)
        archive = read_archive(repo, options.prefix, ident.system)
        refuse_older_timeline(repo, options.prefix, ident, client.conn.where, archive.snapshots)
        created = _ensure_slot(client, options.slot)
        end, until = _mark_end(client, ident.segment_size)
        directory = os.path.join(tmp, "wal")
        os.mkdir(directory)
        seeded = _seed(repo, archive, directory, client, ident)
        code, err = _receive(client, directory, end)
        gap = None
        if code != 0 and seeded is not None and "has already been removed" in err:
            gap = (
                f"the server no longer has the WAL after segment {seeded.removesuffix('.partial')}"
                f" (replication slot {options.slot!r} dropped or invalidated?): restores cannot "
                "reach past it from earlier base backups; take a base backup now"
            )
            shutil.rmtree(directory)
            os.mkdir(directory)
            code, err = _receive(client, directory, end)
        if code != 0:
            raise DumpError(
                f"pg_receivewal failed (exit code {code}) on the {conn.where}: "
                f"{err or 'no message'}; nothing was stored"
            )
        files = sorted(os.listdir(directory))
        meta = {
            **options.meta,
            "source.kind": WAL_KIND,
            "database.engine": "postgresql",
            "pg.system": ident.system,
            "pg.timeline": str(ident.timeline),
            "pg.wal_segment_size": str(ident.segment_size),
            "pg.end_lsn": format_lsn(end),
            "pg.archived_until": until,
        }
        if gap is not None:
            meta["pg.gap"] = "true"
        result = backup_paths(
            repo,
            [directory],
            BackupOptions(
                source=wal_source(options.prefix),
                tags=options.tags,
                time=options.time,
                meta=meta,
                host=options.host,
                processes=1,
            ),
        )
        # Only now may the server recycle what was streamed: it is in the repository.
        client.query(f"SELECT pg_replication_slot_advance('{options.slot}', '{format_lsn(end)}')")
    return ArchiveResult(
        snapshot=result.snapshot,
        segments=files,
        end_lsn=format_lsn(end),
        archived_until=until,
        timeline=ident.timeline,
        slot_created=created,
        gap=gap,
        duration_s=time.monotonic() - started,
    )
