"""What one restore process holds while it runs: the target's open directories, the files
whose chunks are being written, the thread pools, and the metadata setters.

:class:`RestoreState` is the base of the restore's three stages, each in its module:
:mod:`~safehold.engine.restore.write` (a file's chunks, fetched and written),
:mod:`~safehold.engine.restore.walk` (the snapshot's trees, walked into the target) and
:mod:`~safehold.engine.restore.finish` (what needs every file: hard links, directories'
metadata, the parts' results).
"""

from __future__ import annotations

import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

from safehold.engine.ahead import TreesAhead
from safehold.engine.progress import ProgressTracker
from safehold.engine.restore.options import RestoreOptions, RestoreResult
from safehold.engine.restore.parts import Parts
from safehold.engine.restore.safe_fs import chmod_entry, may_chown, open_rel, raise_fd_limit
from safehold.engine.restore.select import Selection
from safehold.engine.restore.shares import share_packs
from safehold.engine.tuning import available_cpus
from safehold.repo import Node, Repository, Snapshot

__all__ = ["MAX_READ", "Batch", "Dir", "PendingFile", "RestoreState", "Uses", "add_use", "uses_of"]

MAX_READ = 4 * 1024 * 1024  # at most this much per read, so several workers share a pack
_MIN_READ = 1024 * 1024
#: Reads in flight (shared out between the parts): a local disk answers at once, an object
#: store after a round trip, so more wait at a time. With reads of 4 MiB, 16 in all beat 8
#: (SeaweedFS, two parts: 1.62 s against 1.81 s); with reads of whole packs 8 were as fast
#: (mixed set 1.31 s against 1.34 s, small files 9.6 s against 9.3 s, same GETs) and 4 are
#: too, holding two packs less per part (with the packs mapped, engine/tuning.py: mixed set
#: at 0.3, 174-181 MB instead of 231-237 MB, 1.47-1.62 s against 1.50-1.67 s; sessions 9
#: and 12 in docs/performance.md).
_FETCHERS_LOCAL = 4
_FETCHERS_REMOTE = 4
#: Blobs one read asks for at most, from a local repository: few, so that the small files of
#: a pack are written by several workers. From an object store there is no such cap: a read
#: takes every needed blob of its range (the whole pack, when all of it is needed), since
#: every request is a round trip and is billed (session 9 in docs/performance.md).
_MAX_GROUP_LOCAL = 48
_MAX_GROUP_REMOTE = 1 << 30
#: Files and chunk uses planned before a batch's reads start. Reads never span two batches,
#: so from an object store a batch is large: with batches of 5,000 files every pack the
#: 100,000 small files lie in was read in several pieces (179 GETs, 116 MB downloaded for
#: 80 MB of packs; with these 21 GETs, 80 MB). Memory: a planned file of one chunk holds ~350
#: bytes (its entry, name, size, packed metadata, chunk id and plan slot; tracemalloc).
BATCH_FILES_LOCAL, BATCH_BLOBS_LOCAL = 5000, 20000
BATCH_FILES_REMOTE, BATCH_BLOBS_REMOTE = 100_000, 200_000
#: Opens a file this restore wrote to set its metadata (never blocks, never follows).
_META_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: :class:`FileMeta`: mode, uid, gid, atime_ns, mtime_ns, sparse
_META = struct.Struct("<Iqqqq?")


def has_other_links(node: Node) -> bool:
    """Whether the file's node counts other links (or says nothing of them): only such a
    file can be a hard link's first name, so only its path is remembered in ``restored``
    (a set of every file's path would cost 10 MB per 100,000 files, never read)."""
    return bool(node.get("links", 2) != 1)


class Batch:
    """Files planned together: the directories they are in stay open until every group of
    chunks of the batch is written (``pending``: groups not done, plus one while the batch
    is being submitted)."""

    __slots__ = ("dirs", "pending")

    def __init__(self) -> None:
        self.dirs: list[Dir] = []
        self.pending = 1


