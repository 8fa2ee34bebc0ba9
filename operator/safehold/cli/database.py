"""``safehold dump`` and ``safehold restore-db``: logical database backups and restores.

``dump postgresql|mysql`` runs pg_dump (custom format) / pg_dumpall --globals-only /
mysqldump and streams each database into its own snapshot (source ``SOURCE/db/NAME``,
plus ``SOURCE/globals`` for PostgreSQL roles when every database is dumped).
``restore-db`` streams the newest matching snapshots back into pg_restore / mysql; its
test restores are ``--check`` (each dump read to its end, no server) and ``--scratch``
(each dump restored into a scratch database that is dropped afterwards).

Database credentials come only from files (a mounted Secret): ``--db-user-file`` (or
``--db-user``, a user name is no secret) and ``--db-password-file``. There is no option
that takes a password, so it never shows in ``ps`` or in a Job's spec.
"""

from __future__ import annotations

import argparse
import os
from argparse import Namespace
from typing import TYPE_CHECKING, Any

from safehold.cli import exitcodes
from safehold.cli.context import UsageError, open_repo, parse_time_option
from safehold.cli.hosts import add_host_filter, add_host_option
from safehold.cli.meta import add_meta_option, read_meta
from safehold.cli.output import Output

if TYPE_CHECKING:
    # The commands import the engine when they run: every other command builds this
    # parser too, and needs none of it.
    from safehold.engine.databases.client import Connection, Engine
    from safehold.engine.databases.restore import DatabaseSnapshot
    from safehold.repo import Repository

__all__ = ["add_server_options", "connection", "failed", "register", "run_dump", "run_restore_db"]

_ENGINES: dict[str, Engine] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}


