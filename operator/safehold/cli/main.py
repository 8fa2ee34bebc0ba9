"""The ``safehold`` command: argument parsing, dispatch, and errors to exit codes.

Each command is a small function in :mod:`safehold.cli.commands`; this module
only turns the command line into a call and any failure into a message that
says what to do plus a documented exit code (docs/cli.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from safehold import __version__, engine
from safehold.cli import commands, database, exitcodes, maintenance, repair
from safehold.cli.context import UsageError
from safehold.cli.hooks import add_hook_arguments, add_run_hooks_parser, backup_with_hooks
from safehold.cli.inspect import register as register_inspect
from safehold.cli.meta import add_meta_option
from safehold.cli.output import Output
from safehold.cli.passwords import add_password_option
from safehold.cli.replicate import add_replicate_parser
from safehold.cli.repo_info import repo_info, repo_init
from safehold.cli.resources import register as register_resources
from safehold.cli.snapshots import add_snapshots_parser
from safehold.cli.validate import register as register_validate
from safehold.repo.config import DEFAULT_COMPRESSION_LEVEL
from safehold.repo.errors import RepositoryError
from safehold.storage import NotFound, StorageError

__all__ = ["build_parser", "main"]


def _common(json_output: bool = True) -> argparse.ArgumentParser:
    """Options every command accepts, before or after the command name."""
    p = argparse.ArgumentParser(add_help=False)
    S = argparse.SUPPRESS
    p.add_argument(
        "-r",
        "--repo",
        default=S,
        metavar="URL",
        help="repository location (default: $SAFEHOLD_REPOSITORY)",
    )
    p.add_argument(
        "-o",
        "--option",
        action="append",
        default=S,
        metavar="KEY=VALUE",
        help="storage option, repeatable (endpoint, region, ...)",
    )
    p.add_argument(
        "--options-dir",
        default=S,
        metavar="DIR",
        help="read storage options from files in DIR, one per option, named by the option "
        "(default: $SAFEHOLD_OPTIONS_DIR); -o wins over a file",
    )
    p.add_argument(
        "--termination-log",
        default=S,
        metavar="PATH",
        help="also write the JSON summary to PATH (a pod's terminationMessagePath)",
    )
    p.add_argument(
        "--password-file",
        default=S,
        metavar="PATH",
        help="read the password from this file (default: $SAFEHOLD_PASSWORD_FILE, else the "
        "password itself in $SAFEHOLD_PASSWORD)",
    )
    if json_output:
        p.add_argument(
            "--json",
            action="store_true",
            default=S,
            help="print one JSON summary as the last line of stdout; "
            "progress as JSON lines on stderr",
        )
    p.add_argument("-q", "--quiet", action="store_true", default=S, help="no progress output")
    return p


def _percent(value: str) -> float:
    text = value.strip().rstrip("%")
    try:
        number = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a percentage (e.g. 10 or 10%)") from exc
    if not 0 < number <= 100:
        raise argparse.ArgumentTypeError(f"{value!r} must be above 0 and at most 100")
    return number


def _subset(value: str) -> tuple[int, int]:
    """``K/N`` of ``verify --read-data-subset``: part K (1 to N) of N."""
    part, _, parts = value.partition("/")
    try:
        k, n = int(part), int(parts)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not K/N (e.g. 3/10)") from exc
    if not 1 <= k <= n <= 10_000:
        raise argparse.ArgumentTypeError(f"{value!r}: K/N needs 1 <= K <= N <= 10000")
    return k, n


def _backup(args: argparse.Namespace, out: Output) -> int:
    """``safehold backup``: its patterns checked before any hook runs."""
    commands.read_patterns(args)
    return backup_with_hooks(args, out)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="safehold",
        description="Deduplicated, compressed, encrypted backups. See docs/cli.md.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"safehold {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    repo = sub.add_parser("repo", help="create and manage repositories")
    repo_sub = repo.add_subparsers(dest="repo_command", metavar="SUBCOMMAND", required=True)
    init = repo_sub.add_parser("init", parents=[common], help="create a repository")
    init.add_argument(
        "--pack-size",
        type=int,
        default=16,
        metavar="MiB",
        help="target pack size in MiB (default 16)",
    )
    init.add_argument(
        "--compression-level",
        type=int,
        default=DEFAULT_COMPRESSION_LEVEL,
        metavar="N",
        help=f"zstd level for new data (default {DEFAULT_COMPRESSION_LEVEL})",
    )
    init.add_argument(
        "--if-absent",
        action="store_true",
        help="when a repository exists there already, open it (checking the password) "
        "and report it like repo info instead of failing",
    )
    maintenance.add_init_options(init)
    add_password_option(init)
    init.set_defaults(func=repo_init)
    info = repo_sub.add_parser("info", parents=[common], help="show config and sizes")
    info.add_argument(
        "--allow-empty",
        action="store_true",
        help="a reachable location without a repository is a success ('empty': true), "
        "not exit code 10; a missing bucket or refused credentials still fail",
    )
    info.set_defaults(func=repo_info)
    unlock = repo_sub.add_parser("unlock", parents=[common], help="remove stale locks")
    unlock.add_argument(
        "--remove-all",
        action="store_true",
        help="remove every lock, also live ones (only when nothing runs)",
    )
    unlock.set_defaults(func=commands.repo_unlock)
    key = repo_sub.add_parser("key", help="add, list and remove passwords; rotate the data key")
    key_sub = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    add = key_sub.add_parser("add", parents=[common], help="add a password")
    add.add_argument(
        "--new-password-file",
        metavar="PATH",
        help="the new password (default: $SAFEHOLD_NEW_PASSWORD)",
    )
    add_password_option(add)
    add.set_defaults(func=commands.key_add)
    lst = key_sub.add_parser("list", parents=[common], help="list keys")
    lst.set_defaults(func=commands.key_list)
    rm = key_sub.add_parser("remove", parents=[common], help="remove a key by id")
    rm.add_argument("key_id", metavar="ID")
    rm.set_defaults(func=commands.key_remove)
    rotate = key_sub.add_parser(
        "rotate",
        parents=[common],
        help="new data key version for new writes (the repository's only key)",
    )
    rotate.set_defaults(func=commands.key_rotate)

    backup = sub.add_parser("backup", parents=[common], help="back up paths or stdin")
    backup.add_argument("paths", nargs="*", metavar="PATH")
    backup.add_argument(
        "--stdin-name", metavar="NAME", help="read the data from stdin and store it as file NAME"
    )
    backup.add_argument(
        "--type",
        choices=("full", "incremental", "differential"),
        help="default: incremental when the source has a snapshot, else full",
    )
    backup.add_argument(
        "--source", metavar="NAME", help="the source's name (default: the absolute paths, or NAME)"
    )
    backup.add_argument("--tag", action="append", default=[], metavar="TAG")
    backup.add_argument("--time", metavar="ISO8601", help="the snapshot's time (default: now)")
    backup.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="store only the paths under each PATH that match (repeatable; see docs/cli.md)",
    )
    backup.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out the paths that match, e.g. 'cache/**' or '*.tmp' (repeatable)",
    )
    backup.add_argument(
        "--exclude-file",
        action="append",
        default=[],
        metavar="FILE",
        help="read exclude patterns from FILE, one a line ('#' comments, blank lines skipped)",
    )
    backup.add_argument(
        "--verify",
        action="store_true",
        help="then check the new snapshot's structure (index, trees, every chunk indexed in "
        "an existing pack); exit code 4 when it is damaged",
    )
    add_meta_option(backup)
    add_hook_arguments(backup)
    backup.set_defaults(func=_backup)
    add_run_hooks_parser(sub)

    restore = sub.add_parser("restore", parents=[common], help="restore a snapshot")
    restore.add_argument("snapshot", metavar="SNAPSHOT", help="an id (prefix) or 'latest'")
    restore.add_argument("target", metavar="TARGET", help="directory to restore into")
    restore.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="restore only the paths of the snapshot this matches, as 'safehold ls' shows "
        "them (/data/dir/file) or relative (data/dir); globs and ** as in backup; a "
        "directory with all it holds (repeatable)",
    )
    restore.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out the paths this matches, even when included (repeatable)",
    )
    restore.add_argument(
        "--verify",
        action="store_true",
        help="then read every restored file back and check it against the snapshot (size, "
        "content, and that every selected entry is there with its type); exit code 4 when "
        "anything differs",
    )
    restore.add_argument("--source", metavar="NAME", help="with 'latest': of this source")
    restore.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="with 'latest': having this tag"
    )
    restore.set_defaults(func=commands.restore)

    add_snapshots_parser(sub, common)

    verify = sub.add_parser("verify", parents=[common], help="check the repository")
    verify.add_argument(
        "--read-data",
        nargs="?",
        const=100.0,
        type=_percent,
        default=None,
        metavar="PERCENT",
        help="also read back all data, or PERCENT of the packs at random",
    )
    verify.add_argument(
        "--read-data-subset",
        type=_subset,
        default=None,
        metavar="K/N",
        help="also read back part K of N of the packs (by pack id, the same part every "
        "time): checks 1/N to N/N together read every pack once",
    )
    verify.set_defaults(func=commands.verify)
    add_replicate_parser(sub, common)
    operator = sub.add_parser("operator", help="run the Kubernetes operator (kopf)")
    operator.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; glob patterns allowed)",
    )
    operator.add_argument(
        "--all-namespaces", action="store_true", help="watch every namespace (cluster-wide)"
    )
    operator.add_argument(
        "--metrics-port", type=int, default=8080, metavar="PORT", help="Prometheus /metrics"
    )
    operator.add_argument(
        "--health-port", type=int, default=8081, metavar="PORT", help="liveness /healthz"
    )
    operator.set_defaults(func=commands.operator)
    maintenance.register(sub, common)
    repair.register(sub, common)
    database.register(sub, common)
    register_resources(sub, common)
    register_validate(sub)
    register_inspect(sub, common)
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """Refuse abbreviated options everywhere: ``--password x`` must not mean
    ``--password-file x``, and a password must never be accepted as an argument."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _no_abbreviations(sub)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds: locks are released on the way out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    json_mode = bool(getattr(args, "json", False))
    out = Output(
        json_mode=json_mode,
        quiet=bool(getattr(args, "quiet", False)),
        termination_log=getattr(args, "termination_log", None)
        or os.environ.get("SAFEHOLD_TERMINATION_LOG"),
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    func: Callable[[argparse.Namespace, Output], int] = args.func
    warnings = _WarningsToOutput(out)
    logger = logging.getLogger("safehold")
    logger.addHandler(warnings)
    try:
        return _run(func, args, out)
    finally:
        logger.removeHandler(warnings)


class _WarningsToOutput(logging.Handler):
    """The engine's warnings (a lock that could not be refreshed or removed) as the
    command's own ``warning:`` lines, from any thread; never its exit code."""

    def __init__(self, out: Output) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.out.warn(record.getMessage())
        except Exception:  # noqa: BLE001 - a warning that cannot be shown is not an error
            self.handleError(record)


def _run(
    func: Callable[[argparse.Namespace, Output], int], args: argparse.Namespace, out: Output
) -> int:
    try:
        return func(args, out)
    except KeyboardInterrupt:
        out.error("interrupted")
        out.summary({"ok": False, "error": "interrupted", "exit_code": exitcodes.INTERRUPTED})
        return exitcodes.INTERRUPTED
    except (UsageError, RepositoryError, StorageError) as exc:
        return _failed(out, exc)
    except OSError as exc:
        message = f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"
        out.error(message)
        out.summary({"ok": False, "error": message, "exit_code": exitcodes.ERROR})
        return exitcodes.ERROR
    except engine.BackupError as exc:  # last, as in for_error: naming it loads the backup
        return _failed(out, exc)


def _failed(out: Output, exc: Exception) -> int:
    """Report a failure the user can act on: its message and its exit code."""
    code = exitcodes.for_error(exc)
    message = str(exc)
    if isinstance(exc, NotFound):
        message += " (does the bucket or directory exist?)"
    out.error(message)
    out.summary({"ok": False, "error": message, "exit_code": code})
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
