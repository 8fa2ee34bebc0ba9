"""``safehold mount MOUNTPOINT``: the repository's snapshots as a read-only FUSE file system.

The layout and every answer are :class:`safehold.engine.inspect.mountfs.SnapshotFS`; this
module checks that FUSE can be used, adapts the file system to the binding and runs it
in the foreground until it is unmounted (``fusermount3 -u MOUNTPOINT``, or Ctrl-C,
SIGTERM or SIGHUP, which unmount it the same way).

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
import signal
import subprocess
import threading
from argparse import Namespace
from collections.abc import Callable, Iterator
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from safehold.cli import exitcodes
from safehold.cli.context import UsageError, open_repo
from safehold.cli.output import Output

if TYPE_CHECKING:
    from safehold.engine.inspect.mountfs import Attributes, SnapshotFS

__all__ = ["register", "run_mount"]

#: The signals that unmount the file system and end the command.
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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

    def __init__(self, fs: SnapshotFS, on_mounted: Callable[[], None]) -> None:
        self.fs = fs
        self.on_mounted = on_mounted

    def init(self, path: str) -> None:
        self.on_mounted()

    def getattr(self, path: str, fh: int | None = None) -> Attributes:
        return self.fs.getattr(path)

    def readdir(self, path: str, fh: int) -> list[Any]:
        base = path.rstrip("/")
        entries: list[Any] = [".", ".."]
        for name in self.fs.readdir(path):
            try:
                entries.append((name, self.fs.getattr(f"{base}/{name}"), 0))
            except OSError:
                entries.append(name)
        return entries

    def readlink(self, path: str) -> str:
        return self.fs.readlink(path)

    def open(self, path: str, flags: int) -> int:
        return self.fs.open(path, flags)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self.fs.read(fh, size, offset)

    def release(self, path: str, fh: int) -> int:
        self.fs.release(fh)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return self.fs.statfs()


@contextlib.contextmanager
def _unmount_on_signal(mountpoint: str) -> Iterator[list[int]]:
    """While the file system runs, SIGINT, SIGTERM and SIGHUP unmount it (``fusermount3
    -u``, lazily with ``-z`` when it is busy), which ends libfuse's loop as an unmount by
    hand does. Yields the signals received.

    libfuse's own handlers would end the loop too, but then libfuse reports failure (the
    signal number as its error), indistinguishable from a real one. A Python handler runs
    only between Python bytecodes, never while libfuse waits in C, so a thread waits on
    the signal wake-up pipe instead."""
    received: list[int] = []
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    def unmounter() -> None:
        while os.read(reader, 64) and not stopping.is_set():
            done = subprocess.run(
                ["fusermount3", "-u", mountpoint], capture_output=True, check=False
            )
            if done.returncode != 0:
                subprocess.run(
                    ["fusermount3", "-u", "-z", mountpoint], capture_output=True, check=False
                )

    old = {sig: signal.signal(sig, on_signal) for sig in _SIGNALS}
    old_fd = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    thread = threading.Thread(target=unmounter, name="unmount-on-signal", daemon=True)
    thread.start()
    try:
        yield received
    finally:
        stopping.set()
        signal.set_wakeup_fd(old_fd)
        os.write(writer, b"\0")
        thread.join(timeout=5)
        os.close(writer)
        os.close(reader)
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _keep_handler(signum: int, handler: object) -> object:
    """``signal.signal`` that changes nothing: returns the handler in place."""
    return signal.getsignal(signum)


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

        def mounted() -> None:
            if not out.json and not out.quiet:
                out.stderr.write(
                    f"{len(fs.listing.by_id)} snapshot(s) of {repo.location} mounted "
                    f"read-only at {mountpoint}; Ctrl-C or 'fusermount3 -u {mountpoint}' "
                    "unmounts\n"
                )
                out.stderr.flush()

        with _unmount_on_signal(mountpoint):
            # mfusepy sets SIGINT to its default around libfuse's loop, for libfuse's
            # handler to take; keep the handler above instead.
            setattr(fuse, "signal", _keep_handler)  # noqa: B010 - a module of Any
            try:
                fuse.FUSE(
                    _Operations(fs, mounted),
                    mountpoint,
                    foreground=True,
                    nothreads=True,  # one thread: no request waits on another's lock
                    ro=True,
                    use_ino=True,  # the file system's inode numbers: hard links share theirs
                    fsname="safehold",
                    subtype="safehold",
                )
            except RuntimeError as exc:  # libfuse's status; it printed why to stderr
                raise OSError(f"{mountpoint}: FUSE could not mount or serve it ({exc})") from exc
        count = len(fs.listing.by_id)
    out.summary({"ok": True, "mountpoint": mountpoint, "snapshots": count})
    return exitcodes.OK
