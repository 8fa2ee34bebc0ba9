"""Key objects: the master keys wrapped by a key derived from a password.

Several key objects can open one repository; adding a password writes a new one,
removing deletes one, and no data is ever re-encrypted (format section 5). A rotation
(section 5b) adds a data key version to the payload of the key object it rewrites.

The derivation is the key object's ``kdf`` (repo/kdf.py): Argon2id for new keys, scrypt
for keys made before 2026-12-06. New keys need a password of at least
:data:`MIN_PASSWORD_LENGTH` characters unless the caller says it accepts less.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo import layout
from safehold.repo.crypto import (
    AAD_KEY,
    MAX_KEY_VERSIONS,
    SEAL_OVERHEAD,
    MasterKeys,
    SealError,
    open_sealed,
    seal,
)
from safehold.repo.errors import CorruptObject, UnsupportedRepository
from safehold.repo.kdf import Kdf, new_kdf, parse_kdf

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "KeyInfo",
    "KeyObject",
    "KeyOpenFailed",
    "make_key_object",
    "open_key_object",
    "parse_key_info",
    "parse_key_object",
    "password_problem",
    "unseal_key",
]

#: Passwords of new keys shorter than this are refused unless the caller accepts them.
MIN_PASSWORD_LENGTH = 12


def password_problem(password: str) -> str | None:
    """Why ``password`` is too weak for a new key, or None. The rule is its length: at
    least :data:`MIN_PASSWORD_LENGTH` characters (a passphrase of a few words passes)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return (
            f"the password has {len(password)} characters; a new key needs at least "
            f"{MIN_PASSWORD_LENGTH}"
        )
    return None


class KeyOpenFailed(Exception):
    """This key object does not open with that password."""


@dataclass(frozen=True)
class KeyInfo:
    """What ``key list`` shows: nothing secret."""

    id: str
    created: str
    hostname: str
    username: str


def _kek(password: str, kdf: Kdf) -> AESGCM:
    return AESGCM(kdf.derive(password))


def make_key_object(
    password: str,
    keys: MasterKeys,
    *,
    repository_id: str,
    config_hash: str,
    kdf: Kdf | None = None,
) -> bytes:
    """Seal the master keys under ``password``; returns the key object's bytes. ``kdf``:
    the derivation, with its salt (:func:`~safehold.repo.kdf.new_kdf`'s when None; tests
    pass others to make the keys of earlier versions)."""
    kdf = kdf or new_kdf()
    fields: dict[str, object] = {
        "repository": repository_id,
        "config": config_hash,
        "encrypt": base64.b64encode(keys.encrypt).decode(),
        "id": base64.b64encode(keys.id_key).decode(),
        "chunker_seed": keys.chunker_seed,
    }
    if keys.newer:  # rotated (format section 5b): data key versions 2, 3, ...
        fields["newer_keys"] = [base64.b64encode(k).decode() for k in keys.newer]
    payload = json.dumps(fields).encode()
    try:
        username = getpass.getuser()
    except (KeyError, OSError):
        username = ""
    doc = {
        "version": 1,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hostname": socket.gethostname(),
        "username": username,
        "kdf": kdf.to_json(),
        "cipher": "aes-256-gcm",
        "data": base64.b64encode(seal(_kek(password, kdf), AAD_KEY, payload)).decode(),
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


_MAX_KEY_OBJECT = 64 * 1024
#: The sealed payload: room for MAX_KEY_VERSIONS data keys in base64 and the rest.
_MAX_SEALED_PAYLOAD = 16 * 1024


@dataclass(frozen=True)
class KeyObject:
    """A parsed key object: what derivation it asks for, checked, and the sealed payload."""

    name: str
    kdf: Kdf
    sealed: bytes

    @property
    def cost(self) -> int:
        """The work its derivation takes, to try the cheapest first."""
        return self.kdf.cost


def _parse(data: bytes, name: str) -> dict[str, Any]:
    if len(data) > _MAX_KEY_OBJECT:
        raise CorruptObject(name, f"key object is {len(data)} bytes, more than a key can be")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CorruptObject(name, f"key object is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise CorruptObject(name, "key object is not a JSON object")
    return doc


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key, "")
    return value[:256] if isinstance(value, str) else ""


def parse_key_info(data: bytes, name: str) -> KeyInfo:
    doc = _parse(data, name)
    return KeyInfo(
        id=layout.object_id(name),
        created=_text(doc, "created"),
        hostname=_text(doc, "hostname"),
        username=_text(doc, "username"),
    )


def _b64(value: object, field: str, low: int, high: int) -> bytes:
    if type(value) is not str or len(value) > 4 * high:
        raise ValueError(f"field {field!r} is not base64")
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"field {field!r} is not base64") from exc
    if not low <= len(raw) <= high:
        raise ValueError(f"field {field!r} holds {len(raw)} bytes, not {low} to {high}")
    return raw


