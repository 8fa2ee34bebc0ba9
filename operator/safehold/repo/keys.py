"""Key objects: the master keys wrapped by a key derived from a password with scrypt.

Several key objects can open one repository; adding a password writes a new one,
removing deletes one, and no data is ever re-encrypted (format section 5).
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from safehold.repo.crypto import AAD_KEY, MasterKeys, SealError, open_sealed, seal
from safehold.repo.errors import CorruptObject, UnsupportedRepository

__all__ = ["KeyInfo", "KeyOpenFailed", "make_key_object", "open_key_object", "parse_key_info"]

SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
MIN_SCRYPT_N = 2**14


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
    password: str, keys: MasterKeys, *, repository_id: str, config_hash: str, n: int = SCRYPT_N
) -> bytes:
    """Seal the master keys under ``password``; returns the key object's bytes."""
    salt = os.urandom(32)
    payload = json.dumps(
        {
            "repository": repository_id,
            "config": config_hash,
            "encrypt": base64.b64encode(keys.encrypt).decode(),
            "id": base64.b64encode(keys.id_key).decode(),
            "chunker_seed": keys.chunker_seed,
        }
    ).encode()
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
            "p": SCRYPT_P,
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": "aes-256-gcm",
        "data": base64.b64encode(
            seal(_kek(password, salt, n, SCRYPT_R, SCRYPT_P), AAD_KEY, payload)
        ).decode(),
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def _parse(data: bytes, name: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise CorruptObject(name, f"key object is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise CorruptObject(name, "key object is not a JSON object")
    return doc


def parse_key_info(data: bytes, name: str) -> KeyInfo:
    doc = _parse(data, name)
    return KeyInfo(
        id=name.rsplit("/", 1)[-1],
        created=str(doc.get("created", "")),
        hostname=str(doc.get("hostname", "")),
        username=str(doc.get("username", "")),
    )


def open_key_object(data: bytes, name: str, password: str) -> tuple[MasterKeys, str, str]:
    """Return (master keys, repository id, config hash), or raise :class:`KeyOpenFailed`."""
    doc = _parse(data, name)
    try:
        kdf = doc["kdf"]
        if kdf["algorithm"] != "scrypt" or doc.get("cipher") != "aes-256-gcm":
            raise UnsupportedRepository(
                f"{name}: key uses {kdf['algorithm']}/{doc.get('cipher')}, which this safehold "
                "does not know; upgrade safehold"
            )
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        salt = base64.b64decode(kdf["salt"])
        sealed = base64.b64decode(doc["data"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptObject(name, f"key object misses or mangles field {exc}") from exc
    if n < MIN_SCRYPT_N or r < 1 or p < 1 or n > 2**22 or r * p > 64:
        raise CorruptObject(name, f"key object has unsafe scrypt parameters n={n} r={r} p={p}")
    try:
        payload = json.loads(open_sealed(_kek(password, salt, n, r, p), AAD_KEY, sealed))
    except SealError as exc:
        raise KeyOpenFailed(name) from exc
    keys = MasterKeys(
        encrypt=base64.b64decode(payload["encrypt"]),
        id_key=base64.b64decode(payload["id"]),
        chunker_seed=int(payload["chunker_seed"]),
    )
    return keys, str(payload["repository"]), str(payload["config"])
