"""The backup pipeline: a directory tree (or a stream) into tree and data blobs.

Built so that both cores stay busy and memory stays bounded, from these parts:

* with two CPUs or more, **worker processes** (:mod:`.shares`, :mod:`.worker`) walk
  whole directories handed out by the main walk, each in one thread, and send their
  blobs to the main process's one pack writer;
* the **walk** (:mod:`.walk`, the main thread) goes through the tree under the patterns,
  decides per file whether the parent's chunk list can be reused (incremental), and has
  changed files read (:mod:`.read`): small ones read ahead by reader threads, big ones
  read and cut with FastCDC by threads of their own (the cut releases the GIL);
* chunks go in **batches** to the chunk pool (:mod:`.chunks`) that hashes (keyed
  BLAKE3), deduplicates, compresses (zstd) and seals (AES-GCM) them: all release the
  GIL; a byte budget bounds the data in flight;
* until then a file's content is a :class:`~.pending.PendingContent`; the **tree thread**
  (:mod:`.trees`) finishes directories in post-order, as their chunk ids become known,
  and stores the tree blobs;
* the :class:`~safehold.repo.BlobWriter` gathers blobs into packs, uploads them in
  the background and writes index objects for stored packs;
* the counts and errors of the summary are in one :class:`~.counts.BackupCounts`;
* last (:mod:`.run`), the snapshot object: packs, then index, then snapshot (format
  section 10).
"""

from __future__ import annotations

import os
import time
from typing import BinaryIO

from safehold.engine.backup.chunks import ChunkPool
from safehold.engine.backup.counts import BackupCounts
from safehold.engine.backup.options import BackupOptions
from safehold.engine.backup.pending import ChunkRef, PendingContent
from safehold.engine.backup.read import FileReader, full_reader
from safehold.engine.backup.shares import Shares
from safehold.engine.backup.trees import DirJob, TreeThread
from safehold.engine.backup.walk import Walker
from safehold.engine.patterns import PathFilter
from safehold.engine.progress import ProgressTracker
from safehold.engine.tuning import available_cpus
from safehold.repo import BlobWriter, Node, Repository
from safehold.repo.dictionary import Dictionary

__all__ = ["BackupPipeline"]