def _connection_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The server and the snapshots; ``required=False`` leaves checking them to the command."""
    p.add_argument(
        "engine",
        choices=sorted(_ENGINES),
        nargs=None if required else "?",
        help="the server type (mariadb means mysql)",
    )
    add_server_options(p, required=required)
    p.add_argument(
        "--database",
        action="append",
        default=[],
        metavar="NAME",
        help="a database (repeatable); default: all of them",
    )
    p.add_argument(
        "--source",
        required=required,
        metavar="PREFIX",
        help="the snapshots' source prefix: PREFIX/db/NAME per database, PREFIX/globals",
    )
    p.add_argument("--tag", action="append", default=[], metavar="TAG")


def add_server_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Where the server is and who connects: the password only from a file."""
    p.add_argument(
        "--db-host",
        required=required,
        metavar="HOST",
        help="the database server's host name (--host is the snapshots' host)",
    )
    p.add_argument("--db-port", type=int, metavar="PORT", help="its port (default 5432 / 3306)")
    p.add_argument("--db-user", metavar="NAME", help="the user to connect as")
    p.add_argument("--db-user-file", metavar="PATH", help="read the user name from this file")
    p.add_argument(
        "--db-password-file",
        metavar="PATH",
        help="read the database password from this file (default: $SAFEHOLD_DB_PASSWORD_FILE)",
    )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``dump`` and ``restore-db`` to the ``safehold`` parser."""
    dump = sub.add_parser(
        "dump",
        parents=[common],
        help="back up databases (pg_dump, mysqldump) into the repository",
    )
    _connection_options(dump)
    dump.add_argument("--time", metavar="ISO8601", help="the snapshots' time (default: now)")
    add_host_option(dump)
    add_meta_option(
        dump, adds="source.kind=database, database.engine and database.name to each snapshot"
    )
    dump.set_defaults(func=run_dump)
    restore = sub.add_parser(
        "restore-db",
        parents=[common],
        help="restore database dumps (pg_restore, mysql) from the repository",
    )
    _connection_options(restore, required=False)
    add_host_filter(restore, "the newest dumps of this host (default: of any host)")
    restore.add_argument(
        "--check",
        action="store_true",
        help="test restore without a server: read each dump to its end and check it is whole "
        "(exit 4 when one is damaged or truncated)",
    )
    restore.add_argument(
        "--scratch",
        action="store_true",
        help="test restore: restore each dump into a new scratch database on the server, "
        "count its tables and drop it",
    )
    restore.add_argument(
        "--snapshot",
        metavar="ID",
        help="with --check or --scratch: this one snapshot (id or unique prefix) instead of "
        "the newest of each database under --source",
    )
    restore.add_argument(
        "--existing",
        choices=["skip", "overwrite", "fail"],
        default="fail",
        help="a database that exists already: leave it (skip), drop and re-create it "
        "(overwrite), or stop before writing anything (fail, the default)",
    )
    restore.add_argument(
        "--rename-to", metavar="NAME", help="restore the one selected database under this name"
    )
    restore.add_argument(
        "--no-globals", action="store_true", help="do not restore PostgreSQL roles"
    )
    restore.set_defaults(func=run_restore_db)


def _read_secret_file(path: str, what: str) -> str:
    try:
        with open(path) as f:
            value = f.read().removesuffix("\n").removesuffix("\r")
    except OSError as exc:
        raise UsageError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    if not value:
        raise UsageError(f"the {what} file {path} is empty")
    return value


def connection(args: Namespace, engine: Engine | None = None) -> Connection:
    """The server of ``--db-*`` (``engine``, else the ENGINE argument's)."""
    from safehold.engine.databases.client import Connection

    if args.db_user and args.db_user_file:
        raise UsageError("give --db-user or --db-user-file, not both")
    user = args.db_user or (
        _read_secret_file(args.db_user_file, "database user") if args.db_user_file else None
    )
    if not user:
        raise UsageError("no database user: pass --db-user NAME or --db-user-file PATH")
    path = args.db_password_file or os.environ.get("SAFEHOLD_DB_PASSWORD_FILE")
    if not path:
        raise UsageError(
            "no database password: pass --db-password-file PATH (or set "
            "SAFEHOLD_DB_PASSWORD_FILE); a password is never taken as an argument"
        )
    password = _read_secret_file(path, "database password")
    if args.db_port is not None and not 1 <= args.db_port <= 65535:
        raise UsageError(f"--db-port {args.db_port} is not a TCP port (1 to 65535)")
    return Connection(engine or _ENGINES[args.engine], args.db_host, user, password, args.db_port)


def failed(out: Output, message: str) -> int:
    out.error(message)
    out.summary({"ok": False, "error": message, "exit_code": exitcodes.ERROR})
    return exitcodes.ERROR


def run_dump(args: Namespace, out: Output) -> int:
    from safehold.engine.databases.client import DumpError
    from safehold.engine.databases.dump import DumpOptions, dump_databases, dump_meta
    from safehold.repo import RepositoryLock

    conn = connection(args)
    source = args.source.strip("/")
    if not source:
        raise UsageError("--source must name the snapshots' source prefix, e.g. prod/orders-db")
    # Checked with what the dump adds to every snapshot (database.name differs per database).
    read_meta(args, dump_meta(DumpOptions(prefix=source), _ENGINES[args.engine], "globals"))
    options = DumpOptions(
        prefix=source,
        databases=args.database,
        tags=args.tag,
        time=parse_time_option(args.time, "--time"),
        meta=read_meta(args),
        host=args.host,
    )
    repo = open_repo(args)
    try:
        with (
            RepositoryLock(repo, exclusive=False, operation="backup"),
            out.progress("dump") as bar,
        ):
            result = dump_databases(repo, conn, options, progress=bar.callback())
    except DumpError as exc:
        return failed(out, str(exc))
    for name, r in result.results:
        s = r.snapshot.summary
        out.print(
            f"snapshot {r.snapshot.id[:12]} of {name} ({r.snapshot.source}): "
            f"{s['bytes_read']} bytes dumped, {s['bytes_new']} new, {s['bytes_stored']} stored"
        )
    out.summary({"ok": True, **result.summary(), "exit_code": exitcodes.OK})
    return exitcodes.OK


def _required(args: Namespace, *options: str) -> None:
    """Options the parser leaves optional because ``--check`` needs none of them."""
    missing = [o for o in options if not getattr(args, o.lstrip("-").replace("-", "_") or "engine")]
    if missing:
        names = " and ".join(o or "ENGINE (postgresql or mysql)" for o in missing)
        raise UsageError(f"restore-db needs {names}")


def run_restore_db(args: Namespace, out: Output) -> int:
    from safehold.engine.databases.client import DumpError
    from safehold.engine.databases.restore import find_database_snapshots, restore_databases
    from safehold.repo import RepositoryLock

    if args.check or args.scratch:
        return _run_test_restore(args, out)
    if args.snapshot:
        raise UsageError("--snapshot goes with --check or --scratch")
    _required(args, "", "--db-host", "--source")
    conn = connection(args)
    source = args.source.strip("/")
    repo = open_repo(args)
    try:
        with RepositoryLock(repo, exclusive=False, operation="restore"):
            items = find_database_snapshots(repo, source, args.tag, args.database, args.host)
            result = restore_databases(
                repo,
                conn,
                items,
                existing=args.existing,
                rename_to=args.rename_to,
                globals_too=not args.no_globals,
            )
    except DumpError as exc:
        return failed(out, str(exc))
    for entry in result.restored:
        out.print(
            f"restored {entry['database']} from snapshot {entry['snapshot'][:12]}"
            + (f" into {entry['target']}" if entry.get("target") else "")
            + f" ({entry['bytes']} bytes)"
        )
    for warning in result.warnings:
        out.warn(warning)
    out.summary({"ok": True, **result.summary(), "exit_code": exitcodes.OK})
    return exitcodes.OK


def _test_items(repo: Repository, args: Namespace) -> list[DatabaseSnapshot]:
    """``--snapshot ID``, or the newest snapshot of each database under ``--source``."""
    from safehold.engine.databases.restore import find_database_snapshots, snapshot_database

    if args.snapshot:
        return [snapshot_database(repo.find_snapshot(args.snapshot))]
    return find_database_snapshots(repo, args.source.strip("/"), args.tag, args.database, args.host)


def _same_engine(args: Namespace, items: list[DatabaseSnapshot]) -> None:
    """An ENGINE given must be the dumps' own (their metadata's ``database.engine``; older
    dumps without it are taken as they are): a mysql check of PostgreSQL dumps is refused."""
    if not args.engine:
        return
    wanted = _ENGINES[args.engine]
    other = sorted(
        {e for i in items if (e := i.snapshot.meta.get("database.engine")) and e != wanted}
    )
    if other:
        raise UsageError(
            f"the dumps chosen are {', '.join(other)}, not {wanted}: give their engine, or "
            "leave ENGINE out (--check reads it from the dumps)"
        )


def _run_test_restore(args: Namespace, out: Output) -> int:
    """``restore-db --check`` and/or ``--scratch``: test restores that leave nothing behind."""
    from safehold.engine.databases.check import check_dumps, checks_summary
    from safehold.engine.databases.client import DumpError
    from safehold.engine.databases.scratch import scratch_restore
    from safehold.repo import RepositoryLock

    if args.existing != "fail" or args.rename_to or args.no_globals:
        raise UsageError("--existing, --rename-to and --no-globals go with a restore, not a test")
    if args.snapshot and (args.source or args.database or args.tag or args.host):
        raise UsageError(
            "--snapshot picks the dump: leave out --source, --database, --tag and --host"
        )
    if not args.scratch:
        server = {
            "--db-host": args.db_host,
            "--db-port": args.db_port,
            "--db-user": args.db_user,
            "--db-user-file": args.db_user_file,
            "--db-password-file": args.db_password_file,
        }
        given = [name for name, value in server.items() if value]
        if given:
            raise UsageError(
                f"{', '.join(given)}: --check reads the dumps only and connects to no server; "
                "add --scratch to restore them into a scratch database there"
            )
    if not args.snapshot and not args.source:
        raise UsageError("restore-db --check/--scratch needs --source PREFIX or --snapshot ID")
    if args.scratch:
        _required(args, "", "--db-host")
    conn = connection(args) if args.scratch else None
    repo = open_repo(args)
    summary: dict[str, Any] = {}
    code = exitcodes.OK
    try:
        with RepositoryLock(repo, exclusive=False, operation="restore"):
            items = _test_items(repo, args)
            _same_engine(args, items)
            if args.check:
                checks = check_dumps(repo, items)
                for c in checks:
                    out.print(
                        f"checked {c.database} (snapshot {c.snapshot[:12]}, {c.engine}): "
                        f"{c.bytes} bytes, {c.objects} objects, {c.tables} tables: "
                        + ("sound" if c.ok else f"DAMAGED: {c.error}")
                    )
                summary["check"] = checks_summary(checks)
                if not summary["check"]["ok"]:
                    code = exitcodes.DAMAGED
            if conn is not None and code == exitcodes.OK:
                result = scratch_restore(repo, conn, items)
                for r in result.restores:
                    out.print(
                        f"restored {r.database} (snapshot {r.snapshot[:12]}) into the scratch "
                        f"database {r.scratch}: {r.tables} tables in {r.seconds:.1f} s, "
                        + ("dropped" if r.dropped else "NOT dropped")
                        + (f"; FAILED: {r.error}" if r.error else "")
                    )
                for name in result.leftovers_dropped:
                    out.warn(f"dropped the scratch database {name} an earlier run left behind")
                for warning in result.warnings:
                    out.warn(warning)
                summary["scratch"] = result.summary()
                if not result.ok:
                    code = exitcodes.ERROR
    except DumpError as exc:
        return failed(out, str(exc))
    errors = [s["error"] for s in summary.values() if not s["ok"]]
    if errors:
        out.error(errors[0])
    out.summary({"ok": not errors, "error": errors[0] if errors else None, **summary,
                 "exit_code": code})  # fmt: skip
    return code
