"""``safehold mount MOUNTPOINT``: the repository's snapshots as a read-only FUSE file system.

The layout and every answer are :class:`safehold.engine.inspect.mountfs.SnapshotFS`; this
module checks that FUSE can be used, adapts the file system to the binding and runs it
in the foreground until it is unmounted (``fusermount3 -u MOUNTPOINT``, or Ctrl-C,
SIGTERM or SIGHUP, which unmount it the same way): :mod:`safehold.cli.fuseloop`.

The binding is mfusepy (the ``mount`` extra): ctypes over the libfuse 3 that Debian's
``fuse3`` package brings with ``fusermount3``, so nothing is compiled at install time
(pyfuse3 would need libfuse3-dev, a compiler and trio). docs/cli.md, "mount".
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
from argparse import Namespace
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from safehold.cli import exitcodes
from safehold.cli.context import UsageError, open_repo
from safehold.cli.fuseloop import Loop, end_after_unmount, keep_handler, unmount_on_signal
from safehold.cli.output import Output

if TYPE_CHECKING:
    from safehold.engine.inspect.mountfs import Attributes, SnapshotFS

__all__ = ["register", "run_mount"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``mount`` to the ``safehold`` parser."""
    p = sub.add_parser(
        "mount",
        parents=[common],
        help="the snapshots as a read-only file system (FUSE) until unmounted",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing, empty directory")
    p.add_argument(
        "--no-lock",
        action="store_true",
        help="take no repository lock (read-only storage; a prune running meanwhile may "
        "make reads fail)",
    )
    p.set_defaults(func=run_mount)


def load_binding() -> ModuleType:
    """The FUSE binding, or a :class:`UsageError` naming what to install: the ``mount``
    extra, libfuse 3 and ``fusermount3`` (Debian's ``fuse3``), and ``/dev/fuse``."""
    if not os.path.exists("/dev/fuse"):
        raise UsageError(
            "FUSE is not available: there is no /dev/fuse (load the kernel module with "
            "'modprobe fuse'; in a container, pass the device /dev/fuse and CAP_SYS_ADMIN)"
        )
    if shutil.which("fusermount3") is None:
        raise UsageError(
            "FUSE is not available: fusermount3 is not on PATH (install the fuse3 package: "
            "'apt-get install fuse3')"
        )
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")  # libfuse 3, even beside libfuse 2
    try:
        return importlib.import_module("mfusepy")
    except ImportError as exc:
        raise UsageError(
            "safehold mount needs the mount extra: pip install 'safehold[mount]'"
        ) from exc
    except (OSError, AttributeError) as exc:  # no libfuse, or one of the wrong version
        raise UsageError(
            f"FUSE is not available: libfuse 3 cannot be loaded ({exc}); install the fuse3 "
            "package: 'apt-get install fuse3'"
        ) from exc


class _Operations:
    """The binding's operations over a :class:`SnapshotFS` (the binding looks up each
    method by name; writes are not among them, and the mount is read-only: EROFS)."""

    use_ns = True  # times as integer nanoseconds, as the trees hold them

    def __init__(self, fs: SnapshotFS, loop: Loop, on_mounted: Callable[[], None]) -> None:
        self.fs = fs
        self.loop = loop
        self.on_mounted = on_mounted

    def init(self, path: str) -> None:
        self.loop.started()
        self.on_mounted()

    def destroy(self, path: str) -> None:
        self.loop.destroyed()

    def getattr(self, path: str, fh: int | None = None) -> Attributes:
        self.loop.served()
        return self.fs.getattr(path)

    def readdir(self, path: str, fh: int) -> list[Any]:
        self.loop.served()
        base = path.rstrip("/")
        entries: list[Any] = [".", ".."]
        for name in self.fs.readdir(path):
            try:
                entries.append((name, self.fs.getattr(f"{base}/{name}"), 0))
            except OSError:
                entries.append(name)
        return entries

    def readlink(self, path: str) -> str:
        self.loop.served()
        return self.fs.readlink(path)

    def open(self, path: str, flags: int) -> int:
        self.loop.served()
        return self.fs.open(path, flags)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self.loop.served()
        return self.fs.read(fh, size, offset)

    def release(self, path: str, fh: int) -> int:
        self.loop.served()
        self.fs.release(fh)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        self.loop.served()
        return self.fs.statfs()


def run_mount(args: Namespace, out: Output) -> int:
    from safehold.engine.inspect.mountfs import SnapshotFS
    from safehold.repo import RepositoryLock

    mountpoint = os.path.realpath(args.mountpoint)  # as fusermount3 resolves it
    if not os.path.isdir(mountpoint):
        raise UsageError(f"{args.mountpoint}: the mount point must be an existing directory")
    if os.path.ismount(mountpoint):
        raise UsageError(f"{args.mountpoint}: something is mounted there already")
    fuse = load_binding()
    repo = open_repo(args)
    with contextlib.ExitStack() as stack:
        if not args.no_lock:
            stack.enter_context(RepositoryLock(repo, exclusive=False, operation="mount"))
        fs = SnapshotFS(repo)
        loop = Loop(fuse)

        def mounted() -> None:
            if not out.json and not out.quiet:
                out.stderr.write(
                    f"{len(fs.listing.by_id)} snapshot(s) of {repo.location} mounted "
                    f"read-only at {mountpoint}; Ctrl-C or 'fusermount3 -u {mountpoint}' "
                    "unmounts\n"
                )
                out.stderr.flush()

        with unmount_on_signal(mountpoint), end_after_unmount(mountpoint, loop) as ended:
            # mfusepy sets SIGINT to its default around libfuse's loop, for libfuse's
            # handler to take; keep the handler above instead.
            setattr(fuse, "signal", keep_handler)  # noqa: B010 - a module of Any
            try:
                fuse.FUSE(
                    _Operations(fs, loop, mounted),
                    mountpoint,
                    foreground=True,
                    nothreads=True,  # one thread: no request waits on another's lock
                    ro=True,
                    use_ino=True,  # the file system's inode numbers: hard links share theirs
                    fsname="safehold",
                    subtype="safehold",
                )
            except RuntimeError as exc:  # libfuse's status; it printed why to stderr
                # An interrupted wait is libfuse's status 7 when the watcher ended the loop.
                if not ended.is_set():
                    raise OSError(
                        f"{mountpoint}: FUSE could not mount or serve it ({exc})"
                    ) from exc
        count = len(fs.listing.by_id)
    out.summary({"ok": True, "mountpoint": mountpoint, "snapshots": count})
    return exitcodes.OK
