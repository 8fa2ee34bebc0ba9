"""PostgreSQL physical base backups: ``pg_basebackup``'s tar stream into one snapshot.

A base backup is a copy of the whole server's data directory, taken while it runs; with
the WAL from the backup's start to a later moment (:mod:`.wal`), a restore brings the
server back to any time in between (:mod:`.pitr`). The snapshot (source ``PREFIX/pg/base``)
holds one file, ``base.tar``, written by ``pg_basebackup -Ft -D - -X fetch``: the data
directory with the WAL the backup itself needs, so a base backup restores on its own too.
Like the logical dumps, the tar is streamed without staging on disk, and the stream's end
is where pg_basebackup's exit status is checked.

The snapshot's metadata says what a restore needs to choose it and chain WAL after it:
``pg.system`` (the server's identifier), ``pg.timeline``, ``pg.start_lsn`` and
``pg.end_lsn`` (pg_basebackup's "write-ahead log start/end point"), ``pg.end_time`` (the
server's clock after the backup ended: a restore to an earlier time cannot use it) and
``pg.wal_segment_size``. The end point is known only when pg_basebackup has finished, so
these are filled in at the stream's end, before the engine writes the snapshot.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from safehold.engine.backup import BackupOptions, BackupResult, backup_stream
from safehold.engine.databases.client import Connection, DatabaseClient, DumpError, StderrTail
from safehold.engine.databases.dump import CheckedPipe
from safehold.engine.databases.physical import (
    BASE_FILE,
    BASE_KIND,
    base_source,
    format_lsn,
    parse_lsn,
)
from safehold.engine.databases.wal import refuse_older_timeline, server_identity
from safehold.engine.progress import ProgressCallback
from safehold.repo import Repository

__all__ = ["BaseBackupOptions", "BaseBackupResult", "base_backup"]

_START = re.compile(r"write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
_END = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")


@dataclass
class BaseBackupOptions:
    prefix: str
    time: datetime | None = None
    meta: dict[str, str] = field(default_factory=dict)
    host: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class BaseBackupResult:
    result: BackupResult
    duration_s: float

    def summary(self) -> dict[str, Any]:
        s = self.result.snapshot
        return {
            "snapshot": s.id,
            "source": s.source,
            "type": "full",
            "total_files": 1,
            "start_lsn": s.meta.get("pg.start_lsn"),
            "end_lsn": s.meta.get("pg.end_lsn"),
            "end_time": s.meta.get("pg.end_time"),
            "timeline": int(s.meta.get("pg.timeline", "0")),
            "bytes_read": int(s.summary.get("bytes_read", 0)),
            "bytes_new": int(s.summary.get("bytes_new", 0)),
            "bytes_stored": int(s.summary.get("bytes_stored", 0)),
            "duration_s": round(self.duration_s, 3),
        }


class _BasePipe(CheckedPipe):
    """pg_basebackup's stdout; at its end (exit 0 checked) the points go into ``meta``."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        tail: StderrTail,
        client: DatabaseClient,
        meta: dict[str, str],
    ) -> None:
        super().__init__(proc, f"pg_basebackup of the {client.conn.where}", tail)
        self._client = client
        self._meta = meta
        self._done = False

    def readinto(self, buffer: Any) -> int:
        n = super().readinto(buffer)
        if n == 0 and not self._done:
            self._done = True
            self._complete()
        return n

    def _complete(self) -> None:
        text = "\n".join(self._tail.lines())
        start, end = _START.search(text), _END.search(text)
        if start is None or end is None:
            raise DumpError(
                "pg_basebackup did not report its write-ahead log start and end points "
                f"({self._tail.text() or 'no message'}); no snapshot was written"
            )
        self._meta["pg.start_lsn"] = format_lsn(parse_lsn(start.group(1)))
        self._meta["pg.timeline"] = start.group(2)
        self._meta["pg.end_lsn"] = format_lsn(parse_lsn(end.group(1)))
        self._meta["pg.end_time"] = self._client.query(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )[0]


def base_backup(
    repo: Repository,
    conn: Connection,
    options: BaseBackupOptions,
    progress: ProgressCallback | None = None,
) -> BaseBackupResult:
    """Stream a base backup of the server into a snapshot of ``PREFIX/pg/base``."""
    if conn.engine != "postgresql":
        raise DumpError("base backups and point-in-time recovery are for PostgreSQL only")
    started = time.monotonic()
    with DatabaseClient(conn) as client:
        ident = server_identity(client)
        refuse_older_timeline(repo, options.prefix, ident, conn.where)
        meta = {
            **options.meta,
            "source.kind": BASE_KIND,
            "database.engine": "postgresql",
            "pg.system": ident.system,
            "pg.wal_segment_size": str(ident.segment_size),
        }
        proc = client.popen(
            "pg_basebackup",
            ["-D", "-", "-Ft", "-X", "fetch", "-c", "fast", "--verbose"],
            stdout=subprocess.PIPE,
        )
        assert proc.stderr is not None
        tail = StderrTail(proc.stderr, conn.password, lines=50)
        pipe = _BasePipe(proc, tail, client, meta)
        try:
            result = backup_stream(
                repo,
                pipe,  # type: ignore[arg-type]
                BASE_FILE,
                BackupOptions(
                    source=base_source(options.prefix),
                    tags=options.tags,
                    time=options.time,
                    meta=meta,  # completed by the pipe at its end
                    host=options.host,
                ),
                progress=progress,
            )
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return BaseBackupResult(result, time.monotonic() - started)
