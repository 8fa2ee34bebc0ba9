"""The ``safehold`` command's entry point (``safehold = safehold.cli.start:main``, and
``python -m safehold``): start deriving the key, then load the commands and run one.

Every command that opens a repository derives a key from the password first (Argon2id,
about 0.1 s, which releases the GIL). Loading the commands' modules takes 0.09 s with a
warm page cache and 0.2 s with a cold one, and needs no key. So before it loads them,
:func:`main` reads the options every command takes (cli/options.py) and, when the password
comes without a prompt, starts the derivation in a thread
(:func:`~safehold.cli.context.start_early_key`); the command's open takes its result when
it opens that repository with that password (docs/performance.md, "The key derived while
the commands load").

What the start allocates (the modules, their functions and classes, the parsers) lives as
long as the process, so the cyclic collector is off while it loads and the result is then
frozen (``gc.freeze``): later passes, and the one at exit, never walk it again. The command
runs with the collector on, as a long-running one (``mount``, ``operator``) needs, and what
it leaves is frozen too before the interpreter's last pass at exit (docs/performance.md,
"The collector kept off the start").
"""

from __future__ import annotations

import argparse
import gc
import sys
import typing
from collections.abc import Sequence

__all__ = ["main"]


class _Lenient(argparse.ArgumentParser):
    """A parser that raises instead of printing and exiting: a command line it cannot
    read is left to the command's own parser to report."""

    def error(self, message: str) -> typing.NoReturn:
        raise argparse.ArgumentError(None, message)


def main(argv: Sequence[str] | None = None) -> int:
    gc.disable()
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        _start_deriving(args)
        from safehold.cli import context
        from safehold.cli.main import main as run
    finally:  # on if the start fails too: an in-process caller keeps its collector
        gc.freeze()
        gc.enable()
    try:
        return run(args)
    finally:
        context.close_started_key()  # a command that never opened its repository
        gc.freeze()  # the process ends: nothing left is worth a last pass over the heap


def _start_deriving(args: list[str]) -> None:
    from safehold.cli.context import UsageError, start_early_key
    from safehold.cli.options import common_options

    parser = _Lenient(add_help=False, allow_abbrev=False, parents=[common_options()])
    try:
        options, _ = parser.parse_known_args(args)
        start_early_key(options)
    except (argparse.ArgumentError, UsageError):
        return
