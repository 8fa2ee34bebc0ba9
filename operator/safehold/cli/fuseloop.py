"""libfuse's loop for ``safehold mount``: how it starts and how it ends.

The loop runs in the main thread (``nothreads``), inside libfuse, where Python cannot stop
it. It ends when the kernel closes the connection, which an unmount does unless another mount
namespace holds a copy of the mount. So two threads end it from outside:

- :func:`unmount_on_signal`: SIGINT, SIGTERM and SIGHUP unmount the file system, as an
  unmount by hand does;
- :func:`end_after_unmount`: once the mount has left this process's mount table and gone
  quiet, the loop is told to exit and its wait is interrupted, whatever copies remain.

docs/cli.md, "mount".
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from types import FrameType, ModuleType

__all__ = [
    "QUIET_SECONDS",
    "Loop",
    "end_after_unmount",
    "keep_handler",
    "listed",
    "unmount_on_signal",
]

#: The signals that unmount the file system and end the command.
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The signal that interrupts libfuse's wait for a request once the loop is to end.
_WAKE = signal.SIGUSR1
#: How long the file system must go without a request, after it left this process's mount
#: table, before the command ends it: a lazy unmount's remaining users finish their reads.
QUIET_SECONDS = 2.0


class Loop:
    """libfuse's request loop, as the thread that may end it sees it.

    The loop thread reports its start (:meth:`started`, from the init callback: it saves the
    ``struct fuse`` that ``fuse_exit`` needs), every request (:meth:`served`) and its end
    (:meth:`destroyed`, the destroy callback, which libfuse runs before it frees the
    ``struct fuse``). :meth:`end` flags the session as exited only between the first and the
    last, under the lock the last takes, so it never touches freed memory."""

    def __init__(self, binding: ModuleType) -> None:
        self.binding = binding
        self.mounted = threading.Event()
        self.last_request = time.monotonic()
        self._lock = threading.Lock()
        self._fuse: int | None = None
        self._over = False

    def started(self) -> None:
        try:
            self._fuse = self.binding._libfuse.fuse_get_context().contents.fuse
        except AttributeError:  # a binding without these: the loop ends only by the kernel
            self._fuse = None
        self.mounted.set()

    def served(self) -> None:
        self.last_request = time.monotonic()

    def destroyed(self) -> None:
        with self._lock:
            self._over = True

    def end(self) -> bool:
        """Flag the session as exited (the loop ends when its wait is interrupted); False
        once the loop has ended or had not started."""
        with self._lock:
            if self._over or self._fuse is None:
                return False
            self.binding._libfuse.fuse_exit(ctypes.c_void_p(self._fuse))
            return True


@contextlib.contextmanager
def unmount_on_signal(mountpoint: str) -> Iterator[list[int]]:
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
        # The wake-up pipe carries each signal's number; only ours unmount.
        while (woken := os.read(reader, 64)) and not stopping.is_set():
            if not any(number in _SIGNALS for number in woken):
                continue
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


_ESCAPE = re.compile(rb"\\([0-7]{3})")


def listed(mountinfo: bytes, mountpoint: bytes) -> bool:
    """Whether ``/proc/self/mountinfo``'s text lists a safehold FUSE mount at ``mountpoint``
    (the fifth field, with space, tab, newline and backslash written as octal escapes)."""
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(b" - ")
        parts = fields.split(b" ")
        if len(parts) > 4 and rest.startswith(b"fuse.safehold "):
            path = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), parts[4])
            if path == mountpoint:
                return True
    return False


@contextlib.contextmanager
def end_after_unmount(mountpoint: str, loop: Loop) -> Iterator[threading.Event]:
    """While the file system runs, end libfuse's loop once the mount has left this process's
    mount table and no request has come for :data:`QUIET_SECONDS`. Yields an event set when
    this thread ended the loop.

    An unmount removes the mount from this mount namespace only. A namespace made while it
    was mounted (``unshare --mount``, a container runtime, a service with private mounts)
    holds a copy, and the kernel keeps the connection while any copy lives: libfuse would
    wait on ``/dev/fuse`` for good. So a thread watches ``/proc/self/mountinfo`` (the kernel
    wakes ``poll`` on each change), flags the session as exited and interrupts the loop's
    wait with :data:`_WAKE` (Python installs handlers without ``SA_RESTART``), again each
    second until the loop has ended. libfuse then closes ``/dev/fuse``: the copies answer
    ``ENOTCONN``. The quiet time lets a lazy unmount's remaining readers finish."""
    ended = threading.Event()
    stopping = threading.Event()
    main = threading.get_ident()
    target = os.fsencode(mountpoint)

    def gone() -> bool:
        try:
            table = open("/proc/self/mountinfo", "rb")  # noqa: SIM115 - closed below
        except OSError:  # no /proc: the loop ends only by the kernel, as before
            return False
        with table:
            poller = select.poll()
            poller.register(table, select.POLLPRI)
            while not stopping.is_set():
                if not listed(table.read(), target):
                    return True
                poller.poll(1000)
                table.seek(0)
        return False

    def watcher() -> None:
        while not loop.mounted.wait(0.5):
            if stopping.is_set():
                return
        if not gone():
            return
        while not stopping.is_set():
            quiet = QUIET_SECONDS - (time.monotonic() - loop.last_request)
            if quiet <= 0:
                break
            stopping.wait(quiet)
        if stopping.is_set():  # the loop ended by itself: the kernel closed the connection
            return
        # libfuse unmounts on its way out, finds nothing mounted here and would print
        # "failed to unmount"; nothing else writes to stderr until the loop has returned.
        stderr.append(os.dup(2))
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        ended.set()
        while not stopping.is_set() and loop.end():
            signal.pthread_kill(main, _WAKE)
            stopping.wait(1.0)

    stderr: list[int] = []
    old = signal.signal(_WAKE, lambda signum, frame: None)
    thread = threading.Thread(target=watcher, name="end-after-unmount", daemon=True)
    thread.start()
    try:
        yield ended
    finally:
        stopping.set()
        thread.join(timeout=5)
        signal.signal(_WAKE, old)
        for saved in stderr:
            os.dup2(saved, 2)
            os.close(saved)


def keep_handler(signum: int, handler: object) -> object:
    """``signal.signal`` that changes nothing: returns the handler in place."""
    return signal.getsignal(signum)
