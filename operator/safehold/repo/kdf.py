"""Password-based key derivation for key objects (format section 5): the algorithms a key
object may name, registered by name, each with its bounds checked before anything is
derived.

New keys use **Argon2id** (RFC 9106) with the RFC's second recommended option: 64 MiB,
3 passes, 4 lanes. Its lanes run in threads, so on two cores one derivation takes about
0.1 s. Keys made before 2026-12-06 use **scrypt** (RFC 7914), N=2^15, r=8, p=4 (or
N=2^17, p=1). OpenSSL computes scrypt's four lanes one after another, in 0.27 s. They
stay valid. Every command derives one key before its first read, so this is time every
command pays at its start (docs/performance.md, "Argon2id for new keys").

Anyone who can write to the storage can add a key object, so :func:`parse_kdf` refuses
costs above :data:`MAX_KDF_MEMORY` and each algorithm's work bound, as damage, before
anything is derived. It also refuses costs below each algorithm's floor: a key that cheap
was made by mistake, and would make the password cheap to guess.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from safehold.repo.errors import CorruptObject, UnsupportedRepository

#: Serializes Argon2id derivations (see :meth:`Argon2id.derive`).
_ONE_AT_A_TIME = threading.Lock()

__all__ = [
    "CHEAP_KDF_ENV",
    "KDFS",
    "MAX_KDF_MEMORY",
    "Argon2id",
    "Kdf",
    "Scrypt",
    "new_kdf",
    "parse_kdf",
]

#: The most memory one derivation may take, whatever the algorithm.
MAX_KDF_MEMORY = 256 * 1024 * 1024
#: The length of a new key's salt, and the lengths a reader accepts.
SALT_BYTES = 32
_SALT_RANGE = (16, 64)
#: Tests only: when set to ``1``, new keys cost the least that readers accept
#: (:meth:`Argon2id.cheapest`), so that the hundreds of commands a test suite runs do not
#: each pay a tenth of a second. Outside the ``SAFEHOLD_`` names on purpose: tests hand
#: their commands a clean ``SAFEHOLD_*`` environment, and this must survive that.
CHEAP_KDF_ENV = "TEST_SAFEHOLD_CHEAP_KDF"


class Kdf(Protocol):
    """A derivation of a 32-byte key-encryption key from a password."""

    algorithm: ClassVar[str]

    @property
    def salt(self) -> bytes: ...

    @property
    def cost(self) -> int:
        """About how long the derivation takes on one core, in microseconds (measured on
        this project's machines, 2026): comparable across algorithms, so that a reader can
        try the cheapest key first."""
        ...

    def derive(self, password: str) -> bytes: ...

    def to_json(self) -> dict[str, Any]:
        """The key object's ``kdf`` field."""
        ...


def _salt() -> bytes:
    return os.urandom(SALT_BYTES)


@dataclass(frozen=True)
class Argon2id:
    """Argon2id, version 0x13 (RFC 9106), without secret or associated data.

    Fields: ``memory_kib`` (RFC 9106's m), ``iterations`` (t), ``lanes`` (p)."""

    algorithm: ClassVar[str] = "argon2id"
    #: RFC 9106, section 4, the second recommended option, for new keys.
    DEFAULT: ClassVar[tuple[int, int, int]] = (64 * 1024, 3, 4)
    #: The least a reader accepts: 8 MiB, one pass (what CHEAP_KDF_ENV makes).
    MIN_MEMORY_KIB: ClassVar[int] = 8 * 1024
    #: The most work: 1 GiB written, 5.3 times a new key's (about 0.5 s on two cores).
    MAX_WORK_KIB: ClassVar[int] = 2**20
    MAX_LANES: ClassVar[int] = 16

    memory_kib: int = DEFAULT[0]
    iterations: int = DEFAULT[1]
    lanes: int = DEFAULT[2]
    salt: bytes = field(default_factory=_salt)

    @classmethod
    def cheapest(cls) -> Argon2id:
        return cls(memory_kib=cls.MIN_MEMORY_KIB, iterations=1, lanes=1)

    @property
    def cost(self) -> int:
        # 0.83 µs per KiB written by one lane: 64 MiB, 3 passes, 1 lane took 0.163 s.
        return self.memory_kib * self.iterations * 5 // 6

    def derive(self, password: str) -> bytes:
        # Imported here: the cryptography module's load is paid by the first derivation,
        # not by every import of the key code.
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id as _Argon2id

        kdf = _Argon2id(
            salt=self.salt,
            length=32,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        )
        # One at a time in a process: two Argon2id derivations with lanes > 1 at once (the
        # early key's thread and a command's own) hang or fail with MemoryError in
        # cryptography 50 with OpenSSL 4.0 (tests/repo/test_kdf.py).
        with _ONE_AT_A_TIME:
            return kdf.derive(password.encode())

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "memory_kib": self.memory_kib,
            "iterations": self.iterations,
            "lanes": self.lanes,
            "salt": base64.b64encode(self.salt).decode(),
        }

    @classmethod
    def parse(cls, doc: dict[str, Any], name: str) -> Argon2id:
        m, t, p = (_integer(doc, f, name) for f in ("memory_kib", "iterations", "lanes"))
        if p > cls.MAX_LANES:
            raise CorruptObject(name, f"key object field 'kdf.lanes' ({p}) is more than 16")
        if m < cls.MIN_MEMORY_KIB:  # (also Argon2's own floor, 8 KiB per lane)
            raise CorruptObject(
                name, f"key object field 'kdf.memory_kib' ({m}) is less than 8192 (8 MiB)"
            )
        if m * 1024 > MAX_KDF_MEMORY or m * t > cls.MAX_WORK_KIB:
            raise CorruptObject(
                name,
                f"key object asks for argon2id memory_kib={m} iterations={t}: more than the "
                f"{MAX_KDF_MEMORY >> 20} MiB of memory and the work a key may take",
            )
        return cls(memory_kib=m, iterations=t, lanes=p, salt=_salt_of(doc, name))


