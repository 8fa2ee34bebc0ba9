"""``safehold backup --verify`` (a BackupPolicy's ``verification.afterBackup``): the new
snapshot's structure is checked before the command ends; a snapshot that deduplicated
against a lost pack is reported damaged with exit code 4, naming the path and the repair."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PASSWORD = "backup verify test password"


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safehold", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_backup_verify_reports_a_whole_and_a_damaged_snapshot(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
    }
    src = tmp_path / "data"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(300_000))
    assert _run(env, "repo", "init").returncode == 0
    done = _run(env, "--json", "backup", str(src), "--source", "s", "--verify")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["ok"] is True
    assert doc["verify"]["ok"] is True
    assert "whole" in doc["verify"]["message"]

    # Lose every pack: the next backup of the same data adds nothing (the index still
    # names the chunks), and --verify says its snapshot is damaged.
    for pack in (tmp_path / "repo" / "data").rglob("*"):
        if pack.is_file():
            pack.unlink()
    done = _run(env, "--json", "backup", str(src), "--source", "s", "--verify")
    assert done.returncode == 4, done.stderr
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["ok"] is False
    assert doc["snapshot"]
    check = doc["verify"]
    assert check["ok"] is False
    assert check["paths"]
    assert "is damaged" in check["message"]
    assert "repair index" in check["message"]
    assert "verify: snapshot" in done.stderr
