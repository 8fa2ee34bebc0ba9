"""``restore --verify`` in the engine (safehold.engine.restore.check): a clean restore reads
back whole, with the restore's own counts; whatever differs afterwards (a changed byte, a
missing file, a wrong size, a symlink or hard link replaced) is reported by its path in the
snapshot; a selection limits what is checked; and it works split over several processes and
from an S3 repository (SeaweedFS)."""

from __future__ import annotations

import os
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.engine import BackupOptions, RestoreOptions, backup_paths, restore_snapshot
from safehold.engine.restore import RestoreCheck, plan_selection, verify_restored
from safehold.engine.restore.check import LISTED_PROBLEMS
from safehold.repo import ChunkerParams, Config, Repository, Snapshot
from safehold.storage import open_storage
from testground.objectstores import RunningStore

from ..conftest import PASSWORD


@pytest.fixture
def snap(repo: Repository, tmp_path: Path, tree_factory: Callable[..., Path]) -> Snapshot:
    src = tree_factory(tmp_path / "src")
    return backup_paths(repo, [str(src)], BackupOptions(source="app")).snapshot


def _errors(check: RestoreCheck) -> dict[str, str]:
    return {p["path"]: p["error"] for p in check.problems}


@pytest.mark.parametrize("processes", [1, 2])
def test_a_clean_restore_reads_back_whole_with_its_own_counts(
    repo: Repository, snap: Snapshot, tmp_path: Path, processes: int
) -> None:
    out = tmp_path / "out"
    result = restore_snapshot(
        repo, snap, str(out), RestoreOptions(verify=True, processes=processes)
    )
    assert result.errors == []
    assert result.processes == processes
    check = result.check
    assert check is not None
    assert check.ok, check.problems
    assert check.files == result.files > 40  # hard links and empty files included
    assert check.bytes == result.bytes_written > 1_500_000  # a hard link's bytes read once
    assert result.summary()["verify"] == {
        "files": check.files,
        "bytes": check.bytes,
        "problems_total": 0,
        "problems": [],
    }
    assert "verify" not in restore_snapshot(repo, snap, str(tmp_path / "plain")).summary()


def test_what_differs_after_the_restore_is_reported_by_path(
    repo: Repository, snap: Snapshot, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = restore_snapshot(repo, snap, str(out))
    assert result.errors == []
    root = out / "src"
    chunk = repo.config.chunker.max_size
    with (root / "random.bin").open("r+b") as f:  # one byte, well inside the file
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 1]))
    (root / "docs" / "note-5.txt").unlink()
    os.truncate(root / "docs" / "note-6.txt", 0)
    (root / "link-to-random").unlink()
    (root / "link-to-random").symlink_to("elsewhere")
    (root / "empty-dir").rmdir()
    (root / "empty-dir").write_text("not a directory")
    # the backup met docs/ first: text.log is the hard link, a copy of its own now
    (root / "text.log").unlink()
    (root / "text.log").write_bytes((root / "docs" / "hardlink-to-text").read_bytes())

    check = verify_restored(repo, snap, str(out))
    errors = _errors(check)
    changed = errors.pop("/src/random.bin")
    start, end = (int(n) for n in changed.rsplit(" ", 1)[1].split("-"))
    assert changed.startswith("content differs from the snapshot at byte range ")
    assert start <= 1_000_000 <= end
    assert end - start < chunk
    note6 = (tmp_path / "src" / "docs" / "note-6.txt").stat().st_size
    assert errors == {
        "/src/docs/note-5.txt": "missing",
        "/src/docs/note-6.txt": f"size 0 (snapshot: {note6})",
        "/src/link-to-random": "symlink to 'elsewhere' (snapshot: 'random.bin')",
        "/src/empty-dir": "a file where the snapshot has a directory",
        "/src/text.log": "a file of its own, not a hard link to /src/docs/hardlink-to-text",
    }
    assert check.problems_total == 6
    assert [p["path"] for p in check.problems] == sorted(p["path"] for p in check.problems)
    # a file replaced by a symlink is never followed
    for name in ("text.log", "docs/hardlink-to-text"):
        (root / name).unlink()
        (root / name).symlink_to("/etc/passwd")
    errors = _errors(verify_restored(repo, snap, str(out)))
    assert errors["/src/text.log"] == "a symlink where the snapshot has a file"
    assert errors["/src/docs/hardlink-to-text"] == "a symlink where the snapshot has a file"


