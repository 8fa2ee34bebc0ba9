"""Kill the real ``safehold`` process with SIGKILL at many points of a backup (and of a
restore): the repository must always verify clean, and the next run must finish the job
and reuse what the killed one stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.engine import verify_repository
from safehold.repo import Repository
from safehold.storage import open_storage

PASSWORD = "kill -9 survivor"
KILL_POINTS = 22


def _env(repo: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SAFEHOLD_REPOSITORY": repo.as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "safehold", *args]


def _fresh_data(src: Path, round_no: int) -> None:
    """New data every round, so every run has packs and index objects to write."""
    fresh = src / "fresh"
    fresh.mkdir(parents=True, exist_ok=True)
    for old in fresh.iterdir():
        old.unlink()
    (fresh / f"big-{round_no}").write_bytes(os.urandom(12_000_000))
    for i in range(150):
        (fresh / f"small-{round_no}-{i}").write_bytes(os.urandom(2000 + i))


def _open(repo: Path) -> Repository:
    return Repository.open(open_storage(repo.as_uri()), PASSWORD)


@pytest.mark.slow
def test_sigkill_at_any_point_of_a_backup_leaves_a_valid_repository(tmp_path: Path) -> None:
    repo, src = tmp_path / "repo", tmp_path / "src"
    env = _env(repo)
    subprocess.run(_cli("repo", "init", "--pack-size", "1"), env=env, check=True)
    (src / "stable").mkdir(parents=True)
    for i in range(30):
        (src / "stable" / f"f{i}").write_bytes(os.urandom(200_000))
    _fresh_data(src, 0)
    started = time.monotonic()
    subprocess.run(_cli("backup", str(src), "--json"), env=env, check=True, capture_output=True)
    duration = time.monotonic() - started

    storage = open_storage(repo.as_uri())
    killed_with_packs = 0
    for point in range(1, KILL_POINTS + 1):
        _fresh_data(src, point)
        packs_before = sum(1 for _ in storage.list("data/"))
        proc = subprocess.Popen(
            _cli("backup", str(src), "--json"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if point % 2:
            # odd points: at a fraction of a whole run (start-up, scanning, reading, the end)
            time.sleep(duration * point / (KILL_POINTS + 1))
        else:
            # even points: right after the (point/2)-th new pack landed, mid-write
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if sum(1 for _ in storage.list("data/")) - packs_before >= point // 2:
                    break
                time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_with_packs += sum(1 for _ in storage.list("data/")) > packs_before
        report = verify_repository(_open(repo), read_data_percent=100 if point % 5 == 0 else None)
        assert report.ok, f"kill point {point}: {report.summary()}"
    assert killed_with_packs >= 10, "the kills never landed while packs were being written"

    # The next backup of the last data finishes and reuses what the killed run stored.
    done = subprocess.run(
        _cli("backup", str(src), "--json"), env=env, capture_output=True, text=True, check=True
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    assert summary["bytes_new"] < summary["bytes_read"] + summary["total_bytes"]
    assert summary["bytes_new"] <= 12_000_000 + 150 * 3000
    repo_obj = _open(repo)
    assert verify_repository(repo_obj, read_data_percent=100).ok
    subprocess.run(
        _cli("restore", "latest", str(tmp_path / "out")), env=env, check=True, capture_output=True
    )
    for path in src.rglob("*"):
        if path.is_file():
            restored = tmp_path / "out" / "src" / path.relative_to(src)
            assert restored.read_bytes() == path.read_bytes(), path


@pytest.mark.slow
def test_a_killed_restore_finishes_on_the_next_run(
    tmp_path: Path, same_tree: Callable[..., None]
) -> None:
    repo, src, out = tmp_path / "repo", tmp_path / "src", tmp_path / "out"
    env = _env(repo)
    subprocess.run(_cli("repo", "init", "--pack-size", "2"), env=env, check=True)
    src.mkdir()
    for i in range(8):
        (src / f"big-{i}").write_bytes(os.urandom(4_000_000))
    for i in range(300):
        (src / f"small-{i}").write_bytes(os.urandom(3000))
    subprocess.run(_cli("backup", str(src)), env=env, check=True, capture_output=True)
    for delay in (0.45, 0.6, 0.8):
        proc = subprocess.Popen(
            _cli("restore", "latest", str(out)),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run(_cli("restore", "latest", str(out)), env=env, check=True, capture_output=True)
    same_tree(src, out / "src")
