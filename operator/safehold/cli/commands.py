"""One function per ``safehold`` command; each returns its exit code.

Every command prints human text (or, with ``--json``, one JSON summary as the
last stdout line) and takes the repository lock its operation needs: shared for
backup, restore and verify (they may run side by side), none for listing.

The engine and the repository are reached through their packages (``engine.X``,
``safehold.repo.X``), which load a module when a command first uses it: building the
parser, or running ``restore``, never imports the backup's chunker.
"""

from __future__ import annotations

import os
import sys
from argparse import Namespace
from typing import TYPE_CHECKING, Any

import safehold.repo
from safehold import engine
from safehold.cli import exitcodes
from safehold.cli.context import (
    OPENED,
    UsageError,
    open_repo,
    open_repo_storage,
    parse_time_option,
    read_password,
)
from safehold.cli.meta import read_meta
from safehold.cli.output import Output, human_size
from safehold.cli.passwords import check_new_password
from safehold.repo.layout import object_id

if TYPE_CHECKING:
    from safehold.engine.restore import RestoreCheck

__all__ = [
    "backup",
    "key_add",
    "key_list",
    "key_remove",
    "key_rotate",
    "repo_unlock",
    "restore",
    "verify",
]


# ------------------------------------------------------------------ repo
def repo_unlock(args: Namespace, out: Output) -> int:
    repo = open_repo(args, load_index=False)
    removed = safehold.repo.unlock(repo, remove_all=args.remove_all)
    for lock in removed:
        out.print(f"removed {lock.describe()}")
    left = safehold.repo.list_locks(repo)
    for lock in left:
        out.print(f"kept live {lock.describe()}")
    out.summary({"ok": True, "removed": len(removed), "remaining": len(left)})
    return exitcodes.OK


def key_add(args: Namespace, out: Output) -> int:
    repo = open_repo(args, load_index=False)
    new = read_password(
        args,
        env="SAFEHOLD_NEW_PASSWORD",
        file_attr="new_password_file",
        file_env="SAFEHOLD_NEW_PASSWORD_FILE",
        confirm=True,
        what="new password",
    )
    check_new_password(args, new)
    key_id = repo.add_key(new)
    out.print(f"added key {key_id}")
    out.summary({"ok": True, "key": key_id})
    return exitcodes.OK


def key_list(args: Namespace, out: Output) -> int:
    repo = open_repo(args, load_index=False)
    keys = repo.list_keys()
    current = object_id(repo.key_name)
    table = out.new_table("", "id", "created", "host", "user")
    for k in keys:
        table.add_row("*" if k.id == current else "", k.id[:16], k.created, k.hostname, k.username)
    out.table(table)
    out.summary(
        {
            "ok": True,
            "keys": [
                {
                    "id": k.id,
                    "created": k.created,
                    "hostname": k.hostname,
                    "username": k.username,
                    "current": k.id == current,
                }
                for k in keys
            ],
        }
    )
    return exitcodes.OK


def key_rotate(args: Namespace, out: Output) -> int:
    """A new data key version for what is written from now on (format section 5b)."""
    storage = open_repo_storage(args)
    safehold.repo.Repository.read_config(storage)  # no repository: said before a password
    password = read_password(args)  # once: it opens the repository and wraps the new key
    repo = safehold.repo.Repository.open(storage, password, load_index=False)
    OPENED.get([]).append(repo)  # for its audit record, as open_repo does
    old = object_id(repo.key_name)
    with safehold.repo.RepositoryLock(repo, exclusive=True, operation="key rotate"):
        key_id, version = repo.rotate_key(password)
    out.print(
        f"data key version {version} seals what is written from now on; older data stays "
        f"under its key until prune repacks it; key {key_id[:16]} replaces {old[:16]}"
    )
    out.summary({"ok": True, "key": key_id, "replaced": old, "data_key_version": version})
    return exitcodes.OK


def key_remove(args: Namespace, out: Output) -> int:
    repo = open_repo(args, load_index=False)
    removed = repo.remove_key(args.key_id)
    out.print(f"removed key {removed}")
    out.summary({"ok": True, "removed": removed})
    return exitcodes.OK


# ------------------------------------------------------------------ data


