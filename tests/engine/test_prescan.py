"""The pre-scan (engine.backup.prescan): started before the repository opens, it walks the
backed-up tree in the backup's order, is stopped before the pipeline forks its workers
unless the ETA needs its totals, and then reports them."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from safehold.engine import BackupOptions, Prescan, ProgressEvent, backup_paths
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
    """What it reads first is what the backup's walk reads first."""
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


def test_the_pipeline_starts_without_it_when_no_totals_are_needed(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker processes are forked from a process of one thread: the pre-scan is
    stopped and joined before the pipeline runs."""
    root = _tree(tmp_path / "src")
    threads_at_start: list[list[str]] = []
    real = pipeline.BackupPipeline.run
    real_listing = walk.listing

    def slow_listing(path: str, *args: Any) -> Any:  # the pre-scan's walk of a big tree
        if threading.current_thread().name == "prescan":
            time.sleep(0.2)
        return real_listing(path, *args)

    monkeypatch.setattr(walk, "listing", slow_listing)

    def run(self: pipeline.BackupPipeline, *args: Any) -> str:
        threads_at_start.append([t.name for t in threading.enumerate()])
        return real(self, *args)

    monkeypatch.setattr(pipeline.BackupPipeline, "run", run)
    for _ in range(2):  # a full backup, then an incremental with an estimate
        with Prescan.for_backup([str(root)], BackupOptions()) as prescan:
            backup_paths(repo, [str(root)], prescan=prescan)
    assert len(threads_at_start) == 2
    assert all("prescan" not in names for names in threads_at_start)


def _walked(prescan: Prescan) -> tuple[int, int]:
    deadline = time.monotonic() + 10
    while prescan.totals is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert prescan.totals is not None, "the pre-scan of a small tree ends within 10 s"
    return prescan.totals


def test_a_backup_with_a_progress_display_gets_its_totals(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No parent to estimate from: the ETA's totals come from the pre-scan the caller
    started, known as the pipeline starts, and they equal what the backup stores."""
    root = _tree(tmp_path / "src")
    at_start: list[tuple[int | None, int | None]] = []
    real = pipeline.BackupPipeline.run

    def run(self: pipeline.BackupPipeline, *args: Any) -> str:
        at_start.append((self.progress.files_total, self.progress.bytes_total))
        return real(self, *args)

    monkeypatch.setattr(pipeline.BackupPipeline, "run", run)
    events: list[ProgressEvent] = []
    with Prescan.for_backup([str(root)], BackupOptions()) as prescan:
        _walked(prescan)
        result = backup_paths(repo, [str(root)], progress=events.append, prescan=prescan)
    summary = result.snapshot.summary
    assert at_start == [TOTALS] == [(summary["total_files"], summary["total_bytes"])]
    assert events[-1].files_total == TOTALS[0]


def test_it_reports_to_a_tracker_that_comes_after_its_end(tmp_path: Path) -> None:
    from safehold.engine import ProgressTracker

    root = _tree(tmp_path / "src")
    prescan = Prescan([str(root)]).start()
    _walked(prescan)
    tracker = ProgressTracker("backup", None)
    prescan.report_to(tracker)
    prescan.stop()
    assert (tracker.files_total, tracker.bytes_total) == prescan.totals == TOTALS


def test_bad_patterns_walk_nothing_and_the_backup_says_why(
    repo: Repository, tmp_path: Path
) -> None:
    from safehold.engine import BackupError

    root = _tree(tmp_path / "src")
    options = BackupOptions(exclude=["a//b"])
    with Prescan.for_backup([str(root)], options) as prescan:
        assert prescan.roots == []
        with pytest.raises(BackupError, match="empty name"):
            backup_paths(repo, [str(root)], options, prescan=prescan)
