"""Test restores: each dump restored into a new scratch database, counted, and dropped.

A scratch database is named ``safehold_test_<snapshot id, 8>_<unix time>_<random, 6>``:
unique, and its age can be read from its name on any server, without privileges. It is
dropped when its restore ends, whatever the ending: done, failed, or interrupted
(SIGTERM and Ctrl-C arrive as ``KeyboardInterrupt``; a second one during the drop waits
until the drop is done). One killed harder than that (SIGKILL, a lost node) leaves its
database behind: every run first drops the scratch databases older than an hour that no
session is using. Databases whose names do not have that exact form are never touched.

PostgreSQL dumps are restored with ``pg_restore --no-owner --no-acl`` (the scratch server
need not have the roles) into a database made from ``template0``, MySQL dumps with
``mysql`` into a database created utf8mb4.
PostgreSQL's roles (``globals``) are server-wide, so they are never restored here.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from safehold.engine.databases.check import dump_kind
from safehold.engine.databases.client import Connection, DatabaseClient, DumpError
from safehold.engine.databases.restore import DatabaseSnapshot, dump_file, feed_tool
from safehold.repo import Repository

__all__ = [
    "LEFTOVER_AGE_S",
    "SCRATCH_PREFIX",
    "ScratchRestore",
    "ScratchResult",
    "scratch_name",
    "scratch_restore",
]

SCRATCH_PREFIX = "safehold_test_"
#: A scratch database older than this, with no session on it, is a killed run's leftover.
LEFTOVER_AGE_S = 3600
_SCRATCH_NAME = re.compile(SCRATCH_PREFIX + r"[0-9a-f]{8}_([0-9]{10})_[0-9a-f]{6}")


def scratch_name(snapshot_id: str, now: float) -> str:
    """A new scratch database's name: the snapshot, the time it was made, a random part."""
    return f"{SCRATCH_PREFIX}{snapshot_id[:8]}_{int(now):010d}_{secrets.token_hex(3)}"


@dataclass
class ScratchRestore:
    """One dump restored into a scratch database."""

    database: str  # the dumped database
    snapshot: str
    scratch: str  # the scratch database it was restored into
    tables: int = 0
    seconds: float = 0.0
    dropped: bool = False
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "snapshot": self.snapshot,
            "scratch_database": self.scratch,
            "tables": self.tables,
            "seconds": round(self.seconds, 3),
            "dropped": self.dropped,
            "ok": self.error is None,
            "error": self.error,
        }


@dataclass
class ScratchResult:
    restores: list[ScratchRestore] = field(default_factory=list)
    leftovers_dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.error is None for r in self.restores)

    def summary(self) -> dict[str, Any]:
        """The JSON ``scratch`` key: the totals, the first error, and each restore."""
        failed = [r for r in self.restores if r.error is not None]
        return {
            "database": ", ".join(r.scratch for r in self.restores),
            "tables": sum(r.tables for r in self.restores),
            "seconds": round(sum(r.seconds for r in self.restores), 3),
            "dropped": all(r.dropped for r in self.restores),
            "ok": not failed,
            "error": f"{failed[0].database}: {failed[0].error}" if failed else None,
            "databases": [r.summary() for r in self.restores],
            "leftovers_dropped": self.leftovers_dropped,
        }


def scratch_restore(
    repo: Repository,
    conn: Connection,
    items: list[DatabaseSnapshot],
    *,
    clock: Callable[[], float] = time.time,
) -> ScratchResult:
    """Restore each dump into its own scratch database on ``conn``'s server, then drop it.

    A restore that fails is recorded in its :class:`ScratchRestore` and the next one runs;
    a dump of another engine than the server's is a :class:`DumpError` before anything.
    """
    if all(item.database == "globals" for item in items):
        raise DumpError(
            "the snapshots hold only PostgreSQL's roles (globals), which a test restore "
            "leaves out: choose a database's dump"
        )
    result = ScratchResult()
    with DatabaseClient(conn) as client:
        result.leftovers_dropped = _drop_leftovers(client, clock())
        for item in items:
            if item.database == "globals":
                continue  # roles are the server's, not a database's
            kind = dump_kind(dump_file(repo, item.snapshot)[0], item.database)
            engine = "postgresql" if kind.startswith("pg_") else "mysql"
            if engine != conn.engine:
                raise DumpError(
                    f"snapshot {item.snapshot.id[:12]} holds a {engine} dump of "
                    f"{item.database!r}: it cannot be restored on the {conn.where}"
                )
            scratch = scratch_name(item.snapshot.id, clock())
            restore = ScratchRestore(item.database, item.snapshot.id, scratch)
            result.restores.append(restore)
            _restore_one(repo, client, item, restore)
            if not restore.dropped:
                result.warnings.append(
                    f"the scratch database {scratch} could not be dropped: the next test "
                    f"restore drops it after {LEFTOVER_AGE_S // 60} minutes"
                )
    return result


