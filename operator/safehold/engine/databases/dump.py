"""Logical database backups: a dump tool's stdout streamed straight into the repository.

One snapshot per database, source ``PREFIX/db/NAME`` (each database keeps its own chain
for retention), and for PostgreSQL, when every database is dumped, one more of the roles
and tablespaces (``pg_dumpall --globals-only``), source ``PREFIX/globals``. Nothing is
staged on disk: the tool writes into a pipe the chunker reads.

A dump is good only if its tool exits 0, and a tool can fail after it has written most
of its output (a lost connection, a lock timeout). So the pipe's end of file is where the
exit status is checked: a non-zero status raises :class:`DumpError` inside the engine's
read loop, before the snapshot object is written. Packs already uploaded stay
unreferenced, as after any interrupted backup, and ``prune`` removes them.

pg_dump writes the custom format uncompressed (``-Z 0``): the repository compresses
anyway, and compressed dumps would defeat deduplication between days.
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from safehold.engine.backup import BackupOptions, BackupResult, backup_stream
from safehold.engine.databases.client import Connection, DatabaseClient, DumpError, StderrTail
from safehold.engine.progress import ProgressCallback
from safehold.repo import Repository

__all__ = [
    "DumpOptions",
    "DumpResult",
    "dump_databases",
    "dump_file_name",
    "dump_meta",
    "dump_source",
    "globals_source",
]

GLOBALS = "globals"


def dump_source(prefix: str, database: str) -> str:
    """The snapshot source of one database's dump."""
    return f"{prefix}/db/{database}"


def globals_source(prefix: str) -> str:
    """The snapshot source of PostgreSQL's roles and tablespaces."""
    return f"{prefix}/{GLOBALS}"


def dump_file_name(engine: str, database: str | None) -> str:
    """The file name inside the snapshot: tells the restore which tool reads it."""
    if database is None:
        return "globals.sql"
    safe = database.replace("/", "_") or "_"
    return f"{safe}.pgdump" if engine == "postgresql" else f"{safe}.sql"


@dataclass
class DumpOptions:
    prefix: str  # sources are PREFIX/db/NAME and PREFIX/globals
    databases: list[str] = field(default_factory=list)  # empty: all (with globals for pg)
    tags: list[str] = field(default_factory=list)
    time: datetime | None = None
    #: Metadata every snapshot gets; the dump adds ``source.kind``, ``database.engine`` and
    #: ``database.name`` (the database, or ``globals``) to each.
    meta: dict[str, str] = field(default_factory=dict)
    #: The snapshots' host (format section 9); None: this machine's host name.
    host: str | None = None


def dump_meta(options: DumpOptions, engine: str, database: str) -> dict[str, str]:
    """The metadata of one database's snapshot: the caller's, then what the dump knows."""
    return {
        **options.meta,
        "source.kind": "database",
        "database.engine": engine,
        "database.name": database,
    }


@dataclass
class DumpResult:
    """One snapshot per dumped database (and the globals)."""

    results: list[tuple[str, BackupResult]] = field(default_factory=list)  # (database, result)
    duration_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        snaps = [
            {
                "database": name,
                "snapshot": r.snapshot.id,
                "source": r.snapshot.source,
                "bytes": int(r.snapshot.summary.get("total_bytes", 0)),
            }
            for name, r in self.results
        ]

        def total(key: str) -> int:
            return sum(int(r.snapshot.summary.get(key, 0)) for _, r in self.results)

        return {
            # the first snapshot stands for the source in a BackupRun's status; all are listed
            "snapshot": snaps[0]["snapshot"] if snaps else None,
            "snapshots": snaps,
            "type": "full",
            "total_files": len(snaps),
            "bytes_read": total("bytes_read"),
            "bytes_new": total("bytes_new"),
            "bytes_stored": total("bytes_stored"),
            "duration_s": round(self.duration_s, 3),
        }


class CheckedPipe(io.RawIOBase):
    """A tool's stdout whose end of file raises :class:`DumpError` unless the tool exited 0."""

    def __init__(self, proc: subprocess.Popen[bytes], what: str, tail: StderrTail) -> None:
        super().__init__()
        assert proc.stdout is not None
        self._proc = proc
        self._out = proc.stdout
        self._what = what
        self._tail = tail
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._out.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.bytes += n
            return int(n)
        code = self._proc.wait()
        if code != 0:
            message = self._tail.text() or "no message"
            raise DumpError(
                f"{self._what} failed (exit code {code}) after {self.bytes} bytes: {message}; "
                "no snapshot was written"
            )
        return 0


def _stream_tool(
    repo: Repository,
    client: DatabaseClient,
    tool: str,
    args: Sequence[str],
    *,
    what: str,
    name: str,
    options: BackupOptions,
    progress: ProgressCallback | None,
) -> BackupResult:
    proc = client.popen(tool, args, stdout=subprocess.PIPE)
    assert proc.stderr is not None
    tail = StderrTail(proc.stderr, client.conn.password)
    pipe = CheckedPipe(proc, what, tail)
    try:
        return backup_stream(repo, pipe, name, options, progress=progress)  # type: ignore[arg-type]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def dump_databases(
    repo: Repository,
    conn: Connection,
    options: DumpOptions,
    progress: ProgressCallback | None = None,
) -> DumpResult:
    """Dump each database into its own snapshot; stops at the first failure (DumpError).

    Databases dumped before a failure keep their (good) snapshots.
    """
    started = time.monotonic()
    out = DumpResult()
    with DatabaseClient(conn) as client:
        everything = not options.databases
        databases = options.databases or client.list_databases()
        if not databases:
            raise DumpError(f"the {conn.where} has no database to dump")
        tags = [*options.tags, f"engine={conn.engine}"]
        # which PostgreSQL version's tools made the dumps: a pg_restore at least as new reads them
        major = client.program("pg_dump")[1]
        made_by = {"database.tools": f"postgresql {major}"} if major is not None else {}
        if conn.engine == "postgresql" and everything:
            result = _stream_tool(
                repo,
                client,
                "pg_dumpall",
                ["--globals-only", "-l", "postgres"],
                what=f"pg_dumpall --globals-only of the {conn.where}",
                name=dump_file_name(conn.engine, None),
                options=BackupOptions(
                    source=globals_source(options.prefix),
                    tags=[*tags, "database=" + GLOBALS],
                    time=options.time,
                    meta={**dump_meta(options, conn.engine, GLOBALS), **made_by},
                    host=options.host,
                ),
                progress=progress,
            )
            out.results.append((GLOBALS, result))
        for db in databases:
            if conn.engine == "postgresql":
                tool, args = "pg_dump", ["-Fc", "-Z", "0", "-d", db]
            else:
                tool = "mysqldump"
                args = [
                    "--single-transaction",
                    "--routines",
                    "--triggers",
                    "--events",
                    "--hex-blob",
                    "--quick",
                    "--add-drop-table",
                    db,
                ]
            result = _stream_tool(
                repo,
                client,
                tool,
                args,
                what=f"{tool} of database {db!r} on the {conn.where}",
                name=dump_file_name(conn.engine, db),
                options=BackupOptions(
                    source=dump_source(options.prefix, db),
                    tags=[*tags, f"database={db}"],
                    time=options.time,
                    meta={**dump_meta(options, conn.engine, db), **made_by},
                    host=options.host,
                ),
                progress=progress,
            )
            out.results.append((db, result))
    out.duration_s = time.monotonic() - started
    return out
