"""A repository's key objects: add, list and remove them, rotate the data key, and adopt
a rotation made at the repository a replica copies (format section 5b).

:class:`KeyRing` holds these methods of :class:`~safehold.repo.repository.Repository`,
which opening and reading do not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safehold.repo import layout
from safehold.repo.config import Config
from safehold.repo.crypto import MasterKeys, Sealer, object_hash
from safehold.repo.errors import RepositoryError, UnsupportedRepository
from safehold.repo.kdf import Kdf
from safehold.repo.keys import KeyInfo, make_key_object, parse_key_info
from safehold.storage import Storage

__all__ = ["OPENED_WITH", "KeyRing"]

#: (location, config hash) -> the key object that opened it last in this process, tried
#: first by the next open so that it does not derive every key again.
OPENED_WITH: dict[tuple[str, str], str] = {}


class KeyRing:
    """The key-object methods of a repository (a base of ``Repository``)."""

    storage: Storage
    config: Config
    keys: MasterKeys
    key_name: str
    aead: Sealer

    if TYPE_CHECKING:  # defined by Repository

        @property
        def location(self) -> str: ...

        @property
        def object_lock_days(self) -> int: ...

        @staticmethod
        def read_config(storage: Storage) -> tuple[Config, bytes]: ...

    def add_key(self, password: str, *, kdf: Kdf | None = None) -> str:
        """Add a key object that opens the repository with ``password``; returns its id.
        ``kdf``: the derivation with its salt (a new key's when None; tests make the keys
        of earlier versions with it)."""
        _, data = self.read_config(self.storage)
        key = make_key_object(
            password,
            self.keys,
            repository_id=self.config.id,
            config_hash=object_hash(data),
            kdf=kdf,
        )
        name = layout.key_name(object_hash(key))
        self.storage.create(name, key)
        return layout.object_id(name)

    def rotate_key(self, password: str) -> tuple[str, int]:
        """Add a data key version (format section 5b): what is written from now on is
        sealed with it; what exists stays readable under its own version. The key object
        that opened the repository (``password`` is its password) is replaced by one that
        holds every version. Return (new key id, new version).

        Refused when other key objects exist: their passwords are not known here, so
        they cannot get the new version, and a key that cannot read new data (or that
        writes with the old key) defeats the rotation; remove them first, add them again
        after. Refused under an object lock, which keeps the old key object."""
        if self.config.version < 2:
            raise UnsupportedRepository(
                f"{self.location}: the repository is format version {self.config.version}; "
                "data key rotation needs version 2 (a new repository, 'safehold repo init', "
                "filled by 'safehold replicate')"
            )
        if self.object_lock_days:
            raise RepositoryError(
                f"{self.location}: the repository locks the objects it writes, so the old key "
                "object could not be deleted and would keep writing with the old data key; "
                "rotation is not possible on a repository with object lock"
            )
        current = layout.object_id(self.key_name)
        others = [k.id for k in self.list_keys() if k.id != current]
        if others:
            raise RepositoryError(
                f"{self.location}: the repository has {len(others)} other key(s) "
                f"({', '.join(k[:12] for k in others)}): their passwords are needed to give "
                "them the new data key; remove them ('safehold repo key remove ID'), rotate, "
                "then add them again ('safehold repo key add')"
            )
        keys = self.keys.rotated()
        name = self._replace_key(password, keys)
        return layout.object_id(name), len(keys.data_keys)

    def adopt_rotation(self, password: str, keys: MasterKeys) -> str | None:
        """Take the data key versions that a rotation added to the repository this one is a
        replica of (``keys``, opened there): the key object that opened this one is
        replaced by one holding every version, under the same ``password``. Returns the
        new key's id, or None when this repository already holds them all.

        Raises :class:`RepositoryError` when ``keys`` are not a continuation of this
        repository's own (another repository's keys are never adopted)."""
        mine = self.keys.data_keys
        if len(keys.data_keys) <= len(mine):
            return None
        if (
            keys.data_keys[: len(mine)] != mine
            or keys.id_key != self.keys.id_key
            or keys.chunker_seed != self.keys.chunker_seed
        ):
            raise RepositoryError(
                f"{self.location}: its keys are not the replicated repository's: it is not a "
                "replica of it"
            )
        return layout.object_id(self._replace_key(password, keys))

    def _replace_key(self, password: str, keys: MasterKeys) -> str:
        """Write a key object holding ``keys`` under ``password``, then delete the one that
        opened the repository; from now on this object seals with the newest version."""
        _, data = self.read_config(self.storage)
        key = make_key_object(
            password, keys, repository_id=self.config.id, config_hash=object_hash(data)
        )
        name = layout.key_name(object_hash(key))
        # The new key first: a crash between the two leaves two keys, never none.
        self.storage.create(name, key)
        self.storage.delete(self.key_name)
        OPENED_WITH[(self.location, object_hash(data))] = name
        self.keys, self.key_name = keys, name
        self.aead = Sealer(self.config.version, keys.data_keys)
        return name

    def list_keys(self) -> list[KeyInfo]:
        return [
            parse_key_info(self.storage.get(info.name), info.name)
            for info in self.storage.list(layout.KEYS)
        ]

    def remove_key(self, key_id: str) -> str:
        keys = self.list_keys()
        matches = [k for k in keys if k.id.startswith(key_id.lower())]
        if not matches:
            raise RepositoryError(
                f"{self.location}: no key id begins with {key_id!r} "
                "('safehold repo key list' shows them)"
            )
        if len(matches) > 1:
            raise RepositoryError(
                f"{self.location}: {key_id!r} begins {len(matches)} key ids; give more of "
                "the id ('safehold repo key list' shows them)"
            )
        if len(keys) <= 1:
            raise RepositoryError(
                f"{self.location}: refusing to remove the last key: the repository "
                "could never be opened again; add another key first"
            )
        if matches[0].id == layout.object_id(self.key_name):
            raise RepositoryError(
                f"{self.location}: key {matches[0].id[:12]} is the one your password opened; "
                "remove it with another key's password, so that a mistyped id cannot lock "
                "you out"
            )
        self.storage.delete(layout.key_name(matches[0].id))
        return matches[0].id