def test_a_selection_limits_what_is_checked(
    repo: Repository, snap: Snapshot, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    options = RestoreOptions(includes=["/src/docs"], excludes=["note-1*"], verify=True)
    result = restore_snapshot(repo, snap, str(out), options)
    assert result.check is not None
    assert result.check.ok, result.check
    assert result.check.files == result.files == 31  # 29 notes, the leaf, the hard link
    assert result.check.bytes == result.bytes_written
    assert not (out / "src" / "random.bin").exists()  # not selected: not missing either
    selection = plan_selection(repo, snap.tree, ["/src/docs"], ["note-1*"])
    (out / "src" / "docs" / "note-2.txt").unlink()
    check = verify_restored(repo, snap, str(out), selection)
    assert _errors(check) == {"/src/docs/note-2.txt": "missing"}


def test_only_the_first_problems_are_listed(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(LISTED_PROBLEMS + 20):
        (src / f"f{i:03}").write_text(f"file {i}")
    snap = backup_paths(repo, [str(src)]).snapshot
    out = tmp_path / "out"
    restore_snapshot(repo, snap, str(out))
    for entry in (out / "src").iterdir():
        entry.write_text("changed")
    check = verify_restored(repo, snap, str(out))
    assert check.problems_total == LISTED_PROBLEMS + 20
    assert len(check.problems) == LISTED_PROBLEMS
    assert check.files == LISTED_PROBLEMS + 20


def test_a_large_file_is_read_back_one_chunk_at_a_time(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(40 * repo.config.chunker.max_size))
    snap = backup_paths(repo, [str(src)]).snapshot
    out = tmp_path / "out"
    result = restore_snapshot(repo, snap, str(out), RestoreOptions(verify=True))
    assert result.check is not None
    assert result.check.ok
    assert result.check.bytes == 40 * repo.config.chunker.max_size
    size = 40 * repo.config.chunker.max_size
    tracemalloc.start()
    try:
        assert verify_restored(repo, snap, str(out), workers=1).ok
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size // 4  # a buffer of one chunk, not the file
    with (out / "src" / "big").open("r+b") as f:  # the last byte
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(b"\0" if last != b"\0" else b"\1")
    (error,) = _errors(verify_restored(repo, snap, str(out))).values()
    assert error.startswith("content differs from the snapshot at byte range ")
    assert error.endswith(f"-{size - 1}")


def test_from_an_s3_repository(
    s3_store: RunningStore, tmp_path: Path, tree_factory: Callable[..., Path]
) -> None:
    bucket = f"verify-{uuid.uuid4().hex[:12]}"
    s3_store.make_bucket(bucket)
    url = s3_store.url(bucket, "repo")
    options = dict(s3_store.options)
    config = Config.new(
        chunker=ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024),
        pack_size=512 * 1024,
    )
    repo = Repository.init(open_storage(url, options), PASSWORD, config)
    src = tree_factory(tmp_path / "src", big=600_000)
    snap = backup_paths(repo, [str(src)], BackupOptions(source="vol")).snapshot
    again = Repository.open(open_storage(url, options), PASSWORD)
    result = restore_snapshot(
        again, snap, str(tmp_path / "out"), RestoreOptions(verify=True, processes=2)
    )
    assert result.processes == 2  # an object store's restore is split too
    assert result.errors == []
    assert result.check is not None
    assert result.check.ok, result.check
    assert (result.check.files, result.check.bytes) == (result.files, result.bytes_written)
    (tmp_path / "out" / "src" / "docs" / "note-7.txt").write_text("changed")
    check = verify_restored(again, snap, str(tmp_path / "out"))
    assert list(_errors(check)) == ["/src/docs/note-7.txt"]
