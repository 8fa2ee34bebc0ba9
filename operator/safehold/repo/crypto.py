"""Sealing (AES-256-GCM with a purpose string as associated data) and hashing.

Every encrypted thing in the repository is ``nonce || ciphertext || tag``; the
associated data names what the thing is, so a sealed index cannot be passed off
as a snapshot, nor a blob as another blob (its id is part of the associated data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "AAD_INDEX",
    "AAD_KEY",
    "AAD_LOCK",
    "AAD_PACK_HEADER",
    "AAD_SNAPSHOT",
    "SEAL_OVERHEAD",
    "MasterKeys",
    "SealError",
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


class SealError(Exception):
    """Authentication failed: wrong key, or the bytes were changed."""


def blob_aad(blob_type: int, blob_id: bytes) -> bytes:
    """The associated data of one blob: binds its type and id to its ciphertext."""
    return _AAD_BLOB + bytes((blob_type,)) + blob_id


def seal(aead: AESGCM, aad: bytes, plaintext: bytes | memoryview) -> bytes:
    """Encrypt and authenticate ``plaintext``; a fresh random nonce leads the result."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def seal_parts(aead: AESGCM, aad: bytes, plaintext: bytes | memoryview) -> tuple[bytes, bytes]:
    """:func:`seal` as (nonce, ciphertext with tag): saves a copy when the caller joins anyway."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce, aead.encrypt(nonce, plaintext, aad)


def open_sealed(aead: AESGCM, aad: bytes, sealed: bytes | memoryview) -> bytes:
    """Reverse :func:`seal`; raise :class:`SealError` when the tag does not verify."""
    if len(sealed) < SEAL_OVERHEAD:
        raise SealError("sealed data is shorter than nonce and tag")
    view = memoryview(sealed)
    try:
        return aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
    except InvalidTag as exc:
        raise SealError("authentication failed") from exc


def object_hash(data: bytes | memoryview) -> str:
    """The name-giving hash of an object's stored bytes: hex BLAKE3, no key."""
    return blake3.blake3(data, max_threads=1).hexdigest()


@dataclass(frozen=True)
class MasterKeys:
    """The repository's secrets, held only in memory after a key object is opened."""

    encrypt: bytes
    id_key: bytes
    chunker_seed: int

    @classmethod
    def generate(cls) -> MasterKeys:
        return cls(os.urandom(32), os.urandom(32), int.from_bytes(os.urandom(8), "little") >> 1)

    def aead(self) -> AESGCM:
        return AESGCM(self.encrypt)

    def blob_id(self, data: bytes | memoryview) -> bytes:
        """The keyed id of a blob's plaintext: equal data, equal id, only with the key."""
        return blake3.blake3(data, key=self.id_key).digest()

    def __repr__(self) -> str:  # never print secrets
        return "MasterKeys(<secret>)"
