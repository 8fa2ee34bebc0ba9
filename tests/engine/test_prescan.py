"""The pre-scan (engine.backup.prescan): the ETA's totals, counted beside the backup when
there is a progress display and no parent to estimate them from, and only then."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from safehold.engine import ProgressEvent, backup_paths
from safehold.engine.backup import pipeline, walk
from safehold.repo import Repository

FILES = ("b/2/x", "b/1/y", "a/z", "c/w", "top")
TOTALS = (len(FILES), sum(len(rel) * 100 for rel in FILES))


def _tree(root: Path) -> Path:
    for rel in FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode() * 100)
    return root


def test_it_walks_depth_first_by_name_like_the_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path / "src")
    listed: list[str] = []
    real = walk.listing

    def recording(path: str, *args: Any) -> Any:
        listed.append(str(Path(path).relative_to(root)))
        return real(path, *args)

    monkeypatch.setattr(walk, "listing", recording)
    totals = walk.scan_totals([str(root)], threading.Event())
    assert listed == [".", "a", "b", "b/1", "b/2", "c"]
    assert totals == TOTALS


def test_a_stopped_walk_reports_no_totals(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    assert walk.scan_totals([str(_tree(tmp_path / "src"))], stop) is None


def _threads_as_the_pipeline_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []
    real = pipeline.BackupPipeline.run

    def run(self: pipeline.BackupPipeline, *args: Any) -> str:
        seen.append([t.name for t in threading.enumerate()])
        return real(self, *args)

    monkeypatch.setattr(pipeline.BackupPipeline, "run", run)
    return seen


def test_no_pre_scan_runs_without_a_progress_display_or_with_a_parent_to_estimate_from(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its lstat of every file would only compete with the backup's walk: a backup
    without a display has no ETA, and an incremental's totals are its parent's."""
    root = _tree(tmp_path / "src")
    seen = _threads_as_the_pipeline_runs(monkeypatch)
    backup_paths(repo, [str(root)])  # a full backup, no display
    events: list[ProgressEvent] = []
    backup_paths(repo, [str(root)], progress=events.append)  # an incremental, displayed
    assert len(seen) == 2
    assert all("prescan" not in names for names in seen)
    assert (events[-1].files_total, events[-1].bytes_total) == TOTALS  # the parent's


def test_a_displayed_backup_without_a_parent_gets_its_totals_from_the_pre_scan(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted beside the backup (nothing else sets the totals before the backup's end),
    they equal what the backup stores; the thread is gone when the backup returns."""
    root = _tree(tmp_path / "src")
    during: list[tuple[int | None, int | None]] = []
    real = pipeline.BackupPipeline.run

    def run(self: pipeline.BackupPipeline, *args: Any) -> str:
        deadline = time.monotonic() + 10
        while self.progress.files_total is None and time.monotonic() < deadline:
            time.sleep(0.01)
        during.append((self.progress.files_total, self.progress.bytes_total))
        return real(self, *args)

    monkeypatch.setattr(pipeline.BackupPipeline, "run", run)
    events: list[ProgressEvent] = []
    result = backup_paths(repo, [str(root)], progress=events.append)
    summary = result.snapshot.summary
    assert during == [TOTALS] == [(summary["total_files"], summary["total_bytes"])]
    assert (events[-1].files_total, events[-1].bytes_total) == TOTALS
    assert not any(t.name == "prescan" for t in threading.enumerate())