class Dir:
    """A directory of the target, open while the walk or the files being written in it
    need it: its entries are created and changed relative to ``fd``, never through a path
    (which a symlink could redirect). ``refs``: the walk's, plus one per batch with files
    in it; the last to let go closes it."""

    __slots__ = ("batch", "fd", "path", "refs", "rel")

    def __init__(self, fd: int, path: str, rel: str) -> None:
        self.fd = fd
        self.path = path  # for messages: the target's path, ending in "/"
        self.rel = rel  # in the snapshot: names joined by "/", "" for the target
        self.refs = 1
        self.batch: Batch | None = None


class FileMeta(bytes):
    """What setting a restored file's (or directory's) metadata takes from its node, packed
    into one ``bytes``: a restore from an object store plans up to 100,000 files before its
    reads start, so what a pending file keeps is paid that many times. The node itself is
    ~1 KB once decoded (pending files that kept it held 100 MB for 100,000 small files); an
    object with a slot per field still held ~200 bytes with its ints; packed, ~70 bytes.
    :meth:`fields` unpacks them all at once."""

    __slots__ = ()

    def __new__(cls, node: Node) -> FileMeta:
        try:
            packed = _META.pack(
                int(node.get("mode", 0o644)) & 0o7777,
                int(node.get("uid", -1)),
                int(node.get("gid", -1)),
                int(node.get("atime_ns", 0)),
                int(node.get("mtime_ns", 0)),
                bool(node.get("sparse")),
            )
        except struct.error as exc:  # only a crafted tree: reported as a malformed entry
            raise ValueError(f"metadata out of range: {exc}") from None
        return super().__new__(cls, packed)

    def fields(self) -> tuple[int, int, int, int, int, bool]:
        """mode, uid, gid, atime_ns, mtime_ns, sparse"""
        mode, uid, gid, atime_ns, mtime_ns, sparse = _META.unpack(self)
        return mode, uid, gid, atime_ns, mtime_ns, sparse

    @property
    def sparse(self) -> bool:
        return bool(_META.unpack(self)[5])


class PendingFile:
    """A file whose chunks are being written: the entry ``name`` of ``dir``. ``create``:
    the writer of its only chunk creates it (most files are one chunk: this moves their
    creation into the workers)."""

    __slots__ = (
        "create",
        "dir",
        "failed",
        "meta",
        "meta_done",
        "name",
        "remaining",
        "size",
    )

    def __init__(
        self,
        where: Dir,
        name: str,
        meta: FileMeta,
        remaining: int,
        size: int,
        create: bool,
    ) -> None:
        self.dir = where
        self.name = name
        self.meta = meta
        self.remaining = remaining
        self.size = size
        self.create = create
        self.failed = False
        self.meta_done = False

    @property
    def path(self) -> str:
        """For messages and progress: made when asked, not kept (a string per planned
        file)."""
        return self.dir.path + self.name


#: What the plan holds for a chunk: the one file that needs it, at offset 0 (most chunks:
#: a list and a tuple for each would cost ~190 bytes per planned file), or every file and
#: offset that needs it (:func:`uses_of`).
Uses = PendingFile | list[tuple[PendingFile, int]]


def uses_of(entry: Uses) -> list[tuple[PendingFile, int]]:
    """The files and offsets a chunk is written at, from its entry in the plan."""
    return entry if isinstance(entry, list) else [(entry, 0)]


def add_use(plan: dict[bytes, Uses], blob_id: bytes, pending: PendingFile, offset: int) -> None:
    """Plan the chunk ``blob_id`` to be written into ``pending`` at ``offset``."""
    entry = plan.get(blob_id)
    if entry is None:
        plan[blob_id] = pending if offset == 0 else [(pending, offset)]
    elif isinstance(entry, list):
        entry.append((pending, offset))
    else:
        plan[blob_id] = [(entry, 0), (pending, offset)]


