"""Reading files for the backup: small files whole (read ahead by reader threads), big
files by threads of their own, and the readers the chunker pulls from (a stream read in
full blocks, a file read ahead)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from safehold.engine.backup.chunks import ChunkPool
from safehold.engine.backup.counts import BackupCounts
from safehold.engine.backup.pending import Batch, ChunkRef
from safehold.engine.progress import ProgressTracker
from safehold.repo import Chunker, Repository

__all__ = ["READ_AHEAD_WINDOW", "FileReader", "full_reader", "reading_ahead"]

_SMALL_FILE = 256 * 1024
_READERS = 4
_BIG_READERS = 2  # two big files at once: their reads and cuts overlap on 2 cores

READ_AHEAD_WINDOW = 8 * 1024 * 1024  # big files: the kernel fetches this much past each read


def full_reader(stream: BinaryIO) -> Callable[[memoryview], int]:
    """A readinto that fills the buffer unless the stream ends (pipes return short reads)."""
    readinto = getattr(stream, "readinto", None)

    def fill(buffer: memoryview) -> int:
        done = 0
        while done < len(buffer):
            if readinto is not None:
                n = readinto(buffer[done:])
            else:
                data = stream.read(len(buffer) - done)
                n = len(data)
                buffer[done : done + n] = data
            if not n:
                break
            done += n
        return done

    return fill


def reading_ahead(
    fd: int, readinto: Callable[[memoryview], int], ahead: int = READ_AHEAD_WINDOW
) -> Callable[[memoryview], int]:
    """A readinto that asks the kernel to fetch the next ``ahead`` bytes in the background.

    The chunker reads a block, then cuts it (without the GIL) while the workers hash the
    previous block; without a hint the disk idles during the cut, because the kernel's
    own read-ahead is far smaller than a block. ``POSIX_FADV_WILLNEED`` on the range after
    each read keeps the disk busy meanwhile: reading overlaps chunking and hashing.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return readinto
    try:
        advise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except OSError:
        return readinto
    pos = 0
    hinted = 0

    def read(buffer: memoryview) -> int:
        nonlocal pos, hinted
        n = readinto(buffer)
        pos += n
        if n and pos + ahead > hinted:
            start = max(pos, hinted)
            with contextlib.suppress(OSError):
                advise(fd, start, pos + ahead - start, os.POSIX_FADV_WILLNEED)
            hinted = pos + ahead
        return n

    return read


