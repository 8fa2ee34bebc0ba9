"""``forget --source-prefix`` (one policy's sources, and nothing of another policy sharing
the repository) and ``--lock-wait`` (a backup holding the lock delays forget and prune,
and fails them only after the wait): what the operator's retention Jobs rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from safehold.engine.forget import source_filter
from safehold.repo import Repository
from safehold.repo.locks import RepositoryLock
from safehold.storage import open_storage

PASSWORD = "scope me, scope me not"


def _run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAFEHOLD_REPOSITORY": repo.as_uri(), "SAFEHOLD_PASSWORD": PASSWORD}
    return subprocess.run(
        [sys.executable, "-m", "safehold", *args],
        env=env,
        capture_output=True,
        text=True,
        check=check,
    )


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    doc: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _sources(repo: Path) -> dict[str, int]:
    r = Repository.open(open_storage(repo.as_uri()), PASSWORD)
    out: dict[str, int] = {}
    for snap in r.snapshots():
        out[snap.source] = out.get(snap.source, 0) + 1
    return out


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository, two policies: ``ns/pol`` with a volume and two databases (the
    operator's ``<ns>/<policy>/<source>/<db>`` names), ``ns/pol2`` and ``ns/pol-b``
    (names that begin like ``ns/pol``), three snapshots each."""
    base = tmp_path_factory.mktemp("scope")
    repo = base / "repo"
    _run(repo, "repo", "init", "--pack-size", "1", "-q")
    src = base / "src"
    src.mkdir()
    names = ["ns/pol/data", "ns/pol/db/app", "ns/pol/db/users", "ns/pol2/data", "ns/pol-b/data"]
    for day in (1, 2, 3):
        for name in names:
            (src / "f").write_bytes(os.urandom(5000))
            _run(repo, "backup", str(src), "--source", name, "--time",
                 f"2026-11-0{day}T02:00:00Z", "-q")  # fmt: skip
    return repo


