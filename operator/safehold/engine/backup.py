"""Backup: a directory tree (or a stream) into a snapshot.

The pipeline, built so that both cores stay busy and memory stays bounded:

* the **main thread** walks the tree, decides per file whether the parent's chunk
  list can be reused (incremental), reads changed files in large blocks and cuts
  them with FastCDC (the cut releases the GIL);
* chunks go in **batches** to a thread pool that hashes (keyed BLAKE3),
  deduplicates, compresses (zstd) and seals (AES-GCM) them: all release the GIL;
  a byte budget bounds the data in flight;
* a **tree thread** finishes directories in post-order, as their files' chunk
  ids become known, and stores the tree blobs;
* the :class:`~safehold.repo.BlobWriter` gathers blobs into packs, uploads them in
  the background and writes index objects for stored packs;
* last, the snapshot object: packs, then index, then snapshot (format section 10).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import queue
import socket
import stat
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from safehold import __version__
from safehold.engine.patterns import PathFilter, PatternError, compile_patterns
from safehold.engine.progress import ProgressCallback, ProgressTracker
from safehold.engine.tuning import available_cpus, rare_gc, tune_malloc
from safehold.repo import (
    BLOB_DATA,
    BLOB_TREE,
    BlobEncoder,
    BlobWriter,
    Chunker,
    CorruptObject,
    Node,
    Repository,
    Snapshot,
    check_meta,
    encode_tree,
)
from safehold.repo.locks import check_lock

__all__ = ["BackupError", "BackupOptions", "BackupResult", "backup_paths", "backup_stream"]

_BATCH_BYTES = 2 * 1024 * 1024
_BATCH_COUNT = 256
_INFLIGHT_BYTES = 8 * 1024 * 1024
_SMALL_FILE = 256 * 1024
_READ_AHEAD_BYTES = 2 * 1024 * 1024
_READ_AHEAD_WINDOW = 8 * 1024 * 1024  # big files: the kernel fetches this much past each read
_READERS = 4
_BIG_READERS = 2  # two big files at once: their reads and cuts overlap on 2 cores


class BackupError(Exception):
    """The backup could not run at all (bad paths, name clashes, bad patterns)."""


@dataclass
class BackupOptions:
    source: str | None = None
    type: str | None = None  # None: incremental when a parent exists, else full
    tags: list[str] = field(default_factory=list)
    time: datetime | None = None
    workers: int = 0  # threads compressing and sealing chunks; 0: one per available CPU
    #: Patterns (engine.patterns) of paths under each backed-up directory, relative to it:
    #: only matching files are stored (and the directories leading to them); empty: all.
    include: list[str] = field(default_factory=list)
    #: Patterns of paths left out; an excluded directory is not read. Wins over include.
    exclude: list[str] = field(default_factory=list)
    #: The snapshot's metadata (format section 9: what re-creates the source elsewhere).
    meta: dict[str, str] = field(default_factory=dict)


@dataclass
class BackupResult:
    snapshot: Snapshot
    errors: list[dict[str, str]]

    def summary(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "snapshot": s.id,
            "source": s.source,
            "type": s.type,
            "parent": s.parent,
            "time": s.time,
            **s.summary,
        }


# --------------------------------------------------------------------------- helpers
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


class _Batch:
    """Chunks submitted together: one future for many small chunks keeps overhead low."""

    __slots__ = ("future", "nbytes", "views")

    def __init__(self) -> None:
        self.views: list[memoryview | bytes] = []
        self.nbytes = 0
        self.future: Future[list[bytes]] | None = None


#: What the patterns leave of a directory's contents (with a PathFilter only).
_ALL = 0  # everything not excluded
_SOME = 1  # what include patterns match (and directories leading to it)
_NONE = 2  # nothing: the directory is stored empty, without reading it


def _select(
    filt: PathFilter, prefix: str, scope: int, names: Iterable[tuple[str, bool]]
) -> list[tuple[int, int]]:
    """The entries of a directory (``(name, is_dir)``) that the patterns keep, as
    ``(index, scope of a kept directory)``; ``prefix`` is the directory's path relative
    to the backed-up root plus ``/`` (empty at the root)."""
    kept: list[tuple[int, int]] = []
    for k, (name, is_dir) in enumerate(names):
        path = prefix + name
        if filt.excluded(path):
            continue
        if not is_dir:
            if scope == _ALL or filt.included(path):
                kept.append((k, _ALL))
            continue
        if scope == _SOME and not filt.includes_all_under(path):
            if filt.may_include_under(path) and not filt.excludes_all_under(path):
                kept.append((k, _SOME))
            continue
        kept.append((k, _NONE if filt.excludes_all_under(path) else _ALL))
    return kept


class _DirJob:
    """A directory waiting for its files' chunk ids before its tree blob can be stored."""

    __slots__ = ("done", "id", "nodes")

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.id: str | None = None
        self.done = threading.Event()


