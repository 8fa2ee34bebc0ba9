"""Backups with worker processes (engine.backup.shares): the same snapshot as in one
process, errors with their paths, and a failed or killed worker fails only the backup."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.engine.conftest import PASSWORD

from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.engine.backup import worker
from safehold.engine.backup.read import FileReader
from safehold.engine.backup.shares import ShareError, Shares
from safehold.engine.backup.walk import SHARE_MIN_DIRS, Walker
from safehold.repo import Node, Repository
from safehold.repo.layout import pack_object_name
from safehold.repo.prefetch import prefetch_trees
from safehold.storage import Storage, open_storage
from safehold.storage.wrappers import ForwardingStorage

SERIAL = BackupOptions(source="app", type="full", processes=1)
SHARED = BackupOptions(source="app", type="full", processes=2)


def _many_dirs(root: Path, dirs: int = 2 * SHARE_MIN_DIRS, seed: int = 3) -> Path:
    """A root with enough subdirectories to be handed out, files of every size class."""
    rnd = random.Random(seed)
    (root / "top").mkdir(parents=True)
    (root / "top" / "alone.txt").write_text("at the top\n")
    for d in range(dirs):
        sub = root / "top" / f"d{d:02d}"
        (sub / "nested" / "deeper").mkdir(parents=True)
        for f in range(30):
            size = rnd.randint(0, 2048)
            (sub / f"f{f:03d}").write_bytes(
                rnd.randbytes(size) if f % 3 else (b"text " * size)[:size]
            )
        (sub / "nested" / "deeper" / "leaf").write_text(f"leaf {d}\n")
        os.symlink("f001", sub / "link")
    (root / "top" / "d03" / "big.bin").write_bytes(rnd.randbytes(700_000))  # a big file
    (root / "top" / "d00" / "same-as-d01").write_bytes((root / "top" / "d01" / "f001").read_bytes())
    for dirpath, _, files in os.walk(root):  # settle the atimes a first listing changes
        for name in files:
            Path(dirpath, name).read_bytes() if not os.path.islink(Path(dirpath, name)) else None
    return root / "top"


def _tree(repo: Repository, src: Path, options: BackupOptions) -> tuple[str, dict[str, object]]:
    result = backup_paths(repo, [str(src)], options)
    assert result.errors == []
    return result.snapshot.tree, result.snapshot.summary


def test_worker_processes_store_the_same_tree_as_one_process(
    repo: Repository, tmp_path: Path, same_tree: Callable[..., None]
) -> None:
    src = _many_dirs(tmp_path / "src")
    _tree(repo, src, SERIAL)  # the first backup's listings settle directory atimes
    serial, serial_summary = _tree(repo, src, SERIAL)
    shared, shared_summary = _tree(repo, src, SHARED)
    assert shared == serial
    for key in ("total_files", "total_bytes", "dirs", "files_new", "errors"):
        assert shared_summary[key] == serial_summary[key], key
    snap = backup_paths(repo, [str(src)], SHARED).snapshot
    restore_snapshot(repo, snap, str(tmp_path / "out"))
    same_tree(src, tmp_path / "out" / "top", check_times=False)
    assert verify_repository(repo, read_data_percent=100).ok


def test_an_unchanged_rerun_in_worker_processes_reuses_every_file(
    repo: Repository, tmp_path: Path
) -> None:
    src = _many_dirs(tmp_path / "src")
    _tree(repo, src, SERIAL)
    again = backup_paths(repo, [str(src)], BackupOptions(source="app", processes=2))
    summary = again.snapshot.summary
    assert summary["files_unmodified"] == summary["total_files"]
    assert summary["files_new"] == summary["files_changed"] == summary["bytes_read"] == 0
    serial = backup_paths(repo, [str(src)], BackupOptions(source="app", processes=1))
    assert again.snapshot.tree == serial.snapshot.tree


def test_the_main_process_decodes_no_tree_of_a_directory_it_hands_out(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main process sends a handed-out directory's parent tree to its worker as bytes;
    decoding it there too (as it once did for every subdirectory, all at once) held a whole
    parent snapshot in memory: 100 directories of 1,000 files took 100 MB."""
    src = _many_dirs(tmp_path / "src")
    _tree(repo, src, SERIAL)
    decoded: list[str] = []
    read = Walker._read_parent_tree

    def counting(self: Walker, tree_id: str) -> dict[str, Node]:
        decoded.append(tree_id)
        return read(self, tree_id)

    monkeypatch.setattr(Walker, "_read_parent_tree", counting)
    again = backup_paths(repo, [str(src)], BackupOptions(source="app", processes=2))
    assert again.snapshot.summary["files_unmodified"] == again.snapshot.summary["total_files"]
    # "top" alone (the snapshot's root tree is read before the walk): every d00..dNN
    # below it went to a worker with its tree's bytes.
    assert len(decoded) == 1, decoded


class _CountingGets(ForwardingStorage):
    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.names: list[str] = []

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self.names.append(name)
        return super().get(name, offset, length)


def test_the_parent_trees_sent_to_workers_come_from_the_read_ahead(
    repo: Repository, tmp_path: Path
) -> None:
    """On an object store the backup reads the parent's trees ahead (run.py); the trees the
    main process sends its workers must come from there, not a request per directory."""
    src = _many_dirs(tmp_path / "src")
    parent = backup_paths(repo, [str(src)], SERIAL).snapshot
    assert prefetch_trees(repo, parent.tree) > 0
    counting = _CountingGets(repo.storage)
    repo.storage = counting
    again = backup_paths(repo, [str(src)], BackupOptions(source="app", processes=2))
    assert again.snapshot.summary["files_unmodified"] == again.snapshot.summary["total_files"]
    # no pack read, but the one holding the parent's dictionary (no local cache keeps it here)
    dictionary = bytes.fromhex(parent.dictionary) if parent.dictionary else b""
    holding = {pack_object_name(p) for p, _ in repo.index.dictionary_copies(dictionary)}
    assert [n for n in counting.names if n.startswith("data/") and n not in holding] == []
    assert len([n for n in counting.names if n.startswith("data/")]) <= 2


