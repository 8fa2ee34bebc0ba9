"""The key derivations (repo/kdf.py, format section 5): known answers, so that no upgrade of
a library can change what a password derives and lock users out of their repositories;
the bounds a reader checks before deriving; and the choice for new keys."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from safehold.repo.errors import CorruptObject, UnsupportedRepository
from safehold.repo.kdf import CHEAP_KDF_ENV, Argon2id, Scrypt, new_kdf, parse_kdf

SALT = b"safehold-test-salt-of-32-bytes!!"
PASSWORD = "correct horse battery staple"


@pytest.mark.parametrize(
    ("kdf", "expected"),
    [
        # Computed with argon2-cffi (the reference libargon2), hash_secret_raw(...,
        # type=Type.ID, version=19, hash_len=32): the same bytes as ours.
        (
            Argon2id(memory_kib=65536, iterations=3, lanes=4, salt=SALT),
            "d3822f37fb6b0c8e7bdcc9a226482d0cbea4f330d3b72693e59d30f72870d5ec",
        ),
        (
            Argon2id(memory_kib=8192, iterations=1, lanes=1, salt=SALT),
            "4e855521613e3505d546c1fee13dc2ac62b66bac5c3fdfcbf98f473e1f329ff9",
        ),
    ],
    ids=["argon2id-new-keys", "argon2id-cheapest"],
)
def test_argon2id_derives_what_the_reference_implementation_derives(
    kdf: Argon2id, expected: str
) -> None:
    assert kdf.derive(PASSWORD).hex() == expected


def test_scrypt_derives_rfc_7914s_test_vector() -> None:
    # RFC 7914, section 12, the third vector; a 32-byte key is the first 32 bytes of its
    # 64 (PBKDF2's blocks do not depend on the length asked for).
    kdf = Scrypt(n=16384, r=8, p=1, salt=b"SodiumChloride")
    assert kdf.derive("pleaseletmein").hex() == (
        "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
    )


def test_new_keys_use_argon2id_at_rfc_9106s_second_option_with_a_fresh_salt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CHEAP_KDF_ENV, raising=False)
    one, two = new_kdf(), new_kdf()
    assert isinstance(one, Argon2id)
    assert (one.memory_kib, one.iterations, one.lanes) == (65536, 3, 4)
    assert len(one.salt) == 32
    assert one.salt != two.salt
    monkeypatch.setenv(CHEAP_KDF_ENV, "1")
    cheap = new_kdf()
    assert cheap == Argon2id(memory_kib=8192, iterations=1, lanes=1, salt=cheap.salt)


@pytest.mark.parametrize("kdf", [Argon2id(), Argon2id.cheapest(), Scrypt(), Scrypt(n=2**17, p=1)])
def test_a_kdf_written_is_read_back_as_itself(kdf: Any) -> None:
    assert parse_kdf(kdf.to_json(), "keys/k") == kdf


def test_cost_orders_keys_by_their_time_whatever_the_algorithm() -> None:
    """Readers try the cheapest key first. A new key (Argon2id) comes before a scrypt key
    of before 2026-12-06, which takes 2.7 times as long on one core."""
    kdfs = [Scrypt(), Argon2id(), Scrypt(n=2**14, p=1), Argon2id.cheapest()]
    assert sorted(kdfs, key=lambda k: k.cost) == [kdfs[3], kdfs[2], kdfs[1], kdfs[0]]
    assert 150_000 < Argon2id().cost < 180_000  # about 0.16 s of one core
    assert 250_000 < Scrypt().cost < 280_000  # about 0.27 s


def _argon2id(**fields: Any) -> dict[str, Any]:
    return {**Argon2id().to_json(), **fields}


def _scrypt(**fields: Any) -> dict[str, Any]:
    return {**Scrypt().to_json(), **fields}


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (None, "misses or mangles field 'kdf'"),
        ([1], "misses or mangles field 'kdf'"),
        (_argon2id(memory_kib=1.5), "'kdf.memory_kib' is not a positive integer"),
        (_argon2id(iterations=True), "'kdf.iterations' is not a positive integer"),
        (_argon2id(lanes=0), "'kdf.lanes' is not a positive integer"),
        (_argon2id(lanes=17), "'kdf.lanes' (17) is more than 16"),
        (_argon2id(memory_kib=8191), "'kdf.memory_kib' (8191) is less than 8192"),
        (_argon2id(memory_kib=2**18 + 1), "more than the 256 MiB of memory"),
        (_argon2id(memory_kib=2**18, iterations=5), "iterations=5: more than"),
        (_argon2id(salt="c2hvcnQ="), "'kdf.salt' holds 5 bytes, not 16 to 64"),
        (_argon2id(salt=7), "'kdf.salt' is not base64"),
        (_scrypt(n=3 * 2**14), "'kdf.n' (49152) is not a power of two of at least 2^14"),
        (_scrypt(n=2**13), "is not a power of two of at least 2^14"),
        (_scrypt(n=2**18, r=16), "more than the 256 MiB of memory"),
        (_scrypt(n=2**15, p=64), "scrypt n=32768 r=8 p=64: more than"),
        (_scrypt(r="8"), "'kdf.r' is not a positive integer"),
    ],
)
def test_a_kdf_out_of_bounds_is_damage_named_by_field(doc: Any, says: str) -> None:
    with pytest.raises(CorruptObject) as err:
        parse_kdf(doc, "keys/k")
    assert "keys/k" in str(err.value)
    assert says in str(err.value)


@pytest.mark.parametrize("algorithm", ["argon2d", "pbkdf2", 7, None])
def test_an_unknown_algorithm_asks_for_an_upgrade(algorithm: object) -> None:
    doc = {**Argon2id().to_json(), "algorithm": algorithm}
    with pytest.raises(UnsupportedRepository) as err:
        parse_kdf(doc, "keys/k")
    assert "upgrade safehold" in str(err.value)


def test_the_salt_is_stored_in_base64() -> None:
    kdf = Argon2id(salt=SALT)
    assert base64.b64decode(kdf.to_json()["salt"]) == SALT


def test_derivations_at_once_in_two_threads_both_finish_with_the_right_key() -> None:
    """The early key's thread and a command's own open can derive at the same time. Two
    Argon2id derivations with 4 lanes at once hung, or failed with MemoryError, in
    cryptography 50 with OpenSSL 4.0; derive() runs them one after the other."""
    import threading

    kdf = Argon2id(memory_kib=65536, iterations=3, lanes=4, salt=SALT)
    results: list[bytes | BaseException] = []

    def derive() -> None:
        try:
            results.append(kdf.derive(PASSWORD))
        except BaseException as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    threads = [threading.Thread(target=derive, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a derivation hung"
    expected = "d3822f37fb6b0c8e7bdcc9a226482d0cbea4f330d3b72693e59d30f72870d5ec"
    assert [r.hex() if isinstance(r, bytes) else r for r in results] == [expected] * 3
