"""The ``safehold`` command: argument parsing, dispatch, and errors to exit codes.

Each module of :data:`COMMANDS` registers its commands (``register(sub, common)``: the
parsers and their handlers); this module only builds the parser from them, turns the
command line into a call and any failure into a message that says what to do plus a
documented exit code (docs/cli.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol

from safehold import __version__, engine
from safehold.cli import (
    audit,
    backup_hooks,
    cache,
    completion,
    database,
    exitcodes,
    hook_container,
    inspect,
    maintenance,
    mount,
    operator,
    pitr,
    repair,
    replicate,
    repo_info,
    report,
    resources,
    restore,
    snapshots,
    validate,
    verify,
)
from safehold.cli.context import UsageError
from safehold.cli.options import common_options
from safehold.cli.output import QUIET, VERY_VERBOSE, Output
from safehold.repo.errors import RepositoryError
from safehold.storage import NotFound, StorageError

__all__ = ["COMMANDS", "build_parser", "main"]


class _Commands(Protocol):
    """A module of commands: ``register`` adds its parsers, each with its handler
    (``set_defaults(func=...)``); ``common`` is the parent of the options every command
    that opens a repository takes."""

    def register(
        self,
        sub: argparse._SubParsersAction[argparse.ArgumentParser],
        common: argparse.ArgumentParser,
    ) -> None: ...


#: Every module of commands, in the order ``safehold --help`` lists their commands.
COMMANDS: tuple[_Commands, ...] = (
    repo_info,
    backup_hooks,
    hook_container,
    restore,
    snapshots,
    verify,
    replicate,
    operator,
    maintenance,
    repair,
    database,
    pitr,
    resources,
    validate,
    inspect,
    audit,
    cache,
    mount,
    report,
    completion,
)


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="safehold",
        description="Deduplicated, compressed, encrypted backups. See docs/cli.md.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"safehold {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for module in COMMANDS:
        module.register(sub, common)
    parser.set_defaults(parser=parser)  # for `safehold completion`, which reads every command
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
    quiet, verbose = bool(getattr(args, "quiet", False)), int(getattr(args, "verbose", 0))
    if quiet and verbose:
        print("safehold: error: -q/--quiet and -v/--verbose go against each other", file=sys.stderr)
        return exitcodes.USAGE
    out = Output(
        json_mode=json_mode,
        level=QUIET if quiet else min(verbose, VERY_VERBOSE),
        termination_log=getattr(args, "termination_log", None)
        or os.environ.get("SAFEHOLD_TERMINATION_LOG"),
        color=not (getattr(args, "no_color", False) or os.environ.get("NO_COLOR")),
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
    summary: dict[str, object] = {"ok": False, "error": message, "exit_code": code}
    if isinstance(exc, StorageError):  # the kind of failure, which exit code 1 does not say
        summary["reason"] = type(exc).__name__
    out.summary(summary)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
