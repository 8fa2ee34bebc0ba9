"""A worker process of the backup: walks the directories handed to it (its shares).

Forked by :class:`~.shares.Shares` before the backup starts any thread of its own, it
runs the same :class:`~.walk.Walker` as the main process, with synchronous parts in
place of the threads: in one thread and one process, a small file costs one ``lstat``
(the directory listing's), one ``open``, one ``read`` and one ``close``, and no lock or
thread hand-off at all. Hashing, deduplication (against the index as it was at the
fork and the blobs this worker sent) and compression happen here; the encoded blobs go
to the main process in batches, whose one :class:`~safehold.repo.BlobWriter` packs,
seals and uploads them. The worker never touches the repository's storage (its
connections belong to the main process): it asks the main process for the parent
snapshot's trees, and hands it big files, which the main process's big-file threads
read and chunk at full speed.

Messages (pickled over two pipes: ``out`` to the main process, ``replies`` back):

* out: ``("blobs", [(type, id, encoded, flags, raw), ...], files, bytes, events)``,
  ``("tree", tree_id)``, ``("big", token, path, category)``,
  ``("done", share, tree_id | None, counts, errors, hardlink keys)``,
  ``("failed", share, message)``;
* replies: ``("task", share, path, rel, parent_tree, root_len, its JSON | None)``,
  ``("tree", tree_id,
  JSON bytes | None)``, ``("big", token, chunk ids | None)``, ``("stop",)``.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

from safehold.engine.backup.chunks import ChunkPool
from safehold.engine.backup.counts import BackupCounts
from safehold.engine.backup.pending import ChunkRef, PendingContent
from safehold.engine.backup.read import FileReader
from safehold.engine.backup.scope import ALL
from safehold.engine.backup.trees import DirJob, TreeThread
from safehold.engine.backup.walk import Walker
from safehold.engine.patterns import PathFilter
from safehold.engine.progress import ProgressTracker
from safehold.repo import (
    BLOB_DATA,
    BLOB_TREE,
    BlobEncoder,
    CorruptObject,
    Node,
    Repository,
    decode_tree,
    encode_tree,
)
from safehold.repo.dictionary import Dictionary

__all__ = ["Task", "serve"]

_BATCH_BYTES = 1024 * 1024
_BATCH_COUNT = 512

#: A share: (share number, path, path in the snapshot, parent tree id, root_len).
Task = tuple[int, str, str, object, int]


class Link:
    """The worker's ends of its two pipes, the blobs not sent yet, and the replies."""

    def __init__(self, out: Connection, replies: Connection, events: bool) -> None:
        self.out = out
        self.replies = replies
        self.blobs: list[tuple[int, bytes, Any, int, int]] = []
        self.nbytes = 0
        self.events: list[tuple[str, str]] | None = [] if events else None
        self.trees: dict[str, bytes | None] = {}
        self.asked: set[str] = set()
        self.big: dict[int, Future[list[ChunkRef] | None]] = {}
        self.tasks: list[Task] = []
        self.stopping = False
        self.progress: ProgressTracker | None = None

    def blob(self, blob_type: int, blob_id: bytes, encoded: Any, flags: int, raw: int) -> None:
        if isinstance(encoded, tuple) and any(type(p) is memoryview for p in encoded):
            encoded = type(encoded)(*(bytes(p) for p in encoded))  # picklable
        self.blobs.append((blob_type, blob_id, encoded, flags, raw))
        self.nbytes += raw
        if self.nbytes >= _BATCH_BYTES or len(self.blobs) >= _BATCH_COUNT:
            self.flush()

    def flush(self) -> None:
        """Send the blobs gathered so far, with this worker's progress."""
        progress = self.progress
        files, done = (progress.files_done, progress.bytes_done) if progress else (0, 0)
        self.out.send(("blobs", self.blobs, files, done, self.events or []))
        self.blobs = []
        self.nbytes = 0
        if self.events is not None:
            self.events = []

    def ask_tree(self, tree_id: str) -> None:
        if tree_id not in self.asked and tree_id not in self.trees:
            self.asked.add(tree_id)
            self.out.send(("tree", tree_id))

    def tree(self, tree_id: str) -> bytes | None:
        """The parent snapshot's tree ``tree_id`` as JSON (None: unreadable)."""
        self.ask_tree(tree_id)
        while tree_id not in self.trees:
            self.pump()
        self.asked.discard(tree_id)
        return self.trees.pop(tree_id)

    def next_task(self) -> Task | None:
        self.flush()
        while not self.tasks and not self.stopping:
            self.pump()
        return self.tasks.pop(0) if self.tasks else None

    def pump(self) -> None:
        """Wait for one reply and file it."""
        msg = self.replies.recv()
        kind = msg[0]
        if kind == "tree":
            self.trees[msg[1]] = msg[2]
        elif kind == "big":
            self.big.pop(msg[1]).set_result(msg[2])
        elif kind == "task":
            share, path, rel, parent_tree, root_len, tree = msg[1:]
            if isinstance(parent_tree, str):
                self.trees[parent_tree] = tree
            self.tasks.append((share, path, rel, parent_tree, root_len))
        elif kind == "stop":
            self.stopping = True


class ShareChunks(ChunkPool):
    """Hash, deduplicate and compress in the calling thread; blobs go to the :class:`Link`."""

    def __init__(
        self, repo: Repository, link: Link, dictionary: Dictionary | None
    ) -> None:  # no pool, no writer: the main process's writer knows ``dictionary`` too
        self.repo = repo
        self.link = link
        self.keys = repo.keys
        self.index = repo.index
        self.sent: set[bytes] = set()
        self.enc = BlobEncoder(repo.aead, repo.config.compression_level, dictionary)

    def add(self, view: memoryview | bytes) -> ChunkRef:
        return self.store(BLOB_DATA, view).hex()

    def store(self, blob_type: int, data: memoryview | bytes) -> bytes:
        blob_id = self.keys.blob_id(data)
        if blob_id not in self.index and blob_id not in self.sent:
            self.sent.add(blob_id)
            encoded, flags = self.enc.encode(blob_type, blob_id, data)
            self.link.blob(blob_type, blob_id, encoded, flags, len(data))
        return blob_id

    def flush(self) -> None:
        return

    def shutdown(self) -> None:
        return


