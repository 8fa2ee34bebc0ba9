"""Exit codes of the ``safehold`` command (documented in docs/cli.md), and which error
ends in which code (:func:`for_error`)."""

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
    "for_error",
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


def for_error(exc: BaseException) -> int:
    """The exit code a command ends with when ``exc`` stops it."""
    from safehold import engine
    from safehold.cli.context import UsageError
    from safehold.repo.errors import (
        CorruptObject,
        LockConflict,
        NoSuchSnapshot,
        RepositoryError,
        RepositoryExists,
        RepositoryNotFound,
        UnsupportedRepository,
        WrongPassword,
    )
    from safehold.storage import InvalidLocation, MissingExtra, StorageError

    table: list[tuple[type[BaseException], int]] = [
        (UsageError, USAGE),
        (InvalidLocation, USAGE),
        (MissingExtra, USAGE),
        (RepositoryNotFound, NO_REPOSITORY),
        (LockConflict, LOCKED),
        (WrongPassword, WRONG_PASSWORD),
        (UnsupportedRepository, UNSUPPORTED),
        (RepositoryExists, ERROR),
        (NoSuchSnapshot, ERROR),
        (CorruptObject, DAMAGED),
        (RepositoryError, ERROR),
        (StorageError, ERROR),
    ]
    for kind, code in table:
        if isinstance(exc, kind):
            return code
    # Last: naming BackupError imports the backup engine, which the other commands never need.
    return USAGE if isinstance(exc, engine.BackupError) else ERROR
