"""``--host``: two machines backing up one source keep their own parents and retention
series, ``latest`` and listings pick by host, and snapshots written before hosts existed
(no host, as in tests/repo/fixtures/v1-repository) stay parents and one series with the new
ones. Everything through the real command on a real repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from safehold.repo import Repository
from safehold.repo.layout import snapshot_name
from safehold.storage import open_storage

PASSWORD = "hosts test password"
FIXTURE = Path(__file__).parents[1] / "repo" / "fixtures" / "v1-repository"
FIXTURE_PASSWORD = "version one fixture password"

Run = Callable[..., subprocess.CompletedProcess[str]]


def _runner(repo: Path, password: str) -> Run:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": str(repo),
        "SAFEHOLD_PASSWORD": password,
    }

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == code, (args, done.stdout, done.stderr)
        return done

    return run


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return doc


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """The command on a new repository of its own."""
    run = _runner(tmp_path / "repo", PASSWORD)
    run("repo", "init")
    return run


def _machine(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    """``/data`` of one machine: a directory of its own with ``files``."""
    data = tmp_path / name / "data"
    data.mkdir(parents=True)
    for rel, text in files.items():
        (data / rel).write_text(text)
    return data


def _backup(run: Run, data: Path, *options: str) -> dict[str, Any]:
    return _json(run("backup", str(data), "--source", "data", "--json", *options))


def test_two_hosts_keep_their_own_parents_latest_listing_and_retention(
    tmp_path: Path, run: Run
) -> None:
    a = _machine(tmp_path, "a", {"a.txt": "machine a\n", "same.txt": "x\n"})
    b = _machine(tmp_path, "b", {"b.txt": "machine b\n", "same.txt": "x\n"})

    a1 = _backup(run, a, "--host", "a")
    assert (a1["type"], a1["parent"], a1["host"]) == ("full", None, "a")
    b1 = _backup(run, b, "--host", "b")  # the second host's first backup is full
    assert (b1["type"], b1["parent"], b1["host"]) == ("full", None, "b")
    assert b1["files_new"] == 2
    a2 = _backup(run, a, "--host", "a")  # each host's incremental has its own parent
    assert (a2["type"], a2["parent"], a2["files_unmodified"]) == ("incremental", a1["snapshot"], 2)
    b2 = _backup(run, b, "--host", "b")
    assert (b2["type"], b2["parent"], b2["files_unmodified"]) == ("incremental", b1["snapshot"], 2)

    listed = _json(run("snapshots", "--host", "a", "--json"))
    assert [s["id"] for s in listed["snapshots"]] == [a1["snapshot"], a2["snapshot"]]
    assert {s["host"] for s in listed["snapshots"]} == {"a"}
    table = run("snapshots", "--host", "b").stdout
    assert "host" in table
    rows = [line for line in table.splitlines() if " data " in line]
    assert len(rows) == 2, table
    assert all(" b " in row for row in rows), table

    restored = _json(run("restore", "latest", str(tmp_path / "out-a"), "--host", "a", "--json"))
    assert restored["snapshot"] == a2["snapshot"]
    assert (tmp_path / "out-a" / "data" / "a.txt").read_text() == "machine a\n"
    assert not (tmp_path / "out-a" / "data" / "b.txt").exists()
    newest = _json(run("restore", "latest", str(tmp_path / "out"), "--json"))
    assert newest["snapshot"] == b2["snapshot"]  # no --host: the newest of all
    shown = run("ls", "latest", "/data", "--host", "a").stdout
    assert "a.txt" in shown
    assert "b.txt" not in shown
    missing = run("ls", "latest", "--host", "c", code=1)
    assert "no snapshot of host 'c'" in missing.stderr

    forget = _json(run("forget", "--keep-last", "1", "--json"))
    kept = {i["id"] for i in forget["items"] if i["keep"]}
    assert kept == {a2["snapshot"], b2["snapshot"]}  # one per host
    assert forget["removed"] == 2
    assert {i["host"] for i in forget["items"]} == {"a", "b"}


def test_the_default_host_is_the_machine_host_name(tmp_path: Path, run: Run) -> None:
    import socket

    data = _machine(tmp_path, "m", {"f": "1\n"})
    assert _backup(run, data)["host"] == socket.gethostname()
    run("backup", str(data), "--host", "", code=2)  # an empty host is refused


def _strip_hosts(repo_dir: Path, password: str) -> dict[str, str]:
    """Rewrite every snapshot as the code before hosts wrote it (no ``host``); old id ->
    new id."""
    repo = Repository.open(open_storage(repo_dir.as_uri()), password)
    renamed: dict[str, str] = {}
    for snap in repo.snapshots():
        old = snap.id
        snap.host = None
        renamed[old] = repo.save_snapshot(snap)
        repo.storage.delete(snapshot_name(old))
    return renamed


def test_snapshots_without_a_host_stay_parents_and_one_retention_series(
    tmp_path: Path, run: Run
) -> None:
    data = _machine(tmp_path, "m", {"f1": "1\n", "f2": "2\n"})
    first = _backup(run, data, "--host", "old-pod-x7")
    [old] = _strip_hosts(tmp_path / "repo", PASSWORD).values()
    assert _json(run("snapshots", "--json"))["snapshots"][0]["host"] is None
    assert "-" in run("snapshots").stdout

    # No silent full re-read: the pre-host snapshot is the new host's parent.
    new = _backup(run, data, "--host", "ns")
    assert (new["type"], new["parent"]) == ("incremental", old)
    assert (new["files_unmodified"], new["files_new"]) == (2, 0)
    assert first["snapshot"] != old
    again = _backup(run, data, "--host", "ns")
    assert again["parent"] == new["snapshot"]

    # Retention as before: old and new are one series (keep-last 2 keeps the two newest).
    forget = _json(run("forget", "--keep-last", "2", "--dry-run", "--json"))
    decided = {i["id"]: i["keep"] for i in forget["items"]}
    assert decided == {old: False, new["snapshot"]: True, again["snapshot"]: True}
    # and a pre-host snapshot is of every host: 'latest --host' may pick it
    assert _json(run("snapshots", "--host", "any", "--json"))["count"] == 1


def test_a_version_1_repository_written_before_hosts(tmp_path: Path) -> None:
    repo_dir = tmp_path / "v1"
    shutil.copytree(FIXTURE, repo_dir)
    run = _runner(repo_dir, FIXTURE_PASSWORD)
    [old] = _json(run("snapshots", "--json"))["snapshots"]
    assert old["host"] is None
    assert _json(run("snapshots", "--host", "web-1", "--json"))["count"] == 1
    data = _machine(tmp_path, "m", {"hello.txt": "hello\n"})
    new = _json(run("backup", str(data), "--source", old["source"], "--host", "web-1", "--json"))
    assert (new["type"], new["parent"], new["host"]) == ("incremental", old["id"], "web-1")
    forget = _json(run("forget", "--keep-last", "1", "--dry-run", "--json"))
    decided = {i["id"]: i["keep"] for i in forget["items"]}
    assert decided == {old["id"]: False, new["snapshot"]: True}
