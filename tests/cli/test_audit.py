"""The audit trail through the real command: each operation on a repository appends one
record (format section 15), prune keeps them, ``audit --since`` filters, and verify reports
a changed or a deleted record with a non-zero exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PASSWORD = "audit test password"
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def run(repo_dir: Path) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    env |= {"SAFEHOLD_REPOSITORY": repo_dir.as_uri(), "SAFEHOLD_PASSWORD": PASSWORD}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def records(run: Run, *args: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = _json(run("audit", "--json", *args))["records"]
    return found


def test_a_sequence_of_operations_yields_its_records(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("alpha\n")
    _json(run("repo", "init", "--json"))
    first = _json(run("backup", str(src), "--source", "s", "--json"))["snapshot"]
    (src / "b").write_text("beta\n")
    second = _json(run("backup", str(src), "--source", "s", "--json"))["snapshot"]
    _json(run("forget", "--keep-last", "1", "--json"))
    _json(run("prune", "--json"))
    _json(run("restore", second, str(tmp_path / "out"), "--json"))
    key = _json(run("repo", "key", "add", "--json", SAFEHOLD_NEW_PASSWORD="a second password"))
    _json(run("repo", "key", "remove", key["key"][:12], "--json"))
    _json(run("repo", "key", "rotate", "--json"))
    failed = run("restore", "f" * 12, str(tmp_path / "out2"), "--json")
    assert failed.returncode != 0

    got = records(run)
    assert [(r["operation"], r["result"]) for r in got] == [
        ("backup", "ok"),
        ("backup", "ok"),
        ("forget", "ok"),
        ("prune", "ok"),
        ("restore", "ok"),
        ("key add", "ok"),
        ("key remove", "ok"),
        ("key rotate", "ok"),
        ("restore", "failed"),
    ]
    assert got[0]["snapshots"] == [first]
    assert got[1]["snapshots"] == [second]  # its parent is not involved
    assert got[2]["snapshots"] == [first]  # what forget removed, not what it kept
    assert got[4]["snapshots"] == [second]
    assert got[5]["snapshots"] == []
    assert got[6]["snapshots"] == []
    assert got[-1]["error"]
    assert PASSWORD not in json.dumps(got)
    assert got[0]["counts"]["files_new"] == 1
    # a chain: each record names the one before it
    assert got[0]["previous"] == ""
    assert [r["previous"] for r in got[1:]] == [r["id"] for r in got[:-1]]
    assert all(r["host"] and r["user"] and r["ended"] >= r["started"] for r in got)
    table = run("audit")
    assert table.returncode == 0
    assert "key remove" in table.stdout

    since = records(run, "--since", got[4]["ended"])
    assert [r["operation"] for r in since] == [
        "restore",
        "key add",
        "key remove",
        "key rotate",
        "restore",
    ]
    assert run("verify").returncode == 0


def test_a_job_records_the_resource_that_caused_it(run: Run, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    run("repo", "init")
    cause = {"namespace": "shop", "kind": "BackupRun", "name": "db-1", "uid": "u-1"}
    done = run("backup", str(tmp_path / "src"), SAFEHOLD_AUDIT_CAUSE=json.dumps(cause))
    assert done.returncode == 0, done.stderr
    assert records(run)[0]["cause"] == cause


def test_verify_reports_a_changed_and_a_deleted_record(
    run: Run, tmp_path: Path, repo_dir: Path
) -> None:
    (tmp_path / "src").mkdir()
    run("repo", "init")
    for _ in range(3):
        assert run("backup", str(tmp_path / "src")).returncode == 0
    got = records(run)
    assert len(got) == 3
    audit = repo_dir / "audit"
    changed = audit / got[2]["id"]
    data = bytearray(changed.read_bytes())
    data[-5] ^= 1
    changed.chmod(0o644)
    changed.write_bytes(bytes(data))
    done = run("verify")
    assert done.returncode != 0
    assert f"audit/{got[2]['id']}" in done.stderr
    assert "audit record was changed" in done.stderr
    changed.unlink()
    assert run("verify").returncode == 0  # the newest record: nothing names it yet
    (audit / got[0]["id"]).unlink()
    done = run("verify")
    assert done.returncode != 0
    assert f"audit/{got[0]['id']}" in done.stderr
    assert "missing (deleted?)" in done.stderr
    assert "no repair rewrites it" in done.stderr
