"""Fixtures for the engine tests: a fresh repository, a generated tree with every file
type, and a comparison that checks bytes and metadata the way a user would."""

from __future__ import annotations

import os
import random
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safehold.repo import ChunkerParams, Config, Repository
from safehold.storage import open_storage

#: Small chunks and packs, so that small test data spans many chunks and packs.
SMALL_CHUNKER = ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)
PASSWORD = "correct horse battery staple"


def make_repo(path: Path, *, pack_size: int = 512 * 1024) -> Repository:
    storage = open_storage(path.as_uri())
    config = Config.new(chunker=SMALL_CHUNKER, pack_size=pack_size)
    return Repository.init(storage, PASSWORD, config)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    r = make_repo(tmp_path / "repo")
    yield r
    r.storage.close()


def make_tree(root: Path, seed: int = 1, *, big: int = 1_500_000) -> Path:
    """Create a tree holding every kind of file Safehold backs up."""
    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "docs").mkdir()
    (root / "docs" / "deep" / "er").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "random.bin").write_bytes(rnd.randbytes(big))
    words = [rnd.randbytes(4).hex() for _ in range(300)]
    (root / "text.log").write_text(
        "\n".join(" ".join(rnd.choices(words, k=12)) for _ in range(30000))
    )
    (root / "empty").write_bytes(b"")
    for i in range(40):
        (root / "docs" / f"note-{i}.txt").write_bytes(rnd.randbytes(rnd.randint(1, 5000)))
    (root / "docs" / "deep" / "er" / "leaf").write_text("leaf\n")
    # a sparse file: a hole, some data, a hole
    with (root / "sparse.img").open("wb") as f:
        f.seek(3 * 1024 * 1024)
        f.write(b"data in the middle")
        f.truncate(6 * 1024 * 1024)
    # links
    os.symlink("random.bin", root / "link-to-random")
    os.symlink("/nonexistent/target", root / "dangling")
    os.link(root / "text.log", root / "docs" / "hardlink-to-text")
    # names that are not UTF-8, and spaces/unicode
    (root / os.fsdecode(b"latin1-\xe9t\xe9")).write_bytes(b"bytes name")
    (root / "unicod\u00e9 name with spaces").write_text("ok")
    # special files
    os.mkfifo(root / "fifo")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "sock"))
    if os.geteuid() == 0:
        os.mknod(root / "null-dev", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    # permissions and times
    os.chmod(root / "docs" / "note-1.txt", 0o600)
    os.chmod(root / "docs" / "note-2.txt", 0o4755)  # noqa: S103 - setuid must survive
    os.chmod(root / "empty-dir", 0o750)  # noqa: S103
    os.utime(root / "docs" / "note-3.txt", ns=(1_000_000_000, 1_234_567_891_000))
    return root


def _files(root: Path) -> dict[str, os.stat_result]:
    out: dict[str, os.stat_result] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root)] = os.lstat(full)
    return out


def assert_same_tree(a: Path, b: Path, *, check_times: bool = True) -> None:
    """Every path of ``a`` is in ``b`` with the same type, bytes and metadata, and no more."""
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb), (
        f"missing {sorted(set(fa) - set(fb))}, extra {sorted(set(fb) - set(fa))}"
    )
    inode_groups_a: dict[int, set[str]] = {}
    inode_groups_b: dict[int, set[str]] = {}
    for rel, sa in fa.items():
        sb = fb[rel]
        pa, pb = os.path.join(a, rel), os.path.join(b, rel)
        assert stat.S_IFMT(sa.st_mode) == stat.S_IFMT(sb.st_mode), f"{rel}: type differs"
        if not stat.S_ISLNK(sa.st_mode):
            assert stat.S_IMODE(sa.st_mode) == stat.S_IMODE(sb.st_mode), f"{rel}: mode differs"
        assert (sa.st_uid, sa.st_gid) == (sb.st_uid, sb.st_gid), f"{rel}: owner differs"
        if check_times and not stat.S_ISSOCK(sa.st_mode):
            assert sa.st_mtime_ns == sb.st_mtime_ns, f"{rel}: mtime differs"
        if stat.S_ISREG(sa.st_mode):
            assert sa.st_size == sb.st_size, f"{rel}: size differs"
            assert Path(pa).read_bytes() == Path(pb).read_bytes(), f"{rel}: bytes differ"
            if sa.st_blocks * 512 < sa.st_size:  # sparse stays sparse
                assert sb.st_blocks <= sa.st_blocks + 128, f"{rel}: holes were filled"
            if sa.st_nlink > 1:
                inode_groups_a.setdefault(sa.st_ino, set()).add(rel)
                inode_groups_b.setdefault(sb.st_ino, set()).add(rel)
        elif stat.S_ISLNK(sa.st_mode):
            assert os.readlink(pa) == os.readlink(pb), f"{rel}: link target differs"
        elif stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
            assert sa.st_rdev == sb.st_rdev, f"{rel}: device number differs"
    assert sorted(map(sorted, inode_groups_a.values())) == sorted(
        map(sorted, inode_groups_b.values())
    ), "hard links differ"


@pytest.fixture
def tree_factory() -> Callable[..., Path]:
    return make_tree


@pytest.fixture
def same_tree() -> Callable[..., None]:
    return assert_same_tree


@pytest.fixture
def repo_factory() -> Callable[..., Repository]:
    return make_repo
