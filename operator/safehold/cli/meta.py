"""``--meta KEY=VALUE``: the snapshot metadata a fresh cluster needs to re-create a source.

Shared by ``backup``, ``dump`` and ``export-resources``. Each entry is checked as it is
parsed (a malformed one is argparse's usage error, exit code 2, naming ``--meta``), and the
whole mapping, with what the command adds itself, by :func:`read_meta`. The rules are the
repository's (format section 9, :func:`safehold.repo.snapshot.check_meta`).
"""

from __future__ import annotations

import argparse
from argparse import Namespace
from collections.abc import Mapping

from safehold.cli.context import UsageError

__all__ = ["add_meta_option", "read_meta"]


def _check(meta: Mapping[str, str]) -> dict[str, str]:
    # Imported when an entry is checked: building the parser loads no repository code.
    from safehold.repo.snapshot import check_meta

    return check_meta(meta)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE, got {text!r}")
    try:
        _check({key: value})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return key, value


def add_meta_option(p: argparse.ArgumentParser, *, adds: str = "") -> None:
    """Add the repeatable ``--meta KEY=VALUE``; ``adds`` names what the command sets itself."""
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        type=_pair,
        metavar="KEY=VALUE",
        help="store KEY=VALUE in the snapshot's metadata (repeatable; e.g. claim.size=10Gi)"
        + (f"; the command adds {adds}" if adds else ""),
    )


def read_meta(args: Namespace, added: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``--meta`` entries (the last of a repeated key wins), then what the command
    adds itself (``added`` wins over ``--meta``), checked together."""
    meta = dict(getattr(args, "meta", None) or [])
    meta.update(added or {})
    try:
        return _check(meta)
    except ValueError as exc:
        raise UsageError(f"--meta: {exc}") from None
