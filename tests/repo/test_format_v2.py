"""Format version 2 (issue 15, item 7): a subkey per pack and object, data key rotation,
the cost of new keys and the password rule; and version 1 repositories still read and
written as version 1 (format sections 5, 5a, 5b, 13).

Real repositories on disk and the real ``safehold`` command; nothing mocked."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from safehold.repo import (
    BLOB_DATA,
    BlobEncoder,
    BlobWriter,
    Config,
    CorruptObject,
    Repository,
)
from safehold.repo.crypto import SUBKEY_PREFIX
from safehold.repo.kdf import CHEAP_KDF_ENV, Argon2id, Scrypt
from safehold.repo.keys import parse_key_object
from safehold.repo.layout import key_name, pack_object_name
from safehold.repo.pack import parse_pack
from safehold.repo.snapshot import decode_snapshot
from safehold.storage import Storage, open_storage

PASSWORD = "format two password"
FIXTURE = Path(__file__).parent / "fixtures" / "v1-repository"
FIXTURE_PASSWORD = "version one fixture password"
#: sha256 of the files the fixture's snapshot holds (written by the format-1 code).
FIXTURE_FILES = {
    "hello.txt": "01d4da79f93c2ea042eccff3918ea771ff2ef9505694492c69c669b655755d18",
    "dir/random.bin": "1807e5036ee223f44da87dcfe9d58e965394b5951ea884328fd0336862ba6ae4",
    "dir/text.txt": "6f9afb64529e7407c02b3d11ca0ebdfa27c5f644397c39c0ce6fbc90d90718a6",
}


def _cli(
    repo: Path, *args: str, password: str = PASSWORD, **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    return subprocess.run(
        [sys.executable, "-m", "safehold", *args],
        env={
            **clean,
            "SAFEHOLD_REPOSITORY": repo.as_uri(),
            "SAFEHOLD_PASSWORD": password,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    doc: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _packs(storage: Storage) -> dict[str, bytes]:
    return {info.name: storage.get(info.name) for info in storage.list("data/")}


def _write_blobs(repo: Repository, count: int, size: int = 40_000) -> list[bytes]:
    """Store ``count`` random blobs, several per pack; return their ids."""
    writer = BlobWriter(repo, pack_size=3 * size)
    encoder = BlobEncoder(repo.aead, 1)
    ids = []
    for _ in range(count):
        data = os.urandom(size)
        blob_id = repo.keys.blob_id(data)
        assert writer.claim(blob_id)
        sealed, flags = encoder.encode(BLOB_DATA, blob_id, data)
        writer.add(BLOB_DATA, blob_id, sealed, flags, len(data))
        ids.append(blob_id)
    writer.flush()
    writer.close()
    return ids


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return open_storage((tmp_path / "repo").as_uri())


# --------------------------------------------------------------------------- subkeys
def test_a_new_repository_is_version_2_and_reads_back(storage: Storage) -> None:
    repo = Repository.init(storage, PASSWORD)
    assert json.loads(storage.get("config"))["version"] == 2
    ids = _write_blobs(repo, 7)
    again = Repository.open(storage, PASSWORD)
    for blob_id in ids:
        assert again.keys.blob_id(again.read_blob(blob_id)) == blob_id


def test_every_pack_and_object_has_its_own_subkey_salt(storage: Storage) -> None:
    repo = Repository.init(storage, PASSWORD)
    _write_blobs(repo, 12)
    packs = _packs(storage)
    assert len(packs) >= 4
    objects = list(packs.values()) + [storage.get(i.name) for i in storage.list("index/")]
    prefixes = [data[:SUBKEY_PREFIX] for data in objects]
    assert all(struct.unpack_from("<I", p)[0] == 1 for p in prefixes)  # data key version 1
    salts = [p[4:] for p in prefixes]
    assert len(set(salts)) == len(salts), "two objects share a subkey salt"
    # the first blob of a pack starts after the prefix
    index = Repository.open(storage, PASSWORD).index
    assert min(loc.offset for _, loc in index.items()) == SUBKEY_PREFIX


@pytest.mark.parametrize("where", ["version", "salt"])
def test_a_changed_subkey_prefix_is_corruption(storage: Storage, where: str) -> None:
    repo = Repository.init(storage, PASSWORD)
    (blob_id,) = _write_blobs(repo, 1)
    (name, data) = next(iter(_packs(storage).items()))
    damaged = bytearray(data)
    if where == "version":
        damaged[:4] = struct.pack("<I", 9)
    else:
        damaged[10] ^= 0x40
    Path(storage.location.removeprefix("file://"), name).write_bytes(bytes(damaged))
    with pytest.raises(CorruptObject) as caught:
        Repository.open(storage, PASSWORD).read_blob(blob_id)
    assert name in str(caught.value)
    if where == "version":
        assert "key version 9" in str(caught.value)


def test_a_snapshot_with_a_changed_salt_is_corruption(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("data\n")
    _summary(_cli(repo_dir, "repo", "init", "--json"))
    _summary(_cli(repo_dir, "backup", "--json", str(tmp_path / "src")))
    repo = Repository.open(open_storage(repo_dir.as_uri()), PASSWORD)
    (info,) = repo.storage.list("snapshots/")
    data = bytearray(repo.storage.get(info.name))
    data[20] ^= 1
    with pytest.raises(CorruptObject):
        decode_snapshot(repo.aead, bytes(data), info.name)


# --------------------------------------------------------------------------- version 1
def test_a_version_1_repository_is_read_verified_and_stays_version_1(tmp_path: Path) -> None:
    """The fixture was written by the format-1 code (before version 2 existed)."""
    repo_dir = tmp_path / "v1"
    shutil.copytree(FIXTURE, repo_dir)
    config_before = (repo_dir / "config").read_bytes()
    verify = _cli(repo_dir, "verify", "--read-data", "--json", password=FIXTURE_PASSWORD)
    assert _summary(verify)["ok"] is True
    out = tmp_path / "out"
    _summary(_cli(repo_dir, "restore", "latest", str(out), "--json", password=FIXTURE_PASSWORD))
    for path, digest in FIXTURE_FILES.items():
        assert hashlib.sha256((out / path).read_bytes()).hexdigest() == digest
    # writing to it keeps version 1: no prefix, packs readable with the version-1 rules
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "new.txt").write_text("written by a version-2 safehold\n" * 100)
    backup = _cli(repo_dir, "backup", "--json", str(tmp_path / "more"), password=FIXTURE_PASSWORD)
    _summary(backup)
    assert (repo_dir / "config").read_bytes() == config_before
    storage = open_storage(repo_dir.as_uri())
    repo = Repository.open(storage, FIXTURE_PASSWORD)
    assert repo.aead.prefix_size == 0
    for pack in {loc.pack for _, loc in repo.index.items()}:
        data = storage.get(pack_object_name(pack))
        assert parse_pack(repo.keys.aead(), data, pack)[0].offset == 0
    verify = _cli(repo_dir, "verify", "--read-data", "--json", password=FIXTURE_PASSWORD)
    assert _summary(verify)["ok"] is True
    rotate = _cli(repo_dir, "repo", "key", "rotate", password=FIXTURE_PASSWORD)
    assert rotate.returncode == 13
    assert "version 2" in rotate.stderr


# --------------------------------------------------------------------------- keys
def test_a_new_key_costs_argon2id_at_rfc_9106s_second_recommended_option(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CHEAP_KDF_ENV, raising=False)
    repo = Repository.init(storage, PASSWORD, Config.new())
    doc = json.loads(storage.get(repo.key_name))
    assert doc["kdf"]["algorithm"] == "argon2id"
    # 64 MiB, 3 passes, 4 lanes (RFC 9106, section 4); a 32-byte salt of its own.
    assert {k: v for k, v in doc["kdf"].items() if k != "salt"} == {
        "algorithm": "argon2id",
        "memory_kib": 65536,
        "iterations": 3,
        "lanes": 4,
    }
    key = parse_key_object(storage.get(repo.key_name), repo.key_name)
    assert isinstance(key.kdf, Argon2id)
    assert len(key.kdf.salt) == 32
    assert Repository.open(storage, PASSWORD).config.id == repo.config.id


@pytest.mark.parametrize(
    ("n", "p"),
    [(2**17, 1), (2**15, 4)],
    ids=["scrypt-2^17-before-2026-12-05", "scrypt-2^15x4-before-2026-12-06"],
)
def test_a_key_made_with_an_earlier_scrypt_cost_still_opens_the_repository(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, n: int, p: int
) -> None:
    """Keys made before new keys moved to Argon2id stay valid."""
    monkeypatch.delenv(CHEAP_KDF_ENV, raising=False)
    repo = Repository.init(storage, PASSWORD, Config.new())
    old = key_name(repo.add_key("the earlier passphrase", kdf=Scrypt(n=n, r=8, p=p)))
    doc = json.loads(storage.get(old))
    assert (doc["kdf"]["algorithm"], doc["kdf"]["n"], doc["kdf"]["p"]) == ("scrypt", n, p)
    reopened = Repository.open(storage, "the earlier passphrase")
    assert reopened.config.id == repo.config.id
    assert reopened.key_name == old


def test_a_scrypt_key_is_moved_to_argon2id_by_adding_a_key_and_removing_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/cli.md, ``repo init``: ``repo key add`` with a new password, then ``repo key
    remove`` of the old key with it. The fixture's one key is scrypt (format version 1)."""
    monkeypatch.delenv(CHEAP_KDF_ENV, raising=False)
    repo_dir = tmp_path / "v1"
    shutil.copytree(FIXTURE, repo_dir)
    [old] = [p.name for p in (repo_dir / "keys").iterdir()]
    assert json.loads((repo_dir / "keys" / old).read_bytes())["kdf"]["algorithm"] == "scrypt"
    new_password = tmp_path / "new-password"
    new_password.write_text("the new argon2id passphrase\n")
    env = {"TEST_SAFEHOLD_CHEAP_KDF": ""}  # the real cost of a new key
    added = _cli(
        repo_dir, "repo", "key", "add", "--new-password-file", str(new_password),
        password=FIXTURE_PASSWORD, **env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    removed = _cli(
        repo_dir, "repo", "key", "remove", old[:12], password="the new argon2id passphrase", **env
    )
    assert removed.returncode == 0, removed.stderr
    [new] = [p.name for p in (repo_dir / "keys").iterdir()]
    kdf = json.loads((repo_dir / "keys" / new).read_bytes())["kdf"]
    assert (kdf["algorithm"], kdf["memory_kib"], kdf["iterations"], kdf["lanes"]) == (
        "argon2id",
        65536,
        3,
        4,
    )
    out = tmp_path / "out"
    restored = _cli(
        repo_dir, "restore", "latest", str(out), "--json", password="the new argon2id passphrase"
    )
    _summary(restored)
    for path, digest in FIXTURE_FILES.items():
        assert hashlib.sha256((out / path).read_bytes()).hexdigest() == digest
    assert _cli(repo_dir, "snapshots", password=FIXTURE_PASSWORD).returncode == 12


def test_a_short_password_is_refused_for_new_keys_unless_insecure(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    short = _cli(repo_dir, "repo", "init", password="elevenchars")
    assert short.returncode == 2
    assert "at least 12" in short.stderr
    assert "--insecure-password" in short.stderr
    assert not repo_dir.exists() or not any(repo_dir.iterdir())
    assert _cli(repo_dir, "repo", "init", "--insecure-password", password="short").returncode == 0
    assert _cli(repo_dir, "snapshots", password="short").returncode == 0  # opening: no rule
    add = _cli(repo_dir, "repo", "key", "add", password="short", SAFEHOLD_NEW_PASSWORD="tiny")
    assert add.returncode == 2
    assert "at least 12" in add.stderr
    add = _cli(
        repo_dir, "repo", "key", "add", password="short", SAFEHOLD_NEW_PASSWORD="twelve chars"
    )
    assert add.returncode == 0, add.stderr


# --------------------------------------------------------------------------- rotation
def test_rotation_new_writes_use_the_new_key_and_everything_stays_readable(
    tmp_path: Path,
) -> None:
    repo_dir = tmp_path / "repo"
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.bin").write_bytes(os.urandom(300_000))
    (src / "keep.bin").write_bytes(os.urandom(100_000))
    _summary(_cli(repo_dir, "repo", "init", "--pack-size", "1", "--json"))
    first = _summary(_cli(repo_dir, "backup", "--json", str(src)))
    storage = open_storage(repo_dir.as_uri())
    before = set(_packs(storage))

    rotated = _summary(_cli(repo_dir, "repo", "key", "rotate", "--json"))
    assert rotated["data_key_version"] == 2
    assert [i.name for i in storage.list("keys/")] == [f"keys/{rotated['key']}"]

    (src / "new.bin").write_bytes(os.urandom(300_000))
    second = _summary(_cli(repo_dir, "backup", "--json", str(src)))
    new_packs = {n: d for n, d in _packs(storage).items() if n not in before}
    assert new_packs
    for data in new_packs.values():
        assert struct.unpack_from("<I", data)[0] == 2
    for name in before:
        assert struct.unpack_from("<I", storage.get(name))[0] == 1

    both = {"old.bin", "keep.bin"}
    for snap, wanted in ((first, both), (second, {*both, "new.bin"})):
        out = tmp_path / f"out-{snap['snapshot']}"
        _summary(_cli(repo_dir, "restore", str(snap["snapshot"]), str(out), "--json"))
        assert {p.name for p in (out / "src").iterdir()} == wanted
        for name in wanted:
            assert (out / "src" / name).read_bytes() == (src / name).read_bytes()
    assert _summary(_cli(repo_dir, "verify", "--read-data", "--json"))["ok"] is True

    # prune repacks under the newest key: without old.bin and the first two snapshots,
    # the old pack holding keep.bin is partly unused, so it is repacked, now under key 2
    (src / "old.bin").unlink()
    _summary(_cli(repo_dir, "backup", "--json", str(src)))
    _summary(_cli(repo_dir, "forget", "--keep-last", "1", "--json"))
    pruned = _summary(_cli(repo_dir, "prune", "--grace", "0", "--max-unused", "0", "--json"))
    assert pruned["packs_repacked"]
    assert not set(_packs(storage)) & before
    for data in _packs(storage).values():
        assert struct.unpack_from("<I", data)[0] == 2
    assert _summary(_cli(repo_dir, "verify", "--read-data", "--json"))["ok"] is True
    out = tmp_path / "out-last"
    _summary(_cli(repo_dir, "restore", "latest", str(out), "--json"))
    assert (out / "src" / "keep.bin").read_bytes() == (src / "keep.bin").read_bytes()


def test_rotation_refuses_while_other_keys_exist(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    _summary(_cli(repo_dir, "repo", "init", "--json"))
    add = _cli(repo_dir, "repo", "key", "add", SAFEHOLD_NEW_PASSWORD="another long password")
    assert add.returncode == 0, add.stderr
    done = _cli(repo_dir, "repo", "key", "rotate")
    assert done.returncode == 1
    assert "other key" in done.stderr
    assert "key remove" in done.stderr
    assert len(list(open_storage(repo_dir.as_uri()).list("keys/"))) == 2