def _restore_one(
    repo: Repository, client: DatabaseClient, item: DatabaseSnapshot, restore: ScratchRestore
) -> None:
    conn = client.conn
    quoted = client.quote_ident(restore.scratch)
    started = time.monotonic()
    try:
        if conn.engine == "postgresql":
            # template0: objects someone added to template1 must not clash with the dump's
            client.query(f"CREATE DATABASE {quoted} TEMPLATE template0")
            tool, args = "pg_restore", ["--no-owner", "--no-acl", "-d", restore.scratch]
        else:
            client.query(
                f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
            tool, args = "mysql", [restore.scratch]
        what = f"{tool} of database {item.database!r} into {restore.scratch!r} on the {conn.where}"
        feed_tool(client, repo, item, tool, args, what)
        restore.tables = _count_tables(client, restore.scratch)
    except DumpError as exc:
        restore.error = str(exc)
    finally:
        restore.seconds = time.monotonic() - started
        with _signals_deferred():
            restore.dropped = _drop(client, restore.scratch)


def _count_tables(client: DatabaseClient, name: str) -> int:
    if client.conn.engine == "postgresql":
        sql = (
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', "
            "'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'"
        )
        rows = client.query(sql, name)
    else:
        sql = (
            "SELECT COUNT(*) FROM information_schema.TABLES "  # noqa: S608 - our own name
            f"WHERE TABLE_SCHEMA = '{name}' AND TABLE_TYPE = 'BASE TABLE'"
        )
        rows = client.query(sql)
    return int(rows[0]) if rows else 0


def _sessions(client: DatabaseClient, name: str) -> list[str]:
    """The server's sessions connected to the scratch database ``name`` (ids for MySQL)."""
    if client.conn.engine == "postgresql":
        sql = f"SELECT pid FROM pg_stat_activity WHERE datname = '{name}'"  # noqa: S608
    else:
        sql = f"SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{name}'"  # noqa: S608
    return client.query(sql)


def _drop(client: DatabaseClient, name: str) -> bool:
    """Drop the scratch database ``name`` (sessions still on it are ended); False if not."""
    assert _SCRATCH_NAME.fullmatch(name), name  # never anything but a scratch database
    quoted = client.quote_ident(name)
    try:
        if client.conn.engine == "postgresql":
            client.query(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        else:
            # a killed client's statement runs on in the server and holds its locks
            for session in _sessions(client, name):
                with contextlib.suppress(DumpError):  # it may have ended meanwhile
                    client.query(f"KILL {int(session)}")
            client.query(f"DROP DATABASE IF EXISTS {quoted}")
    except DumpError:
        return False
    return True


def _drop_leftovers(client: DatabaseClient, now: float) -> list[str]:
    """Drop the scratch databases of killed runs: older than an hour, no session on them."""
    dropped = []
    for name in client.list_databases():
        match = _SCRATCH_NAME.fullmatch(name)
        if match is None or now - int(match.group(1)) < LEFTOVER_AGE_S:
            continue
        if _sessions(client, name):
            continue  # a restore that takes longer than an hour is still running
        with _signals_deferred():
            if _drop(client, name):
                dropped.append(name)
    return dropped


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGTERM and SIGINT wait until the block is done, then interrupt as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    saved = {sig: signal.signal(sig, remember) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if caught:
            raise KeyboardInterrupt
