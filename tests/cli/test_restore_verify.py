"""``safehold restore --verify``, the real command: a clean restore reads back whole (one
line; the JSON summary's ``verify`` with the restore's own counts, in the termination log
too), split over several processes; whatever differs between the restore and the check (a
test seam changes the target just before the check) is reported by its path in the snapshot
with exit code 4; ``--include`` limits what is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from safehold.engine.tuning import available_cpus

PASSWORD = "cli restore verify password"
FILES = {
    "data/notes.txt": b"notes" * 1000,
    "data/docs/a.txt": b"a" * 5000,
    "data/docs/b.md": b"b" * 3,
    "data/img/p.png": os.urandom(3_000_000),
}
#: Runs the command after wrapping the check so that it first changes the target (sys.argv:
#: the changes as JSON, then the command's arguments).
_SEAM = """
import json, os, sys
from safehold.engine.restore import check
from safehold.cli.main import main

changes, args = json.loads(sys.argv[1]), sys.argv[2:]
real = check.verify_restored

def changed_first(repo, snap, target, *rest, **kw):
    for path, how in changes.items():
        path = os.path.join(target, path)
        if how == "remove":
            os.unlink(path)
        elif how == "truncate":
            os.truncate(path, 10)
        else:
            with open(path, "r+b") as f:  # a byte that surely differs (the data is random)
                f.seek(how)
                old = f.read(1)[0]
                f.seek(how)
                f.write(bytes([old ^ 0xFF]))
    return real(repo, snap, target, *rest, **kw)

check.verify_restored = changed_first
sys.exit(main(args))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("verify")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": (tmp / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
    }
    for rel, data in FILES.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    os.symlink("notes.txt", tmp / "data" / "link")
    for args in (["repo", "init"], ["backup", "data", "--source", "app"]):
        done = subprocess.run(
            [sys.executable, "-m", "safehold", *args], env=env, cwd=tmp,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    return env


def _run(env: dict[str, str], *args: str, changes: dict[str, Any] | None = None) -> Any:
    if changes is None:
        command = [sys.executable, "-m", "safehold", *args]
    else:
        command = [sys.executable, "-c", _SEAM, json.dumps(changes), *args]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def test_a_clean_restore_is_verified_whole(env: dict[str, str], tmp_path: Path) -> None:
    done = _run(env, "restore", "latest", str(tmp_path / "out"), "--verify")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == (
        "verified 4 files (2.9 MiB) against the snapshot: all match"
    )
    log = tmp_path / "termination-log"
    done = _run(
        env, "restore", "latest", str(tmp_path / "json"), "--verify", "--json",
        "--termination-log", str(log),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = _summary(done)
    assert doc["processes"] == min(available_cpus(), 4)  # split over processes, and checked
    assert doc["verify"] == {
        "files": doc["files"],
        "bytes": doc["bytes_written"],
        "problems_total": 0,
        "problems": [],
    }
    assert doc["files"] == 4
    assert json.loads(log.read_text())["verify"] == doc["verify"]
    plain = _summary(_run(env, "restore", "latest", str(tmp_path / "plain"), "--json"))
    assert "verify" not in plain


def test_what_differs_is_reported_with_exit_code_4(env: dict[str, str], tmp_path: Path) -> None:
    changes = {
        "data/img/p.png": 2_000_000,
        "data/docs/a.txt": "remove",
        "data/notes.txt": "truncate",
    }
    done = _run(env, "restore", "latest", str(tmp_path / "out"), "--verify", "--json",
                changes=changes)  # fmt: skip
    assert done.returncode == 4, done.stderr
    doc = _summary(done)
    assert doc["ok"] is False
    assert doc["exit_code"] == 4
    assert doc["errors"] == 0  # the restore itself succeeded
    verify = doc["verify"]
    assert verify["problems_total"] == 3
    errors = {p["path"]: p["error"] for p in verify["problems"]}
    png = errors.pop("/data/img/p.png")
    assert png.startswith("content differs from the snapshot at byte range ")
    start, end = (int(n) for n in png.rsplit(" ", 1)[1].split("-"))
    assert start <= 2_000_000 <= end
    assert errors == {
        "/data/docs/a.txt": "missing",
        "/data/notes.txt": "size 10 (snapshot: 5000)",
    }
    human = _run(env, "restore", "latest", str(tmp_path / "human"), "--verify",
                 changes={"data/docs/b.md": "remove"})  # fmt: skip
    assert human.returncode == 4
    assert "1 problem(s)" in human.stderr
    assert "/data/docs/b.md: missing" in human.stderr


def test_include_limits_what_is_checked(env: dict[str, str], tmp_path: Path) -> None:
    done = _run(
        env, "restore", "latest", str(tmp_path / "out"), "--include", "docs", "--verify",
        "--json", changes={"data/docs/b.md": "truncate"},
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    verify = _summary(done)["verify"]
    assert verify["files"] == 2  # a.txt and b.md, nothing outside docs/
    assert verify["problems"] == [{"path": "/data/docs/b.md", "error": "size 10 (snapshot: 3)"}]