class RestoreState:
    """One process's restore: what its stages share (see the module's docstring)."""

    def __init__(
        self,
        repo: Repository,
        snap: Snapshot,
        target: str,
        options: RestoreOptions,
        progress: ProgressTracker,
        parts: Parts,
        selection: Selection | None = None,
    ) -> None:
        self.repo = repo
        self.parts = parts
        self.selection = selection
        self.part, self.nparts = parts.part, parts.count
        self.target = target
        self.options = options
        self.progress = progress
        self.owners = may_chown() if options.owners is None else options.owners
        self.result = RestoreResult(snap)
        self.plan: dict[bytes, Uses] = {}
        self.plan_uses = 0
        self.batch_files: list[PendingFile] = []
        self.dirs: list[tuple[str, str, Node]] = []  # rel, path, node
        self.hardlinks: list[tuple[str, str, str, str, Node]] = []  # dir rel, name, path, link
        #: Snapshot paths of the files with other links (:func:`has_other_links`) restored
        #: or complete so far: a hard link to one of them is linked to it, else written
        #: from its own content.
        self.restored: set[str] = set()
        self.deferred: list[PendingFile] = []  # part 0: files of several chunks, with parts
        self.dir_no = 0  # directories walked: with an entry's position, who restores it
        self.lock = threading.Lock()
        self.zero = bytes(repo.config.chunker.max_size)
        # Batches run in the background while the walk plans the next one. A group of
        # chunks is read by a fetch thread, then decoded and written by a worker; at most
        # ``limit`` groups are in flight, which bounds memory.
        workers = options.workers or max(1, available_cpus() // self.nparts)
        local = repo.storage.location.startswith("file:")
        fetchers = options.fetchers or (_FETCHERS_LOCAL if local else _FETCHERS_REMOTE)
        fetchers = max(1, fetchers // self.nparts)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="restore")
        self.fetch_pool = ThreadPoolExecutor(fetchers, thread_name_prefix="restore-fetch")
        self.limit = fetchers + workers
        # With parts, each reads less at a time from a local repository, so that their
        # buffers together take about what one process's take (measured: no slower, 20 MB
        # less memory with two). From an object store a read takes up to a whole pack (a
        # request is a round trip; a pack ends with the blob that takes it past its size):
        # a part reads each piece of a pack it owns (shares.share_packs) in one request, and
        # both pieces in one when it owns both.
        pack_read = max(MAX_READ, repo.config.pack_size + repo.config.chunker.max_size)
        self.max_read = max(MAX_READ // self.nparts, _MIN_READ) if local else pack_read
        self.stripe = MAX_READ
        self.max_group = _MAX_GROUP_LOCAL if local else _MAX_GROUP_REMOTE
        self.batch_files_max = BATCH_FILES_LOCAL if local else BATCH_FILES_REMOTE
        self.batch_blobs_max = BATCH_BLOBS_LOCAL if local else BATCH_BLOBS_REMOTE
        #: From an object store, parts own one-chunk files by where their chunk lies (the
        #: pieces of FileWriter._owner), so that each reads only its own share of a pack;
        #: owned by runs of a directory's entries, their blobs alternate within a pack and
        #: every part's reads span the other's (twice the bytes downloaded).
        self.own_by_stripe = not local and self.nparts > 1
        #: Then the part of each piece of each pack, by pack number (shares.share_packs).
        self.pack_parts = (
            share_packs(repo.index.pack_loads(), self.nparts) if self.own_by_stripe else []
        )
        #: From an object store a range is decoded and written as its body arrives
        #: (engine/restore/stream.py); a local repository's reads are quick and small.
        self.streams = not local
        self.inflight = 0
        self.idle = threading.Condition(self.lock)
        self.crash: BaseException | None = None
        self.tree_pool = ThreadPoolExecutor(2, thread_name_prefix="restore-trees")
        self.trees_ahead: TreesAhead[list[Node]] = TreesAhead(self.tree_pool, repo.load_tree)
        self.euid, self.egid = os.geteuid(), os.getegid()
        umask = os.umask(0o022)
        os.umask(umask)
        self.umask = umask
        # A new file belongs to our uid and gid, unless a directory it is created in is
        # set-group-id: only in a fresh tree under a target without that bit is it safe to
        # skip chown for files that are ours anyway.
        self.chown_always = True
        # The target (a path the caller chose, followed if it is a symlink) is the one path
        # opened by name; everything under it is opened relative to it. It stays open to
        # the end (two references: the walk's and this object's).
        root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.root = Dir(root_fd, target if target.endswith("/") else target + "/", "")
        self.root.refs = 2
        self.open_dirs: set[Dir] = {self.root}
        self.batch = Batch()
        # Directories a batch may hold open: with the batches in flight, well within the
        # limit of open files (one file per directory is the worst case).
        fd_limit = raise_fd_limit()
        self.batch_dirs = max(16, fd_limit // (2 * (self.limit + 2)))
        # Directories reopened at the end (metadata, hard links, files that parts shared):
        # by their path in the snapshot, one component at a time, kept open while needed.
        self.rel_fds: dict[str, int] = {}
        self.rel_fds_max = max(64, fd_limit // 4)

    # ------------------------------------------------------------ helpers
    def _error(self, path: str, message: str) -> None:
        with self.lock:
            self.result.errors.append({"path": path, "error": message})

    def _meta_fd(self, fd: int, path: str, meta: FileMeta) -> None:
        """Owner, mode and times of a file or directory, through its own descriptor."""
        mode, uid, gid, atime_ns, mtime_ns, _ = meta.fields()
        try:
            if self.owners:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.utime(fd, ns=(atime_ns, mtime_ns))
        except OSError as exc:
            self._error(path, f"metadata: {exc.strerror}")

    def _meta_entry(self, where: Dir, name: str, path: str, node: Node, symlink: bool) -> None:
        """Owner, mode and times of a symlink or special file, never following a symlink
        (a symlink's own mode is not set: Linux has none to set)."""
        dir_fd = where.fd
        try:
            if self.owners:
                uid, gid = int(node.get("uid", -1)), int(node.get("gid", -1))
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            if not symlink:
                chmod_entry(name, int(node.get("mode", 0o644)) & 0o7777, dir_fd)
            times = (int(node.get("atime_ns", 0)), int(node.get("mtime_ns", 0)))
            os.utime(name, ns=times, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            self._error(path, f"metadata: {exc.strerror}")

    def _file_meta(self, pending: PendingFile) -> None:
        """A file's metadata once all its bytes are written (they mark it complete)."""
        try:
            fd = os.open(pending.name, _META_FLAGS, dir_fd=pending.dir.fd)
        except OSError as exc:
            self._error(pending.path, f"metadata: {exc.strerror}")
            return
        try:
            self._meta_fd(fd, pending.path, pending.meta)
        finally:
            os.close(fd)

    # ------------------------------------------------------------ open directories
    def _adopt(self, fd: int, path: str, rel: str) -> Dir:
        where = Dir(fd, path, rel)
        with self.lock:
            self.open_dirs.add(where)
        return where

    def _release(self, where: Dir) -> None:
        with self.lock:
            self._release_locked(where)

    def _release_locked(self, where: Dir) -> None:
        where.refs -= 1
        if where.refs == 0:
            os.close(where.fd)
            where.fd = -1
            self.open_dirs.discard(where)

    def _reopen(self, rel: str) -> int:
        """The target's directory ``rel``, opened again after the walk let go of it (see
        :func:`~safehold.engine.restore.safe_fs.open_rel`); the descriptor stays in
        ``rel_fds`` until the next :meth:`_trim_rel_fds` or the end."""
        return open_rel(self.root.fd, rel, self.rel_fds)

    def _trim_rel_fds(self) -> None:
        """Close the reopened directories when they are many (between two uses)."""
        if len(self.rel_fds) > self.rel_fds_max:
            self._close_rel_fds()

    def _close_rel_fds(self) -> None:
        fds, self.rel_fds = self.rel_fds, {}
        for fd in fds.values():
            os.close(fd)

    def close(self) -> None:
        self.tree_pool.shutdown(wait=True)
        self.fetch_pool.shutdown(wait=True)
        self.pool.shutdown(wait=True)
        self._close_rel_fds()
        for where in self.open_dirs:  # all of them after a failure, else the target
            os.close(where.fd)
            where.fd = -1
        self.open_dirs = set()