class BackupPipeline:
    """One backup's parts, wired together; :meth:`run` or :meth:`run_stream` once."""

    def __init__(
        self,
        repo: Repository,
        options: BackupOptions,
        progress: ProgressTracker,
        dictionary: Dictionary | None = None,
    ) -> None:
        """``dictionary``: the one small data blobs are compressed with (:mod:`.dictionary`)."""
        self.repo = repo
        self.options = options
        self.progress = progress
        self.writer = BlobWriter(repo, dictionary=dictionary)
        self.counts = BackupCounts()
        self.chunks = ChunkPool(repo, self.writer, options.workers or available_cpus())
        self.reader = FileReader(repo, self.chunks, self.counts, progress)
        self.trees = TreeThread(self.chunks)
        self.walker = Walker(repo, self.reader, self.trees, self.counts, progress)

    @property
    def errors(self) -> list[dict[str, str]]:
        """What was left out, as ``{"path", "error"}``."""
        return self.counts.errors

    @property
    def filter(self) -> PathFilter | None:
        return self.walker.filter

    @filter.setter
    def filter(self, filt: PathFilter | None) -> None:
        self.walker.filter = filt

    def run(self, roots: list[tuple[str, str]], parent_root: dict[str, Node]) -> str:
        """Back up ``(path, name)`` roots; return the root tree id."""
        shares = self._start_shares()
        self.trees.start()
        try:
            root = self.walker.walk_roots(roots, parent_root)
            if shares is not None:
                root = self._join_shares(shares, roots, parent_root, root)
        except BaseException:
            if shares is not None:
                shares.abort()
            raise
        finally:
            self._stop_workers()
        return self._finish(root)

    def _start_shares(self) -> Shares | None:
        """Fork the worker processes (before any thread of the pipeline starts)."""
        n = self.options.processes
        if n == 0:
            n = available_cpus()
            n = n if n > 1 else 0
        if n <= 1 or not hasattr(os, "fork"):
            return None
        shares = Shares(self.repo, self.writer, self.reader, self.progress, n)
        shares.start(self.walker.filter)
        self.walker.shares = shares
        return shares

    def _join_shares(
        self,
        shares: Shares,
        roots: list[tuple[str, str]],
        parent_root: dict[str, Node],
        root: DirJob,
    ) -> DirJob:
        """Wait for the workers and add up their counts. A hard link between two shares
        (or a share and the main walk) is stored by its first path in walk order, which
        only one walk knows: then the tree is walked again in this process
        (:meth:`_walk_again`)."""
        self.walker.shares = None
        shares.close()
        shares.merge(self.counts, self.walker.hardlinks)
        if not shares.crossing:
            return root
        return self._walk_again(roots, root)

    def _walk_again(self, roots: list[tuple[str, str]], first: DirJob) -> DirJob:
        """Walk ``roots`` again in this process with the first walk's tree as the parent:
        a file whose size, times and inode are as the first walk saw them keeps the chunks
        it stored (nothing is read twice; a file changed in between is read again), and the
        hard links are grouped in the one walk order. The counts stay the first walk's
        (what was new, changed or unchanged against the real parent, and the bytes read);
        the errors are the second walk's, whose tree the snapshot names."""
        first.done.wait()  # every chunk and tree of the first walk is known (or it failed)
        if self.trees.error is not None:
            raise self.trees.error
        assert first.id is not None
        self.writer.flush()  # its trees are stored: the walk reads them as a parent's
        parents = {node["name"]: node for node in self.repo.load_tree(first.id)}
        self.counts.merge_big()
        counts = dict(self.counts)
        self.counts.reset()
        self.walker.hardlinks = {}
        self.progress.files_done = 0
        self.progress.bytes_done = 0
        root = self.walker.walk_roots(roots, parents)
        self.counts.update(counts)
        return root

    def run_stream(self, stream: BinaryIO, name: str) -> str:
        """Back up ``stream`` as one file ``name``; return the root tree id."""
        self.trees.start()
        try:
            now = time.time_ns()
            content: list[ChunkRef] = []
            counts = self.counts
            for view in self.reader.chunker.chunks_of(full_reader(stream)):
                n = len(view)
                counts["bytes_read"] += n
                self.progress.bytes_done += n
                content.append(self.chunks.add(bytes(view)))
            size = counts["bytes_read"]
            counts["total_bytes"] = size
            counts["total_files"] = 1
            counts["files_new"] = 1
            self.progress.files_done = 1
            names = self.walker.names
            node: Node = {
                "name": name,
                "type": "file",
                "mode": 0o600,
                "uid": os.getuid(),
                "gid": os.getgid(),
                "user": names.user(os.getuid()),
                "group": names.group(os.getgid()),
                "mtime_ns": now,
                "atime_ns": now,
                "ctime_ns": now,
                "inode": 0,
                "dev": 0,
                "links": 1,
                "size": size,
                "content": PendingContent(content),
            }
            root = self.trees.add([node])
        finally:
            self._stop_workers()
        return self._finish(root)

    def _stop_workers(self) -> None:
        """Stop the tree thread and the pools, also after a failure, and count their work."""
        self.trees.stop()
        self.reader.big.shutdown(wait=True)  # first: big files still feed the chunk pool
        self.chunks.shutdown()
        self.reader.readers.shutdown(wait=True)
        self.counts.merge_big()

    def _finish(self, root: DirJob) -> str:
        """Flush the last pack and index (format section 10: before any snapshot names them)."""
        if self.trees.error is not None:
            raise self.trees.error
        self.writer.flush()
        self.writer.close()
        assert root.id is not None
        return root.id