def read_patterns(args: Namespace) -> None:
    """Check ``--include`` and ``--exclude`` and add the ``--exclude-file`` patterns to
    ``args.exclude`` (once); a usage error names a bad pattern."""
    from safehold.engine.patterns import PatternError, check_pattern

    if getattr(args, "patterns_read", False):
        return
    for path in getattr(args, "exclude_file", None) or []:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--exclude-file {path}: {exc}") from exc
        args.exclude += [
            line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
        ]
    for option, patterns in (("--include", args.include), ("--exclude", args.exclude)):
        for pattern in patterns:
            try:
                check_pattern(pattern)
            except PatternError as exc:
                raise UsageError(f"{option} {exc}") from None
    if (args.include or args.exclude) and args.stdin_name:
        raise UsageError("--include and --exclude apply to PATHs, not to --stdin-name")
    args.patterns_read = True


def backup(args: Namespace, out: Output) -> int:
    read_patterns(args)
    if bool(args.paths) == bool(args.stdin_name):
        raise UsageError("give PATH... to back up files, or --stdin-name NAME to read stdin")
    if args.stdin_name and args.type:
        raise UsageError("--type applies to paths; a stdin backup is always a whole stream")
    for p in args.paths:
        if not os.path.lexists(p):
            raise UsageError(f"{p}: no such file or directory")
    options = engine.BackupOptions(
        source=args.source,
        type=args.type,
        tags=args.tag,
        time=parse_time_option(args.time, "--time"),
        include=args.include,
        exclude=args.exclude,
        meta=read_meta(args),
        host=args.host,
    )
    repo = open_repo(args)
    with (
        safehold.repo.RepositoryLock(repo, exclusive=False, operation="backup"),
        out.progress("backup") as bar,
    ):
        if args.stdin_name:
            result = engine.backup_stream(
                repo, sys.stdin.buffer, args.stdin_name, options, progress=bar.callback()
            )
        else:
            result = engine.backup_paths(
                repo, args.paths, options, progress=bar.callback(), on_file=out.file_events()
            )
        check = _check_snapshot(repo, result.snapshot) if getattr(args, "verify", False) else None
    s = result.snapshot.summary
    out.print(
        f"snapshot {result.snapshot.id[:12]} ({result.snapshot.type}) of {result.snapshot.source}"
        f" saved: {s['files_new']} new, {s['files_changed']} changed, "
        f"{s['files_unmodified']} unmodified files; read {human_size(s['bytes_read'])}, "
        f"added {human_size(s['bytes_new'])} ({human_size(s['bytes_stored'])} stored) "
        f"in {s['duration_s']:.1f} s"
    )
    out.warn_first([f"{e['path']}: {e['error']}" for e in result.errors], "files could not be read")
    code = exitcodes.PARTIAL if result.errors else exitcodes.OK
    if check is not None:
        (out.print if check["ok"] else out.warn)(f"verify: {check['message']}")
        code = code if check["ok"] else exitcodes.DAMAGED
    doc = {
        "ok": not result.errors and (check is None or check["ok"]),
        **result.summary(),
        "error_list": result.errors,
        "exit_code": code,
    }
    if check is not None:
        doc["verify"] = check
    out.summary(doc)
    return code


def _check_snapshot(repo: safehold.repo.Repository, snapshot: Any) -> dict[str, Any]:
    """``backup --verify``: the new snapshot's structure (engine.verify_snapshot), as the
    summary's ``verify`` (ok, message, paths). Damage elsewhere in the repository does not
    fail the backup; it is mentioned, for ``safehold verify`` to report."""
    report = engine.verify_snapshot(repo, snapshot)
    items = report.damaged.get(snapshot.id, [])
    if items:
        listed = "; ".join(f"{i['path'] or '/'}: {i['error']}" for i in items[:5])
        message = (
            f"snapshot {snapshot.id[:12]} is damaged: {len(items)} path(s) lost ({listed}); "
            f"{report.repair_hint}"
        )
    else:
        message = f"snapshot {snapshot.id[:12]}: index, trees and chunks are whole"
        if report.objects:
            message += (
                f" ({len(report.objects)} damaged object(s) elsewhere in the repository: run "
                "'safehold verify')"
            )
    return {"ok": not items, "message": message[:1500], "paths": [i["path"] for i in items[:5]]}


