"""Sealing (AES-256-GCM with a purpose string as associated data) and hashing.

Every encrypted thing in the repository is ``nonce || ciphertext || tag``; the
associated data names what the thing is, so a sealed index cannot be passed off
as a snapshot, nor a blob as another blob (its id is part of the associated data).

From format version 2 on, no data key seals anything itself: every pack and every
sealed object gets its own subkey, HKDF-SHA256 of a data key and a random 32-byte
salt, and starts with ``u32 key version || salt`` (format section 5a). Random 96-bit
nonces then stay far below their bound (2^32 seals per key) per key, and the key
version lets a repository rotate its data key (section 5b). :class:`Sealer` is the
one place that knows both layouts.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "AAD_INDEX",
    "AAD_KEY",
    "AAD_LOCK",
    "AAD_PACK_HEADER",
    "AAD_SNAPSHOT",
    "MAX_KEY_VERSIONS",
    "SEAL_OVERHEAD",
    "SUBKEY_PREFIX",
    "MasterKeys",
    "PackKey",
    "SealError",
    "Sealer",
    "blob_aad",
    "object_hash",
    "open_sealed",
    "seal",
    "seal_parts",
]

NONCE_SIZE = 12
TAG_SIZE = 16
SEAL_OVERHEAD = NONCE_SIZE + TAG_SIZE

AAD_KEY = b"safehold/v1/key"
AAD_PACK_HEADER = b"safehold/v1/pack-header"
AAD_INDEX = b"safehold/v1/index"
AAD_SNAPSHOT = b"safehold/v1/snapshot"
AAD_LOCK = b"safehold/v1/lock"
_AAD_BLOB = b"safehold/v1/blob/"
#: HKDF's info string for every subkey (format section 5a).
_SUBKEY_INFO = b"safehold/v2/subkey"
_PREFIX = struct.Struct("<I32s")  # data key version, salt
#: Bytes that lead every pack and sealed object of a version-2 repository.
SUBKEY_PREFIX = _PREFIX.size
#: The most data key versions a repository may have (one per rotation, plus the first).
MAX_KEY_VERSIONS = 256


class SealError(Exception):
    """Authentication failed: wrong key, or the bytes were changed."""


def blob_aad(blob_type: int, blob_id: bytes) -> bytes:
    """The associated data of one blob: binds its type and id to its ciphertext."""
    return _AAD_BLOB + bytes((blob_type,)) + blob_id


def seal(aead: AESGCM | Sealer, aad: bytes, plaintext: bytes | memoryview) -> bytes:
    """Encrypt and authenticate ``plaintext``; a fresh random nonce leads the result.

    With a :class:`Sealer`, seal a whole object as the repository's version asks
    (in version 2 under its own subkey, behind the subkey prefix)."""
    if isinstance(aead, Sealer):
        return aead.seal_object(aad, plaintext)
    nonce = os.urandom(NONCE_SIZE)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def seal_parts(aead: AESGCM, aad: bytes, plaintext: bytes | memoryview) -> tuple[bytes, bytes]:
    """:func:`seal` as (nonce, ciphertext with tag): saves a copy when the caller joins anyway."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce, aead.encrypt(nonce, plaintext, aad)


def open_sealed(aead: AESGCM | Sealer, aad: bytes, sealed: bytes | memoryview) -> bytes:
    """Reverse :func:`seal`; raise :class:`SealError` when the tag does not verify (or,
    with a :class:`Sealer`, when the subkey prefix names a key version it lacks)."""
    if isinstance(aead, Sealer):
        return aead.open_object(aad, sealed)
    if len(sealed) < SEAL_OVERHEAD:
        raise SealError("sealed data is shorter than nonce and tag")
    view = memoryview(sealed)
    try:
        return aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
    except InvalidTag as exc:
        raise SealError("authentication failed") from exc


def object_hash(data: bytes | memoryview | Iterable[bytes | memoryview]) -> str:
    """The name-giving hash of an object's stored bytes: hex BLAKE3, no key. The bytes may
    come in pieces (an object staged in a file)."""
    if isinstance(data, bytes | memoryview):
        return blake3.blake3(data, max_threads=1).hexdigest()
    hasher = blake3.blake3(max_threads=1)
    for piece in data:
        hasher.update(piece)
    return hasher.hexdigest()