#: One directory's walk (:meth:`_Backup._walk_dir`): yields its subdirectories' walks,
#: is sent their jobs, returns its own.
_DirWalk = Generator["_DirWalk", "_DirJob | None", "_DirJob | None"]

_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFBLK: "dev",
    stat.S_IFCHR: "chardev",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


class _Names:
    """uid/gid to names, cached (pwd/grp lookups are slow and repetitive)."""

    def __init__(self) -> None:
        self.users: dict[int, str] = {}
        self.groups: dict[int, str] = {}

    def user(self, uid: int) -> str:
        name = self.users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = ""
            self.users[uid] = name
        return name

    def group(self, gid: int) -> str:
        name = self.groups.get(gid)
        if name is None:
            try:
                name = grp.getgrgid(gid).gr_name
            except KeyError:
                name = ""
            self.groups[gid] = name
        return name


def _now_iso(when: datetime | None = None) -> str:
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- the backup
class _Backup:
    def __init__(self, repo: Repository, options: BackupOptions, progress: ProgressTracker) -> None:
        self.repo = repo
        self.options = options
        self.progress = progress
        self.writer = BlobWriter(repo)
        self.chunker = Chunker(repo.config.chunker, repo.keys.chunker_seed)
        self.small = min(_SMALL_FILE, repo.config.chunker.min_size)
        workers = options.workers or available_cpus()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="chunk")
        self.readers = ThreadPoolExecutor(_READERS, thread_name_prefix="read")
        self.big = ThreadPoolExecutor(_BIG_READERS, thread_name_prefix="read-big")
        self.big_lock = threading.Lock()
        self.big_read = 0
        self.big_failed: list[str] = []
        self._prefetched: dict[str, Future[bytes]] = {}
        self._trees_ahead: dict[str, Future[dict[str, Node]]] = {}
        self.budget = _Budget(_INFLIGHT_BYTES)
        self.local = threading.local()
        self.batch = _Batch()
        self.names = _Names()
        self.dirs: queue.Queue[_DirJob | None] = queue.Queue(maxsize=4096)
        self.tree_thread = threading.Thread(target=self._tree_worker, name="trees", daemon=True)
        self.tree_error: BaseException | None = None
        self.errors: list[dict[str, str]] = []
        self.hardlinks: dict[tuple[int, int], tuple[str, list[Any]]] = {}
        self.counts = {
            "files_new": 0,
            "files_changed": 0,
            "files_unmodified": 0,
            "dirs": 0,
            "bytes_read": 0,
            "total_bytes": 0,
            "total_files": 0,
        }
        self.no_atime = True
        self.filter: PathFilter | None = None  # set by backup_paths, which checks the patterns
        self.root_len = 0  # len of the current root's name plus "/": rel[root_len:] is
        # the path relative to the backed-up root, which patterns match

    # ---------------------------------------------------------------- workers
    def _encoder(self) -> BlobEncoder:
        enc: BlobEncoder | None = getattr(self.local, "encoder", None)
        if enc is None:
            enc = BlobEncoder(self.repo.aead, self.repo.config.compression_level)
            self.local.encoder = enc
        return enc

    def _process(self, views: list[memoryview | bytes], nbytes: int) -> list[bytes]:
        try:
            keys = self.repo.keys
            writer = self.writer
            enc = self._encoder()
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

    def _add_chunk(self, view: memoryview | bytes) -> tuple[_Batch, int]:
        if self.writer.error is not None:  # a pack failed for good: stop reading now
            raise self.writer.error
        n = len(view)
        self.budget.acquire(n)
        batch = self.batch
        batch.views.append(view)
        batch.nbytes += n
        slot = (batch, len(batch.views) - 1)
        if batch.nbytes >= _BATCH_BYTES or len(batch.views) >= _BATCH_COUNT:
            self._submit_batch()
        return slot

    def _submit_batch(self) -> None:
        batch = self.batch
        if not batch.views:
            return
        self.batch = _Batch()
        self._submit(batch)

    def _store_tree(self, nodes: list[Node]) -> str:
        data = encode_tree(nodes)
        blob_id = self.repo.keys.blob_id(data)
        if self.writer.claim(blob_id):
            sealed, flags = self._encoder().encode(BLOB_TREE, blob_id, data)
            self.writer.add(BLOB_TREE, blob_id, sealed, flags, len(data))
        return blob_id.hex()

    def _tree_worker(self) -> None:
        try:
            while True:
                job = self.dirs.get()
                if job is None:
                    return
                kept = []
                for node in job.nodes:
                    content = node.get("content")
                    if isinstance(content, Future):
                        content = content.result()
                        if content is None:
                            continue  # unreadable: recorded as an error, left out
                        node["content"] = content
                    # ids (str) and chunks still in the pool (batch, slot) may be mixed
                    if content and not all(isinstance(item, str) for item in content):
                        node["content"] = [_resolve(item) for item in content]
                    kept.append(node)
                job.nodes = kept
                for node in job.nodes:
                    sub = node.get("subtree")
                    if isinstance(sub, _DirJob):
                        if sub.id is None:
                            raise RuntimeError("a subdirectory finished after its parent")
                        node["subtree"] = sub.id
                job.id = self._store_tree(job.nodes)
                job.done.set()
        except BaseException as exc:  # noqa: BLE001 - handed to the walker, which re-raises
            self.tree_error = exc
            # Unblock anyone waiting, and keep draining so the walker never blocks forever.
            while True:
                job = self.dirs.get()
                if job is None:
                    return
                job.done.set()

    # ---------------------------------------------------------------- walking
    def _meta(self, name: str, st: os.stat_result) -> Node:
        return {
            "name": name,
            "type": _TYPES.get(stat.S_IFMT(st.st_mode), "file"),
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "user": self.names.user(st.st_uid),
            "group": self.names.group(st.st_gid),
            "mtime_ns": st.st_mtime_ns,
            "atime_ns": st.st_atime_ns,
            "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino,
            "dev": st.st_dev,
            "links": st.st_nlink,
        }

    def _error(self, path: str, exc: BaseException) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.errors.append({"path": path, "error": reason})

    def _node(
        self,
        path: str,
        rel: str,
        name: str,
        st: os.stat_result,
        parent: Node | None,
        unchanged: bool | None = None,
        scope: int = _ALL,
    ) -> Node | None:
        node = self._meta(name, st)
        kind = node["type"]
        if kind == "dir":
            job = self._walk(self._dir_node(node, path, rel, parent, scope))
            if job is None:
                return None
            node["subtree"] = job
        elif kind == "symlink":
            try:
                node["target"] = os.readlink(path)
            except OSError as exc:
                self._error(path, exc)
                return None
        elif kind in ("dev", "chardev"):
            node["rdev"] = st.st_rdev
        elif kind == "file" and not self._file(path, rel, node, st, parent, unchanged):
            return None
        return node

    def _file(
        self,
        path: str,
        rel: str,
        node: Node,
        st: os.stat_result,
        parent: Node | None,
        unchanged: bool | None = None,
    ) -> bool:
        """``unchanged``: :meth:`_unchanged`'s answer when the caller has it already."""
        size = st.st_size
        node["size"] = size
        self.counts["total_files"] += 1
        self.counts["total_bytes"] += size
        if st.st_blocks * 512 < size:
            node["sparse"] = True
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.hardlinks.get(key)
            if first is not None:
                node["hardlink"] = first[0]
                node["content"] = first[1]
                self.counts["files_new" if parent is None else "files_unmodified"] += 1
                self.progress.files_done += 1
                self.progress.bytes_done += size
                return True
        if self._unchanged(parent, st) if unchanged is None else unchanged:
            assert parent is not None
            node["content"] = list(parent.get("content", []))
            self.counts["files_unmodified"] += 1
            self.progress.bytes_done += size
        else:
            category = "files_changed" if parent is not None else "files_new"
            if size > self.small:
                # Big files are read and cut by their own threads, two at a time, while
                # this thread walks on; the tree thread waits for their chunk lists.
                node["content"] = self.big.submit(self._read_big, path, category)
            else:
                content = self._read_file(path, size)
                if content is None:
                    return False
                node["content"] = content
            self.counts[category] += 1
        if st.st_nlink > 1:
            self.hardlinks[(st.st_dev, st.st_ino)] = (rel, node["content"])
        self.progress.files_done += 1
        return True

    def _read_big(self, path: str, category: str) -> list[Any] | None:
        """Read and chunk one big file in a big-file thread; its chunks go to the pool in
        batches of its own. None when it cannot be read (the error is recorded)."""
        chunker: Chunker | None = getattr(self.local, "chunker", None)
        if chunker is None:
            chunker = Chunker(self.repo.config.chunker, self.repo.keys.chunker_seed)
            self.local.chunker = chunker
        content: list[Any] = []
        batch = _Batch()
        read = 0
        keys = self.repo.keys
        index = self.repo.index
        try:
            with os.fdopen(self._open(path), "rb", buffering=0) as f:
                for view in chunker.chunks_of(_reading_ahead(f.fileno(), f.readinto)):
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
                    data = bytes(view)  # the chunker reuses its buffer
                    self.budget.acquire(n)
                    batch.views.append(data)
                    batch.nbytes += n
                    content.append((batch, len(batch.views) - 1))
                    if batch.nbytes >= _BATCH_BYTES or len(batch.views) >= _BATCH_COUNT:
                        self._submit(batch)
                        batch = _Batch()
        except OSError as exc:
            self._submit(batch)
            with self.big_lock:
                self.big_read += read
                self.big_failed.append(category)
            self._error(path, exc)
            return None
        self._submit(batch)
        with self.big_lock:
            self.big_read += read
        return content

    def _submit(self, batch: _Batch) -> None:
        if batch.views:
            batch.future = self.pool.submit(self._process, batch.views, batch.nbytes)
            batch.views = []

    def _merge_big_counts(self) -> None:
        with self.big_lock:
            self.counts["bytes_read"] += self.big_read
            self.big_read = 0
            for category in self.big_failed:
                self.counts[category] -= 1
            self.big_failed = []

    def _unchanged(self, parent: Node | None, st: os.stat_result) -> bool:
        """The parent snapshot's chunk list is still right: same size, times and inode,
        and every chunk is still in the repository."""
        return (
            parent is not None
            and parent["type"] == "file"
            and parent.get("size") == st.st_size
            and parent.get("mtime_ns") == st.st_mtime_ns
            and parent.get("ctime_ns") == st.st_ctime_ns
            and parent.get("inode") == st.st_ino
            and all(bytes.fromhex(c) in self.writer.repo.index for c in parent.get("content", []))
        )

    def _read_small(self, path: str, size: int) -> bytes:
        """Read a small file whole (in a reader thread: the I/O wait releases the GIL).
        One byte more than its size is asked for, to notice a file that grew."""
        fd = self._open(path)
        try:
            return os.read(fd, min(size, self.small) + 1)
        finally:
            os.close(fd)

    def _open(self, path: str) -> int:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        if self.no_atime:
            try:
                return os.open(path, flags | getattr(os, "O_NOATIME", 0))
            except PermissionError:
                self.no_atime = False  # O_NOATIME needs ownership; plain open from now on
        return os.open(path, flags)

    def _read_file(self, path: str, size: int) -> list[Any] | None:
        content: list[Any] = []
        ahead = self._prefetched.pop(path, None)
        if ahead is not None:
            try:
                data = ahead.result()
            except OSError as exc:
                self._error(path, exc)
                return None
            if len(data) <= min(size, self.small):
                self.counts["bytes_read"] += len(data)
                self.progress.bytes_done += len(data)
                if data:
                    content.append(self._add_chunk(data))
                return content
        try:
            fd = self._open(path)
        except OSError as exc:
            self._error(path, exc)
            return None
        try:
            with os.fdopen(fd, "rb", buffering=0) as f:
                if size <= self.small:
                    data = f.read(self.small + 1)
                    if len(data) <= self.small:
                        self.counts["bytes_read"] += len(data)
                        self.progress.bytes_done += len(data)
                        if data:
                            content.append(self._add_chunk(data))
                        return content
                    f.seek(0)  # it grew since stat: chunk it like a big file
                for view in self.chunker.chunks_of(f.readinto):
                    n = len(view)
                    self.counts["bytes_read"] += n
                    self.progress.bytes_done += n
                    # A copy: the chunker reuses its buffer, and the byte budget then
                    # bounds the memory in flight exactly.
                    content.append(self._add_chunk(bytes(view)))
        except OSError as exc:
            self._error(path, exc)
            return None
        return content

    def _load_parent_tree(self, tree_id: object) -> dict[str, Node]:
        if not isinstance(tree_id, str):
            return {}
        ahead = self._trees_ahead.pop(tree_id, None)
        if ahead is not None:
            return ahead.result()
        return self._read_parent_tree(tree_id)

    def _read_parent_tree(self, tree_id: str) -> dict[str, Node]:
        try:
            return {n["name"]: n for n in self.repo.load_tree(tree_id)}
        except CorruptObject:
            return {}

    def _prefetch_parent_trees(self, parents: dict[str, Node]) -> None:
        """Load the parent snapshot's subdirectory trees in reader threads, one level
        ahead of the walk: each is a ranged read, a decryption and a JSON parse, which
        otherwise stall the walk once per directory."""
        for node in parents.values():
            sub = node.get("subtree")
            if node["type"] == "dir" and isinstance(sub, str) and sub not in self._trees_ahead:
                self._trees_ahead[sub] = self.readers.submit(self._read_parent_tree, sub)

    def _dir_node(
        self, node: Node, path: str, rel: str, parent: Node | None, scope: int
    ) -> _DirWalk:
        """Count the directory ``node`` and start its walk (see :meth:`_walk_dir`)."""
        self.counts["dirs"] += 1
        parent_tree = parent.get("subtree") if parent and parent["type"] == "dir" else None
        return self._walk_dir(path, rel, parent_tree, scope)

    @staticmethod
    def _walk(top: _DirWalk) -> _DirJob | None:
        """Run a directory's walk and, depth first, those of the directories below it: an
        explicit stack of suspended walks, so that the depth of a tree is bounded by
        memory, not by Python's recursion limit (a tree 500 levels deep used to fail
        every backup of its volume with RecursionError)."""
        stack = [top]
        result: _DirJob | None = None
        while True:
            try:
                child = stack[-1].send(result)
            except StopIteration as done:
                stack.pop()
                result = done.value
                if not stack:
                    return result
                continue
            stack.append(child)
            result = None

    def _walk_dir(self, path: str, rel: str, parent_tree: object, scope: int = _ALL) -> _DirWalk:
        """The walk of one directory, a generator: it yields the walk of each
        subdirectory for :meth:`_walk` to run and is sent back that subdirectory's job
        (None: left out), and returns the directory's own job: None when it cannot be read
        (recorded as an error) or, in scope ``_SOME``, when nothing under it is included."""
        if scope == _NONE:
            return self._finish_dir([])
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self._error(path, exc)
            return None
        scopes: list[int] | None = None
        if self.filter is not None:
            prefix = rel[self.root_len :]
            kept = list(_in_scope(entries, self.filter, f"{prefix}/" if prefix else "", scope))
            entries = [entry for entry, _ in kept]
            scopes = [child for _, child in kept]
        parents = self._load_parent_tree(parent_tree)
        self._prefetch_parent_trees(parents)
        stats: list[tuple[os.DirEntry[str], os.stat_result]] = []
        child_scopes: list[int] = []
        for k, entry in enumerate(entries):
            try:
                stats.append((entry, entry.stat(follow_symlinks=False)))
            except OSError as exc:
                self._error(entry.path, exc)
                continue
            if scopes is not None:
                child_scopes.append(scopes[k])
        # Small files that must be read are read ahead by reader threads, a window of
        # bytes at a time: on a cold cache each read waits for the disk, and many
        # waits overlap instead of queueing behind the walk.
        same = [
            stat.S_ISREG(st.st_mode) and self._unchanged(parents.get(entry.name), st)
            for entry, st in stats
        ]
        wanted = [
            k
            for k, (entry, st) in enumerate(stats)
            if stat.S_ISREG(st.st_mode) and 0 < st.st_size <= self.small and not same[k]
        ]
        nxt = 0
        ahead = 0
        nodes: list[Node] = []
        for k, (entry, st) in enumerate(stats):
            while nxt < len(wanted) and (ahead < _READ_AHEAD_BYTES or wanted[nxt] <= k):
                path = stats[wanted[nxt]][0].path
                size = stats[wanted[nxt]][1].st_size
                self._prefetched[path] = self.readers.submit(self._read_small, path, size)
                ahead += size
                nxt += 1
            if entry.path in self._prefetched:
                ahead -= st.st_size
            node: Node | None
            if stat.S_ISDIR(st.st_mode):  # walked by _walk, not by recursion
                node = self._meta(entry.name, st)
                job = yield self._dir_node(
                    node,
                    entry.path,
                    f"{rel}/{entry.name}",
                    parents.get(entry.name),
                    child_scopes[k] if scopes is not None else _ALL,
                )
                if job is None:
                    continue
                node["subtree"] = job
            else:
                node = self._node(
                    entry.path,
                    f"{rel}/{entry.name}",
                    entry.name,
                    st,
                    parents.get(entry.name),
                    same[k],
                )
                self._prefetched.pop(entry.path, None)
            if node is not None:
                nodes.append(node)
        if scope == _SOME and not nodes and len(rel) >= self.root_len:
            self.counts["dirs"] -= 1  # not the root, and leads to no included path: left out
            return None
        return self._finish_dir(nodes)

    def _finish_dir(self, nodes: list[Node]) -> _DirJob:
        self._submit_batch()
        job = _DirJob(nodes)
        if self.tree_error is not None:
            raise self.tree_error
        self.dirs.put(job)
        return job

    # ---------------------------------------------------------------- entry points
    def run(self, roots: list[tuple[str, str]], parent_root: dict[str, Node]) -> str:
        """Back up ``(path, name)`` roots; return the root tree id."""
        self.tree_thread.start()
        self._prefetch_parent_trees(parent_root)
        try:
            nodes: list[Node] = []
            scope = _SOME if self.filter is not None and self.filter.has_include else _ALL
            for path, name in roots:
                try:
                    st = os.lstat(path)
                except OSError as exc:
                    self._error(path, exc)
                    continue
                self.root_len = len(name) + 1
                node = self._node(path, name, name, st, parent_root.get(name), scope=scope)
                if node is not None:
                    nodes.append(node)
            root = self._finish_dir(nodes)
        finally:
            self._stop_workers()
        return self._finish(root)

    def _stop_workers(self) -> None:
        """Stop the tree thread and the pools, also after a failure, and count their work."""
        self.dirs.put(None)
        self.tree_thread.join()
        self.big.shutdown(wait=True)
        self.pool.shutdown(wait=True)
        self.readers.shutdown(wait=True)
        self._merge_big_counts()

    def _finish(self, root: _DirJob) -> str:
        """Flush the last pack and index (format section 10: before any snapshot names them)."""
        if self.tree_error is not None:
            raise self.tree_error
        self.writer.flush()
        self.writer.close()
        assert root.id is not None
        return root.id

    def run_stream(self, stream: BinaryIO, name: str) -> str:
        self.tree_thread.start()
        try:
            now = time.time_ns()
            content: list[Any] = []
            for view in self.chunker.chunks_of(_full_reader(stream)):
                n = len(view)
                self.counts["bytes_read"] += n
                self.progress.bytes_done += n
                content.append(self._add_chunk(bytes(view)))
            size = self.counts["bytes_read"]
            self.counts["total_bytes"] = size
            self.counts["total_files"] = 1
            self.counts["files_new"] = 1
            self.progress.files_done = 1
            node: Node = {
                "name": name,
                "type": "file",
                "mode": 0o600,
                "uid": os.getuid(),
                "gid": os.getgid(),
                "user": self.names.user(os.getuid()),
                "group": self.names.group(os.getgid()),
                "mtime_ns": now,
                "atime_ns": now,
                "ctime_ns": now,
                "inode": 0,
                "dev": 0,
                "links": 1,
                "size": size,
                "content": content,
            }
            root = self._finish_dir([node])
        finally:
            self._stop_workers()
        return self._finish(root)


