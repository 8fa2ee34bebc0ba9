"""``safehold repo info`` (and ``repo init --if-absent`` on an existing repository): the
object lock and, per source, the snapshot count and the newest snapshot, which a
BackupLocation's status shows in a cluster that never ran the policies. stdout is complete;
the termination copy keeps whole entries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.cli.output import MAX_SUMMARY
from safehold.engine import BackupOptions, backup_paths
from safehold.repo import Repository, RepositoryLock, RepositoryNotFound
from safehold.repo.crypto import AAD_LOCK, seal
from safehold.storage import open_storage

PASSWORD = "repo info password"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
SOURCES = [f"shop/nightly/a-volume-with-a-long-name-{i:02d}" for i in range(40)]

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    env |= {"SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(), "SAFEHOLD_PASSWORD": PASSWORD}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def test_sources_newest_and_object_lock(run: Run, tmp_path: Path) -> None:
    created = _summary(run("repo", "init", "--if-absent", "--json"))
    assert created["object_lock"] is None
    assert created["sources_newest"] == []
    repo = Repository.open(open_storage((tmp_path / "repo").as_uri()), PASSWORD)
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("x")
    newest: dict[str, tuple[str, str]] = {}
    for i, source in enumerate(SOURCES):
        for hours in (0, 5, 2):  # not written in time order
            when = T0 + timedelta(days=i, hours=hours)
            snap = backup_paths(repo, [str(data)], BackupOptions(source=source, time=when))
            if hours == 5:
                newest[source] = (snap.snapshot.time, snap.snapshot.id)

    log = tmp_path / "termination-log"
    info = _summary(run("repo", "info", "--json", "--termination-log", str(log)))
    assert info["object_lock"] is None
    assert info["empty"] is False
    assert info["dictionaries"] is True  # a new repository's compression is zstd-dict
    assert info["sources_newest"] == [
        {"source": s, "count": 3, "newest_time": newest[s][0], "newest_id": newest[s][1]}
        for s in SOURCES
    ]
    raw = log.read_bytes()
    assert len(raw) <= MAX_SUMMARY + 1
    copy = json.loads(raw)
    assert copy["sources_newest_truncated"] == 40
    assert copy["snapshots"] == 120
    kept = copy["sources_newest"]
    assert kept
    assert kept == info["sources_newest"][: len(kept)]  # whole entries, by source

    again = _summary(run("repo", "init", "--if-absent", "--json"))
    assert again["initialized"] is False
    assert again["sources_newest"] == info["sources_newest"]
    human = run("repo", "info")
    assert f"{SOURCES[0]}: 3, newest 2026-11-01T05:00:00 {newest[SOURCES[0]][1][:12]}" in (
        human.stdout
    )
    assert "object lock  no object lock" in human.stdout
    assert "compression  zstd level 1 with dictionaries;" in human.stdout


def test_the_locks_and_the_age_of_the_oldest(run: Run, tmp_path: Path) -> None:
    """What the location check reports for SafeholdRepositoryLockedLong: the count of locks
    and the age of the oldest, 0 without any; the text lists each lock."""
    created = _summary(run("repo", "init", "--if-absent", "--json"))
    assert (created["locks"], created["oldest_lock_age_seconds"]) == (0, 0)
    assert _summary(run("repo", "info", "--json"))["oldest_lock_age_seconds"] == 0
    repo = Repository.open(open_storage((tmp_path / "repo").as_uri()), PASSWORD)
    with RepositoryLock(repo, exclusive=False, operation="backup"):
        doc = _summary(run("repo", "info", "--json"))
        assert doc["locks"] == 1
        assert doc["oldest_lock_age_seconds"] < 60
    left = datetime.now(UTC) - timedelta(hours=2)
    stale = {"exclusive": True, "time": left.isoformat().replace("+00:00", "Z"),
             "hostname": "gone", "pid": 7, "operation": "prune"}  # fmt: skip
    repo.save_object("locks", seal(repo.aead, AAD_LOCK, json.dumps(stale).encode()))
    doc = _summary(run("repo", "info", "--json"))
    assert doc["locks"] == 1
    assert 7200 <= doc["oldest_lock_age_seconds"] < 7300
    text = run("repo", "info")
    assert "exclusive lock by prune on gone pid 7" in text.stdout
    assert _summary(run("repo", "unlock", "--json"))["removed"] == 1
    assert _summary(run("repo", "info", "--json"))["oldest_lock_age_seconds"] == 0
    # A lock nobody can read (another key's) blocks for good: its age is its object's.
    repo.storage.create("locks/" + "ab" * 32, b"not a lock of this repository")
    [obj] = (tmp_path / "repo" / "locks").rglob("*")
    os.utime(obj, (left.timestamp(), left.timestamp()))
    doc = _summary(run("repo", "info", "--json"))
    assert doc["locks"] == 1
    assert 7200 <= doc["oldest_lock_age_seconds"] < 7300
    assert _summary(run("repo", "unlock", "--json"))["remaining"] == 1  # not stale


def test_a_repository_created_during_the_site_check_is_reported_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The recovery-site check (``--allow-empty``) reads the config, finds none, then lists
    the location. A ``repo init`` landing between the two must not make the location look
    like leftovers without a repository: the check reads the config again and reports the
    repository (seen in CI: a BackupLocation checked while ``repo init`` ran was held as
    "holds objects (such as config) but no repository")."""
    from safehold.cli.main import main

    url = (tmp_path / "site").as_uri()
    (tmp_path / "site").mkdir()
    real = Repository.read_config
    calls: list[int] = []

    def init_after_the_first_read(storage: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the read finds nothing, then ``repo init`` lands
            with pytest.raises(RepositoryNotFound):
                real(storage)
            Repository.init(open_storage(url), PASSWORD)
            raise RepositoryNotFound(f"{url}: there is no repository here")
        return real(storage)

    monkeypatch.setattr(Repository, "read_config", staticmethod(init_after_the_first_read))
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    code = main(["repo", "info", "--allow-empty", "--repo", url, "--json"])
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, doc
    assert doc["empty"] is False
    assert doc["snapshots"] == 0
    assert len(calls) >= 2
