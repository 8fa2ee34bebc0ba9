"""Job-side hooks as the backup Job runs them: ``safehold backup --pre-hook/--post-hook`` in a
real process against a real repository, reading the JSON summary the operator reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PASSWORD = "hook test password"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
    }

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert run("repo", "init", "--json").returncode == 0
    return run


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "table.dat").write_text("rows\n" * 100)
    return root


def _summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return doc


def _snapshots(run: Run) -> list[dict[str, Any]]:
    snaps: list[dict[str, Any]] = _summary(run("snapshots", "--json"))["snapshots"]
    return snaps


def test_pre_hook_output_is_in_the_backup_and_post_hook_runs_after(
    run: Run, src: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "post-ran"
    proc = run(
        "backup", str(src), "--source", "db", "--json",
        "--pre-hook", f"echo checkpoint > {src}/checkpoint.txt && echo pre done",
        "--post-hook", f"test -f {src}/checkpoint.txt && touch {marker}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = _summary(proc)
    assert doc["ok"] is True
    assert [(h["name"], h["phase"], h["exit_code"], h["ok"]) for h in doc["hooks"]] == [
        ("pre-0", "pre", 0, True),
        ("post-0", "post", 0, True),
    ]
    assert doc["hooks"][0]["output"] == "pre done\n"
    assert marker.exists()
    restored = tmp_path / "out"
    assert run("restore", "latest", str(restored), "--source", "db").returncode == 0
    files = {p.name: p.read_text() for p in restored.rglob("*") if p.is_file()}
    assert files["checkpoint.txt"] == "checkpoint\n"


def test_failing_pre_hook_with_fail_makes_no_snapshot_and_still_runs_post(
    run: Run, src: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "post-ran"
    proc = run(
        "backup", str(src), "--source", "db", "--json",
        "--pre-hook", "echo cannot reach the database >&2; exit 7",
        "--post-hook", f"touch {marker}",
    )  # fmt: skip
    assert proc.returncode == 1
    doc = _summary(proc)
    assert doc["ok"] is False
    assert doc["error"] == "pre hook pre-0 failed: exit code 7"
    assert doc["hooks"][0]["output"] == "cannot reach the database\n"
    assert doc["hooks"][1]["ok"] is True
    assert marker.exists()
    assert _snapshots(run) == []


def test_failing_pre_hook_with_continue_backs_up_and_records_the_failure(
    run: Run, src: Path
) -> None:
    proc = run(
        "backup", str(src), "--source", "db", "--json",
        "--pre-hook", "exit 3", "--hook-on-error", "continue",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = _summary(proc)
    assert doc["ok"] is True
    assert doc["hooks"][0]["exit_code"] == 3
    assert doc["hooks"][0]["ok"] is False
    assert doc["hooks"][0]["on_error"] == "continue"
    assert [s["id"] for s in _snapshots(run)] == [doc["snapshot"]]


def test_post_hook_runs_after_a_failed_backup(run: Run, tmp_path: Path) -> None:
    marker = tmp_path / "post-ran"
    proc = run(
        "backup", str(tmp_path / "data"), "--source", "db", "--json",
        "--pre-hook", "true", "--post-hook", f"touch {marker}",
    )  # fmt: skip
    assert proc.returncode == 2  # the source does not exist: a usage error
    doc = _summary(proc)
    assert "no such file or directory" in doc["error"]
    assert [h["phase"] for h in doc["hooks"]] == ["pre", "post"]
    assert marker.exists()


def test_hook_exceeding_its_timeout_is_killed_and_reported(run: Run, src: Path) -> None:
    start = time.monotonic()
    proc = run(
        "backup", str(src), "--source", "db", "--json",
        "--pre-hook", "sleep 60 & sleep 60", "--hook-timeout", "1",
    )  # fmt: skip
    assert time.monotonic() - start < 30
    assert proc.returncode == 1
    doc = _summary(proc)
    hook = doc["hooks"][0]
    assert hook["timed_out"] is True
    assert hook["exit_code"] is None
    assert 1 <= hook["duration_seconds"] < 10
    assert "killed after the timeout of 1 s" in hook["output"]
    assert doc["error"] == "pre hook pre-0 failed: timed out"
    assert _snapshots(run) == []


def test_hook_output_has_no_secrets_and_is_truncated(run: Run, src: Path) -> None:
    proc = run(
        "backup", str(src), "--source", "db", "--json",
        "--pre-hook", 'echo "pw=$DB_PASSWORD"; head -c 5000 /dev/zero | tr "\\0" x',
        DB_PASSWORD="hunter2-secret",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "hunter2-secret" not in proc.stdout
    assert "hunter2-secret" not in proc.stderr
    output = _summary(proc)["hooks"][0]["output"]
    assert len(output) <= 520
    assert output.endswith("x" * 100)


def test_redact_replaces_secret_values() -> None:
    from safehold.cli.hooks import redact

    env = {"PGPASSWORD": "s3cr3t-value", "HOME": "/tmp"}
    assert redact("login s3cr3t-value at /tmp", env) == "login *** at /tmp"


def test_hook_output_is_scrubbed_of_every_mounted_secret_file(
    run: Run, src: Path, tmp_path: Path
) -> None:
    """What the issue's reviewer did: a hook that prints the password file and the
    credentials Secret's files. None of it reaches the summary the operator puts in status."""
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n")
    options = tmp_path / "storage"
    options.mkdir()
    (options / "secret_access_key").write_text("s3cr3t-access-key-value\n")
    (options / "service-account.json").write_text(
        '{\n  "private_key": "-----BEGIN PRIVATE KEY-----MIIEv-abcdef",\n  "type": "sa"\n}\n'
    )
    proc = run(
        "backup", str(src), "--source", "db", "--json",
        "--password-file", str(password_file), "--options-dir", str(options),
        "--pre-hook", f"echo pw=$(cat {password_file}); cat {options}/*",
        SAFEHOLD_PASSWORD="",
    )  # fmt: skip
    # (file:// ignores the S3 option; the backup itself succeeds)
    doc = _summary(proc)
    output = doc["hooks"][0]["output"]
    assert "pw=***" in output
    assert PASSWORD not in proc.stdout
    assert "s3cr3t-access-key-value" not in proc.stdout
    assert "MIIEv-abcdef" not in proc.stdout
    assert "s3cr3t-access-key-value" not in proc.stderr