def restore(args: Namespace, out: Output) -> int:
    from dataclasses import asdict

    from safehold.engine.patterns import PatternError
    from safehold.engine.restore import NothingSelected, Unmatched

    repo = open_repo(args)
    snap = repo.find_snapshot(args.snapshot, source=args.source, tags=args.tag, host=args.host)
    options = engine.RestoreOptions(
        includes=args.include, excludes=args.exclude, verify=args.verify
    )
    with (
        safehold.repo.RepositoryLock(repo, exclusive=False, operation="restore"),
        out.progress("restore") as bar,
    ):
        try:
            result = engine.restore_snapshot(
                repo, snap, args.target, options, progress=bar.callback(), on_file=out.file_events()
            )
        except PatternError as exc:
            raise UsageError(str(exc)) from None
        except NothingSelected as exc:
            out.error(f"snapshot {snap.id[:8]}: {exc}")
            out.summary(
                {
                    "ok": False,
                    "error": str(exc),
                    "unmatched_includes": [asdict(u) for u in exc.unmatched],
                    "exit_code": exitcodes.ERROR,
                }
            )
            return exitcodes.ERROR
    for item in result.unmatched:
        out.warn(Unmatched(**item).text())
    out.print(
        f"restored snapshot {snap.id[:12]} to {args.target}: {result.files} files written, "
        f"{result.files_skipped} already complete, {human_size(result.bytes_written)}"
    )
    out.warn_first([f"{e['path']}: {e['error']}" for e in result.errors], "paths were not restored")
    if result.errors:
        out.warn(
            f"{len(result.errors)} path(s) are missing or incomplete in {args.target}: run the "
            "same restore again to complete them (complete files are skipped)"
        )
    code = exitcodes.PARTIAL if result.errors else exitcodes.OK
    if result.check is not None:
        _show_check(result.check, out)
        if code == exitcodes.OK and not result.check.ok:
            code = exitcodes.DAMAGED
    out.summary(
        {
            "ok": code == exitcodes.OK,
            **result.summary(),
            "error_list": result.errors,
            "exit_code": code,
        }
    )
    return code


def _show_check(check: RestoreCheck, out: Output, limit: int = 20) -> None:
    """``restore --verify``: one line when all matches, else the first problems."""
    read = f"{check.files} files ({human_size(check.bytes)})"
    if check.ok:
        out.print(f"verified {read} against the snapshot: all match")
        return
    out.warn(f"verified {read} against the snapshot: {check.problems_total} problem(s)")
    for problem in check.problems[:limit]:
        out.warn(f"  {problem['path']}: {problem['error']}")
    if check.problems_total > limit:
        out.warn(
            f"... and {check.problems_total - limit} more ('--json' lists the first "
            f"{len(check.problems)})"
        )


def verify(args: Namespace, out: Output) -> int:
    repo = open_repo(args, load_index=False, cache=False)  # checks storage, not copies
    with (
        safehold.repo.RepositoryLock(repo, exclusive=False, operation="verify"),
        out.progress("verify") as bar,
    ):
        report = engine.verify_repository(
            repo,
            read_data_percent=args.read_data,
            read_data_subset=getattr(args, "read_data_subset", None),
            progress=bar.callback(),
        )
    what = f"structure and {args.read_data:g}% of the data" if args.read_data else "structure"
    if getattr(args, "read_data_subset", None):
        what = "structure and part {}/{} of the data".format(*args.read_data_subset)
    out.print(
        f"checked {what}: {report.snapshots} snapshots, {report.packs} packs "
        f"({report.packs_read} read), {report.blobs} blobs"
    )
    if report.unreferenced_packs:
        out.print(
            f"{report.unreferenced_packs} pack(s) are in no index (left by an interrupted "
            "backup): harmless, prune removes them"
        )
    for name, message in report.objects.items():
        out.warn(f"damaged object {name}: {message}")
    for snap_id, items in report.damaged.items():
        out.warn(f"snapshot {snap_id[:12]}: {len(items)} damaged path(s)")
        out.warn_first(
            [f"  {item['path'] or '/'}: {item['error']}" for item in items], "damaged paths"
        )
    if report.ok:
        out.print("no errors were found")
    else:
        out.warn(report.repair_hint)
    code = exitcodes.OK if report.ok else exitcodes.DAMAGED
    out.summary({**report.summary(), "exit_code": code})
    return code
