"""Writing blobs: dedup, gather into packs, upload in the background, index as we go.

Thread-safe: worker threads call :meth:`BlobWriter.claim` then :meth:`BlobWriter.add`.
Blobs are appended to the current pack of their *lane*: tree blobs go in packs of their own,
as restic's do, so that a snapshot's trees lie together in a few packs and reading them ahead
(:mod:`safehold.repo.prefetch`) takes a few requests, not one per pack that a tree landed in;
and data blobs compressed with a dictionary go in packs of that dictionary, which holds it as
its first blob (format section 7).
A pack being filled is a temporary file (in
``SAFEHOLD_TMPDIR`` or the system's temporary directory; in memory when there is
none): it lives in the page cache, not in the process's memory, and it is stored from
that file (``storage.FileBody``: copied in the kernel to a local repository, sent in pieces
to S3), so a pack costs memory only where a provider's client reads it whole (GCS,
Azure). A full pack goes to
the uploader threads (as many as the storage's ``uploads_in_flight``); while they
upload, the next fills, and a worker that fills it waits (holding the pack lock) until an
upload slot is free: that bounds memory to about one pack more than the uploads in flight
and pushes back on the readers. Index objects are
written only for packs already stored (packs, then index: format section 10): once
the packs stored since the last one hold :data:`INDEX_EVERY_BYTES` or
:data:`~safehold.repo.index.INDEX_MAX_BLOBS` blobs, and at :meth:`flush` (format section
8 says why).

In format version 2 each pack has its own subkey (section 5a): the buffer of a new
pack starts with its subkey prefix, and :meth:`BlobWriter.add` seals each blob under
the current pack's subkey, outside the pack lock; when the pack was handed off while
it sealed, it seals again under the next pack's key (rare: about one blob per worker
per pack), so that workers keep sealing in parallel.

The first pack that fails for good (after the storage's retries) stops the writer: no
other pack is uploaded, and every later :meth:`add` and :meth:`flush` raises that first
error (:attr:`BlobWriter.error`), so the backup stops promptly and reports the cause. A
repository lock that was lost (:func:`~safehold.repo.locks.check_lock`) stops it the same
way, before the next pack.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo import layout
from safehold.repo.crypto import PackKey, blob_aad, seal_parts
from safehold.repo.dictionary import Dictionary
from safehold.repo.index import INDEX_MAX_BLOBS, IndexFile
from safehold.repo.locks import check_lock
from safehold.repo.pack import (
    BLOB_DICT,
    BLOB_TREE,
    FLAG_DICT,
    EncodedBlob,
    PackBlob,
    Unsealed,
    pack_trailer,
)
from safehold.repo.repository import Repository
from safehold.repo.staging import staging_file
from safehold.storage import FileBody

__all__ = ["INDEX_EVERY_BYTES", "BlobWriter", "WriterStats"]

#: An index object is written once the packs stored since the last one hold this many
#: bytes: what a killed backup may have to upload again (its packs that no index names
#: are not reused). Every index object is a request for each later command that reads the
#: index without a cache (a Job's pod), so they are not written more often than that.
INDEX_EVERY_BYTES = 1 << 30


class WriterStats:
    """Counters of what was written (read by the progress reporter)."""

    def __init__(self) -> None:
        self.blobs_new = 0
        self.raw_new = 0
        self.stored = 0  # bytes of packs and index objects written
        self.packs = 0
        self.index_objects = 0


#: The pack a blob goes to: its type, and for a blob compressed with a dictionary the
#: dictionary's id.
_Lane = tuple[int, bytes | None]


class _OpenPack:
    """A pack being filled: its buffer (starting with its subkey's prefix), subkey, size
    and entries."""

    __slots__ = ("buf", "entries", "key", "size")

    def __init__(self, buf: BinaryIO, key: PackKey) -> None:
        self.buf = buf
        self.key = key
        buf.write(key.prefix)
        self.size = len(key.prefix)
        self.entries: list[PackBlob] = []

    def append(
        self, blob_type: int, flags: int, nonce: bytes, ciphertext: bytes, raw: int, blob_id: bytes
    ) -> int:
        """Write a sealed blob at the end; return its stored size."""
        self.buf.write(nonce)
        self.buf.write(ciphertext)
        stored = len(nonce) + len(ciphertext)
        self.entries.append(PackBlob(blob_type, flags, self.size, stored, raw, blob_id))
        self.size += stored
        return stored


class BlobWriter:
    def __init__(
        self,
        repo: Repository,
        *,
        max_uploads: int | None = None,
        index_bytes: int = INDEX_EVERY_BYTES,
        index_blobs: int = INDEX_MAX_BLOBS,
        pack_size: int | None = None,
        dictionary: Dictionary | None = None,
    ) -> None:
        """``dictionary``: the one that blobs flagged ``FLAG_DICT`` were compressed with,
        unless :meth:`add` names another. ``index_bytes`` and ``index_blobs``: when an
        index object is written before the end (tests make them small)."""
        self.repo = repo
        self.dictionary = dictionary
        self._remembered: set[bytes] = set()
        self.stats = WriterStats()
        self._pending_lock = threading.Lock()
        self._pending: set[bytes] = set()
        self._pack_lock = threading.Lock()
        #: The pack being filled, per lane (started by the lane's first blob).
        self._open: dict[_Lane, _OpenPack] = {}
        self._pack_size = pack_size or repo.config.pack_size
        if max_uploads is None:  # the provider's (storage.base.Storage.uploads_in_flight)
            max_uploads = repo.storage.uploads_in_flight
        self._slots = threading.BoundedSemaphore(max_uploads)
        self._pool = ThreadPoolExecutor(max_uploads, thread_name_prefix="pack-upload")
        self._futures: list[Future[None]] = []
        self._index_lock = threading.Lock()
        self._index_file = IndexFile()
        self._index_bytes = index_bytes
        self._index_blobs = index_blobs
        self._unindexed_bytes = 0  # of the packs in _index_file
        self._unindexed_blobs = 0
        self._error: BaseException | None = None

    @property
    def error(self) -> BaseException | None:
        """The first upload failure: nothing more is uploaded after it."""
        return self._error

    def claim(self, blob_id: bytes) -> bool:
        """True when the caller must store this blob; False when it is stored or being stored."""
        with self._pending_lock:
            if blob_id in self.repo.index or blob_id in self._pending:
                return False
            self._pending.add(blob_id)
            return True

    def add(
        self,
        blob_type: int,
        blob_id: bytes,
        sealed: EncodedBlob,
        flags: int,
        raw: int,
        dictionary: Dictionary | None = None,
    ) -> None:
        """Add a claimed, encoded blob to the current pack of its lane; may block while a
        pack uploads. A blob flagged ``FLAG_DICT`` was compressed with ``dictionary``
        (by default the writer's)."""
        if self._error is not None:
            raise self._error
        if flags & FLAG_DICT:
            dictionary = dictionary or self.dictionary
            if dictionary is None:
                raise ValueError("a blob compressed with a dictionary needs that dictionary")
            lane: _Lane = (blob_type, dictionary.id)
        else:
            lane, dictionary = (blob_type, None), None
        key = (self._open.get(lane) or self._start(lane, dictionary)).key
        if isinstance(sealed, Unsealed):
            nonce, ciphertext = seal_parts(key.aead, sealed.aad, sealed.body)
        elif key.prefix:  # sealed already, but not under this pack's subkey: a bug
            raise TypeError("a version-2 repository's blobs come from BlobEncoder(repo.aead)")
        else:
            nonce, ciphertext = sealed
        with self._pack_lock:
            pack = self._open.get(lane) or self._start_locked(lane, dictionary)
            if isinstance(sealed, Unsealed) and key is not pack.key:
                # sealed for a pack that was handed off meanwhile: seal under this one's key
                nonce, ciphertext = seal_parts(pack.key.aead, sealed.aad, sealed.body)
            pack.append(blob_type, flags, nonce, ciphertext, raw, blob_id)
            self.stats.blobs_new += 1
            self.stats.raw_new += raw
            if pack.size >= self._pack_size:
                self._submit_locked(lane)

    def _start(self, lane: _Lane, dictionary: Dictionary | None) -> _OpenPack:
        with self._pack_lock:
            return self._open.get(lane) or self._start_locked(lane, dictionary)

    def _start_locked(self, lane: _Lane, dictionary: Dictionary | None) -> _OpenPack:
        pack = self._open[lane] = _OpenPack(staging_file(), self.repo.aead.new_pack_key())
        if dictionary is not None:  # a dictionary's pack holds it first (format section 7)
            sealed = seal_parts(pack.key.aead, blob_aad(BLOB_DICT, dictionary.id), dictionary.data)
            pack.append(BLOB_DICT, 0, *sealed, len(dictionary.data), dictionary.id)
            if dictionary.id not in self._remembered:  # the next backup uses it again
                self._remembered.add(dictionary.id)
                self.repo.remember_dictionary(dictionary)
        return pack

    def _submit_locked(self, lane: _Lane) -> None:
        pack = self._open.pop(lane)  # the lane's next blob starts the next one
        buf, entries, key = pack.buf, pack.entries, pack.key
        self._slots.acquire()
        if self._error is not None:  # a pack failed for good: upload no other
            self._slots.release()
            buf.close()
            raise self._error
        try:
            fut = self._pool.submit(self._upload, buf, entries, key.aead)
        except BaseException:
            self._slots.release()
            raise
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(fut)

    def _upload(self, buf: BinaryIO, entries: list[PackBlob], aead: AESGCM) -> None:
        try:
            with buf:
                if self._error is not None:
                    return  # flush() and add() raise the first error
                check_lock(self.repo)
                buf.write(pack_trailer(aead, entries))
                buf.flush()
                # stored from its file (hashed, then copied or sent in pieces), never read
                # whole into memory: see storage/body.py
                body = FileBody(buf)
                size = body.size
                pack = self.repo.save_object("data", body)
                if self.repo.cache is not None and entries[0].type == BLOB_TREE:
                    # the next backup compares against these trees: keep them locally
                    self.repo.cache.remember(layout.pack_object_name(pack), body.read())
            self.repo.index.add_pack(pack, entries)
            with self._pending_lock:
                for e in entries:
                    self._pending.discard(e.id)
                self.stats.stored += size
                self.stats.packs += 1
            with self._index_lock:
                if self._unindexed_blobs + len(entries) > self._index_blobs:
                    self._write_index()  # no index object holds more than index_blobs
                self._index_file.packs[pack] = entries
                self._unindexed_bytes += size
                self._unindexed_blobs += len(entries)
                if (
                    self._unindexed_bytes >= self._index_bytes
                    or self._unindexed_blobs >= self._index_blobs
                ):
                    self._write_index()
        except BaseException as exc:
            if self._error is None:
                self._error = exc
            raise
        finally:
            self._slots.release()

    def _write_index(self) -> None:
        if not self._index_file.packs:
            return
        current, self._index_file = self._index_file, IndexFile()
        self._unindexed_bytes = self._unindexed_blobs = 0
        size = self.repo.write_index(current)[1]
        self.stats.index_objects += 1
        self.stats.stored += size

    def flush(self) -> None:
        """Upload the last partial pack, wait for every upload, write the last index object."""
        with self._pack_lock:
            for lane in [lane for lane, pack in self._open.items() if pack.entries]:
                self._submit_locked(lane)
            futures = list(self._futures)
        for fut in futures:
            fut.result()
        if self._error is not None:
            raise self._error
        with self._index_lock:
            self._write_index()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for pack in self._open.values():
            pack.buf.close()
        self._open = {}