@pytest.fixture
def repo(shared: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(shared, copy)
    return copy


def test_source_filter() -> None:
    every = source_filter()
    assert all(every(name) for name in ("anything", ""))
    pol = source_filter(prefixes=["ns/pol/"])
    assert [pol(n) for n in ("ns/pol/data", "ns/pol/db/app", "ns/pol2/data", "ns/pol")] == [
        True,
        True,
        False,
        False,
    ]
    assert not pol("ns/pol-b/data")
    both = source_filter(["web"], ["ns/pol/"])
    assert [both(n) for n in ("web", "ns/pol/x", "web2")] == [True, True, False]
    with pytest.raises(ValueError, match="empty source prefix"):
        source_filter(prefixes=[""])


def test_prefix_applies_per_source_and_leaves_other_policies_alone(repo: Path) -> None:
    doc = _summary(_run(repo, "forget", "--keep-last", "2", "--source-prefix", "ns/pol/", "--json"))
    assert doc["snapshots"] == 9  # three sources of ns/pol, three snapshots each
    assert doc["removed"] == 3  # one per source: the counts are per source
    assert _sources(repo) == {
        "ns/pol/data": 2,
        "ns/pol/db/app": 2,
        "ns/pol/db/users": 2,
        "ns/pol2/data": 3,
        "ns/pol-b/data": 3,
    }


def test_prefix_and_exact_sources_combine(repo: Path) -> None:
    args = ["--keep-last", "1", "--source-prefix", "ns/pol/db/", "--source", "ns/pol2/data"]
    doc = _summary(_run(repo, "forget", *args, "--json"))
    assert doc["removed"] == 6
    assert _sources(repo)["ns/pol/data"] == 3
    assert _sources(repo)["ns/pol2/data"] == 1


def test_empty_prefix_is_refused(repo: Path) -> None:
    done = _run(repo, "forget", "--keep-last", "1", "--source-prefix", "", check=False)
    assert done.returncode == 2
    assert "empty prefix" in done.stderr
    assert sum(_sources(repo).values()) == 15


def _hold_shared_lock(
    repo: Path, seconds: float, done: threading.Event | None = None
) -> threading.Thread:
    """A backup's shared lock, held by this process for ``seconds`` (less if ``done`` is
    set first)."""
    r = Repository.open(open_storage(repo.as_uri()), PASSWORD)
    lock = RepositoryLock(r, exclusive=False, operation="backup").acquire()

    def release() -> None:
        (done or threading.Event()).wait(seconds)
        lock.release()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_without_lock_wait_a_held_lock_fails_at_once(repo: Path) -> None:
    """Held for a minute: a forget that waited would take that long and then succeed. A
    loaded machine's slow start-up cannot make it look either way."""
    finished = threading.Event()
    holder = _hold_shared_lock(repo, 60, finished)
    started = time.monotonic()
    done = _run(repo, "forget", "--keep-last", "1", "--json", check=False)
    took = time.monotonic() - started
    finished.set()
    holder.join()
    assert took < 30
    assert done.returncode == 11
    assert "locked" in str(_summary(done)["error"])
    assert sum(_sources(repo).values()) == 15


def test_lock_wait_waits_for_a_backup_to_finish(repo: Path) -> None:
    """The backup ends only once the forget has said that it waits (a holder of fixed
    seconds could end before a loaded machine's forget first tried the lock)."""
    finished = threading.Event()
    holder = _hold_shared_lock(repo, 60, finished)
    env = {**os.environ, "SAFEHOLD_REPOSITORY": repo.as_uri(), "SAFEHOLD_PASSWORD": PASSWORD}
    argv = ["forget", "--keep-last", "1", "--prune", "--grace", "0", "--lock-wait", "60", "--json"]
    with subprocess.Popen(
        [sys.executable, "-m", "safehold", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        first = ""
        for line in proc.stderr:  # until the forget says that it waits
            first += line
            if "trying again" in line:
                break
        finished.set()
        holder.join()
        stdout, rest = proc.communicate(timeout=120)
    assert proc.returncode == 0, first + rest
    assert "trying again for up to 60s" in first
    doc = _summary(subprocess.CompletedProcess(argv, 0, stdout, first + rest))
    assert doc["ok"] is True
    assert doc["removed"] == 10
    prune = doc["prune"]
    assert isinstance(prune, dict)
    assert prune["bytes_freed"] > 0


def test_lock_wait_is_bounded(repo: Path) -> None:
    finished = threading.Event()
    holder = _hold_shared_lock(repo, 60, finished)
    started = time.monotonic()
    done = _run(repo, "prune", "--lock-wait", "2", "--json", check=False)
    waited = time.monotonic() - started
    finished.set()
    holder.join()
    assert done.returncode == 11
    assert 2 <= waited < 30  # the lock was held for 60 s
    error = str(_summary(done)["error"])
    assert "still locked after waiting 2s" in error
    assert PASSWORD not in done.stdout + done.stderr


def test_forget_done_but_prune_locked_reports_both(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backup takes its shared lock between forget and prune: the snapshots are
    forgotten, prune fails on the lock, and the summary says both (exit code 11)."""
    from safehold.cli.main import main
    from safehold.engine import forget as forget_module

    real = forget_module.forget_snapshots
    held: list[RepositoryLock] = []

    def forget_then_a_backup_starts(*args: object, **kwargs: object) -> object:
        report = real(*args, **kwargs)  # type: ignore[arg-type]
        r = Repository.open(open_storage(repo.as_uri()), PASSWORD)
        held.append(RepositoryLock(r, exclusive=False, operation="backup").acquire())
        return report

    monkeypatch.setattr(forget_module, "forget_snapshots", forget_then_a_backup_starts)
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    term = repo.parent / "termination-log"
    argv = ["forget", "--repo", repo.as_uri(), "--keep-last", "1", "--source-prefix", "ns/pol/",
            "--prune", "--json", "--termination-log", str(term)]  # fmt: skip
    try:
        code = main(argv)
    finally:
        for lock in held:
            lock.release()
    assert code == 11
    doc = json.loads(term.read_text())
    assert doc["ok"] is False
    assert doc["exit_code"] == 11
    assert doc["removed"] == 6
    assert "forget done, prune not run" in doc["error"]
    assert "prune" not in doc
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == doc
    assert _sources(repo)["ns/pol/data"] == 1
