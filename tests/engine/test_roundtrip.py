"""Back up generated trees and restore them: bytes and metadata must come back exactly."""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import safehold.engine.restore.write as restore_module
from safehold.engine import (
    BackupOptions,
    RestoreOptions,
    backup_paths,
    backup_stream,
    restore_snapshot,
    verify_repository,
)
from safehold.repo import Repository


def test_full_backup_restores_every_file_type_byte_for_byte(
    repo: Repository,
    tmp_path: Path,
    tree_factory: Callable[..., Path],
    same_tree: Callable[..., None],
) -> None:
    src = tree_factory(tmp_path / "src")
    result = backup_paths(repo, [str(src)], BackupOptions(source="app"))
    assert result.errors == []
    snap = result.snapshot
    assert snap.type == "full"
    assert snap.parent is None
    assert snap.source == "app"
    assert snap.summary["files_new"] == snap.summary["total_files"] > 40
    restored = restore_snapshot(repo, snap, str(tmp_path / "out"))
    assert restored.errors == []
    same_tree(src, tmp_path / "out" / "src")
    assert verify_repository(repo, read_data_percent=100).ok


def test_incremental_reads_only_changed_files_and_still_restores_everything(
    repo: Repository,
    tmp_path: Path,
    tree_factory: Callable[..., Path],
    same_tree: Callable[..., None],
) -> None:
    src = tree_factory(tmp_path / "src")
    first = backup_paths(repo, [str(src)], BackupOptions(source="app")).snapshot
    time.sleep(0.01)
    (src / "docs" / "note-5.txt").write_bytes(b"changed")
    (src / "new-file").write_bytes(os.urandom(100_000))
    (src / "docs" / "note-6.txt").unlink()
    second = backup_paths(repo, [str(src)], BackupOptions(source="app")).snapshot
    assert second.type == "incremental"
    assert second.parent == first.id
    s = second.summary
    assert s["files_new"] == 1
    assert s["files_changed"] == 1
    assert s["bytes_read"] == len(b"changed") + 100_000
    assert s["files_unmodified"] == s["total_files"] - 2
    restore_snapshot(repo, second, str(tmp_path / "out2"))
    same_tree(src, tmp_path / "out2" / "src")
    # the first snapshot is still whole
    shutil.rmtree(src)
    tree_factory(tmp_path / "src")
    restore_snapshot(repo, first, str(tmp_path / "out1"))
    same_tree(tmp_path / "src", tmp_path / "out1" / "src", check_times=False)


def test_backup_types_choose_their_parent(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(50_000))

    def run(kind: str | None) -> tuple[str, str | None, int]:
        snap = backup_paths(repo, [str(src)], BackupOptions(source="s", type=kind)).snapshot
        return snap.type, snap.parent, snap.summary["bytes_read"]

    full = backup_paths(repo, [str(src)], BackupOptions(source="s")).snapshot
    assert full.type == "full"
    kind, parent, read = run("incremental")
    assert (kind, parent, read) == ("incremental", full.id, 0)
    last_incr = repo.snapshots(source="s")[-1].id
    kind, parent, read = run("differential")
    assert (kind, parent, read) == ("differential", full.id, 0)
    assert parent != last_incr
    kind, parent, read = run("full")
    assert (kind, parent, read) == ("full", None, 50_000)
    kind, parent, _ = run(None)
    assert kind == "incremental"
    assert parent == repo.snapshots(source="s")[-2].id
    # another source has its own history
    other = backup_paths(repo, [str(src)], BackupOptions(source="other")).snapshot
    assert other.type == "full"
    assert other.summary["bytes_read"] == 50_000
    # ...but deduplicates against everything
    assert other.summary["bytes_new"] < 10_000


