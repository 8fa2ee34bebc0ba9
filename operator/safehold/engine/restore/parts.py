"""Splitting one restore over several processes (``fork``), each restoring a share of it.

A restore of many small files spends most of its time in Python code that holds the GIL
(walking trees, planning, one ``open``/``write``/``utime`` per file): threads cannot use a
second CPU for it. So a restore into a new directory runs as one process per available CPU.
Every process walks the whole snapshot, in the same order, and restores only its *part*,
decided without talking to the others:

- the files, symlinks and special files of a directory belong to one part (runs of
  :data:`FILES_PER_OWNER` entries of a directory alternate between parts), so two processes
  seldom create files in one directory at the same time; from an object store a file of one
  chunk belongs instead to the part that owns its chunk's stripe of the pack (as below), so
  that each byte of a pack is downloaded by one part, once;
- the chunks of a file of several chunks are shared out by where they lie, in stripes of their
  pack (4 MiB of a local repository's, the whole pack of an object store's), so a big file is
  written by all processes and a chunk that several files share is read once;
- an object store's packs are shared out by what restoring them costs (:func:`share_packs`),
  those of small files by halves: a pack of small text files holds twice the files of one
  of random bytes, and a few such packs shared whole leave one part much more to do;
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
    "BLOB_COST",
    "FILES_PER_OWNER",
    "MIN_PIECE",
    "PIECES",
    "PackShare",
    "PartFailed",
    "PartResult",
    "Parts",
    "share_packs",
]

#: Consecutive entries of a directory that go to the same part.
FILES_PER_OWNER = 256
#: What restoring one blob costs beside its bytes, in bytes: creating a file (open, write,
#: utime, close of a new entry) takes about as long as decoding and writing 16 KiB.
BLOB_COST = 16 * 1024
_SLOT = struct.Struct("<qq")  # files done, bytes done: one slot per part in shared memory
_PR_SET_PDEATHSIG = 1


#: The pieces an object store's pack of small files is shared out in: halves. Whole packs
#: left one part of two with 62,000 of the small files' 100,000 (a snapshot of four data
#: packs); quarters would balance closer but read a pack in more, shorter requests, which
#: costs a restore from a distant bucket its time (session 13 in docs/performance.md).
PIECES = 2
#: A pack shorter than two pieces of this is not cut: a read of its second piece would
#: start within its first bytes, which a read takes with it (the subkey prefix and
#: dictionary lead a pack), and cost a request for little.
MIN_PIECE = 1024 * 1024


@dataclass(frozen=True)
class PackShare:
    """Which part restores each piece of one pack: the blob at ``offset`` goes to part
    ``owners[offset // length]``."""

    length: int
    owners: tuple[int, ...]

    def owner(self, offset: int) -> int:
        return self.owners[min(offset // self.length, len(self.owners) - 1)]


def share_packs(loads: list[tuple[int, int]], count: int, pieces: int = PIECES) -> list[PackShare]:
    """The part that restores each piece of each pack (by pack number), from what the index
    holds of each (``Index.pack_loads``: blobs, bytes). A pack of small files, whose blobs
    cost more than its bytes, is cut into ``pieces`` of equal length (fewer when they would
    be shorter than :data:`MIN_PIECE`), each costing its share of the pack's blobs times
    :data:`BLOB_COST` plus its bytes; in the packs' order, each piece goes to the part
    with the least cost so far.
    Every part computes the same answer from the index it inherited.

    In turn, a part could get twice the files of the other: a backup's packs of small text
    files hold 30,000-37,000 blobs, those of random bytes 15,000-17,000 (session 20 in
    docs/performance.md). In the packs' order, the packs one backup wrote (consecutive
    numbers) are shared out evenly as they come: after any piece the parts' costs differ by
    at most the largest piece's, so over any run of consecutive packs (what one snapshot
    mostly uses) by at most twice that. Sorting by cost would balance the repository, not
    the packs one snapshot uses."""
    costs = [0] * max(1, count)
    shares: list[PackShare] = []
    for blobs, size in loads:
        # A pack of big chunks costs its bytes, as do the many others a big file fills:
        # whole, they share out evenly, in half the requests.
        small_files = blobs * BLOB_COST > size
        cut = max(1, min(pieces, size // MIN_PIECE)) if small_files else 1
        owners = []
        for _ in range(cut):
            part = costs.index(min(costs))
            owners.append(part)
            costs[part] += (blobs * BLOB_COST + size) // cut
        shares.append(PackShare(max(1, -(-size // cut)), tuple(owners)))
    return shares


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
        """
        parent = os.getpid()
        for part in range(1, self.count):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                for _, other in self._children:
                    os.close(other)
                self._children = []
                self.part, self._pipe = part, write_end
                _die_with_parent(parent)
                _default_signals()
                return part
            os.close(write_end)
            self._children.append((pid, read_end))
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
    for signum in (signal.SIGINT, signal.SIGTERM):
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
