"""Splitting one restore over several processes (``fork``), each restoring a share of it.

A restore of many small files spends most of its time in Python code that holds the GIL
(walking trees, planning, one ``open``/``write``/``utime`` per file): threads cannot use a
second CPU for it. So a restore into a new directory runs as one process per available CPU.
Every process walks the whole snapshot, in the same order, and restores only its *part*,
decided without talking to the others:

- the files, symlinks and special files of a directory belong to one part (runs of
  :data:`FILES_PER_OWNER` entries of a directory alternate between parts), so two processes
  seldom create files in one directory at the same time; from an object store a file of one
  chunk belongs instead to the part that owns its chunk's piece of the pack (as below), so
  that each byte of a pack is downloaded by one part, once;
- the chunks of a file of several chunks are shared out by where they lie: in stripes of 4 MiB
  of a local repository's pack, in an object store's pack's pieces (as below), so a big file
  is written by all processes and a chunk that several files share is read once;
- an object store's packs are shared out by what restoring them costs
  (:mod:`safehold.engine.restore.shares`), those of small files in pieces: a pack of small
  text files holds twice the files of one of random bytes, and a few such packs shared
  whole leave one part much more to do;
- directories are created by whichever process comes first; part 0, this process, sets their
  metadata, and that of every file of several chunks, after the others have finished
  (a file's metadata marks it complete, see :mod:`safehold.engine.restore.write`).

Every process opens the target itself and walks it with its own directory descriptors, as a
single-process restore does (:mod:`safehold.engine.restore.safe_fs`): no part ever resolves a path
below the target, so none can be led out of it by a symlink another part, an earlier restore or
the snapshot put there.

Only part 0 returns. The others (children made with ``fork`` before any thread of the restore
starts) send their results through a pipe, publish their progress in shared memory, and leave
with ``os._exit``, never through the caller's code (which would, say, release the caller's
repository lock); a child that fails makes the restore fail with its message. A child dies
with part 0 (``PR_SET_PDEATHSIG``) and at once on SIGINT or SIGTERM.

Restores from object stores are split the same way: an SDK client's pooled connections are
sockets a forked child must not share, so each child first reopens the storage
(:meth:`~safehold.storage.Storage.reopen`: new clients from the same location and options)
and never sends a request on a connection of part 0's. A restore with a download limit keeps
one process: the limit's token bucket is one process's.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import signal
import struct
import traceback
from dataclasses import dataclass, field
from typing import Any, NoReturn

__all__ = [
    "FILES_PER_OWNER",
    "PartFailed",
    "PartResult",
    "Parts",
]

#: Consecutive entries of a directory that go to the same part.
FILES_PER_OWNER = 256
_SLOT = struct.Struct("<qq")  # files done, bytes done: one slot per part in shared memory
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@dataclass
class PartResult:
    """What a child part did, as sent to part 0."""

    files: int = 0
    links: int = 0
    special: int = 0
    bytes_written: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)


class PartFailed(RuntimeError):
    """A child part stopped on a bug or a signal; the restore cannot be complete."""


class Parts:
    """The processes of one restore. ``part`` is this process's number (0: the caller)."""

    def __init__(self, count: int) -> None:
        self.count = max(1, count)
        self.part = 0
        self._children: list[tuple[int, int]] = []  # pid, read end of its result pipe
        self._pipe = -1
        self._shared = mmap.mmap(-1, _SLOT.size * self.count) if self.count > 1 else None

    def fork(self) -> int:
        """Start parts 1..count-1 as children; return this process's part number.

        Call it before the restore starts any thread: a child has only the thread that forked.
        SIGINT and SIGTERM are held back (blocked) until a child has the default handlers:
        delivered at once, they would run the caller's handler in the child (the CLI's
        unwinds, prints a second summary and releases the repository lock), or in part 0
        between a fork and the note of its child.
        """
        parent = os.getpid()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            for part in range(1, self.count):
                read_end, write_end = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(read_end)
                    for _, other in self._children:
                        os.close(other)
                    self._children = []
                    self.part, self._pipe = part, write_end
                    _default_signals()
                    _die_with_parent(parent)
                    return part  # let through: a signal held back ends the child now
                os.close(write_end)
                self._children.append((pid, read_end))
        except BaseException:
            self.abandon()  # a fork that failed: the children so far end
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return 0

    # -- in a child
    def publish(self, files: int, bytes_done: int) -> None:
        """Make this part's progress visible to part 0."""
        if self._shared is not None:
            _SLOT.pack_into(self._shared, _SLOT.size * self.part, files, bytes_done)

    def exit(self, result: PartResult | None, crash: BaseException | None = None) -> NoReturn:
        """Send the result (or what went wrong) to part 0 and end this process."""
        code = 1
        try:
            if crash is not None:
                doc: dict[str, Any] = {
                    "crash": "".join(traceback.format_exception_only(crash)).strip()
                }
            else:
                doc = {"result": result.__dict__ if result is not None else {}}
                code = 0
            data = json.dumps(doc).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(self._pipe, view) :]
        finally:
            os._exit(code)

    # -- in part 0
    def progress_elsewhere(self) -> tuple[int, int]:
        """Files and bytes done by the other parts so far."""
        files = done = 0
        if self._shared is not None:
            for part in range(1, self.count):
                f, b = _SLOT.unpack_from(self._shared, _SLOT.size * part)
                files += f
                done += b
        return files, done

    def wait(self) -> list[PartResult]:
        """Wait for every child; return their results, or raise :class:`PartFailed`.

        A child that SIGINT ended raises :class:`KeyboardInterrupt`, as part 0's own
        handler does: Ctrl-C reaches the whole process group, and part 0 may see its
        child's end before its own signal's handler runs (the command is interrupted,
        not failed)."""
        results: list[PartResult] = []
        failures: list[str] = []
        interrupted = False
        for part, (pid, read_end) in enumerate(self._children, start=1):
            with os.fdopen(read_end, "rb") as pipe:
                data = pipe.read()
            _, status = os.waitpid(pid, 0)
            try:
                doc = json.loads(data) if data else {}
            except ValueError:
                doc = {}
            if "result" in doc and os.waitstatus_to_exitcode(status) == 0:
                results.append(PartResult(**doc["result"]))
                continue
            if "crash" in doc:
                failures.append(f"part {part}: {doc['crash']}")
            elif os.WIFSIGNALED(status):
                interrupted = interrupted or os.WTERMSIG(status) == signal.SIGINT
                name = signal.Signals(os.WTERMSIG(status)).name
                failures.append(f"part {part} was killed by {name}")
            else:
                code = os.waitstatus_to_exitcode(status)
                failures.append(f"part {part} exited with status {code}")
        self._children = []
        if interrupted:
            raise KeyboardInterrupt
        if failures:
            raise PartFailed("a restore process failed: " + "; ".join(failures))
        return results

    def abandon(self) -> None:
        """Part 0 stops early (an error): stop and reap the children."""
        for pid, read_end in self._children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
            os.close(read_end)
        self._children = []


def _default_signals() -> None:
    """A child ends on SIGINT and SIGTERM at once, as the kernel does by default: the
    caller's handlers (the CLI turns them into an exception that unwinds and releases the
    repository lock) must run in part 0 only, never in a copy of it."""
    for signum in _STOP_SIGNALS:
        # ValueError: not the main thread, where no handler of ours can be installed
        with contextlib.suppress(ValueError):
            signal.signal(signum, signal.SIG_DFL)


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this child if part 0 dies (Linux), so none writes on alone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
