"""Exit codes of the ``safehold`` command (documented in docs/cli.md)."""

from __future__ import annotations

__all__ = [
    "DAMAGED",
    "ERROR",
    "INTERRUPTED",
    "INVALID",
    "LOCKED",
    "NO_REPOSITORY",
    "OK",
    "PARTIAL",
    "UNSUPPORTED",
    "USAGE",
    "WRONG_PASSWORD",
]

OK = 0
ERROR = 1
USAGE = 2
PARTIAL = 3  # finished, but some files could not be read or restored
DAMAGED = 4  # verify found damage
INVALID = 5  # validate: a manifest is not a valid Safehold resource
NO_REPOSITORY = 10
LOCKED = 11
WRONG_PASSWORD = 12
UNSUPPORTED = 13  # repository format version or algorithm this safehold does not know
INTERRUPTED = 130
