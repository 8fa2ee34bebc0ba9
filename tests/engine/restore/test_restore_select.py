"""Restore selection in the engine: hard links under a selection, in one process and split
over several, and only the directories that lead to something selected are created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safehold.engine import RestoreOptions, backup_paths, restore_snapshot
from safehold.engine.restore import NothingSelected
from safehold.repo import Repository


@pytest.mark.parametrize("processes", [1, 2])
def test_hard_links_and_directories_of_a_selection(
    repo: Repository, tmp_path: Path, processes: int
) -> None:
    src = tmp_path / "src"
    for rel, data in {"a/f1": b"one" * 10_000, "b/x.txt": b"x", "c/d/y.txt": b"y"}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "e").mkdir()
    os.link(src / "a/f1", src / "b/link")
    snap = backup_paths(repo, [str(src)]).snapshot

    def run(name: str, *include: str) -> Path:
        out = tmp_path / name
        result = restore_snapshot(
            repo, snap, str(out), RestoreOptions(includes=list(include), processes=processes)
        )
        assert result.errors == []
        return out / "src"

    both = run("both", "/src/a", "link")  # both names: one file, two names
    assert os.stat(both / "a/f1").st_ino == os.stat(both / "b/link").st_ino
    assert (both / "b/link").read_bytes() == b"one" * 10_000
    assert sorted(os.listdir(both / "b")) == ["link"]
    one = run("one", "src/b/link")  # its first name is not selected: a file of its own
    assert (one / "b/link").read_bytes() == b"one" * 10_000
    assert not (one / "a").exists()
    txt = run("txt", "*.txt")  # only the directories that lead to a match
    assert sorted(os.listdir(txt)) == ["b", "c"]
    assert (txt / "c/d/y.txt").read_bytes() == b"y"
    with pytest.raises(NothingSelected, match="closest paths: /src/e/"):
        run("none", "/src/ee/z")
    assert not (tmp_path / "none").exists()