@dataclass(frozen=True)
class MasterKeys:
    """The repository's secrets, held only in memory after a key object is opened.

    ``encrypt`` is data key version 1; ``newer`` the versions 2, 3, … that rotations
    added (format section 5b): the last one seals what is written now."""

    encrypt: bytes
    id_key: bytes
    chunker_seed: int
    newer: tuple[bytes, ...] = ()

    @classmethod
    def generate(cls) -> MasterKeys:
        return cls(os.urandom(32), os.urandom(32), int.from_bytes(os.urandom(8), "little") >> 1)

    @property
    def data_keys(self) -> tuple[bytes, ...]:
        """Every data key, version 1 first."""
        return (self.encrypt, *self.newer)

    def rotated(self) -> MasterKeys:
        """These keys and a new random data key, the new current version."""
        if len(self.data_keys) >= MAX_KEY_VERSIONS:
            raise ValueError(f"a repository has at most {MAX_KEY_VERSIONS} data key versions")
        return MasterKeys(
            self.encrypt, self.id_key, self.chunker_seed, (*self.newer, os.urandom(32))
        )

    def aead(self) -> AESGCM:
        return AESGCM(self.encrypt)

    def blob_id(self, data: bytes | memoryview) -> bytes:
        """The keyed id of a blob's plaintext: equal data, equal id, only with the key."""
        return blake3.blake3(data, key=self.id_key).digest()

    def __repr__(self) -> str:  # never print secrets
        return "MasterKeys(<secret>)"


def _subkey(data_key: bytes, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_SUBKEY_INFO)
    return AESGCM(hkdf.derive(data_key))


class PackKey(NamedTuple):
    """The key one pack is sealed with: the prefix that leads the pack (empty in version
    1) and the AEAD of its subkey (the data key itself in version 1)."""

    prefix: bytes
    aead: AESGCM


class Sealer:
    """Seals and opens a repository's packs and objects as its format version says.

    Version 1: everything under data key 1, no prefix. Version 2: every pack and object
    under ``HKDF-SHA256(data key v, salt)``, led by ``u32 v || salt``; new ones under the
    newest version (format sections 5a, 5b). Derived pack keys are cached by prefix."""

    def __init__(self, version: int, data_keys: Sequence[bytes]) -> None:
        if not data_keys:
            raise ValueError("no data key")
        self.version = version
        self._keys = tuple(data_keys)
        self._v1 = AESGCM(self._keys[0])
        self._cache: dict[bytes, AESGCM] = {}

    @property
    def prefix_size(self) -> int:
        """Bytes of subkey prefix that lead each pack and object (0 in version 1)."""
        return SUBKEY_PREFIX if self.version >= 2 else 0

    @property
    def key_version(self) -> int:
        """The data key version new packs and objects are sealed with."""
        return len(self._keys) if self.version >= 2 else 1

    def new_pack_key(self) -> PackKey:
        """A fresh subkey (random salt, newest data key) for one pack or object."""
        if self.version < 2:
            return PackKey(b"", self._v1)
        salt = os.urandom(32)
        version = len(self._keys)
        return PackKey(_PREFIX.pack(version, salt), _subkey(self._keys[version - 1], salt))

    def key_for(self, prefix: bytes | memoryview) -> AESGCM:
        """The AEAD of the pack or object that starts with ``prefix`` (at least
        :attr:`prefix_size` bytes; more are ignored). :class:`SealError` when it names a
        key version these keys do not hold."""
        if self.version < 2:
            return self._v1
        head = bytes(prefix[:SUBKEY_PREFIX])
        cached = self._cache.get(head)
        if cached is not None:
            return cached
        if len(head) < SUBKEY_PREFIX:
            raise SealError("too short to hold the subkey prefix")
        version, salt = _PREFIX.unpack(head)
        if not 1 <= version <= len(self._keys):
            raise SealError(
                f"sealed with data key version {version}, which this key does not hold "
                f"(it holds 1 to {len(self._keys)}): damaged, or written after a rotation "
                "that this key object predates"
            )
        aead = _subkey(self._keys[version - 1], salt)
        if len(self._cache) >= 4096:  # bounded: a restore touches each pack once or so
            self._cache.clear()
        self._cache[head] = aead
        return aead

    def seal_object(self, aad: bytes, plaintext: bytes | memoryview) -> bytes:
        key = self.new_pack_key()
        return key.prefix + seal(key.aead, aad, plaintext)

    def open_object(self, aad: bytes, sealed: bytes | memoryview) -> bytes:
        size = self.prefix_size
        if len(sealed) < size + SEAL_OVERHEAD:
            raise SealError("sealed data is shorter than prefix, nonce and tag")
        view = memoryview(sealed)
        return open_sealed(self.key_for(view[:size]), aad, view[size:])

    def __repr__(self) -> str:  # never print secrets
        return f"Sealer(version={self.version}, <secret>)"