def _full_reader(stream: BinaryIO) -> Callable[[memoryview], int]:
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


def _reading_ahead(
    fd: int, readinto: Callable[[memoryview], int], ahead: int = _READ_AHEAD_WINDOW
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


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _resolve(item: Any) -> str:
    if isinstance(item, str):
        return item
    batch: _Batch = item[0]
    slot: int = item[1]
    assert batch.future is not None
    ids: list[bytes] = batch.future.result()
    return ids[slot].hex()


def _choose_parent(
    repo: Repository, source: str, requested: str | None
) -> tuple[str, Snapshot | None]:
    history = [s for s in repo.snapshots(source=source) if s.type != "stdin"]
    if requested == "full":
        return "full", None
    if requested == "differential":
        fulls = [s for s in history if s.type == "full"]
        return ("differential", fulls[-1]) if fulls else ("full", None)
    if history:
        return "incremental", history[-1]
    return "full", None


def _in_scope(
    entries: Iterable[os.DirEntry[str]], filt: PathFilter | None, prefix: str, scope: int
) -> Iterator[tuple[os.DirEntry[str], int]]:
    """The entries of a directory in scope ``scope`` that the walk stores, each with the
    scope of its contents (:func:`_select`); without patterns every entry, streamed."""
    if filt is None:
        for entry in entries:
            yield entry, _ALL
        return
    listed = list(entries)
    for k, child in _select(filt, prefix, scope, ((e.name, _is_dir(e)) for e in listed)):
        yield listed[k], child


def _scan_totals(
    roots: Iterable[str],
    progress: ProgressTracker,
    stop: threading.Event,
    filt: PathFilter | None = None,
) -> None:
    """Count files and bytes ahead of the backup, for the ETA. Only lstat, no reads.

    What is counted is what the walk keeps: the same scope rules (:func:`_in_scope`), so
    left-out directories are not read."""
    files = 0
    total = 0
    top = _SOME if filt is not None and filt.has_include else _ALL
    stack: list[tuple[str, str, int]] = []
    for root in roots:
        try:
            st = os.lstat(root)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            stack.append((root, "", top))
        elif stat.S_ISREG(st.st_mode):
            files += 1
            total += st.st_size
    while stack and not stop.is_set():
        path, prefix, scope = stack.pop()
        if scope == _NONE:
            continue
        try:
            with os.scandir(path) as it:
                for entry, child in _in_scope(it, filt, prefix, scope):
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append((entry.path, f"{prefix}{entry.name}/", child))
                        elif entry.is_file(follow_symlinks=False):
                            files += 1
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    if not stop.is_set():
        progress.files_total = files
        progress.bytes_total = total


def _check_meta(options: BackupOptions) -> None:
    """Refuse bad metadata before any work: it would make an unreadable snapshot."""
    try:
        check_meta(options.meta)
    except ValueError as exc:
        raise BackupError(str(exc)) from None


def _snapshot(
    repo: Repository,
    b: _Backup,
    *,
    tree: str,
    source: str,
    kind: str,
    parent: Snapshot | None,
    paths: list[str],
    options: BackupOptions,
    started: float,
) -> Snapshot:
    summary: dict[str, Any] = {
        **b.counts,
        "bytes_new": b.writer.stats.raw_new,
        "bytes_stored": b.writer.stats.stored,
        "blobs_new": b.writer.stats.blobs_new,
        "duration_s": round(time.monotonic() - started, 3),
        "errors": len(b.errors),
    }
    snap = Snapshot(
        time=_now_iso(options.time),
        source=source,
        type=kind,
        tree=tree,
        paths=paths,
        hostname=socket.gethostname(),
        tags=sorted(set(options.tags)),
        parent=parent.id if parent else None,
        program=f"safehold {__version__}",
        summary=summary,
        meta=dict(options.meta),
    )
    check_lock(repo)  # a lost lock: prune may have removed what the snapshot names
    repo.save_snapshot(snap)
    return snap


def backup_paths(
    repo: Repository,
    paths: list[str],
    options: BackupOptions | None = None,
    progress: ProgressCallback | None = None,
) -> BackupResult:
    """Back up files and directory trees into a new snapshot."""
    options = options or BackupOptions()
    if not paths:
        raise BackupError("no paths to back up")
    _check_meta(options)
    try:
        filt = compile_patterns(options.include, options.exclude)
    except PatternError as exc:
        raise BackupError(str(exc)) from None
    abspaths = [os.path.abspath(p) for p in paths]
    roots: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for p in abspaths:
        name = os.path.basename(p.rstrip("/")) or "root"
        if name in seen:
            raise BackupError(
                f"{seen[name]} and {p} would both appear as {name!r} at the top of the snapshot; "
                "back them up as separate sources, or back up their common parent"
            )
        seen[name] = p
        roots.append((p, name))
    source = options.source or ",".join(abspaths)
    kind, parent = _choose_parent(repo, source, options.type)
    parent_root: dict[str, Node] = {}
    if parent is not None:
        try:
            parent_root = {n["name"]: n for n in repo.load_tree(parent.tree)}
        except CorruptObject:
            parent_root = {}
    started = time.monotonic()
    tune_malloc()
    with rare_gc(), ProgressTracker("backup", progress) as tracker:
        stop = threading.Event()
        scanner = threading.Thread(
            target=_scan_totals, args=(abspaths, tracker, stop, filt), name="scan", daemon=True
        )
        estimate = parent.summary if parent is not None else {}
        if estimate.get("total_files") and estimate.get("total_bytes") is not None:
            # An incremental's totals are close to its parent's: that estimate spares a
            # second walk of the whole tree (an lstat per file, competing with the backup).
            tracker.files_total = int(estimate["total_files"])
            tracker.bytes_total = int(estimate["total_bytes"])
        elif progress is not None:
            scanner.start()
        b = _Backup(repo, options, tracker)
        b.filter = filt
        try:
            tree = b.run(roots, parent_root)
        finally:
            stop.set()
            if scanner.is_alive():
                scanner.join()
        tracker.files_total = b.counts["total_files"]
        tracker.bytes_total = b.counts["total_bytes"]
        snap = _snapshot(
            repo,
            b,
            tree=tree,
            source=source,
            kind=kind,
            parent=parent,
            paths=abspaths,
            options=options,
            started=started,
        )
    return BackupResult(snap, b.errors)


def backup_stream(
    repo: Repository,
    stream: BinaryIO,
    name: str,
    options: BackupOptions | None = None,
    progress: ProgressCallback | None = None,
) -> BackupResult:
    """Back up a byte stream (a database dump on stdin) as one file named ``name``."""
    options = options or BackupOptions()
    _check_meta(options)
    if options.include or options.exclude:
        raise BackupError("include and exclude patterns apply to paths, not to a stream")
    if not name or "/" in name or name in (".", ".."):
        raise BackupError(f"--stdin-name {name!r} must be a plain file name, without '/'")
    source = options.source or name
    started = time.monotonic()
    tune_malloc()
    with rare_gc(), ProgressTracker("backup", progress) as tracker:
        b = _Backup(repo, options, tracker)
        tree = b.run_stream(stream, name)
        snap = _snapshot(
            repo,
            b,
            tree=tree,
            source=source,
            kind="stdin",
            parent=None,
            paths=[name],
            options=options,
            started=started,
        )
    return BackupResult(snap, b.errors)
