"""``safehold pg-archive-wal``, ``pg-basebackup`` and ``pg-restore-pitr``: PostgreSQL
point-in-time recovery.

``pg-archive-wal`` drains the server's WAL into the repository (one snapshot of
``SOURCE/pg/wal`` per run; run it every few minutes), ``pg-basebackup`` stores a physical
base backup (``SOURCE/pg/base``), and ``pg-restore-pitr`` writes a data directory that
PostgreSQL, started on it, recovers to the time asked. The user connects with the
``REPLICATION`` attribute, and a ``replication`` line of ``pg_hba.conf`` lets it in; the
password comes from a file, as for ``dump``. See docs/databases.md.
"""

from __future__ import annotations

import argparse
from argparse import Namespace

from safehold.cli import exitcodes
from safehold.cli.context import UsageError, open_repo, parse_time_option
from safehold.cli.database import add_server_options, connection, failed
from safehold.cli.hosts import add_host_option
from safehold.cli.meta import add_meta_option, read_meta
from safehold.cli.output import Output

__all__ = ["register", "run_archive_wal", "run_basebackup", "run_restore_pitr"]


def _source(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source",
        required=True,
        metavar="PREFIX",
        help="the server's snapshots: PREFIX/pg/base (base backups), PREFIX/pg/wal (WAL)",
    )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add the point-in-time recovery commands to the ``safehold`` parser."""
    archive = sub.add_parser(
        "pg-archive-wal",
        parents=[common],
        help="store PostgreSQL's WAL up to now in the repository (run it every few minutes)",
    )
    add_server_options(archive)
    _source(archive)
    archive.add_argument(
        "--slot",
        default="safehold",
        metavar="NAME",
        help="the physical replication slot that keeps the server's WAL until it is stored "
        "(created on the first run; default: safehold)",
    )
    archive.add_argument("--tag", action="append", default=[], metavar="TAG")
    add_host_option(archive)
    add_meta_option(archive, adds="source.kind=postgresql-wal and the pg.* positions")
    archive.set_defaults(func=run_archive_wal)

    base = sub.add_parser(
        "pg-basebackup",
        parents=[common],
        help="store a PostgreSQL base backup (pg_basebackup) for point-in-time recovery",
    )
    add_server_options(base)
    _source(base)
    base.add_argument("--tag", action="append", default=[], metavar="TAG")
    base.add_argument("--time", metavar="ISO8601", help="the snapshot's time (default: now)")
    add_host_option(base)
    add_meta_option(base, adds="source.kind=postgresql-base and the pg.* positions")
    base.set_defaults(func=run_basebackup)

    restore = sub.add_parser(
        "pg-restore-pitr",
        parents=[common],
        help="write a PostgreSQL data directory that recovers to a point in time",
    )
    _source(restore)
    restore.add_argument(
        "--to",
        metavar="TIME",
        help="the time to recover to (RFC 3339, e.g. 2026-12-07T15:04:05Z); "
        "default: as far as the WAL archive goes",
    )
    restore.add_argument(
        "--snapshot",
        metavar="ID",
        help="instead of a time: this base backup (its id or the id's beginning), recovered to "
        "its own end; needs no WAL archive",
    )
    restore.add_argument(
        "--check",
        action="store_true",
        help="test restore without a server or disk: read the newest base backup to its end "
        "and every WAL segment after it (exit 4 when one is damaged or missing)",
    )
    restore.add_argument(
        "target",
        metavar="DIRECTORY",
        nargs="?",
        help="an empty or new directory: the data directory (not with --check)",
    )
    restore.set_defaults(func=run_restore_pitr)


def _prefix(args: Namespace) -> str:
    source = str(args.source).strip("/")
    if not source:
        raise UsageError("--source must name the snapshots' source prefix, e.g. prod/orders-db")
    return source


def run_archive_wal(args: Namespace, out: Output) -> int:
    from safehold.engine.databases.client import DumpError
    from safehold.engine.databases.wal import ArchiveOptions, archive_wal
    from safehold.repo import RepositoryLock

    conn = connection(args, "postgresql")
    options = ArchiveOptions(
        prefix=_prefix(args), slot=args.slot, meta=read_meta(args), host=args.host,
        tags=args.tag,
    )  # fmt: skip
    repo = open_repo(args)
    try:
        with RepositoryLock(repo, exclusive=False, operation="backup"):
            result = archive_wal(repo, conn, options)
    except DumpError as exc:
        return failed(out, str(exc))
    if result.slot_created:
        out.print(f"created the replication slot {args.slot!r}")
    out.print(
        f"snapshot {result.snapshot.id[:12]} ({result.snapshot.source}): "
        f"{len(result.segments)} WAL file(s) up to {result.end_lsn}; "
        f"restores can reach {result.archived_until}"
    )
    code = exitcodes.OK
    if result.gap:
        out.warn(result.gap)
        code = exitcodes.PARTIAL
    out.summary({"ok": True, **result.summary(), "exit_code": code})
    return code


def run_basebackup(args: Namespace, out: Output) -> int:
    from safehold.engine.databases.basebackup import BaseBackupOptions, base_backup
    from safehold.engine.databases.client import DumpError
    from safehold.repo import RepositoryLock

    conn = connection(args, "postgresql")
    options = BaseBackupOptions(
        prefix=_prefix(args), time=parse_time_option(args.time, "--time"),
        meta=read_meta(args), host=args.host, tags=args.tag,
    )  # fmt: skip
    repo = open_repo(args)
    try:
        with (
            RepositoryLock(repo, exclusive=False, operation="backup"),
            out.progress("base backup") as bar,
        ):
            result = base_backup(repo, conn, options, progress=bar.callback())
    except DumpError as exc:
        return failed(out, str(exc))
    s = result.summary()
    out.print(
        f"snapshot {s['snapshot'][:12]} ({s['source']}): base backup of {s['bytes_read']} "
        f"bytes, {s['bytes_new']} new, WAL {s['start_lsn']} to {s['end_lsn']}, "
        f"ended {s['end_time']}"
    )
    out.summary({"ok": True, **s, "exit_code": exitcodes.OK})
    return exitcodes.OK


def run_restore_pitr(args: Namespace, out: Output) -> int:
    from safehold.engine.databases.client import DumpError
    from safehold.engine.databases.pitr import restore_pitr
    from safehold.engine.restore.safe_fs import may_chown
    from safehold.repo import RepositoryLock

    if args.check:
        return _run_check(args, out)
    if not args.target:
        raise UsageError("pg-restore-pitr needs the DIRECTORY to write the data directory into")
    if args.to and args.snapshot:
        raise UsageError("--to and --snapshot both say where to recover to: give one")
    target = parse_time_option(args.to, "--to")
    repo = open_repo(args)
    try:
        with RepositoryLock(repo, exclusive=False, operation="restore"):
            result = restore_pitr(repo, _prefix(args), target, args.target,
                                  keep_owners=may_chown(), snapshot=args.snapshot)  # fmt: skip
    except DumpError as exc:
        return failed(out, str(exc))
    s = result.summary()
    for warning in s["warnings"]:
        out.warn(warning)
    out.print(
        f"wrote {args.target} from base backup {s['base_snapshot'][:12]} and "
        f"{s['wal_segments']} WAL segment(s): PostgreSQL started on it recovers to "
        + (
            s["target_time"]
            or (s["immediate"] and f"the end of the base backup ({s['base_end_time']})")
            or f"the end of the archive ({s['reachable_until']})"
        )
        + (
            f" along timeline {s['timeline']} (forked from the base backup's)"
            if s["timeline"] != s["base_timeline"]
            else ""
        )
        + " and promotes itself"
    )
    out.summary({"ok": True, **s, "exit_code": exitcodes.OK})
    return exitcodes.OK


def _run_check(args: Namespace, out: Output) -> int:
    """``pg-restore-pitr --check``: the newest base backup and its WAL read, nothing written."""
    from safehold.engine.databases.client import DumpError
    from safehold.engine.databases.pitr import check_recovery
    from safehold.repo import RepositoryLock
    from safehold.repo.errors import RepositoryError

    if args.target or args.to or args.snapshot:
        raise UsageError("--check reads the newest base backup and all its WAL: leave out "
                         "DIRECTORY, --to and --snapshot")  # fmt: skip
    repo = open_repo(args)
    try:
        with RepositoryLock(repo, exclusive=False, operation="restore"):
            result = check_recovery(repo, _prefix(args))
    except (DumpError, RepositoryError) as exc:
        message = f"DAMAGED: {exc}"
        out.error(message)
        out.summary({"ok": False, "error": message, "exit_code": exitcodes.DAMAGED})
        return exitcodes.DAMAGED
    s = result.summary()
    for warning in s["warnings"]:
        out.warn(warning)
    out.print(
        f"checked base backup {s['base_snapshot'][:12]} and {s['wal_segments']} WAL "
        f"segment(s): {s['files']} files, {s['bytes']} bytes, whole; restores can reach "
        f"{s['reachable_until']}"
    )
    out.summary({"ok": True, **s, "exit_code": exitcodes.OK})
    return exitcodes.OK