def test_duplicate_data_is_stored_once(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(2_000_000)
    (src / "a").write_bytes(data)
    (src / "b").write_bytes(data)
    snap = backup_paths(repo, [str(src)]).snapshot
    assert snap.summary["bytes_read"] == 4_000_000
    assert snap.summary["bytes_new"] < 2_100_000
    packs = sum(i.size for i in repo.storage.list("data/"))
    assert packs < 2_200_000


def test_stream_backup_restores_the_stream(repo: Repository, tmp_path: Path) -> None:
    data = os.urandom(3_000_000) + b"tail"
    snap = backup_stream(repo, io.BytesIO(data), "db.dump", BackupOptions(source="pg")).snapshot
    assert snap.type == "stdin"
    assert snap.source == "pg"
    restore_snapshot(repo, snap, str(tmp_path / "out"))
    assert (tmp_path / "out" / "db.dump").read_bytes() == data


def test_restore_selected_paths_only(
    repo: Repository, tmp_path: Path, tree_factory: Callable[..., Path]
) -> None:
    src = tree_factory(tmp_path / "src")
    snap = backup_paths(repo, [str(src)]).snapshot
    restore_snapshot(
        repo, snap, str(tmp_path / "out"), RestoreOptions(includes=["src/docs/deep", "/src/empty"])
    )
    found = sorted(
        os.path.relpath(os.path.join(d, n), tmp_path / "out")
        for d, dirs, files in os.walk(tmp_path / "out")
        for n in dirs + files
    )
    assert found == [
        "src",
        "src/docs",
        "src/docs/deep",
        "src/docs/deep/er",
        "src/docs/deep/er/leaf",
        "src/empty",
    ]
    # a hard link whose first name is not selected is restored from its own content
    restore_snapshot(
        repo, snap, str(tmp_path / "out2"), RestoreOptions(includes=["src/docs/hardlink-to-text"])
    )
    assert (tmp_path / "out2/src/docs/hardlink-to-text").read_bytes() == (
        src / "text.log"
    ).read_bytes()


def test_restore_is_idempotent_and_repairs_damaged_targets(
    repo: Repository,
    tmp_path: Path,
    tree_factory: Callable[..., Path],
    same_tree: Callable[..., None],
) -> None:
    src = tree_factory(tmp_path / "src")
    snap = backup_paths(repo, [str(src)]).snapshot
    out = tmp_path / "out"
    restore_snapshot(repo, snap, str(out))
    again = restore_snapshot(repo, snap, str(out))
    assert again.files == 0
    assert again.files_skipped >= 40
    assert again.bytes_written == 0
    # a half-written file (as after a crash: size right, mtime not yet set) is rewritten
    target = out / "src" / "random.bin"
    with target.open("r+b") as f:
        f.write(b"\0" * 1000)
    (out / "src" / "docs" / "note-7.txt").unlink()
    third = restore_snapshot(repo, snap, str(out))
    assert third.files == 2
    same_tree(src, out / "src")


def test_several_paths_in_one_snapshot(repo: Repository, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("x")
    (tmp_path / "single").write_text("file at the top")
    snap = backup_paths(repo, [str(tmp_path / "a"), str(tmp_path / "single")]).snapshot
    restore_snapshot(repo, snap, str(tmp_path / "out"))
    assert (tmp_path / "out" / "a" / "x").read_text() == "x"
    assert (tmp_path / "out" / "single").read_text() == "file at the top"


def test_unreadable_files_are_reported_and_the_rest_is_saved(
    repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_text("fine")
    bad = src / "gone"
    os.symlink("/proc/self/mem", src / "not-followed")  # symlinks are stored, never read
    bad.mkdir()
    os.chmod(bad, 0)
    result = backup_paths(repo, [str(src)])
    if os.geteuid() != 0:
        assert [e["path"] for e in result.errors] == [str(bad)]
    restore_snapshot(repo, result.snapshot, str(tmp_path / "out"))
    assert (tmp_path / "out" / "src" / "ok").read_text() == "fine"
    os.chmod(bad, 0o700)


def test_a_bug_in_a_restore_thread_stops_the_restore_instead_of_hanging_it(
    repo: Repository,
    tmp_path: Path,
    tree_factory: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks are fetched and written by pool threads; an unexpected exception there must
    reach the caller (not vanish in a future nobody reads, leaving files half written)."""
    src = tree_factory(tmp_path / "src")
    snap = backup_paths(repo, [str(src)], BackupOptions(source="app")).snapshot

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(restore_module, "decode_blob", broken)
    with pytest.raises(RuntimeError, match="decoder bug"):
        restore_snapshot(repo, snap, str(tmp_path / "out"), RestoreOptions(fetchers=2))
    monkeypatch.undo()
    # the next run finishes the job
    restored = restore_snapshot(repo, snap, str(tmp_path / "out"))
    assert restored.errors == []
    assert restored.files > 40
