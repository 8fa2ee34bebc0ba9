"""The errors of the repository layer, each one a thing a user can act on.

The CLI maps each class to an exit code (see ``docs/cli.md``); messages name
the repository location and say what to do, and never contain a secret.
"""

from __future__ import annotations

__all__ = [
    "CorruptObject",
    "LockConflict",
    "NoSuchSnapshot",
    "RepositoryError",
    "RepositoryExists",
    "RepositoryNotFound",
    "UnsupportedRepository",
    "WrongPassword",
]


class RepositoryError(Exception):
    """Base class of every repository-level failure."""


class RepositoryNotFound(RepositoryError):
    """There is no repository (no ``config`` object) at the location."""


class RepositoryExists(RepositoryError):
    """``init`` found a repository already at the location."""


class WrongPassword(RepositoryError):
    """No key object of the repository opens with the given password."""


class UnsupportedRepository(RepositoryError):
    """The repository uses a format version or an algorithm this version cannot read."""


class LockConflict(RepositoryError):
    """Another process holds a lock that conflicts with the one asked for."""


class CorruptObject(RepositoryError):
    """An object or blob failed its integrity check (hash, authentication tag or structure)."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{name}: {message}")


class NoSuchSnapshot(RepositoryError):
    """No snapshot matches the id, prefix or ``latest`` filter given."""