def test_a_hard_link_between_shares_is_kept_as_in_one_process(
    repo: Repository, tmp_path: Path, same_tree: Callable[..., None]
) -> None:
    src = _many_dirs(tmp_path / "src")
    os.link(src / "d05" / "f002", src / "d01" / "link-to-d05")
    _tree(repo, src, SERIAL)
    serial, _ = _tree(repo, src, SERIAL)
    shared, summary = _tree(repo, src, SHARED)
    assert shared == serial  # walked again in one process: the first path is d01's
    assert summary["total_files"] == summary["files_new"]
    snap = backup_paths(repo, [str(src)], SHARED).snapshot
    restore_snapshot(repo, snap, str(tmp_path / "out"))
    out = tmp_path / "out" / "top"
    assert os.stat(out / "d01" / "link-to-d05").st_ino == os.stat(out / "d05" / "f002").st_ino


def _log_opens(monkeypatch: pytest.MonkeyPatch, log: Path) -> Callable[[], list[str]]:
    """Record every file the backup opens, in this process and its forked workers."""
    real_open = FileReader.open

    def open_and_log(self: FileReader, path: str) -> int:
        with open(log, "a") as out:  # one short append per line: whole lines from any process
            out.write(path + "\n")
        return real_open(self, path)

    monkeypatch.setattr(FileReader, "open", open_and_log)
    return lambda: log.read_text().splitlines() if log.exists() else []


def test_the_walk_after_a_crossing_hard_link_reads_no_file_again(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _many_dirs(tmp_path / "src")
    os.link(src / "d05" / "f002", src / "d01" / "link-to-d05")
    _tree(repo, src, SERIAL)  # settles the new link's atime, as in the test above
    serial, _ = _tree(repo, src, SERIAL)
    opened = _log_opens(monkeypatch, tmp_path / "opened.log")
    shared, summary = _tree(repo, src, SHARED)
    assert shared == serial
    paths = opened()
    assert sorted(set(paths)) == sorted(paths), "a file was read by both walks"
    assert summary["bytes_read"] == summary["total_bytes"]  # the first walk's counts
    assert summary["files_new"] == summary["total_files"]


def test_a_file_changed_between_the_two_walks_is_stored_as_the_second_saw_it(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _many_dirs(tmp_path / "src")
    os.link(src / "d05" / "f002", src / "d01" / "link-to-d05")
    changed = src / "d07" / "f004"
    real_merge = Shares.merge

    def merge_then_change(self: Shares, *args: object) -> None:
        real_merge(self, *args)  # the workers are done: the first walk has seen the file
        changed.write_bytes(b"written between the walks\n")

    monkeypatch.setattr(Shares, "merge", merge_then_change)
    snap = backup_paths(repo, [str(src)], SHARED).snapshot
    restore_snapshot(repo, snap, str(tmp_path / "out"))
    assert (tmp_path / "out" / "top" / "d07" / "f004").read_bytes() == changed.read_bytes()
    assert verify_repository(repo, read_data_percent=100).ok


def test_a_file_a_worker_cannot_read_is_reported_with_its_path(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _many_dirs(tmp_path / "src")
    bad = str(src / "d04" / "f007")
    real_open = FileReader.open

    def open_or_fail(self: FileReader, path: str) -> int:
        if path == bad:
            raise PermissionError(13, "Permission denied", path)
        return real_open(self, path)

    monkeypatch.setattr(FileReader, "open", open_or_fail)  # inherited by the forked workers
    result = backup_paths(repo, [str(src)], SHARED)
    assert result.errors == [{"path": bad, "error": "Permission denied"}]
    serial = backup_paths(repo, [str(src)], SERIAL)
    assert serial.errors == result.errors
    for key in ("errors", "total_files", "files_new"):
        assert result.snapshot.summary[key] == serial.snapshot.summary[key], key
    assert result.snapshot.tree == serial.snapshot.tree


@pytest.mark.parametrize("how", ["raises", "killed"])
def test_a_failing_worker_fails_the_backup_and_the_next_one_works(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    src = _many_dirs(tmp_path / "src")
    doomed = str(src / "d02")
    real_walk = worker.ShareWalker.walk_share

    def walk_share(self: worker.ShareWalker, path: str, rel: str, parent: object) -> object:
        if path == doomed:
            if how == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("disk on fire")
        return real_walk(self, path, rel, parent)

    monkeypatch.setattr(worker.ShareWalker, "walk_share", walk_share)
    with pytest.raises(ShareError) as failed:
        backup_paths(repo, [str(src)], SHARED)
    assert doomed in str(failed.value)
    assert ("disk on fire" if how == "raises" else "ended unexpectedly") in str(failed.value)
    assert repo.snapshots() == []
    monkeypatch.undo()
    # the next backup is the next command: a new process, which reads the index anew
    again = Repository.open(open_storage((tmp_path / "repo").as_uri()), PASSWORD)
    result = backup_paths(again, [str(src)], SHARED)
    assert result.errors == []
    assert verify_repository(again, read_data_percent=100).ok