class ShareReader(FileReader):
    """Small files read in the walk's thread; big ones handed to the main process."""

    def __init__(
        self,
        repo: Repository,
        chunks: ShareChunks,
        counts: BackupCounts,
        progress: ProgressTracker,
        link: Link,
    ) -> None:
        super().__init__(repo, chunks, counts, progress)
        self.link = link
        self._tokens = 0
        self.opened: dict[str, int] = {}

    # Open files ahead of the walk and have the kernel read them (below): a window of at
    # most this many open files.
    ahead_bytes = 512 * 1024
    ahead_files = 64

    def is_ahead(self, path: str) -> bool:
        return path in self.opened

    def drop(self, path: str) -> None:
        fd = self.opened.pop(path, None)
        if fd is not None:
            os.close(fd)

    def prefetch(self, path: str, size: int) -> None:
        """Open ``path`` and ask the kernel to read it in the background: the reads of
        the window overlap on a cold cache, without a thread (an error is met again,
        and recorded, by :meth:`read_file`)."""
        try:
            fd = self.open(path)
        except OSError:
            return
        self.opened[path] = fd
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)

    def read_file(self, path: str, size: int) -> list[ChunkRef] | None:
        """A small file: one open, one read (one byte more, to notice growth), one close."""
        try:
            fd = self.opened.pop(path, None)
            if fd is None:
                fd = self.open(path)
            try:
                data = os.read(fd, self.small + 1)
            finally:
                os.close(fd)
        except OSError as exc:
            self.counts.error(path, exc)
            return None
        if len(data) > self.small:
            return super().read_file(path, size)  # it grew since stat: chunk it
        self.counts["bytes_read"] += len(data)
        self.progress.bytes_done += len(data)
        return [self.chunks.add(data)] if data else []

    def read_big(self, path: str, category: str) -> Future[list[ChunkRef] | None]:
        self._tokens += 1
        fut: Future[list[ChunkRef] | None] = Future()
        self.link.big[self._tokens] = fut
        self.link.out.send(("big", self._tokens, path, category))
        return fut


class ShareTrees(TreeThread):
    """Stores a directory's tree blob at once, in the walk's thread (post-order already)."""

    def __init__(self, chunks: ShareChunks, link: Link) -> None:  # no thread
        self.share_chunks = chunks
        self.link = link
        self.error = None

    def start(self) -> None:
        return

    def stop(self) -> None:
        return

    def add(self, nodes: list[Node]) -> DirJob:
        kept = []
        for node in nodes:
            content = node.get("content")
            if type(content) is PendingContent:
                fut = content.future
                while fut is not None and not fut.done():
                    self.link.pump()  # a big file read by the main process
                ids = content.ids()
                if ids is None:
                    continue  # unreadable: recorded as an error, left out
                node["content"] = ids
            sub = node.get("subtree")
            if isinstance(sub, DirJob):
                node["subtree"] = sub.id
            kept.append(node)
        job = DirJob(kept)
        job.id = self.share_chunks.store(BLOB_TREE, encode_tree(kept)).hex()
        return job


class ShareWalker(Walker):
    """The walk of a worker: the parent snapshot's trees come from the main process."""

    link: Link

    def prefetch_parent_trees(self, subtrees: list[str]) -> None:
        for sub in subtrees:
            self.link.ask_tree(sub)

    def _load_parent_tree(self, tree_id: object) -> dict[str, Node]:
        if not isinstance(tree_id, str):
            return {}
        data = self.link.tree(tree_id)
        if data is None:
            return {}
        try:
            return {n["name"]: n for n in decode_tree(data, f"tree {tree_id}")}
        except CorruptObject:
            return {}

    def walk_share(self, path: str, rel: str, parent_tree: object) -> DirJob | None:
        return self._walk(self._walk_dir(path, rel, parent_tree, ALL))


def serve(
    repo: Repository,
    out: Connection,
    replies: Connection,
    filt: PathFilter | None,
    events: bool,
    dictionary: Dictionary | None,
) -> None:
    """The worker's life: walk the shares it is sent until told to stop (small data
    blobs compressed with ``dictionary``, the backup's)."""
    link = Link(out, replies, events)
    progress = ProgressTracker("backup", None)
    if link.events is not None:
        progress.on_file = lambda event, path: link.events.append((event, path))  # type: ignore[union-attr]
    link.progress = progress
    counts = BackupCounts()
    chunks = ShareChunks(repo, link, dictionary)
    walker = ShareWalker(
        repo,
        ShareReader(repo, chunks, counts, progress, link),
        ShareTrees(chunks, link),
        counts,
        progress,
    )
    walker.link = link
    walker.filter = filt
    share = -1
    try:
        while (task := link.next_task()) is not None:
            share, path, rel, parent_tree, walker.root_len = task
            counts.reset()
            walker.hardlinks = {}
            job = walker.walk_share(path, rel, parent_tree)
            link.flush()
            keys = list(walker.hardlinks)
            out.send(("done", share, job.id if job else None, dict(counts), counts.errors, keys))
    except BaseException as exc:  # noqa: BLE001 - reported to the main process, which fails
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        with contextlib.suppress(OSError):
            out.send(("failed", share, detail))
