"""``safehold backup --include/--exclude/--exclude-file``: as a Job runs it, a real
process whose restored tree holds exactly the kept files, and usage errors that name
the bad pattern before any hook runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PASSWORD = "cli patterns password"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
    }


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safehold", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(Path(d, n).relative_to(root)): Path(d, n).read_bytes()
        for d, _, names in os.walk(root)
        for n in names
    }


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "vol"
    files = {
        "app.conf": b"conf",
        "-odd.txt": b"odd",
        "cache/big.bin": os.urandom(300_000),
        "cache/x.tmp": b"x",
        "db/main.db": os.urandom(200_000),
        "db/main.db.tmp": b"tmp",
        "db/wal/000001": b"wal",
        "logs/a.log": b"a",
        "logs/old/b.log.gz": b"b",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_backup_with_patterns_restores_exactly_the_kept_files(
    env: dict[str, str], src: Path, tmp_path: Path
) -> None:
    assert _run(env, "repo", "init").returncode == 0
    excludes = tmp_path / "excludes"
    excludes.write_text("# what a cache holds\ncache/**\n\n  *.gz  \n")
    done = _run(
        env, "backup", str(src), "--json", "--exclude", "*.tmp", "--exclude-file", str(excludes),
        "--exclude=-odd.txt",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    s = _summary(done)
    assert (s["total_files"], s["errors"]) == (4, 0)
    out = tmp_path / "out"
    restored = _run(env, "restore", s["snapshot"], str(out))
    assert restored.returncode == 0, restored.stderr
    want = {
        f"vol/{k}": (src / k).read_bytes()
        for k in ("app.conf", "db/main.db", "db/wal/000001", "logs/a.log")
    }
    assert _files(out) == want
    assert (out / "vol" / "cache").is_dir()  # cache/** leaves the directory, empty

    done = _run(env, "backup", str(src), "--json", "--include", "db/**", "--include", "*.conf",
                "--exclude", "*.tmp", "--type", "full")  # fmt: skip
    assert done.returncode == 0, done.stderr
    s = _summary(done)
    assert s["total_files"] == 3
    out2 = tmp_path / "out2"
    assert _run(env, "restore", s["snapshot"], str(out2)).returncode == 0
    assert _files(out2) == {
        f"vol/{k}": (src / k).read_bytes() for k in ("app.conf", "db/main.db", "db/wal/000001")
    }
    assert sorted(p.name for p in (out2 / "vol").iterdir()) == ["app.conf", "db"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exclude", ""], "--exclude '' is empty"),
        (["--include", "a//b"], "--include 'a//b' has an empty name"),
        (["--exclude", "ok", "--exclude", "../x"], "'../x'"),
    ],
)
def test_a_bad_pattern_is_a_usage_error_naming_it_before_any_hook_runs(
    env: dict[str, str], src: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    assert _run(env, "repo", "init").returncode == 0
    marker = tmp_path / "pre-hook-ran"
    term = tmp_path / "termination-log"
    done = _run(env, "backup", str(src), "--json", "--termination-log", str(term),
                "--pre-hook", f"touch {marker}", *args)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert message in _summary(done)["error"]
    assert message in json.loads(term.read_text())["error"]  # what the BackupRun shows
    assert not marker.exists()
    assert _summary(_run(env, "snapshots", "--json"))["count"] == 0


def test_patterns_with_stdin_or_a_missing_exclude_file_are_usage_errors(
    env: dict[str, str], tmp_path: Path
) -> None:
    done = _run(env, "backup", "--stdin-name", "x", "--exclude", "a")
    assert done.returncode == 2
    assert "not to --stdin-name" in done.stderr
    missing = tmp_path / "nope"
    done = _run(env, "backup", str(tmp_path), "--exclude-file", str(missing))
    assert done.returncode == 2
    assert f"--exclude-file {missing}" in done.stderr
