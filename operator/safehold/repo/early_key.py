"""The key derived before the storage is open, from the key object that opened the
repository at the same location last time (kept in the local cache).

A command on an object store imports the SDK and makes its client (0.15-0.25 s for S3),
reads the config and lists the key objects, and only then derives the key (Argon2id, about
0.1 s; scrypt, 0.3 s, for keys made before 2026-12-06; both release the GIL). Yet the
derivation needs nothing from the storage but the key object's salt and cost. When the local
cache remembers the key object that opened the repository at this location, and the password
was given without a prompt, :class:`EarlyKey` starts that derivation in a thread before the
storage is opened, and the open takes its result instead of deriving (docs/performance.md,
"The key derived while the storage opens").

Nothing remembered is trusted that the repository does not confirm. The result is used only
when the repository's listing of ``keys/`` holds an object of the remembered key's name,
which is the hash of its bytes (so the repository holds these very bytes), and the open then
checks that the unsealed key names the config's repository id and hash, as every open does.
Otherwise (the key was removed, another repository is at this location now, a copy is
damaged or missing) the open goes on as it would without one and remembers the key that
opened. A password the remembered key refuses is not tried on that key again.

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
from safehold.repo.local_cache import LOCATIONS, write_whole

__all__ = ["KEY_FILE", "EarlyKey", "Unsealed"]

log = logging.getLogger(__name__)

#: The file, in a repository's cache directory, that holds the key object that opened it.
KEY_FILE = "key"
_REPOSITORY_ID = re.compile(r"[0-9a-f]{64}")

#: What a key object gives the password that opens it: the master keys, the repository id
#: and the config hash it was made for (:func:`~safehold.repo.keys.unseal_key`).
Unsealed = tuple[MasterKeys, str, str]


class EarlyKey:
    """The derivation of the key remembered for ``location`` (a URL and what else tells
    two repositories at one URL apart, such as the endpoint), started at once in a thread
    when ``cache_dir`` remembers one and a ``password`` is given (None: only remember the
    key that opens, or that ``repo init`` makes)."""

    def __init__(self, cache_dir: Path, location: str, password: str | None) -> None:
        self._cache_dir = cache_dir
        #: The file that names the repository last opened at ``location``.
        self.pointer = cache_dir / LOCATIONS / blake3.blake3(location.encode()).hexdigest()[:32]
        self._password = password
        #: The remembered key object (None: nothing usable is remembered).
        self.key: KeyObject | None = None
        self._repository_id = ""
        #: The name of the remembered key when the password does not open it.
        self.refused: str | None = None
        self._unsealed: Unsealed | None = None
        self._thread: threading.Thread | None = None
        self._load()

    def _load(self) -> None:
        """Read the remembered key (so that :meth:`opened` writes only what changed) and,
        with a password, start deriving it."""
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
        if self._password is None:
            return
        self._thread = threading.Thread(
            target=self._derive, args=(self.key, self._password), name="early-key", daemon=True
        )
        self._thread.start()

    def _derive(self, key: KeyObject, password: str) -> None:
        try:
            self._unsealed = unseal_key(key, password)
        except KeyOpenFailed:
            self.refused = key.name
        except RepositoryError as exc:  # a malformed payload: the open reads the key again
            log.debug("the remembered key %s does not unseal: %s", key.name, exc)

    def take(self, names: Collection[str]) -> tuple[KeyObject, Unsealed] | None:
        """The remembered key and what it unsealed, when the repository's key objects
        (``names``) hold it and the password opened it; else None. Waits for the
        derivation."""
        if self.key is None or self.key.name not in names:
            return None
        self.close()
        return None if self._unsealed is None else (self.key, self._unsealed)

    def opened(self, repository_id: str, name: str, data: bytes) -> None:
        """Remember that the key object ``name`` (its bytes: ``data``) opened repository
        ``repository_id`` here (or was made with it). A cache that cannot be written is
        left alone: only the next open's head start is lost."""
        if self.key is not None and self.key.name == name and self._repository_id == repository_id:
            return
        try:
            directory = self._cache_dir / repository_id
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_whole(directory / KEY_FILE, data, 0o600)
            self.pointer.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_whole(self.pointer, repository_id.encode(), 0o600)
        except OSError as exc:
            log.debug("cannot remember the key in %s: %s", self._cache_dir, exc)

    def close(self) -> None:
        """Wait for the derivation, if one runs."""
        if self._thread is not None:
            self._thread.join()
