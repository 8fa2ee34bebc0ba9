"""The chunk pool: worker threads hash (keyed BLAKE3), deduplicate, compress (zstd) and
seal (AES-GCM) chunks in batches; all of it releases the GIL. A byte budget bounds the
data in flight between the readers and the workers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from safehold.engine.backup.pending import BATCH_BYTES, BATCH_COUNT, Batch, ChunkRef
from safehold.repo import BLOB_DATA, BlobEncoder, BlobWriter, Repository

__all__ = ["ChunkPool"]

_INFLIGHT_BYTES = 8 * 1024 * 1024


class _Budget:
    """Bytes in flight between the reader and the workers; blocks the reader when full."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cond:
            while self.used and self.used + n > self.limit:
                self._cond.wait()
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class ChunkPool:
    """The workers and the walk's current batch; big-file threads fill batches of their
    own (:meth:`put`) and hand them in with :meth:`submit`."""

    def __init__(self, repo: Repository, writer: BlobWriter, workers: int) -> None:
        self.repo = repo
        self.writer = writer
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="chunk")
        self.budget = _Budget(_INFLIGHT_BYTES)
        self.batch = Batch()
        self._local = threading.local()

    def encoder(self) -> BlobEncoder:
        """This thread's encoder (its compressor is not thread-safe)."""
        enc: BlobEncoder | None = getattr(self._local, "encoder", None)
        if enc is None:
            level = self.repo.config.compression_level
            enc = BlobEncoder(self.repo.aead, level, self.writer.dictionary)
            self._local.encoder = enc
        return enc

    def _process(self, views: list[memoryview | bytes], nbytes: int) -> list[bytes]:
        try:
            keys = self.repo.keys
            writer = self.writer
            enc = self.encoder()
            ids = []
            for view in views:
                blob_id = keys.blob_id(view)
                if writer.claim(blob_id):
                    sealed, flags = enc.encode(BLOB_DATA, blob_id, view)
                    writer.add(BLOB_DATA, blob_id, sealed, flags, len(view))
                ids.append(blob_id)
            return ids
        finally:
            self.budget.release(nbytes)

    def add(self, view: memoryview | bytes) -> ChunkRef:
        """Put a chunk of the walk into the current batch (sent when full)."""
        if self.writer.error is not None:  # a pack failed for good: stop reading now
            raise self.writer.error
        n = len(view)
        self.budget.acquire(n)
        batch = self.batch
        batch.views.append(view)
        batch.nbytes += n
        slot = (batch, len(batch.views) - 1)
        if batch.nbytes >= BATCH_BYTES or len(batch.views) >= BATCH_COUNT:
            self.flush()
        return slot

    def put(self, batch: Batch, data: bytes) -> tuple[tuple[Batch, int], bool]:
        """Put a chunk into a batch of a big-file thread: its place, and whether the
        batch is full (then :meth:`submit` it and start a new one)."""
        n = len(data)
        self.budget.acquire(n)
        batch.views.append(data)
        batch.nbytes += n
        return (batch, len(batch.views) - 1), (
            batch.nbytes >= BATCH_BYTES or len(batch.views) >= BATCH_COUNT
        )

    def flush(self) -> None:
        """Send the walk's current batch to the workers."""
        batch = self.batch
        if not batch.views:
            return
        self.batch = Batch()
        self.submit(batch)

    def submit(self, batch: Batch) -> None:
        if batch.views:
            batch.future = self.pool.submit(self._process, batch.views, batch.nbytes)
            batch.views = []

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
