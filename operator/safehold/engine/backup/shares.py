"""Worker processes for the walk: directories (shares) handed out, one pack writer.

With many small files the backup's cost is per file, in Python and under one GIL: the
threads of the single-process pipeline take turns (millions of lock hand-offs for
100,000 files) instead of working in parallel. :class:`Shares` forks worker processes
(:mod:`.worker`) when the pipeline starts, before it starts threads of its own; the
main process's walk hands them whole directories: the subdirectories of the first
directory it meets that has at least :data:`~.walk.SHARE_MIN_DIRS` of them (the root of a
volume of many directories; ``small/`` of the bench's data set). The workers walk,
read, hash and compress; the main process seals and packs their blobs with its one
:class:`~safehold.repo.BlobWriter`, reads the parent snapshot's trees for them, and
reads and chunks big files for them in its big-file threads.

A share's result is the id of its tree (a :class:`~.trees.DirJob` whose ``id`` the tree
thread waits for), its counts and errors, and the hard-link keys (device, inode) of its
files with more than one link. Hard links are stored as a link to the first path in
walk order: when the same key turns up in two shares (or in a share and the main
process's walk), that order is not known to either, and :meth:`Shares.crossed` tells
the pipeline to walk again in one process, against the first walk's tree as the parent
(the second walk only compares metadata: it reads no file the first walk read, unless the
file changed in between).

A worker that fails or is killed fails the backup (:attr:`Shares.error`), with the
path of the share it was walking; nothing is saved that names its blobs, so the
repository stays as after any failed backup.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection, Pipe
from typing import Any

from safehold.engine.backup import worker
from safehold.engine.backup.counts import BackupCounts
from safehold.engine.backup.pending import ChunkRef, PendingContent
from safehold.engine.backup.read import FileReader
from safehold.engine.backup.trees import DirJob
from safehold.engine.patterns import PathFilter
from safehold.engine.progress import ProgressTracker
from safehold.engine.tuning import release_free_memory
from safehold.repo import BlobWriter, CorruptObject, Repository

__all__ = ["ShareError", "Shares"]

_AHEAD = 2  # shares sent to a worker before it finished the previous one


class ShareError(RuntimeError):
    """A worker process failed (or was killed) while walking a share."""


class _Worker:
    """The main process's view of one worker: pid, pipes, sender thread, shares."""

    def __init__(self, pid: int, out: Connection, replies: Connection) -> None:
        self.pid = pid
        self.out = out
        self.replies = replies
        self.outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self.shares: list[int] = []  # handed to it, not done
        self.files = 0
        self.bytes = 0
        self.threads: list[threading.Thread] = []

    def send(self, msg: tuple[Any, ...]) -> None:
        self.outbox.put(msg)

    def _sender(self) -> None:
        """Sends replies in order; its own thread, so that the receiving thread never
        blocks on a full pipe while the worker blocks sending to it."""
        while (msg := self.outbox.get()) is not None:
            if msg[0] == "task":  # with its parent tree, read ahead (see hand_out)
                ahead: Future[bytes | None] | None = msg[-1]
                msg = (*msg[:-1], ahead.result() if ahead is not None else None)
            try:
                self.replies.send(msg)
            except OSError:
                return


