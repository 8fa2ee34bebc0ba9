"""Restore logical database dumps: a snapshot's file streamed into pg_restore, psql or mysql.

The dump's chunks are read from the repository in order (a few ahead, in threads),
each authenticated and checked against its id, and written into the tool's stdin: no
temporary file, so a restore needs no scratch space the size of the database.

What happens to a database that already exists is the caller's choice
(``existing``): ``skip`` leaves it alone, ``fail`` refuses before anything is written,
``overwrite`` drops and re-creates it. PostgreSQL dumps are restored with
``pg_restore --create`` (the database comes back with its original name, encoding and
settings), or, into another name, into a database created empty first. MySQL dumps
carry no CREATE DATABASE; the database is created (utf8mb4) and the dump replayed in it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from safehold.engine.databases.client import Connection, DatabaseClient, DumpError, StderrTail
from safehold.repo import BLOB_DATA, Repository, Snapshot

__all__ = [
    "DatabaseSnapshot",
    "ExistingPolicy",
    "RestoreDbResult",
    "dump_file",
    "feed_tool",
    "find_database_snapshots",
    "read_chunks",
    "restore_databases",
    "snapshot_chunks",
    "snapshot_database",
]

ExistingPolicy = Literal["skip", "overwrite", "fail"]
_AHEAD = 4  # chunks read ahead of the tool


@dataclass(frozen=True)
class DatabaseSnapshot:
    database: str  # the database's name when dumped, or "globals"
    snapshot: Snapshot


@dataclass
class RestoreDbResult:
    restored: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bytes_written: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "restored": self.restored,
            "skipped": self.skipped,
            "warnings": self.warnings[:20],
            "files": len(self.restored),
            "files_skipped": len(self.skipped),
            "bytes_written": self.bytes_written,
        }


def _tag(snap: Snapshot, key: str) -> str | None:
    for tag in snap.tags:
        k, sep, v = tag.partition("=")
        if sep and k == key:
            return v
    return None


def snapshot_database(snap: Snapshot) -> DatabaseSnapshot:
    """``snap`` as a database's dump (the ``database`` tag names it), or a DumpError."""
    name = _tag(snap, "database")
    if name is None:
        raise DumpError(
            f"snapshot {snap.id[:12]} (source {snap.source}) is not a database dump: "
            "'safehold snapshots' lists them"
        )
    return DatabaseSnapshot(name, snap)


def find_database_snapshots(
    repo: Repository,
    prefix: str,
    tags: list[str],
    databases: list[str],
    host: str | None = None,
) -> list[DatabaseSnapshot]:
    """The newest snapshot of each database (and globals) under ``prefix`` with ``tags``
    (and of ``host``, when given)."""
    wanted = set(tags)
    newest: dict[str, Snapshot] = {}
    for snap in repo.snapshots(host=host):
        if not snap.source.startswith(prefix + "/") or not wanted <= set(snap.tags):
            continue
        name = _tag(snap, "database")
        if name is None:
            continue
        if databases and name not in databases:
            continue
        old = newest.get(name)
        if old is None or (snap.datetime, snap.id) > (old.datetime, old.id):
            newest[name] = snap
    missing = sorted(set(databases) - set(newest))
    if missing:
        raise DumpError(
            f"no snapshot of database(s) {', '.join(missing)} under source {prefix!r}"
            + (f" with tags {', '.join(tags)}" if tags else "")
            + f" (found: {', '.join(sorted(newest)) or 'none'}): check the names"
        )
    if not newest:
        raise DumpError(
            f"no database snapshot under source {prefix!r}"
            + (f" with tags {', '.join(tags)}" if tags else "")
            + ": 'safehold snapshots' lists what there is"
        )
    order = sorted(newest, key=lambda n: (n != "globals", n))  # roles before databases
    return [DatabaseSnapshot(n, newest[n]) for n in order]


def dump_file(repo: Repository, snap: Snapshot) -> tuple[str, list[bytes]]:
    """The name and the chunk ids of the single file in a database dump's snapshot."""
    nodes = repo.load_tree(snap.tree)
    files = [n for n in nodes if n.get("type") == "file"]
    if len(files) != 1:
        raise DumpError(f"snapshot {snap.id[:12]} is not a database dump (one file expected)")
    return str(files[0].get("name", "")), [bytes.fromhex(c) for c in files[0].get("content", [])]


def read_chunks(repo: Repository, ids: list[bytes]) -> Iterator[bytes]:
    """The chunks ``ids`` in order, a few read ahead in threads, each verified."""
    with ThreadPoolExecutor(max_workers=_AHEAD) as pool:
        pending: list[Future[bytes]] = []
        for blob_id in ids:
            pending.append(pool.submit(repo.read_blob, blob_id, BLOB_DATA))
            if len(pending) > _AHEAD:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def snapshot_chunks(repo: Repository, snap: Snapshot) -> Iterator[bytes]:
    """The bytes of the single file in a stream snapshot, chunk by chunk, verified."""
    return read_chunks(repo, dump_file(repo, snap)[1])


