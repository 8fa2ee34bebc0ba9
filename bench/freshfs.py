"""A fresh file system for one part of the benchmark: a loop-mounted ext4 image made for it.

Why: the same backup and restore took 2x longer on this machine's root file system (years of
deletions, mounted with online discard) than on a new one; timings must not depend on what the
file system went through before the run. So every timed step (the working copy, the local
repositories, the restore targets, the S3 server's data) happens on an ext4 file system created
for that part of the run:

1. a sparse image file of the size the part needs (only written blocks take disk space);
2. ``mkfs.ext4 -q -F -N <inodes> -E lazy_itable_init=0,lazy_journal_init=0,nodiscard``: as
   many inodes as the part's files need (ext4's default of one per 16 KiB runs out with
   100,000 files of 1 KiB restored six times), inode tables and journal written now, not by a
   kernel thread in the background during the timed steps;
3. ``mount -o loop,nodiscard`` (no online discard: deletions do not issue discards);
4. unmounted and deleted at the end, also on a failure or Ctrl-C.

Where it cannot mount (not root, no ``mkfs.ext4``, no loop device) it falls back to a plain
directory and says why in :attr:`FileSystem.note`; ``--fs DIR`` uses a given directory
instead. The report states which file system was used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

__all__ = [
    "MKFS_OPTIONS",
    "MOUNT_OPTIONS",
    "FileSystem",
    "fresh",
    "image_bytes",
    "mounted_under",
    "unmount",
]

MKFS_OPTIONS = "lazy_itable_init=0,lazy_journal_init=0,nodiscard"
MOUNT_OPTIONS = "loop,nodiscard"
_GiB = 1 << 30
_MIN_IMAGE = 1 * _GiB


class FileSystem(BaseModel):
    """Where a part of the benchmark ran, as the report states it."""

    kind: Literal["ext4 image", "directory"]
    path: str  # the directory the part works in
    image_bytes: int = 0  # the image's size (0 for a directory)
    inodes: int = 0  # inodes asked of mkfs.ext4 (0 for a directory)
    mount_options: str = ""  # as /proc/mounts shows them
    note: str = ""  # why a directory was used instead of a fresh image

    def describe(self) -> str:
        if self.kind == "ext4 image":
            return (
                f"a fresh ext4 file system ({self.image_bytes / _GiB:.1f} GiB sparse image, "
                f"mkfs.ext4 -N {self.inodes} -E {MKFS_OPTIONS}, mounted {self.mount_options})"
            )
        return f"the directory {self.path} ({self.note})"


def image_bytes(*allocated: int) -> int:
    """An image size for the given byte counts (files rounded up to blocks by the caller):
    half again as much for metadata and journal, and at least 1 GiB. The image is sparse,
    so an overestimate costs no disk space."""
    return max(_MIN_IMAGE, int(sum(allocated) * 1.5) + 256 * (1 << 20))


def _cannot_mount(euid: int) -> str | None:
    """Why this process cannot make a loop-mounted file system, or None when it can."""
    if euid != 0:
        return "not root: cannot mount a fresh file system"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian package e2fsprogs / mount)"
    if not Path("/dev/loop-control").exists():
        return "no loop device (/dev/loop-control is missing)"
    return None


def _mount_options(mountpoint: Path) -> str:
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[1] == str(mountpoint):
                return fields[3]
    except OSError:
        pass
    return MOUNT_OPTIONS


def mounted_under(root: Path) -> list[Path]:
    """Mount points at or below ``root`` (a run killed with SIGKILL may leave one)."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [Path(line.split()[1]) for line in lines if len(line.split()) > 1]
    return [p for p in points if p == root or root in p.parents]


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()[-300:]}")


def unmount(mountpoint: Path) -> None:
    """Unmount (lazily when busy, e.g. a server that has not exited yet)."""
    done = subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


@contextlib.contextmanager
def fresh(
    root: Path,
    size_bytes: int,
    inodes: int,
    given: Path | None = None,
    euid: Callable[[], int] = os.geteuid,
) -> Iterator[FileSystem]:
    """A fresh, empty directory on a new file system under ``root`` (made here, removed after).

    ``given`` (``--fs DIR``) uses a subdirectory of that directory instead. ``euid`` is for
    tests.
    """
    if given is not None:
        path = given / root.name
        with _directory(path):
            yield FileSystem(kind="directory", path=str(path), note="given with --fs")
        return
    why = _cannot_mount(euid())
    if why is None:
        image, mountpoint = root / "ext4.img", root / "mnt"
        root.mkdir(parents=True, exist_ok=True)
        try:
            with image.open("wb") as f:
                f.truncate(size_bytes)
            mkfs = ["mkfs.ext4", "-q", "-F", "-N", str(inodes), "-E", MKFS_OPTIONS, str(image)]
            _run(mkfs)
            mountpoint.mkdir()
            _run(["mount", "-o", MOUNT_OPTIONS, str(image), str(mountpoint)])
        except OSError as e:
            why = f"could not make a loop-mounted ext4 file system: {e}"
            shutil.rmtree(root, ignore_errors=True)
        else:
            try:
                yield FileSystem(
                    kind="ext4 image",
                    path=str(mountpoint),
                    image_bytes=size_bytes,
                    inodes=inodes,
                    mount_options=_mount_options(mountpoint),
                )
            finally:
                unmount(mountpoint)
                shutil.rmtree(root, ignore_errors=True)
            return
    path = root / "dir"
    with _directory(path):
        yield FileSystem(kind="directory", path=str(path), note=f"NOT a fresh file system: {why}")


@contextlib.contextmanager
def _directory(path: Path) -> Iterator[None]:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)
