"""The corruption harness (issue 15): damage one object of a small real repository (flip
bytes, cut it short, or put hostile values in its fields, re-sealed with the repository's
own key as a writer with the password could), then run ``verify``, ``snapshots`` and
``restore latest`` through the real command. Each must end with a known exit code and
no traceback, and a restore that exits 0 must have restored exactly the data of the
snapshot it names: never wrong data with exit code 0."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from safehold.repo import Repository
from safehold.repo.crypto import AAD_LOCK, AAD_SNAPSHOT, object_hash, open_sealed, seal
from safehold.storage import open_storage

PASSWORD = "harness password"
#: The exit codes a damaged repository may give (docs/cli.md): error, partial, damaged,
#: locked (an unreadable lock counts as held), no repository, wrong password, unsupported.
CLEAN = {1, 3, 4, 10, 11, 12, 13}
HOSTILE: list[object] = [None, 1e300, -1, 2**70, "a\x00b", "zz" * 32, [], {}, "x" * 5000]

pytestmark = pytest.mark.slow


def _run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": repo.as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
    }
    return subprocess.run(
        [sys.executable, "-m", "safehold", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, bytes]]]:
    """A repository with two snapshots of one source; what each snapshot holds, by id."""
    base = tmp_path_factory.mktemp("harness")
    repo, src = base / "repo", base / "data"
    (src / "sub").mkdir(parents=True)
    rnd = random.Random(7)
    expected: dict[str, dict[str, bytes]] = {}
    assert _run(repo, "repo", "init", "--pack-size", "1").returncode == 0
    for generation in range(2):
        for k in range(6):
            (src / "sub" / f"f{k}").write_bytes(rnd.randbytes(rnd.randint(10, 200_000)))
        (src / "note.txt").write_text(f"generation {generation}\n")
        done = _run(repo, "backup", str(src), "--source", "s", "--json")
        assert done.returncode == 0, done.stderr
        snap = json.loads(done.stdout.strip().splitlines()[-1])["snapshot"]
        expected[snap] = {f"data/{k}": v for k, v in _files(src).items()}
    # a lock object too, as a crashed run would leave (stale: an hour old)
    r = Repository.open(open_storage(repo.as_uri()), PASSWORD)
    doc = {"exclusive": False, "time": "2000-01-01T00:00:00Z", "hostname": "h", "pid": 1}
    r.save_object("locks", seal(r.aead, AAD_LOCK, json.dumps(doc).encode()))
    return repo, expected


def _objects(repo: Path) -> list[str]:
    return sorted(
        str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file() and "tmp" not in p.name
    )


def _aad(name: str) -> bytes | None:
    return {"snapshots": AAD_SNAPSHOT, "locks": AAD_LOCK}.get(name.split("/", 1)[0])


def _damage(repo: Path, name: str, how: str, rnd: random.Random) -> str:
    """Damage object ``name`` of ``repo``; say how, for the failure message."""
    path = repo / name
    data = bytearray(path.read_bytes())
    if how == "flip":
        for _ in range(rnd.randint(1, 3)):
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
        path.write_bytes(bytes(data))
        return f"flipped bits of {name}"
    if how == "truncate":
        path.write_bytes(bytes(data[: rnd.randrange(len(data))]))
        return f"cut {name} short"
    # hostile field: plain JSON (config, keys) or sealed JSON re-sealed with the key
    aad = _aad(name)
    r = Repository.open(open_storage(repo.as_uri()), PASSWORD, load_index=False)
    doc = json.loads(open_sealed(r.aead, aad, bytes(data)) if aad else bytes(data))
    target: dict[str, Any] = doc
    keys = list(target)
    key = rnd.choice(keys)
    if isinstance(target[key], dict) and target[key]:
        target, key = target[key], rnd.choice(list(target[key]))
    value = rnd.choice(HOSTILE)
    target[key] = value
    text = json.dumps(doc).encode()
    new = seal(r.aead, aad, text) if aad else text
    path.unlink()
    if name == "config":
        (repo / "config").write_bytes(new)
        return f"config field {key!r} = {value!r:.40}"
    renamed = repo / name.rsplit("/", 1)[0] / object_hash(new)
    renamed.write_bytes(new)
    return f"{name} field {key!r} = {value!r:.40}"


def _cases(repo: Path) -> list[tuple[str, str]]:
    objects = _objects(repo)
    by_kind: dict[str, list[str]] = {}
    for name in objects:
        by_kind.setdefault(name.split("/", 1)[0], []).append(name)
    cases = []
    for kind, names in sorted(by_kind.items()):
        hows = ["flip", "truncate", "flip", "truncate"]
        if kind in ("config", "keys", "snapshots", "locks"):
            hows += ["hostile"] * 4
        for k, how in enumerate(hows):
            cases.append((names[k % len(names)], how))
    return cases


def test_one_damaged_object_never_gives_a_traceback_or_wrong_data(
    pristine: tuple[Path, dict[str, dict[str, bytes]]], tmp_path: Path
) -> None:
    source, expected = pristine
    rnd = random.Random(15)
    failures: list[str] = []
    cases = _cases(source)
    assert len(cases) >= 30
    for number, (name, how) in enumerate(cases):
        repo = tmp_path / f"r{number}"
        shutil.copytree(source, repo)
        what = _damage(repo, name, how, rnd)
        out = tmp_path / f"out{number}"
        for args in (
            ("verify", "--json"),
            ("snapshots", "--json"),
            ("restore", "latest", str(out), "--json"),
        ):
            done = _run(repo, *args)
            if "Traceback" in done.stderr:
                failures.append(f"{what}: {args[0]} crashed:\n{done.stderr[-1500:]}")
            elif done.returncode not in CLEAN | {0}:
                failures.append(f"{what}: {args[0]} exit {done.returncode}: {done.stderr[-300:]}")
            elif args[0] == "restore" and done.returncode == 0:
                snap = json.loads(done.stdout.strip().splitlines()[-1])["snapshot"]
                if snap not in expected or _files(out) != expected[snap]:
                    failures.append(f"{what}: restore exit 0 with wrong data (snapshot {snap})")
                elif snap != list(expected)[-1]:
                    failures.append(f"{what}: restore latest gave an older snapshot, exit 0")
    assert not failures, "\n".join(failures)