def feed_tool(
    client: DatabaseClient,
    repo: Repository,
    item: DatabaseSnapshot,
    tool: str,
    args: list[str],
    what: str,
) -> tuple[int, list[str]]:
    """Stream the snapshot into ``tool``'s stdin; bytes written and the tool's stderr."""
    proc = client.popen(tool, args, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stderr is not None
    tail = StderrTail(proc.stderr, client.conn.password, lines=50)
    written = 0
    broken = False
    try:
        for chunk in snapshot_chunks(repo, item.snapshot):
            try:
                proc.stdin.write(chunk)
            except BrokenPipeError:
                broken = True
                break
            written += len(chunk)
    except BaseException:
        proc.kill()
        raise
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            broken = True
        code = proc.wait()
    if code != 0 or broken:
        raise DumpError(
            f"{what} failed (exit code {code}) after {written} bytes: {tail.text() or 'no message'}"
        )
    return written, tail.lines()


def _restore_globals(
    client: DatabaseClient, repo: Repository, conn: Connection, item: DatabaseSnapshot
) -> tuple[int, list[str]]:
    """PostgreSQL's roles and tablespaces through psql: roles that exist already make psql
    print an error and go on, as wanted. The bytes fed and the first errors."""
    written, lines = feed_tool(
        client,
        repo,
        item,
        "psql",
        ["-X", "-q", "-d", "postgres"],
        f"psql (roles and tablespaces) on the {conn.where}",
    )
    return written, [ln for ln in lines if "ERROR" in ln][:10]


def _prepare_target(
    client: DatabaseClient, conn: Connection, target: str, *, exists: bool, renamed: bool
) -> tuple[str, list[str]]:
    """Drop ``target`` when it exists (the overwrite), create it where the tool does not,
    and the tool with its arguments that restores into it."""
    quoted = client.quote_ident(target)
    if conn.engine == "postgresql":
        maintenance = "template1" if target == "postgres" else "postgres"
        if exists:
            # FORCE (PostgreSQL 13+) ends the sessions still connected to it: an overwrite
            # must not fail because the application is still up
            client.query(f"DROP DATABASE {quoted} WITH (FORCE)", maintenance)
        if not renamed:
            return "pg_restore", ["--create", "--clean", "--if-exists", "-d", maintenance]
        client.query(f"CREATE DATABASE {quoted}")
        return "pg_restore", ["--no-owner", "-d", target]
    if exists:
        client.query(f"DROP DATABASE {quoted}")
    client.query(f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    return "mysql", [target]


def restore_databases(
    repo: Repository,
    conn: Connection,
    items: list[DatabaseSnapshot],
    *,
    existing: ExistingPolicy = "skip",
    rename_to: str | None = None,
    globals_too: bool = True,
) -> RestoreDbResult:
    """Restore ``items`` into the server of ``conn`` (see the module's rules)."""
    result = RestoreDbResult()
    dbs = [i for i in items if i.database != "globals"]
    if rename_to is not None and len(dbs) != 1:
        raise DumpError(
            "a new database name restores exactly one database: choose it with --database "
            f"(the snapshots hold {', '.join(i.database for i in dbs) or 'none'})"
        )
    with DatabaseClient(conn) as client:
        present = set(client.list_databases())
        targets = {i.database: (rename_to or i.database) for i in dbs}
        clash = sorted(t for t in targets.values() if t in present)
        if clash and existing == "fail":
            raise DumpError(
                f"database(s) {', '.join(clash)} already exist on the {conn.where} and the "
                "policy for existing data is fail: drop them, restore under another name, "
                "or choose overwrite"
            )
        for item in items:
            if item.database == "globals":
                if not globals_too or rename_to is not None or conn.engine != "postgresql":
                    continue
                written, errors = _restore_globals(client, repo, conn, item)
                result.warnings += errors
                result.bytes_written += written
                result.restored.append(
                    {"database": "globals", "snapshot": item.snapshot.id, "bytes": written}
                )
                continue
            target = targets[item.database]
            if target in present and existing == "skip":
                result.skipped.append(target)
                result.warnings.append(
                    f"database {target} exists and was left untouched: choose overwrite "
                    "to restore into it"
                )
                continue
            tool, args = _prepare_target(
                client, conn, target, exists=target in present, renamed=rename_to is not None
            )
            written, lines = feed_tool(
                client,
                repo,
                item,
                tool,
                args,
                f"{tool} of database {item.database!r} into {target!r} on the {conn.where}",
            )
            result.warnings += [ln for ln in lines if "warning" in ln.lower()][:10]
            result.bytes_written += written
            result.restored.append(
                {
                    "database": item.database,
                    "target": target,
                    "snapshot": item.snapshot.id,
                    "bytes": written,
                }
            )
    return result
