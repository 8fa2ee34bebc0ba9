"""A file of the snapshot restored: its chunks planned, fetched pack by pack, and written.

Files are created at their final size first (``ftruncate``, so holes stay holes), then chunks
are written with ``pwrite`` in parallel, pack by pack: each pack's needed blobs are fetched
with one ranged read where they lie close together, and every blob is authenticated and
checked against its id before it is written. Reads and writes are two stages: a few fetch
threads keep reads in flight (object stores are latency-bound), and one thread per available
CPU decodes and writes (more would only hand the GIL and the target directories' locks back
and forth). A file of one chunk (most files) is created, written and completed by the worker
that writes its chunk, through one descriptor.

A file's metadata (mode, owner, times) is set only after all its bytes are written, so a file
whose size and mtime match the snapshot is complete: a second run after a crash skips those
and redoes the rest. Work is done in batches of files, so memory does not grow with the file
count. :meth:`FileWriter.file` is the one way a file is restored, whether the target is new
or holds an earlier run, and whether the restore is one process or several.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import defaultdict
from collections.abc import Iterator
from typing import TypeVar

from safehold.engine.restore.safe_fs import NEW_FILE_FLAGS, clear
from safehold.engine.restore.state import (
    MAX_READ,
    Batch,
    Dir,
    FileMeta,
    PendingFile,
    RestoreState,
    Uses,
    add_use,
    has_other_links,
    uses_of,
)
from safehold.engine.restore.stream import PackRange, PackStream, WholeRange
from safehold.repo import BLOB_DATA, CorruptObject, Node, pack_object_name
from safehold.repo.crypto import SealError
from safehold.repo.dictionary import Dictionary
from safehold.repo.pack import FLAG_DICT, decode_blob
from safehold.storage import StorageError, close_stream

__all__ = ["FileWriter"]

_GAP = 1024 * 1024  # read across gaps up to this size rather than issuing another request
#: A read whose first blob lies this close to the pack's start begins at byte 0: the pack's
#: prefix (format version 2: its subkey) comes with it, not in a request of its own.
_HEAD = 64 * 1024
_MAX_GROUP = 48  # blobs per read by default (state.py's tuning decides)
#: From an object store, a range of more blobs than this is decoded as its body arrives
#: (engine/restore/stream.py): its files take long to create, and the range would be held
#: whole meanwhile. Fewer, larger blobs are written in milliseconds: read whole, their
#: download runs ahead of the writes (session 14 in docs/performance.md).
STREAM_MIN_BLOBS = 64
_SPARSE_PIECE = 64 * 1024  # holes are punched at this granularity in sparse files
_T = TypeVar("_T")
#: A chunk to fetch: id, blob type, flags, offset and length in its pack, plain length.
_Blob = tuple[bytes, int, int, int, int, int]
#: Uses of chunks in files: per chunk id, the files and offsets it is written at.
_Plan = dict[bytes, Uses]


class FileWriter(RestoreState):
    """Files planned by the walk, their chunks fetched and written in the background."""

    # ------------------------------------------------------------ planning a file
    def file(
        self,
        where: Dir,
        name: str,
        path: str,
        rel: str,
        node: Node,
        fresh: bool,
        mine: bool = True,
    ) -> None:
        """Restore the file ``node`` as the entry ``name`` of ``where`` (``rel`` in the
        snapshot). ``fresh``: nothing of an earlier run can be there. ``mine``: this part
        restores it (with several processes, see :mod:`safehold.engine.restore.parts`).

        A hard link whose first name is selected waits for
        :meth:`~safehold.engine.restore.finish.Restore.finish`. With several
        processes, the chunks of a file of several chunks are shared out by stripe, and
        part 0 sets its size and metadata once every part is done (one step more than its
        chunks, so that no part counts it complete). Otherwise the file is this part's or
        not; a file of one chunk is created by the worker that writes it, a larger or empty
        one here, at its size."""
        link = node.get("hardlink")
        if isinstance(link, str) and (self.selection is None or self.selection.selects(link)):
            if self.part == 0:
                self.hardlinks.append((where.rel, name, path, link, node))
            return
        content = node.get("content", [])
        shared = self.nparts > 1 and len(content) > 1
        linked = has_other_links(node)
        if not (mine or shared):
            if self.part == 0 and linked:
                self.restored.add(rel)  # by another part: a hard link may point to it
            return
        size = int(node.get("size", 0))
        ids = [bytes.fromhex(c) for c in content]  # a crafted tree fails here, before any write
        if not fresh and self._earlier_run(where, name, path, rel, node, size):
            return
        count = len(ids)
        if count != 1 and not shared:
            try:  # created here, at its size (or complete, when empty)
                fd = os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=where.fd)
                try:
                    os.ftruncate(fd, size)
                    if not count:
                        self._meta_fd(fd, path, FileMeta(node))
                finally:
                    os.close(fd)
            except OSError as exc:
                self._error(path, f"cannot create file: {exc.strerror}")
                return
        if linked:
            self.restored.add(rel)
        if not count:
            with self.lock:
                self.result.files += 1
                self.progress.files_done += 1
            self.progress.file("restored", path)
            return
        pending = PendingFile(where, name, FileMeta(node), count + shared, size, count == 1)
        if shared and self.part == 0:
            self.deferred.append(pending)
        self._plan_chunks(pending, ids, shared)
        self._planned(pending)

    def _earlier_run(
        self, where: Dir, name: str, path: str, rel: str, node: Node, size: int
    ) -> bool:
        """In a target that may hold an earlier run: True when the file is there complete
        (skipped) or cannot be inspected (reported); else whatever is there is removed, not
        written through (a symlink, or a file that may be a hard link to one elsewhere)."""
        dir_fd = where.fd
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            self._error(path, f"cannot inspect: {exc.strerror}")
            return True
        if (
            stat.S_ISREG(st.st_mode)
            and st.st_size == size
            and st.st_mtime_ns == int(node.get("mtime_ns", -1))
        ):
            self.result.files_skipped += 1
            self.progress.files_done += 1
            self.progress.bytes_done += size
            self.progress.file("skipped", path)
            if has_other_links(node):
                self.restored.add(rel)
            return True
        try:
            clear(name, dir_fd)
        except OSError as exc:
            self._error(path, f"cannot create file: {exc.strerror}")
            return True
        return False

    def _plan_chunks(self, pending: PendingFile, ids: list[bytes], shared: bool) -> None:
        """Put the file's chunks (this part's share, when ``shared``) in the plan, at their
        offsets; a chunk in no index or chunks that do not add up fail the file (reported
        once: by part 0 when shared)."""
        offset = 0
        raw_size = self.repo.index.raw_size
        owner = self._owner
        plan = self.plan
        part, nparts = self.part, self.nparts
        report = not shared or part == 0
        for blob_id in ids:
            raw = raw_size(blob_id)
            if raw is None:
                pending.failed = True
                if report:
                    self._error(pending.path, f"chunk {blob_id.hex()} is in no index: data lost")
                return
            if not shared or owner(blob_id, nparts) == part:
                add_use(plan, blob_id, pending, offset)
                self.plan_uses += 1
            offset += raw
        if offset != pending.size:
            pending.failed = True
            if report:
                self._error(
                    pending.path,
                    f"chunks add up to {offset} bytes, the snapshot says {pending.size}",
                )

    def _planned(self, pending: PendingFile) -> None:
        """Add a file whose chunks are in the plan to the batch; run the batch when full.
        The batch holds the file's directory open until its chunks are written."""
        where, batch = pending.dir, self.batch
        if where.batch is not batch:
            where.batch = batch
            with self.lock:
                where.refs += 1
            batch.dirs.append(where)
        self.batch_files.append(pending)
        if (
            self.plan_uses >= self.batch_blobs_max
            or len(self.batch_files) >= self.batch_files_max
            or len(batch.dirs) >= self.batch_dirs
        ):
            self.run_batch()

    # ------------------------------------------------------------ data
    def _owner(self, blob_id: bytes, nparts: int) -> int:
        """The part that reads and writes a chunk of a file the parts share: by where the
        chunk lies, so that a part's chunks of a pack lie together and it reads them in few
        requests (shared out by chunk id, neighbours alternated between parts, and each part
        read every other chunk). A chunk that several files share is still read by one
        part.

        From a local repository, by stripes of ``self.stripe`` bytes of its pack: a pack's
        stripes alternate between the parts. From an object store by the pieces of the
        packs, which the parts share out by their cost
        (:func:`~safehold.engine.restore.shares.share_packs`, by their numbers in the index:
        every part has the index it inherited, so all agree without a word, whatever each
        could read of the trees): by the pack's hash, a restore of 11 packs gave one part 2
        and the other 9, and took twice as long as a balanced one."""
        if nparts == 1:
            return 0
        if self.own_by_stripe:
            place = self.repo.index.pack_place(blob_id)
            assert place is not None  # the caller checked
            return self.pack_parts[place[0]].owner(place[1])
        loc = self.repo.index.lookup(blob_id)
        assert loc is not None  # the caller checked
        return (int(loc.pack[:8], 16) + loc.offset // self.stripe) % nparts

    def run_batch(self) -> None:
        """Submit the planned chunks, pack by pack, to the pool.

        A bounded number of reads is in flight (the walk waits for a slot), so the
        walk, the reads and the writes overlap without a batch ever waiting for its
        slowest read, and memory stays bounded.
        """
        plan, self.plan, self.plan_uses = self.plan, {}, 0
        batch, self.batch = self.batch, Batch()
        self.batch_files = []
        by_pack: dict[str, list[_Blob]] = defaultdict(list)
        lookup = self.repo.index.lookup
        for blob_id in plan:
            loc = lookup(blob_id)
            assert loc is not None
            pack, blob_type, flags, offset, stored, raw = loc
            by_pack[pack].append((blob_id, blob_type, flags, offset, stored, raw))
        groups = [
            (pack, group)
            for pack, blobs in by_pack.items()
            for group in _groups(sorted(blobs, key=lambda b: b[3]), self.max_read, self.max_group)
        ]
        for pack, group in _interleave(groups):
            with self.idle:
                while self.inflight >= self.limit and self.crash is None:
                    self.idle.wait()
                self._raise_crash()
                self.inflight += 1
                batch.pending += 1
            try:
                self.fetch_pool.submit(self._fetch_group, pack, group, plan, batch)
            except BaseException:
                self._group_done(batch)
                raise
        with self.lock:  # submitted: the batch ends with its last group
            self._batch_step(batch)

    def _batch_step(self, batch: Batch) -> None:
        """One of the batch's groups is done (or its submission): after the last, let go of
        its directories. Called with the lock held."""
        batch.pending -= 1
        if batch.pending == 0:
            for where in batch.dirs:
                self._release_locked(where)
            batch.dirs = []

    def _group_done(self, batch: Batch, crash: BaseException | None = None) -> None:
        with self.idle:
            self.inflight -= 1
            self._batch_step(batch)
            if crash is not None and self.crash is None:
                self.crash = crash
            self.idle.notify_all()
        if self.part:
            self.parts.publish(self.progress.files_done, self.progress.bytes_done)

    def _raise_crash(self) -> None:
        """Re-raise, in the walking thread, a bug that stopped a fetch or write thread."""
        if self.crash is not None:
            raise self.crash

    def _done(self, pending: PendingFile) -> None:
        """All of a file's bytes are written: its metadata last (this marks it complete)."""
        if not pending.meta_done:
            self._file_meta(pending)
        with self.lock:
            self.result.files += 1
            self.progress.files_done += 1
        self.progress.file("restored", pending.path)

    def _fetch_group(
        self,
        pack: str,
        group: list[_Blob],
        plan: _Plan,
        batch: Batch,
    ) -> None:
        """Stage one: read a group's byte range, then hand it to a worker (stage two)."""
        start = group[0][3]
        if start <= _HEAD:
            start = 0
        end = group[-1][3] + group[-1][4]
        name = pack_object_name(pack)
        if start and self.nparts > 1:
            # A part that owns only a later piece of the pack needs its subkey prefix
            # (format section 5a): one small read, here rather than in a worker. A failure
            # is reported where the key is used.
            with contextlib.suppress(CorruptObject, StorageError):
                self.repo.pack_aead(pack)
        if self.streams and len(group) > STREAM_MIN_BLOBS:  # decoded as it arrives (stream.py)
            pieces = self.repo.storage.get_stream(name, start, end - start)
            try:
                first = next(pieces, b"")  # the round trip, here rather than in a worker
                self.pool.submit(
                    self._write_group, pack, group, plan, PackStream(pieces, first), start, batch
                )
            except StorageError as exc:
                self._unread(pack, group, plan, exc)
                self._group_done(batch)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the walking thread
                close_stream(pieces)
                self._group_done(batch, exc)
            return
        try:
            data = WholeRange(memoryview(self.repo.storage.get(name, start, end - start)))
            self.pool.submit(self._write_group, pack, group, plan, data, start, batch)
        except StorageError as exc:
            self._unread(pack, group, plan, exc)
            self._group_done(batch)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the walking thread
            self._group_done(batch, exc)

    def _write_group(
        self,
        pack: str,
        group: list[_Blob],
        plan: _Plan,
        data: PackRange,
        start: int,
        batch: Batch,
    ) -> None:
        """Stage two: authenticate, decode, check and write a group's chunks (``data``
        begins at byte ``start`` of the pack)."""
        crash: BaseException | None = None
        try:
            self._write_chunks(pack, group, plan, data, start)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the walking thread
            crash = exc
        data.close()  # a stream's response, read to its last blob or not
        self._group_done(batch, crash)

    def _write_chunks(
        self,
        pack: str,
        group: list[_Blob],
        plan: _Plan,
        data: PackRange,
        start: int,
    ) -> None:
        try:  # format version 2: the pack's own subkey, from its first bytes
            head = data.take(0, self.repo.aead.prefix_size) if start == 0 else None
            aead = self.repo.pack_aead(pack, head)
        except CorruptObject as exc:
            for blob_id, *_ in group:
                self._fail(uses_of(plan[blob_id]), f"chunk {blob_id.hex()} cannot be read ({exc})")
            return
        except StorageError as exc:  # a stream that failed before the first blob
            self._unread(pack, group, plan, exc)
            return
        dictionary: Dictionary | None = None
        if any(blob[2] & FLAG_DICT for blob in group):
            # Read once per process (format section 7): from this range when it holds it
            # (it leads the pack, and a range that starts within _HEAD starts at 0), else
            # in a read of its own. When it cannot be read, its blobs fail below, each
            # naming the pack.
            where = self.repo.index.dictionary_of(pack)
            if start == 0 and where is not None and not self.repo.has_dictionary(where.id):
                with contextlib.suppress(CorruptObject, StorageError):
                    sealed = data.take(where.offset, where.stored)
                    dictionary = self.repo.open_pack_dictionary(pack, sealed)
            if dictionary is None:
                with contextlib.suppress(CorruptObject, StorageError):
                    dictionary = self.repo.pack_dictionary(pack)
        id_of = self.repo.keys.blob_id
        for i, (blob_id, blob_type, flags, offset, stored, raw) in enumerate(group):
            uses = uses_of(plan[blob_id])
            try:
                sealed = data.take(offset - start, stored)
            except StorageError as exc:  # the stream broke (retried already): the rest fail
                self._unread(pack, group[i:], plan, exc)
                return
            try:
                if len(sealed) != stored or blob_type != BLOB_DATA:
                    raise ValueError("pack is shorter than the index says")
                plain = decode_blob(aead, blob_type, blob_id, flags, raw, sealed, dictionary)
                if id_of(plain) != blob_id:
                    raise ValueError("content does not match its id")
            except (SealError, ValueError) as exc:
                self._fail(uses, f"chunk {blob_id.hex()} in pack {pack} is damaged ({exc})")
                continue
            zero = (
                plain[:1] == b"\0"
                and plain[-1:] == b"\0"
                and memoryview(self.zero)[: len(plain)] == plain
            )
            n = len(plain)
            for pending, offset_in_file in uses:
                if pending.failed:
                    continue
                try:
                    if pending.create:
                        self._create(pending, plain, zero)
                    elif not zero:  # a zero range of a file created at its size is a hole
                        self._write_at(pending, plain, offset_in_file)
                except OSError as exc:
                    self._fail([(pending, offset_in_file)], f"cannot write: {exc.strerror}")
                    continue
                with self.lock:
                    pending.remaining -= 1
                    last = pending.remaining == 0
                    self.result.bytes_written += n
                    self.progress.bytes_done += n
                    if last and pending.meta_done:  # _create set the metadata: count it here
                        self.result.files += 1
                        self.progress.files_done += 1
                if last and pending.meta_done:
                    self.progress.file("restored", pending.path)
                if last and not pending.meta_done:
                    self._done(pending)

    def _unread(self, pack: str, group: list[_Blob], plan: _Plan, exc: StorageError) -> None:
        """The files of a group's chunks fail: the pack could not be read."""
        for blob_id, *_ in group:
            self._fail(uses_of(plan[blob_id]), f"pack {pack} cannot be read: {exc}")

    def _create(self, pending: PendingFile, plain: bytes, zero: bool) -> None:
        """Create a file of one chunk, write it and set its metadata through one file
        descriptor, in a worker (one lookup, in its directory's descriptor: a new entry,
        never anything that was there, a symlink least of all)."""
        mode, uid, gid, atime_ns, mtime_ns, sparse = pending.meta.fields()
        fd = os.open(pending.name, NEW_FILE_FLAGS, mode & 0o777, dir_fd=pending.dir.fd)
        try:
            if zero:
                os.ftruncate(fd, pending.size)
            elif sparse:
                self._write_sparse(fd, plain, 0)
                os.ftruncate(fd, pending.size)
            else:
                os.write(fd, plain)
            try:
                if self.owners and (self.chown_always or uid != self.euid or gid != self.egid):
                    os.fchown(fd, uid, gid)
                # the mode open() gave (umask applied), unless chown cleared set-id bits
                if mode != mode & 0o777 & ~self.umask:
                    os.fchmod(fd, mode)
                os.utime(fd, ns=(atime_ns, mtime_ns))
            except OSError as exc:
                self._error(pending.path, f"metadata: {exc.strerror}")
            pending.meta_done = True
        finally:
            os.close(fd)

    def _write_at(self, pending: PendingFile, plain: bytes, offset: int) -> None:
        """Write one chunk of a file of several, created at its size by the walk (or, when
        the restore is split between processes, by whichever part writes to it first)."""
        create = os.O_CREAT if self.nparts > 1 else 0
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | create
        fd = os.open(pending.name, flags, 0o600, dir_fd=pending.dir.fd)
        try:
            if pending.meta.sparse:
                self._write_sparse(fd, plain, offset)
            else:
                os.pwrite(fd, plain, offset)
        finally:
            os.close(fd)

    def _write_sparse(self, fd: int, plain: bytes, offset: int) -> None:
        """Write a chunk of a sparse file, leaving aligned all-zero pieces as holes."""
        view = memoryview(plain)
        zero = memoryview(self.zero)
        pos = 0
        while pos < len(view):
            end = min(len(view), pos + _SPARSE_PIECE - (offset + pos) % _SPARSE_PIECE)
            piece = view[pos:end]
            if piece != zero[: len(piece)]:
                os.pwrite(fd, piece, offset + pos)
            pos = end

    def _fail(self, uses: list[tuple[PendingFile, int]], message: str) -> None:
        for pending, _ in uses:
            with self.lock:
                if pending.failed:
                    continue
                pending.failed = True
            self._error(pending.path, message)

    # ------------------------------------------------------------ the end

    def drain(self) -> None:
        self.run_batch()
        with self.idle:
            while self.inflight:
                self.idle.wait()
            self._raise_crash()


def _groups(
    blobs: list[_Blob], max_read: int = MAX_READ, max_group: int = _MAX_GROUP
) -> Iterator[list[_Blob]]:
    """Split a pack's needed blobs (sorted by offset) into ranges worth one read each."""
    group: list[_Blob] = []
    for blob in blobs:
        if group:
            start = group[0][3]
            prev_end = group[-1][3] + group[-1][4]
            if (
                blob[3] - prev_end > _GAP
                or blob[3] + blob[4] - start > max_read
                or len(group) >= max_group
            ):
                yield group
                group = []
        group.append(blob)
    if group:
        yield group


def _interleave(items: list[_T]) -> Iterator[_T]:
    """The first half and the second half of ``items`` in turns: neighbouring groups
    hold the files of one directory, and two threads creating files in one directory
    wait for each other on its lock in the kernel."""
    half = (len(items) + 1) // 2
    for i in range(half):
        yield items[i]
        if half + i < len(items):
            yield items[half + i]