class Shares:
    """The worker processes of one backup and the shares handed to them."""

    def __init__(
        self,
        repo: Repository,
        writer: BlobWriter,
        reader: FileReader,
        progress: ProgressTracker,
        processes: int,
    ) -> None:
        self.repo = repo
        self.writer = writer
        self.reader = reader
        self.progress = progress
        self.processes = processes
        self.workers: list[_Worker] = []
        self.jobs: list[DirJob] = []
        self.paths: list[str] = []
        self.waiting: list[tuple[Any, ...]] = []  # tasks no worker has room for yet
        self.results: list[tuple[dict[str, int], list[dict[str, str]]]] = []
        self.links: dict[tuple[int, int], int] = {}  # hard-link key -> share
        self.crossing = False
        self.error: ShareError | None = None
        self._lock = threading.Lock()
        self._replier = ThreadPoolExecutor(2, thread_name_prefix="share-big")
        self._closed = False

    # ------------------------------------------------------------ start and stop
    def start(self, filt: PathFilter | None) -> None:
        """Fork the workers (call before the pipeline starts threads of its own)."""
        events = self.progress.on_file is not None
        gc.collect()
        # The heap's free pages (the index load's, the parent trees' read-ahead's) would be
        # inherited, resident, by every worker: given back first (engine/tuning.py).
        release_free_memory()
        gc.freeze()  # the workers' collector leaves the inherited objects' pages shared
        try:
            for _ in range(self.processes):
                self._fork(filt, events)
        finally:
            gc.unfreeze()
        self.progress.elsewhere = self._elsewhere

    def _fork(self, filt: PathFilter | None, events: bool) -> None:
        out_r, out_w = Pipe(duplex=False)
        rep_r, rep_w = Pipe(duplex=False)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                for w in self.workers:
                    w.out.close()
                    w.replies.close()
                out_r.close()
                rep_w.close()
                worker.serve(self.repo, out_w, rep_r, filt, events, self.writer.dictionary)
                code = 0
            finally:
                os._exit(code)
        out_w.close()
        rep_r.close()
        w = _Worker(pid, out_r, rep_w)
        self.workers.append(w)
        for target, name in ((self._receive, "share-recv"), (w._sender, "share-send")):
            t = threading.Thread(
                target=target, args=(w,) if target == self._receive else (), name=name, daemon=True
            )
            t.start()
            w.threads.append(t)

    def close(self) -> None:
        """Wait for every share, stop the workers; raise :attr:`error` if one failed."""
        if self._closed:
            return
        self._closed = True
        for job in self.jobs:
            job.done.wait()
        for w in self.workers:
            w.send(("stop",))
            w.outbox.put(None)
        for w in self.workers:
            for t in w.threads:
                t.join()
            os.waitpid(w.pid, 0)
            w.out.close()
            w.replies.close()
        self._replier.shutdown(wait=True)
        self.progress.elsewhere = None
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """The backup failed: end the workers and wait for them."""
        self.kill()
        for job in self.jobs:
            job.done.set()
        with contextlib.suppress(ShareError):
            self.close()

    def kill(self) -> None:
        """End the workers at once (the backup failed)."""
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)

    def merge(self, counts: BackupCounts, hardlinks: dict[tuple[int, int], Any]) -> None:
        """Add the shares' counts and errors to ``counts``; note whether a hard-link key
        of a share is also one of the main walk's (``hardlinks``) or another share's."""
        for share_counts, errors in self.results:
            for key, n in share_counts.items():
                counts[key] += n
            counts.errors.extend(errors)
        self.results = []
        if any(key in self.links for key in hardlinks):
            self.crossing = True

    def _elsewhere(self) -> tuple[int, int]:
        return sum(w.files for w in self.workers), sum(w.bytes for w in self.workers)

    # ------------------------------------------------------------ handing out
    def hand_out(self, path: str, rel: str, parent_tree: object, root_len: int) -> DirJob:
        """Have a worker walk directory ``path``; its job is done when the worker is."""
        job = DirJob([])
        job.share = True
        with self._lock:
            share = len(self.jobs)
            self.jobs.append(job)
            self.paths.append(path)
            if self.error is not None:
                job.done.set()
                return job
            # The share's parent tree is read now, in a reader thread, and sent with the
            # task: the worker does not wait for it when it starts the share.
            ahead = (
                self.reader.readers.submit(self._tree, parent_tree)
                if isinstance(parent_tree, str)
                else None
            )
            self.waiting.append(("task", share, path, rel, parent_tree, root_len, ahead))
            self._dispatch()
        return job

    def _dispatch(self) -> None:
        """Give waiting shares to the workers with room (holding the lock)."""
        while self.waiting:
            w = min(self.workers, key=lambda w: len(w.shares))
            if len(w.shares) >= _AHEAD:
                return
            task = self.waiting.pop(0)
            w.shares.append(task[1])
            w.send(task)

    # ------------------------------------------------------------ a worker's messages
    def _receive(self, w: _Worker) -> None:
        try:
            while True:
                try:
                    msg = w.out.recv()
                except (EOFError, OSError):
                    break
                self._handle(w, msg)
        except BaseException as exc:  # noqa: BLE001 - fails the backup, see close()
            self._fail(f"{type(exc).__name__}: {exc}", w)
        if w.shares:
            self._fail("the worker process ended unexpectedly", w)

    def _handle(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "blobs":
            writer = self.writer
            for blob_type, blob_id, encoded, flags, raw in msg[1]:
                if writer.claim(blob_id):
                    writer.add(blob_type, blob_id, encoded, flags, raw)
            w.files, w.bytes = msg[2], msg[3]
            for event, path in msg[4]:
                self.progress.file(event, path)
        elif kind == "tree":
            w.send(("tree", msg[1], self._tree(msg[1])))
        elif kind == "big":
            fut = self.reader.read_big(msg[2], msg[3])
            token = msg[1]
            fut.add_done_callback(lambda f: self._replier.submit(self._big_done, w, token, f))
        elif kind == "done":
            self._done(w, msg[1], msg[2], msg[3], msg[4], msg[5])
        elif kind == "failed":
            self._fail(msg[2], w)

    def _tree(self, tree_id: str) -> bytes | None:
        try:
            return self.repo.tree_bytes(tree_id)  # read ahead for object stores (run.py)
        except (CorruptObject, ValueError):
            return None

    @staticmethod
    def _big_done(w: _Worker, token: int, fut: Future[list[ChunkRef] | None]) -> None:
        try:
            ids = PendingContent(future=fut).ids()
        except BaseException:  # noqa: BLE001 - the pack writer's error fails the backup
            ids = None
        w.send(("big", token, ids))

    def _done(
        self,
        w: _Worker,
        share: int,
        tree_id: str | None,
        counts: dict[str, int],
        errors: list[dict[str, str]],
        keys: list[tuple[int, int]],
    ) -> None:
        with self._lock:
            for key in keys:
                if self.links.setdefault(key, share) != share:
                    self.crossing = True
            self.results.append((counts, errors))
            w.shares.remove(share)
            self._dispatch()
        job = self.jobs[share]
        job.id = tree_id
        job.done.set()

    def _fail(self, why: str, w: _Worker) -> None:
        with self._lock:
            paths = [self.paths[s] for s in w.shares] or ["?"]
            if self.error is None:
                self.error = ShareError(
                    f"backup of {', '.join(paths)} failed in worker process {w.pid}: {why}"
                )
            for s in w.shares:
                self.jobs[s].done.set()
            w.shares = []
            self.waiting.clear()
            for job in self.jobs:
                job.done.set()
        self.kill()  # the others too: the backup fails, and none may wait for a reply