def parse_key_object(data: bytes, name: str) -> KeyObject:
    """Check a key object's fields and its derivation's cost, without deriving anything.

    :class:`CorruptObject` (naming the object and the field) when it is malformed or its
    cost is out of bounds (repo/kdf.py); :class:`UnsupportedRepository` for a KDF or
    cipher this version does not know."""
    doc = _parse(data, name)
    kdf = parse_kdf(doc.get("kdf"), name)
    cipher = doc.get("cipher")
    if cipher != "aes-256-gcm":
        raise UnsupportedRepository(
            f"{name}: key uses the cipher {str(cipher)[:40]!r}, which this safehold does "
            "not know; upgrade safehold"
        )
    try:
        sealed = _b64(doc.get("data"), "data", SEAL_OVERHEAD, _MAX_SEALED_PAYLOAD)
    except ValueError as exc:
        raise CorruptObject(name, f"key object {exc}") from exc
    return KeyObject(name, kdf, sealed)


def unseal_key(key: KeyObject, password: str) -> tuple[MasterKeys, str, str]:
    """Derive the key's KEK and open its payload: (master keys, repository id, config
    hash); :class:`KeyOpenFailed` when the password is not this key's."""
    try:
        plain = open_sealed(_kek(password, key.kdf), AAD_KEY, key.sealed)
    except SealError as exc:
        raise KeyOpenFailed(key.name) from exc
    try:
        payload = json.loads(plain)
        if type(payload) is not dict:
            raise ValueError("not a JSON object")
        encrypt = _b64(payload.get("encrypt"), "encrypt", 32, 32)
        id_key = _b64(payload.get("id"), "id", 32, 32)
        newer = payload.get("newer_keys", [])
        if type(newer) is not list or len(newer) >= MAX_KEY_VERSIONS:
            raise ValueError(
                f"field 'newer_keys' is not a list of at most {MAX_KEY_VERSIONS - 1} keys"
            )
        newer_keys = tuple(_b64(k, "newer_keys", 32, 32) for k in newer)
        seed = payload.get("chunker_seed")
        if type(seed) is not int or not 0 <= seed < 2**63:
            raise ValueError("field 'chunker_seed' is not a 63-bit integer")
        repository, config = payload.get("repository"), payload.get("config")
        if type(repository) is not str or type(config) is not str:
            raise ValueError("field 'repository' or 'config' is not a string")
    except (ValueError, RecursionError) as exc:
        raise CorruptObject(key.name, f"key payload is malformed ({exc})") from exc
    keys = MasterKeys(encrypt=encrypt, id_key=id_key, chunker_seed=seed, newer=newer_keys)
    return keys, repository, config


def open_key_object(data: bytes, name: str, password: str) -> tuple[MasterKeys, str, str]:
    """Return (master keys, repository id, config hash), or raise :class:`KeyOpenFailed`."""
    return unseal_key(parse_key_object(data, name), password)
