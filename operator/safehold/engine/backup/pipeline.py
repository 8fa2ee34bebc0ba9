"""The backup pipeline: a directory tree (or a stream) into tree and data blobs.

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
* last (:mod:`.run`), the snapshot object: packs, then index, then snapshot (format
  section 10).

:class:`BackupPipeline` is still one class (about 580 lines) holding the walker, the
small- and big-file reads, the batches and the tree thread, which share its counters and
pools; splitting it into walk, read and pipeline collaborators is the next step of #13.
"""

from __future__ import annotations

import grp
import os
import pwd
import queue
import stat
import threading
import time
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from safehold.engine.backup.options import BackupOptions
from safehold.engine.backup.read import full_reader, reading_ahead
from safehold.engine.backup.scope import ALL, NONE, SOME, in_scope
from safehold.engine.patterns import PathFilter
from safehold.engine.progress import ProgressTracker
from safehold.engine.tuning import available_cpus
from safehold.repo import (
    BLOB_DATA,
    BLOB_TREE,
    BlobEncoder,
    BlobWriter,
    Chunker,
    CorruptObject,
    Node,
    Repository,
    encode_tree,
)

__all__ = ["BackupPipeline"]

_BATCH_BYTES = 2 * 1024 * 1024
_BATCH_COUNT = 256
_INFLIGHT_BYTES = 8 * 1024 * 1024
_SMALL_FILE = 256 * 1024
_READ_AHEAD_BYTES = 2 * 1024 * 1024
_READERS = 4
_BIG_READERS = 2  # two big files at once: their reads and cuts overlap on 2 cores


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


#: A chunk of a file: its id (hex) when known, else its place in a batch still in the pool.
ChunkRef = str | tuple[_Batch, int]


class PendingContent:
    """A file's ``content`` while its chunk ids are being computed.

    Held in the node until the tree thread asks for :meth:`ids`: either the file's chunks
    (``refs``, read by the walk) or the future of a big file's chunks (``future``, read by
    a big-file thread; its result is None when the file could not be read). A node's
    ``content`` is thus a list of hex ids (the format's) or one of these, never a mix.
    """

    __slots__ = ("future", "refs")

    def __init__(
        self,
        refs: list[ChunkRef] | None = None,
        future: Future[list[ChunkRef] | None] | None = None,
    ) -> None:
        self.refs = refs
        self.future = future

    def ids(self) -> list[str] | None:
        """The chunk ids, in order (waits for the pool); None: the file was left out."""
        refs = self.future.result() if self.future is not None else self.refs
        if refs is None:
            return None
        return [ref if isinstance(ref, str) else _resolve(ref) for ref in refs]


class _DirJob:
    """A directory waiting for its files' chunk ids before its tree blob can be stored."""

    __slots__ = ("done", "id", "nodes")

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.id: str | None = None
        self.done = threading.Event()


#: One directory's walk (:meth:`BackupPipeline._walk_dir`): yields its subdirectories' walks,
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


# --------------------------------------------------------------------------- the backup
class BackupPipeline:
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
        self.hardlinks: dict[tuple[int, int], tuple[str, list[str] | PendingContent]] = {}
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
                    if type(content) is PendingContent:
                        ids = content.ids()
                        if ids is None:
                            continue  # unreadable: recorded as an error, left out
                        node["content"] = ids
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
        scope: int = ALL,
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
                node["content"] = PendingContent(
                    future=self.big.submit(self._read_big, path, category)
                )
            else:
                refs = self._read_file(path, size)
                if refs is None:
                    return False
                node["content"] = PendingContent(refs)
            self.counts[category] += 1
        if st.st_nlink > 1:
            self.hardlinks[(st.st_dev, st.st_ino)] = (rel, node["content"])
        self.progress.files_done += 1
        return True

    def _read_big(self, path: str, category: str) -> list[ChunkRef] | None:
        """Read and chunk one big file in a big-file thread; its chunks go to the pool in
        batches of its own. None when it cannot be read (the error is recorded)."""
        chunker: Chunker | None = getattr(self.local, "chunker", None)
        if chunker is None:
            chunker = Chunker(self.repo.config.chunker, self.repo.keys.chunker_seed)
            self.local.chunker = chunker
        content: list[ChunkRef] = []
        batch = _Batch()
        read = 0
        keys = self.repo.keys
        index = self.repo.index
        try:
            with os.fdopen(self._open(path), "rb", buffering=0) as f:
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

    def _read_file(self, path: str, size: int) -> list[ChunkRef] | None:
        content: list[ChunkRef] = []
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

    def _walk_dir(self, path: str, rel: str, parent_tree: object, scope: int = ALL) -> _DirWalk:
        """The walk of one directory, a generator: it yields the walk of each
        subdirectory for :meth:`_walk` to run and is sent back that subdirectory's job
        (None: left out), and returns the directory's own job: None when it cannot be read
        (recorded as an error) or, in scope ``SOME``, when nothing under it is included."""
        if scope == NONE:
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
            kept = list(in_scope(entries, self.filter, f"{prefix}/" if prefix else "", scope))
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
                    child_scopes[k] if scopes is not None else ALL,
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
        if scope == SOME and not nodes and len(rel) >= self.root_len:
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
            scope = SOME if self.filter is not None and self.filter.has_include else ALL
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
            content: list[ChunkRef] = []
            for view in self.chunker.chunks_of(full_reader(stream)):
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
                "content": PendingContent(content),
            }
            root = self._finish_dir([node])
        finally:
            self._stop_workers()
        return self._finish(root)


def _resolve(ref: tuple[_Batch, int]) -> str:
    """The id of a chunk that went to the pool (waits for its batch)."""
    batch, slot = ref
    assert batch.future is not None
    return batch.future.result()[slot].hex()
