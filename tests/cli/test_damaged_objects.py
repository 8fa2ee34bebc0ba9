"""Hostile or damaged repository objects, through the real command (issue 15, items 5, 6):
each ends with a message naming the object and the damaged exit code (4), never a
traceback, and a restore never silently picks other data than asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from safehold.cli import exitcodes
from safehold.repo import BLOB_TREE, BlobEncoder, BlobWriter, Repository
from safehold.repo.crypto import AAD_INDEX, AAD_SNAPSHOT, object_hash, seal
from safehold.storage import open_storage

PASSWORD = "damaged objects password"
DAMAGED = 4

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def repo_url(tmp_path: Path) -> str:
    return (tmp_path / "repo").as_uri()


@pytest.fixture
def run(repo_url: str) -> Run:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": repo_url,
        "SAFEHOLD_PASSWORD": PASSWORD,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    return run


@pytest.fixture
def two_snapshots(run: Run, tmp_path: Path) -> tuple[str, str]:
    """A repository with an older and a newer snapshot of one source; their ids."""
    src = tmp_path / "data"
    src.mkdir()
    (src / "f.txt").write_text("old\n")
    assert run("repo", "init", "--json").returncode == 0
    assert run("backup", str(src), "--source", "s", "--json").returncode == 0
    (src / "f.txt").write_text("new\n")
    assert run("backup", str(src), "--source", "s", "--json").returncode == 0
    snaps = json.loads(run("snapshots", "--json").stdout.strip().splitlines()[-1])["snapshots"]
    return snaps[0]["id"], snaps[1]["id"]


def _open(url: str) -> Repository:
    return Repository.open(open_storage(url), PASSWORD)


def _replace(url: str, name: str, data: bytes) -> str:
    """Put ``data`` in place of object ``name`` under a name that matches its hash."""
    storage = open_storage(url)
    storage.delete(name)
    new = f"{name.rsplit('/', 1)[0]}/{object_hash(data)}"
    storage.put(new, data)
    return new


def _snapshot_doc(repo: Repository, snap_id: str) -> dict[str, Any]:
    snap = next(s for s in repo.snapshots() if s.id == snap_id)
    return {
        "version": 1,
        "time": snap.time,
        "source": snap.source,
        "type": snap.type,
        "tree": snap.tree,
        "paths": snap.paths,
        "hostname": snap.hostname,
        "tags": [],
        "parent": snap.parent,
        "program": "hostile",
        "summary": {},
    }


def _hostile_snapshot(url: str, snap_id: str, **fields: Any) -> str:
    repo = _open(url)
    doc = {**_snapshot_doc(repo, snap_id), **fields}
    data = seal(repo.aead, AAD_SNAPSHOT, json.dumps(doc).encode())
    return _replace(url, f"snapshots/{snap_id}", data)


def test_restore_latest_refuses_when_the_newest_snapshot_is_unreadable(
    run: Run, repo_url: str, tmp_path: Path, two_snapshots: tuple[str, str]
) -> None:
    old, new = two_snapshots
    path = Path(repo_url.removeprefix("file://")) / "snapshots" / new
    path.write_bytes(path.read_bytes()[:-5])  # truncated: fails its hash and its tag

    out = tmp_path / "out"
    done = run("restore", "latest", str(out), "--json")
    assert done.returncode == DAMAGED
    assert f"snapshots/{new}" in done.stderr
    assert "latest" in done.stderr
    assert not out.exists()  # nothing restored, and certainly not the older snapshot

    by_id = run("restore", new[:12], str(out))
    assert by_id.returncode == DAMAGED
    assert f"snapshots/{new}" in by_id.stderr
    assert "matches 0" not in by_id.stderr

    older = run("restore", old[:12], str(out))  # the way out: an intact snapshot by id
    assert older.returncode == 0, older.stderr
    assert (out / "data" / "f.txt").read_text() == "old\n"

    listed = run("snapshots")
    assert listed.returncode == DAMAGED
    assert new in listed.stdout + listed.stderr


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time", "not a time"),
        ("time", 1e300),
        ("tree", "zz" * 32),
        ("summary", {"total_files": 1e400}),
        ("paths", ["/d\x00ata"]),
        ("tags", list(range(3))),
    ],
)
def test_a_snapshot_with_a_hostile_field_is_reported_by_name(
    run: Run, repo_url: str, two_snapshots: tuple[str, str], field: str, value: object
) -> None:
    _, new = two_snapshots
    name = _hostile_snapshot(repo_url, new, **{field: value})
    listed = run("snapshots", "--json")
    assert listed.returncode == DAMAGED
    assert name in listed.stderr + listed.stdout
    verified = run("verify")
    assert verified.returncode == DAMAGED
    restored = run("restore", "latest", "/tmp/never-restored-here")
    assert restored.returncode == DAMAGED
    assert name in restored.stderr
    assert f"field '{field}'" in restored.stderr or field in restored.stderr


def _key_doc(url: str) -> tuple[str, dict[str, Any]]:
    storage = open_storage(url)
    name = next(info.name for info in storage.list("keys/"))
    return name, json.loads(storage.get(name))


_SCRYPT = {"algorithm": "scrypt", "n": 2**15, "r": 8, "p": 1}


@pytest.mark.parametrize(
    "kdf",
    [
        {"memory_kib": 1e400},
        {"memory_kib": 2**22},  # 4 GiB of Argon2id memory
        {"memory_kib": 2**18, "iterations": 8},  # 256 MiB, but 2 GiB written
        {"memory_kib": 4096},  # cheaper than any key a writer makes
        {"iterations": "3"},
        {"lanes": 0},
        {"lanes": 64},
        {"salt": "not base64!"},
        {**_SCRYPT, "n": 2**22},  # 4 GiB of scrypt memory
        {**_SCRYPT, "r": 1024},
        {**_SCRYPT, "n": 3 * 2**14},
    ],
)
def test_a_hostile_key_object_is_skipped_and_named_when_alone(
    run: Run, repo_url: str, two_snapshots: tuple[str, str], kdf: dict[str, Any]
) -> None:
    name, doc = _key_doc(repo_url)
    if kdf.get("algorithm") == "scrypt":  # fields of its own, the key's salt
        doc["kdf"] = {"salt": doc["kdf"]["salt"], **kdf}
    else:
        doc["kdf"] = {**doc["kdf"], **kdf}
    hostile = json.dumps(doc).encode()
    storage = open_storage(repo_url)
    hostile_name = f"keys/{object_hash(hostile)}"
    storage.put(hostile_name, hostile)

    assert run("snapshots").returncode == 0  # the intact key still opens it, quickly

    storage.delete(name)  # the hostile key alone
    done = run("snapshots", "--json")
    assert done.returncode == DAMAGED
    assert hostile_name in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["exit_code"] == DAMAGED


def test_a_key_of_an_unknown_derivation_says_to_upgrade(
    run: Run, repo_url: str, two_snapshots: tuple[str, str]
) -> None:
    """A key object a later version made (another ``kdf.algorithm``) is not damage."""
    name, doc = _key_doc(repo_url)
    doc["kdf"]["algorithm"] = "argon2d"
    later = json.dumps(doc).encode()
    storage = open_storage(repo_url)
    storage.put(f"keys/{object_hash(later)}", later)
    storage.delete(name)
    done = run("snapshots")
    assert done.returncode == exitcodes.UNSUPPORTED
    assert "key derivation 'argon2d'" in done.stderr
    assert "upgrade safehold" in done.stderr


def test_an_index_with_a_huge_supersedes_count_is_damaged_not_a_memory_error(
    run: Run, repo_url: str, two_snapshots: tuple[str, str]
) -> None:
    import zstandard

    repo = _open(repo_url)
    body = b"SHIX\x01" + (2**32 - 1).to_bytes(4, "little")
    data = seal(repo.aead, AAD_INDEX, zstandard.ZstdCompressor().compress(body))
    name = f"index/{object_hash(data)}"
    repo.storage.put(name, data)
    done = run("verify", "--json")
    assert done.returncode == DAMAGED
    assert name in done.stdout + done.stderr


def test_a_tree_with_a_nul_in_a_name_is_damaged(
    run: Run, repo_url: str, tmp_path: Path, two_snapshots: tuple[str, str]
) -> None:
    _, new = two_snapshots
    repo = _open(repo_url)
    tree = json.dumps({"nodes": [{"name": "a\x00b", "type": "file", "content": []}]}).encode()
    blob_id = repo.keys.blob_id(tree)
    writer = BlobWriter(repo)
    sealed, flags = BlobEncoder(repo.aead, 1).encode(BLOB_TREE, blob_id, tree)
    writer.claim(blob_id)
    writer.add(BLOB_TREE, blob_id, sealed, flags, len(tree))
    writer.flush()
    writer.close()
    _hostile_snapshot(repo_url, new, tree=blob_id.hex())

    verified = run("verify", "--json")
    assert verified.returncode == DAMAGED
    assert blob_id.hex() in verified.stdout + verified.stderr
    restored = run("restore", "latest", str(tmp_path / "out"))
    assert restored.returncode != 0
    assert blob_id.hex() in restored.stderr
    assert not (tmp_path / "out" / "a").exists()
