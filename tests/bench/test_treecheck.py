"""A restore only counts when it equals the source: the check must catch every kind of damage
and say which file is wrong. Also: moving the working copy from v1 to v2 really yields v2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import dataset
import treecheck
from engine import apply_v2


@pytest.fixture
def copy_v2(data: dataset.DataSet, tmp_path: Path) -> Path:
    target = tmp_path / "restored"
    shutil.copytree(data.path("v2"), target)
    return target


def test_identical_tree_passes(data: dataset.DataSet, copy_v2: Path) -> None:
    treecheck.verify(copy_v2, data.manifest.v2)


def test_changed_byte_is_named(data: dataset.DataSet, copy_v2: Path) -> None:
    path = copy_v2 / "big/random-c.bin"
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 1
    path.unlink()  # the copy may share its inode with the data set: never write through it
    path.write_bytes(bytes(content))
    with pytest.raises(treecheck.RestoreMismatch, match=r"content differs: big/random-c\.bin"):
        treecheck.verify(copy_v2, data.manifest.v2)


def test_missing_extra_and_truncated_files_are_named(data: dataset.DataSet, copy_v2: Path) -> None:
    small = sorted(p for p in data.manifest.v2.files if p.startswith("small/"))
    (copy_v2 / small[0]).unlink()
    (copy_v2 / "stray.txt").write_text("not in the source")
    truncated = copy_v2 / small[1]
    content = truncated.read_bytes()
    truncated.unlink()
    truncated.write_bytes(content[:-1])
    with pytest.raises(treecheck.RestoreMismatch) as caught:
        treecheck.verify(copy_v2, data.manifest.v2)
    message = str(caught.value)
    assert f"missing: {small[0]}" in message
    assert "unexpected: stray.txt" in message
    assert f"size differs: {small[1]}" in message


def test_locate_finds_the_source_under_its_absolute_path(
    data: dataset.DataSet, copy_v2: Path, tmp_path: Path
) -> None:
    source = Path("/srv/data/source")
    target = tmp_path / "target"
    (target / "srv/data").mkdir(parents=True)
    copy_v2.rename(target / "srv/data/source")
    assert treecheck.locate(target, source, data.manifest.v2) == target / "srv/data/source"
    with pytest.raises(treecheck.RestoreMismatch, match="holds no copy of"):
        treecheck.locate(tmp_path / "empty", source, data.manifest.v2)


def test_apply_v2_turns_a_copy_of_v1_into_v2(data: dataset.DataSet, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(data.path("v1"), work)
    unchanged = "big/random-c.bin"
    inode = (work / unchanged).stat().st_ino
    modified = data.manifest.changes.modified[0]
    modified_inode = (work / modified).stat().st_ino
    apply_v2(data, work)
    treecheck.verify(work, data.manifest.v2)
    assert (work / unchanged).stat().st_ino == inode
    assert (work / modified).stat().st_ino == modified_inode  # rewritten in place
