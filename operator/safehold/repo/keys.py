"""Key objects: the master keys wrapped by a key derived from a password with scrypt.

Several key objects can open one repository; adding a password writes a new one,
removing deletes one, and no data is ever re-encrypted (format section 5). A rotation
(section 5b) adds a data key version to the payload of the key object it rewrites.

New keys cost scrypt N=2^15, r=8, p=4 (32 MiB, about 0.3 s) and need a password of at
least :data:`MIN_PASSWORD_LENGTH` characters unless the caller says it accepts less.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

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

__all__ = [
    "MAX_SCRYPT_MEMORY",
    "MAX_SCRYPT_WORK",
    "MIN_PASSWORD_LENGTH",
    "SCRYPT_N",
    "SCRYPT_P",
    "KeyInfo",
    "KeyObject",
    "KeyOpenFailed",
    "make_key_object",
    "open_key_object",
    "parse_key_info",
    "parse_key_object",
    "password_problem",
    "scrypt_cost",
    "unseal_key",
]

#: scrypt's cost for new keys: N=2^15, r=8, p=4 takes 32 MiB and about 0.3 s, so a guess at
#: a password costs an attacker that much too (format section 5). The same block work
#: (n*r*p = 2^20) as N=2^17, p=1, which OWASP lists as equivalent, for a quarter of the
#: memory: 128 MiB per derivation was the floor of every command's memory (issue 19).
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 4
MIN_SCRYPT_N = 2**14
#: Tests only: a cheaper N, with p=1, for the keys they make (at least MIN_SCRYPT_N, a
#: power of two), so that every command of a test suite does not pay a third of a second
#: to open a repository.
#: Outside the ``SAFEHOLD_`` names on purpose: tests hand their commands a clean
#: ``SAFEHOLD_*`` environment, and this must survive that (tests/conftest.py sets it).
SCRYPT_N_ENV = "TEST_SAFEHOLD_SCRYPT_N"
#: Passwords of new keys shorter than this are refused unless the caller accepts them.
MIN_PASSWORD_LENGTH = 12


def scrypt_cost(n: int | None = None) -> tuple[int, int]:
    """The scrypt N and p for a new key: :data:`SCRYPT_N` and :data:`SCRYPT_P`, or a
    cheaper cost for tests: the ``n`` a test passes, or the one its environment names
    (:data:`SCRYPT_N_ENV`), with p=1."""
    if n:
        return n, 1
    value = os.environ.get(SCRYPT_N_ENV, "")
    if value.isdigit():
        n = int(value)
        if MIN_SCRYPT_N <= n <= SCRYPT_N and not n & (n - 1):
            return n, 1
    return SCRYPT_N, SCRYPT_P


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


def _kek(password: str, salt: bytes, n: int, r: int, p: int) -> AESGCM:
    kdf = Scrypt(salt=salt, length=32, n=n, r=r, p=p)
    return AESGCM(kdf.derive(password.encode()))


def make_key_object(
    password: str,
    keys: MasterKeys,
    *,
    repository_id: str,
    config_hash: str,
    n: int | None = None,
) -> bytes:
    """Seal the master keys under ``password``; returns the key object's bytes.
    The scrypt cost is :func:`scrypt_cost`'s: tests pass a cheaper ``n``."""
    n, p = scrypt_cost(n)
    salt = os.urandom(32)
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
        "kdf": {
            "algorithm": "scrypt",
            "n": n,
            "r": SCRYPT_R,
            "p": p,
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": "aes-256-gcm",
        "data": base64.b64encode(
            seal(_kek(password, salt, n, SCRYPT_R, p), AAD_KEY, payload)
        ).decode(),
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


#: The most memory one key derivation may take (scrypt needs 128·n·r bytes): a key object
#: asking for more is refused as damaged before anything is derived (format section 5).
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
#: The most work (n·r·p, in scrypt's block operations) one derivation may take: 4 times
#: what the writers' default (2^15, r=8, p=4; before, 2^17, r=8, p=1) costs.
MAX_SCRYPT_WORK = 2**22
_MAX_KEY_OBJECT = 64 * 1024
#: The sealed payload: room for MAX_KEY_VERSIONS data keys in base64 and the rest.
_MAX_SEALED_PAYLOAD = 16 * 1024


@dataclass(frozen=True)
class KeyObject:
    """A parsed key object: what derivation it asks for, checked, and the sealed payload."""

    name: str
    n: int
    r: int
    p: int
    salt: bytes
    sealed: bytes

    @property
    def cost(self) -> int:
        """The work its derivation takes, to try the cheapest first."""
        return self.n * self.r * self.p


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
    """Check a key object's fields and its scrypt cost, without deriving anything.

    :class:`CorruptObject` (naming the object and the field) when it is malformed or asks
    for more than :data:`MAX_SCRYPT_MEMORY` or :data:`MAX_SCRYPT_WORK`;
    :class:`UnsupportedRepository` for a KDF or cipher this version does not know."""
    doc = _parse(data, name)
    kdf = doc.get("kdf")
    if type(kdf) is not dict:
        raise CorruptObject(name, "key object misses or mangles field 'kdf'")
    algorithm, cipher = kdf.get("algorithm"), doc.get("cipher")
    if algorithm != "scrypt" or cipher != "aes-256-gcm":
        raise UnsupportedRepository(
            f"{name}: key uses {str(algorithm)[:40]}/{str(cipher)[:40]}, which this safehold "
            "does not know; upgrade safehold"
        )
    params = {}
    for field in ("n", "r", "p"):
        value = kdf.get(field)
        if type(value) is not int or not 1 <= value <= 2**32:
            raise CorruptObject(name, f"key object field 'kdf.{field}' is not a positive integer")
        params[field] = value
    n, r, p = params["n"], params["r"], params["p"]
    if n < MIN_SCRYPT_N or n & (n - 1):
        raise CorruptObject(
            name, f"key object field 'kdf.n' ({n}) is not a power of two of at least 2^14"
        )
    if 128 * n * r > MAX_SCRYPT_MEMORY or n * r * p > MAX_SCRYPT_WORK:
        raise CorruptObject(
            name,
            f"key object asks for scrypt n={n} r={r} p={p}: more than the "
            f"{MAX_SCRYPT_MEMORY >> 20} MiB of memory and the work a key may take",
        )
    try:
        salt = _b64(kdf.get("salt"), "kdf.salt", 16, 64)
        sealed = _b64(doc.get("data"), "data", SEAL_OVERHEAD, _MAX_SEALED_PAYLOAD)
    except ValueError as exc:
        raise CorruptObject(name, f"key object {exc}") from exc
    return KeyObject(name, n, r, p, salt, sealed)


def unseal_key(key: KeyObject, password: str) -> tuple[MasterKeys, str, str]:
    """Derive the key's KEK and open its payload: (master keys, repository id, config
    hash); :class:`KeyOpenFailed` when the password is not this key's."""
    try:
        plain = open_sealed(_kek(password, key.salt, key.n, key.r, key.p), AAD_KEY, key.sealed)
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
