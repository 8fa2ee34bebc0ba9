"""The key derived before the repository is open: from the key object that opened the
repository at the same location last time (kept in the local cache), or, for a repository
in a directory, from its cheapest key object, read from the directory.

A command on an object store imports the SDK and makes its client (0.15-0.25 s for S3),
reads the config and lists the key objects, and only then derives the key (Argon2id, about
0.1 s; scrypt, 0.3 s, for keys made before 2026-12-06; both release the GIL). Yet the
derivation needs nothing from the storage but the key object's salt and cost. When the
password was given without a prompt, :class:`EarlyKey` starts that derivation in a thread
before the storage is opened (for a repository in a directory: before the command's modules
load, cli/start.py), and the open takes its result instead of deriving (docs/performance.md,
"The key derived while the storage opens").

Nothing read early is trusted that the repository does not confirm. The result is used only
when the repository's listing of ``keys/`` holds an object of the early key's name,
which is the hash of its bytes (so the repository holds these very bytes), and the open then
checks that the unsealed key names the config's repository id and hash, as every open does.
Otherwise (the key was removed, another repository is at this location now, a copy is
damaged or missing) the open goes on as it would without one and remembers the key that
opened. A password the early key refuses is not tried on that key again.

Files, in the cache directory of :mod:`~safehold.repo.local_cache`:
``locations/<hash of the location>`` holds the id of the repository last opened there;
``<repository id>/key`` the bytes of the key object that opened it, as the repository stores
them (sealed by the password; they grant nothing the repository's own copy does not).

Threads: :meth:`EarlyKey.close` joins the derivation's thread; ``Repository.open`` calls it
before it returns, so that a backup forks its workers from a process of one thread.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Collection
from pathlib import Path

import blake3

from safehold.repo import layout
from safehold.repo.crypto import MasterKeys, object_hash
from safehold.repo.errors import RepositoryError
from safehold.repo.keys import KeyObject, KeyOpenFailed, parse_key_object, unseal_key

__all__ = ["KEY_FILE", "EarlyKey", "KeyMemory", "Unsealed"]

log = logging.getLogger(__name__)

#: The file, in a repository's cache directory, that holds the key object that opened it.
KEY_FILE = "key"
_REPOSITORY_ID = re.compile(r"[0-9a-f]{64}")

#: What a key object gives the password that opens it: the master keys, the repository id
#: and the config hash it was made for (:func:`~safehold.repo.keys.unseal_key`).
Unsealed = tuple[MasterKeys, str, str]


class EarlyKey:
    """The derivation of one key object, started at once in a thread when a ``password`` is
    given (None: nothing is derived; :meth:`opened` still remembers). Made by
    :meth:`remembered` (an object store: the key the local cache remembers for the
    location) or :meth:`local` (a repository in a directory: its cheapest key)."""

    def __init__(
        self, key: KeyObject | None, password: str | None, memory: KeyMemory | None = None
    ) -> None:
        #: The key object derived (None: nothing usable was found).
        self.key = key
        #: Where the local cache remembers the key for this location (None: nowhere).
        self.memory = memory
        #: The name of the key when the password does not open it.
        self.refused: str | None = None
        self._unsealed: Unsealed | None = None
        self._thread: threading.Thread | None = None
        if key is not None and password is not None:
            self._thread = threading.Thread(
                target=self._derive, args=(key, password), name="early-key", daemon=True
            )
            self._thread.start()

    @classmethod
    def remembered(cls, cache_dir: Path, location: str, password: str | None) -> EarlyKey:
        """The key the local cache in ``cache_dir`` remembers for ``location`` (a URL and
        what else tells two repositories at one URL apart, such as the endpoint)."""
        memory = KeyMemory(cache_dir, location)
        return cls(memory.key, password, memory)

    @classmethod
    def local(cls, keys_dir: Path, password: str | None) -> EarlyKey:
        """The cheapest key object in ``keys_dir`` (a repository in a directory: reading
        its keys costs no round trip, so nothing is remembered); the one the open tries
        first among keys of one cost (repo/repository.py)."""
        keys: list[KeyObject] = []
        try:
            paths = sorted(keys_dir.iterdir())
        except OSError as exc:
            log.debug("no key to derive early in %s: %s", keys_dir, exc)
            paths = []
        for path in paths:
            try:
                data = path.read_bytes()
                name = layout.key_name(object_hash(data))
                if name == layout.key_name(path.name):  # else damaged: the open reports it
                    keys.append(parse_key_object(data, name))
            except (OSError, RepositoryError) as exc:
                log.debug("not deriving %s early: %s", path, exc)
        return cls(min(keys, key=lambda k: k.cost) if keys else None, password)

    def _derive(self, key: KeyObject, password: str) -> None:
        try:
            self._unsealed = unseal_key(key, password)
        except KeyOpenFailed:
            self.refused = key.name
        except RepositoryError as exc:  # a malformed payload: the open reads the key again
            log.debug("the early key %s does not unseal: %s", key.name, exc)

    def take(self, names: Collection[str]) -> tuple[KeyObject, Unsealed] | None:
        """The key and what it unsealed, when the repository's key objects (``names``)
        hold it and the password opened it; else None. Waits for the derivation."""
        if self.key is None or self.key.name not in names:
            return None
        self.close()
        return None if self._unsealed is None else (self.key, self._unsealed)

    def opened(self, repository_id: str, name: str, data: bytes) -> None:
        """Remember, in the local cache, that the key object ``name`` (its bytes: ``data``)
        opened repository ``repository_id`` at this location (or was made with it)."""
        if self.memory is not None:
            self.memory.remember(repository_id, name, data)

    def close(self) -> None:
        """Wait for the derivation, if one runs."""
        if self._thread is not None:
            self._thread.join()


class KeyMemory:
    """The key the local cache remembers for a location (files: see the module)."""

    def __init__(self, cache_dir: Path, location: str) -> None:
        # Here, not at the top: the local cache's module loads the storage layer, which a
        # repository in a directory does not need before its key's derivation starts.
        from safehold.repo.local_cache import LOCATIONS

        self._cache_dir = cache_dir
        #: The file that names the repository last opened at the location.
        self.pointer = cache_dir / LOCATIONS / blake3.blake3(location.encode()).hexdigest()[:32]
        self.key: KeyObject | None = None
        self._repository_id = ""
        try:
            repository_id = self.pointer.read_text().strip()
            if not _REPOSITORY_ID.fullmatch(repository_id):
                return
            data = (self._cache_dir / repository_id / KEY_FILE).read_bytes()
            self.key = parse_key_object(data, layout.key_name(object_hash(data)))
        except (OSError, UnicodeDecodeError, RepositoryError) as exc:
            log.debug("no remembered key for this location: %s", exc)
            return
        self._repository_id = repository_id

    def remember(self, repository_id: str, name: str, data: bytes) -> None:
        """Write the key and the pointer unless they hold these already. A cache that
        cannot be written is left alone: only the next open's head start is lost."""
        if self.key is not None and self.key.name == name and self._repository_id == repository_id:
            return
        from safehold.repo.local_cache import write_whole

        try:
            directory = self._cache_dir / repository_id
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_whole(directory / KEY_FILE, data, 0o600)
            self.pointer.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_whole(self.pointer, repository_id.encode(), 0o600)
        except OSError as exc:
            log.debug("cannot remember the key in %s: %s", self._cache_dir, exc)