class FileReader:
    """Reads files into chunk refs. A file up to :attr:`small` bytes is read whole, by a
    reader thread when the walk asked for it ahead (:meth:`prefetch`); a bigger one is
    read and cut by one of two big-file threads (:meth:`read_big`) while the walk goes on.
    """

    def __init__(
        self,
        repo: Repository,
        chunks: ChunkPool,
        counts: BackupCounts,
        progress: ProgressTracker,
    ) -> None:
        self.repo = repo
        self.chunks = chunks
        self.counts = counts
        self.progress = progress
        self.chunker = Chunker(repo.config.chunker, repo.keys.chunker_seed)
        self.small = min(_SMALL_FILE, repo.config.chunker.min_size)
        self.readers = ThreadPoolExecutor(_READERS, thread_name_prefix="read")
        self.big = ThreadPoolExecutor(_BIG_READERS, thread_name_prefix="read-big")
        self.prefetched: dict[str, Future[bytes]] = {}
        self.no_atime = True
        self._local = threading.local()

    def open(self, path: str) -> int:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        if self.no_atime:
            try:
                return os.open(path, flags | getattr(os, "O_NOATIME", 0))
            except PermissionError:
                self.no_atime = False  # O_NOATIME needs ownership; plain open from now on
        return os.open(path, flags)

    #: The walk asks for small files this far ahead of it (:meth:`prefetch`).
    ahead_bytes = 2 * 1024 * 1024
    ahead_files = 1 << 62

    def is_ahead(self, path: str) -> bool:
        """Whether ``path`` was asked for by :meth:`prefetch`, and not read yet."""
        return path in self.prefetched

    def drop(self, path: str) -> None:
        """Forget what was read ahead of ``path`` (the walk is past it)."""
        self.prefetched.pop(path, None)

    def prefetch(self, path: str, size: int) -> None:
        """Have a reader thread read the small file ``path`` for :meth:`read_file`."""
        self.prefetched[path] = self.readers.submit(self._read_small, path, size)

    def _read_small(self, path: str, size: int) -> bytes:
        """Read a small file whole (in a reader thread: the I/O wait releases the GIL).
        One byte more than its size is asked for, to notice a file that grew."""
        fd = self.open(path)
        try:
            return os.read(fd, min(size, self.small) + 1)
        finally:
            os.close(fd)

    def read_file(self, path: str, size: int) -> list[ChunkRef] | None:
        """Read a file in the walk's thread (a small one: whole, or as read ahead); its
        chunks go to the pool's current batch. None when it cannot be read (recorded)."""
        content: list[ChunkRef] = []
        ahead = self.prefetched.pop(path, None)
        if ahead is not None:
            try:
                data = ahead.result()
            except OSError as exc:
                self.counts.error(path, exc)
                return None
            if len(data) <= min(size, self.small):
                self.counts["bytes_read"] += len(data)
                self.progress.bytes_done += len(data)
                if data:
                    content.append(self.chunks.add(data))
                return content
        try:
            fd = self.open(path)
        except OSError as exc:
            self.counts.error(path, exc)
            return None
        try:
            with os.fdopen(fd, "rb", buffering=0) as f:
                if size <= self.small:
                    data = f.read(self.small + 1)
                    if len(data) <= self.small:
                        self.counts["bytes_read"] += len(data)
                        self.progress.bytes_done += len(data)
                        if data:
                            content.append(self.chunks.add(data))
                        return content
                    f.seek(0)  # it grew since stat: chunk it like a big file
                for view in self.chunker.chunks_of(f.readinto):
                    n = len(view)
                    self.counts["bytes_read"] += n
                    self.progress.bytes_done += n
                    # A copy: the chunker reuses its buffer, and the byte budget then
                    # bounds the memory in flight exactly.
                    content.append(self.chunks.add(bytes(view)))
        except OSError as exc:
            self.counts.error(path, exc)
            return None
        return content

    def read_big(self, path: str, category: str) -> Future[list[ChunkRef] | None]:
        """Start reading a big file in a big-file thread: the future of its chunk refs."""
        return self.big.submit(self._read_big, path, category)

    def _read_big(self, path: str, category: str) -> list[ChunkRef] | None:
        """Read and chunk one big file in a big-file thread; its chunks go to the pool in
        batches of its own. None when it cannot be read (the error is recorded)."""
        chunker: Chunker | None = getattr(self._local, "chunker", None)
        if chunker is None:
            chunker = Chunker(self.repo.config.chunker, self.repo.keys.chunker_seed)
            self._local.chunker = chunker
        content: list[ChunkRef] = []
        batch = Batch()
        read = 0
        keys = self.repo.keys
        index = self.repo.index
        chunks = self.chunks
        try:
            with os.fdopen(self.open(path), "rb", buffering=0) as f:
                for view in chunker.chunks_of(reading_ahead(f.fileno(), f.readinto)):
                    n = len(view)
                    read += n
                    self.progress.bytes_done += n  # display only: races are harmless
                    # Most chunks of a changed big file are stored already (an insert or
                    # an append leaves the rest of the file's chunks as they were): this
                    # thread hashes them itself (BLAKE3 releases the GIL), and only a new
                    # chunk is copied and handed to the pool to be compressed and sealed.
                    blob_id = keys.blob_id(view)
                    if blob_id in index:
                        content.append(blob_id.hex())
                        continue
                    ref, full = chunks.put(batch, bytes(view))  # the chunker reuses its buffer
                    content.append(ref)
                    if full:
                        chunks.submit(batch)
                        batch = Batch()
        except OSError as exc:
            chunks.submit(batch)
            self.counts.big_read(read, failed=category)
            self.counts.error(path, exc)
            return None
        chunks.submit(batch)
        self.counts.big_read(read)
        return content