@dataclass(frozen=True)
class Scrypt:
    """scrypt (RFC 7914): the keys made before 2026-12-06; still read, and made only by
    tests that prove they are."""

    algorithm: ClassVar[str] = "scrypt"
    MIN_N: ClassVar[int] = 2**14
    #: The most work (n·r·p, in scrypt's block operations): 4 times 2^15 · 8 · 4.
    MAX_WORK: ClassVar[int] = 2**22

    n: int = 2**15
    r: int = 8
    p: int = 4
    salt: bytes = field(default_factory=_salt)

    @property
    def cost(self) -> int:
        # 2 µs per KiB of a lane: N=2^15, r=8, p=4 (128 MiB in all) took 0.27 s.
        return self.n * self.r * self.p // 4

    def derive(self, password: str) -> bytes:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt as _Scrypt

        return _Scrypt(salt=self.salt, length=32, n=self.n, r=self.r, p=self.p).derive(
            password.encode()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "n": self.n,
            "r": self.r,
            "p": self.p,
            "salt": base64.b64encode(self.salt).decode(),
        }

    @classmethod
    def parse(cls, doc: dict[str, Any], name: str) -> Scrypt:
        n, r, p = (_integer(doc, f, name) for f in ("n", "r", "p"))
        if n < cls.MIN_N or n & (n - 1):
            raise CorruptObject(
                name, f"key object field 'kdf.n' ({n}) is not a power of two of at least 2^14"
            )
        if 128 * n * r > MAX_KDF_MEMORY or n * r * p > cls.MAX_WORK:
            raise CorruptObject(
                name,
                f"key object asks for scrypt n={n} r={r} p={p}: more than the "
                f"{MAX_KDF_MEMORY >> 20} MiB of memory and the work a key may take",
            )
        return cls(n=n, r=r, p=p, salt=_salt_of(doc, name))


#: Every algorithm a key object may name, by its ``kdf.algorithm``.
KDFS: dict[str, Callable[[dict[str, Any], str], Kdf]] = {
    Argon2id.algorithm: Argon2id.parse,
    Scrypt.algorithm: Scrypt.parse,
}


def new_kdf() -> Kdf:
    """The derivation for a new key, with a fresh salt: Argon2id at RFC 9106's second
    recommended cost, or the cheapest a reader accepts when :data:`CHEAP_KDF_ENV` is 1."""
    if os.environ.get(CHEAP_KDF_ENV) == "1":
        return Argon2id.cheapest()
    return Argon2id()


def parse_kdf(doc: object, name: str) -> Kdf:
    """The ``kdf`` field of key object ``name``, checked: :class:`CorruptObject` (naming the
    field) when it is malformed or out of bounds, :class:`UnsupportedRepository` for an
    algorithm this version does not know."""
    if type(doc) is not dict:
        raise CorruptObject(name, "key object misses or mangles field 'kdf'")
    algorithm = doc.get("algorithm")
    parse = KDFS.get(algorithm) if isinstance(algorithm, str) else None
    if parse is None:
        raise UnsupportedRepository(
            f"{name}: key uses the key derivation {str(algorithm)[:40]!r}, which this safehold "
            "does not know; upgrade safehold"
        )
    return parse(doc, name)


def _integer(doc: dict[str, Any], field_name: str, name: str) -> int:
    value = doc.get(field_name)
    if type(value) is not int or not 1 <= value <= 2**32:
        raise CorruptObject(name, f"key object field 'kdf.{field_name}' is not a positive integer")
    return value


def _salt_of(doc: dict[str, Any], name: str) -> bytes:
    value = doc.get("salt")
    low, high = _SALT_RANGE
    try:
        if type(value) is not str or len(value) > 4 * high:
            raise ValueError
        salt = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise CorruptObject(name, "key object field 'kdf.salt' is not base64") from None
    if not low <= len(salt) <= high:
        raise CorruptObject(
            name, f"key object field 'kdf.salt' holds {len(salt)} bytes, not {low} to {high}"
        )
    return salt
