"""Restore: a snapshot (or selected paths of it) into a directory.

Files are created at their final size first (``ftruncate``, so holes stay holes),
then chunks are written with ``pwrite`` in parallel, pack by pack: each pack's
needed blobs are fetched with one ranged read where they lie close together, and
every blob is authenticated and checked against its id before it is written.
Reads and writes are two stages: a few fetch threads keep reads in flight (object
stores are latency-bound), and one thread per available CPU decodes and writes (more would
only hand the GIL and the target directories' locks back and forth).
A file's metadata (mode, owner, times) is set only after all its bytes are
written, so a file whose size and mtime match the snapshot is complete: a second
run after a crash skips those and redoes the rest (resumable, idempotent).
Work is done in batches of files, so memory does not grow with the file count.
A restore into a new directory from a local repository runs as one process per CPU, each
restoring a part of the snapshot (:mod:`safehold.engine.restore_parts`).

A restore stays inside its target, whatever the target already holds and whatever the
snapshot says (:mod:`safehold.engine.safe_fs`): the walk holds each directory open and
creates, replaces and changes its entries relative to that descriptor, never through a path;
it never follows a symlink where the snapshot has a directory or a file (the symlink is
replaced); names that are not one entry (``..``, ``/``, NUL, empty) and names a directory
holds twice are reported and not restored. Errors are per entry: the rest is restored.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn, TypeVar

from safehold.engine.progress import ProgressCallback, ProgressTracker
from safehold.engine.restore_parts import FILES_PER_OWNER, PartResult, Parts
from safehold.engine.restore_select import NothingSelected, Selection, plan_selection
from safehold.engine.safe_fs import (
    DIR_FLAGS,
    NEW_FILE_FLAGS,
    bad_name,
    chmod_entry,
    clear,
    enter_dir,
    open_rel,
    raise_fd_limit,
)
from safehold.engine.tuning import available_cpus, rare_gc, tune_malloc
from safehold.repo import BLOB_DATA, CorruptObject, Node, Repository, Snapshot, pack_object_name
from safehold.repo.crypto import SealError
from safehold.repo.pack import decode_blob
from safehold.storage import StorageError

__all__ = ["NothingSelected", "RestoreOptions", "RestoreResult", "restore_snapshot"]

_BATCH_BLOBS = 20000
_BATCH_FILES = 5000
_GAP = 1024 * 1024  # read across gaps up to this size rather than issuing another request
_MAX_READ = 4 * 1024 * 1024  # at most this much per read, so several workers share a pack
_MIN_READ = 1024 * 1024
_MAX_GROUP = 48  # blobs per read: many small files in one pack are written in parallel
_SPARSE_PIECE = 64 * 1024  # holes are punched at this granularity in sparse files
_FETCHERS = 4  # reads in flight
#: Processes by default, however many CPUs: each walks the whole snapshot and holds its own
#: buffers, and beyond a few the disk, not the CPU, sets the pace.
_MAX_PROCESSES = 4
_T = TypeVar("_T")
#: A chunk to fetch: id, blob type, flags, offset and length in its pack, plain length.
_Blob = tuple[bytes, int, int, int, int, int]
#: Opens a file this restore wrote to set its metadata (never blocks, never follows).
_META_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_SPECIAL_KINDS = {
    "fifo": stat.S_IFIFO,
    "socket": stat.S_IFSOCK,
    "dev": stat.S_IFBLK,
    "chardev": stat.S_IFCHR,
}


@dataclass
class RestoreOptions:
    #: Patterns of the paths inside the snapshot to restore, and to leave out (the backup's
    #: language, :mod:`safehold.engine.restore_select`); none: everything.
    includes: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    workers: int = 0  # threads decoding and writing; 0: one per available CPU
    fetchers: int = _FETCHERS  # reads in flight (shared out between processes)
    #: Most processes to use; 0: one per available CPU. More than one only for a restore
    #: into a new (or empty) directory from a local (file://) repository.
    processes: int = 0
    owners: bool | None = None  # None: restore owners when running as root


@dataclass
class RestoreResult:
    snapshot: Snapshot
    files: int = 0
    files_skipped: int = 0  # already complete from an earlier run
    dirs: int = 0
    links: int = 0
    special: int = 0
    bytes_written: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    processes: int = 1  # that restored in parallel (restore_parts)
    #: include patterns that matched nothing (others did), with the paths closest to each
    unmatched: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot.id,
            "source": self.snapshot.source,
            "files": self.files,
            "files_skipped": self.files_skipped,
            "dirs": self.dirs,
            "links": self.links,
            "special": self.special,
            "bytes_written": self.bytes_written,
            "errors": len(self.errors),
            "processes": self.processes,
            "unmatched_includes": self.unmatched,
        }


class _Batch:
    """Files planned together: the directories they are in stay open until every group of
    chunks of the batch is written (``pending``: groups not done, plus one while the batch
    is being submitted)."""

    __slots__ = ("dirs", "pending")

    def __init__(self) -> None:
        self.dirs: list[_Dir] = []
        self.pending = 1


class _Dir:
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
        self.batch: _Batch | None = None


class _Frame:
    """A directory being walked: its entries not yet restored, and where they go."""

    __slots__ = ("dir", "dir_no", "dups", "entries", "fresh", "rel", "whole")

    def __init__(
        self,
        entries: Iterator[tuple[int, Node]],
        where: _Dir,
        rel: str,
        fresh: bool,
        dir_no: int,
        dups: set[str] | None,
        whole: bool,
    ) -> None:
        self.entries = entries
        self.dir = where
        self.rel = rel
        self.fresh = fresh
        self.dir_no = dir_no
        self.dups = dups
        self.whole = whole  # everything in it is selected (or there is no selection)


class _PendingFile:
    """A file whose chunks are being written: the entry ``name`` of ``dir``. ``create``:
    the writer of its only chunk creates it (most files are one chunk: this moves their
    creation into the workers)."""

    __slots__ = (
        "create",
        "dir",
        "failed",
        "meta_done",
        "name",
        "node",
        "path",
        "remaining",
        "size",
    )

    def __init__(
        self,
        where: _Dir,
        name: str,
        path: str,
        node: Node,
        remaining: int,
        size: int,
        create: bool,
    ) -> None:
        self.dir = where
        self.name = name
        self.path = path
        self.node = node
        self.remaining = remaining
        self.size = size
        self.create = create
        self.failed = False
        self.meta_done = False


class _Restore:
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
        self.owners = os.geteuid() == 0 if options.owners is None else options.owners
        self.result = RestoreResult(snap)
        self.plan: dict[bytes, list[tuple[_PendingFile, int]]] = defaultdict(list)
        self.plan_uses = 0
        self.batch_files: list[_PendingFile] = []
        self.dirs: list[tuple[str, str, Node]] = []  # rel, path, node
        self.hardlinks: list[tuple[str, str, str, str, Node]] = []  # dir rel, name, path, link
        self.restored: set[str] = set()
        self.deferred: list[_PendingFile] = []  # part 0: files of several chunks, with parts
        self.dir_no = 0  # directories walked: with an entry's position, who restores it
        self.lock = threading.Lock()
        self.zero = bytes(repo.config.chunker.max_size)
        # Batches run in the background while the walk plans the next one. A group of
        # chunks is read by a fetch thread, then decoded and written by a worker; at most
        # ``limit`` groups are in flight, which bounds memory.
        workers = options.workers or max(1, available_cpus() // self.nparts)
        fetchers = max(1, options.fetchers // self.nparts)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="restore")
        self.fetch_pool = ThreadPoolExecutor(fetchers, thread_name_prefix="restore-fetch")
        self.limit = fetchers + workers
        # With parts, each reads less at a time, so that their buffers together take about
        # what one process's take (measured: no slower, 20 MB less memory with two).
        self.max_read = max(_MAX_READ // self.nparts, _MIN_READ)
        self.inflight = 0
        self.idle = threading.Condition(self.lock)
        self.crash: BaseException | None = None
        self.tree_pool = ThreadPoolExecutor(2, thread_name_prefix="restore-trees")
        self.trees_ahead: dict[str, Future[list[Node]]] = {}
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
        self.root = _Dir(root_fd, target if target.endswith("/") else target + "/", "")
        self.root.refs = 2
        self.open_dirs: set[_Dir] = {self.root}
        self.batch = _Batch()
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

    def _meta_fd(self, fd: int, path: str, node: Node) -> None:
        """Owner, mode and times of a file or directory, through its own descriptor."""
        try:
            if self.owners:
                os.fchown(fd, int(node.get("uid", -1)), int(node.get("gid", -1)))
            os.fchmod(fd, int(node.get("mode", 0o644)) & 0o7777)
            os.utime(fd, ns=(int(node.get("atime_ns", 0)), int(node.get("mtime_ns", 0))))
        except OSError as exc:
            self._error(path, f"metadata: {exc.strerror}")

    def _meta_entry(self, where: _Dir, name: str, path: str, node: Node, symlink: bool) -> None:
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

    def _file_meta(self, pending: _PendingFile) -> None:
        """A file's metadata once all its bytes are written (they mark it complete)."""
        try:
            fd = os.open(pending.name, _META_FLAGS, dir_fd=pending.dir.fd)
        except OSError as exc:
            self._error(pending.path, f"metadata: {exc.strerror}")
            return
        try:
            self._meta_fd(fd, pending.path, pending.node)
        finally:
            os.close(fd)

    # ------------------------------------------------------------ open directories
    def _adopt(self, fd: int, path: str, rel: str) -> _Dir:
        where = _Dir(fd, path, rel)
        with self.lock:
            self.open_dirs.add(where)
        return where

    def _release(self, where: _Dir) -> None:
        with self.lock:
            self._release_locked(where)

    def _release_locked(self, where: _Dir) -> None:
        where.refs -= 1
        if where.refs == 0:
            os.close(where.fd)
            where.fd = -1
            self.open_dirs.discard(where)

    def _reopen(self, rel: str) -> int:
        """The target's directory ``rel``, opened again after the walk let go of it (see
        :func:`safe_fs.open_rel`); the descriptor stays in ``rel_fds`` until the next
        :meth:`_trim_rel_fds` or the end."""
        return open_rel(self.root.fd, rel, self.rel_fds)

    def _trim_rel_fds(self) -> None:
        """Close the reopened directories when they are many (between two uses)."""
        if len(self.rel_fds) > self.rel_fds_max:
            self._close_rel_fds()

    def _close_rel_fds(self) -> None:
        fds, self.rel_fds = self.rel_fds, {}
        for fd in fds.values():
            os.close(fd)

    # ------------------------------------------------------------ walking the tree
    def walk(self, tree_id: str, fresh: bool = False) -> None:
        """Restore the tree ``tree_id`` into the target, depth first in the snapshot's order
        (every part walks alike). ``fresh``: this run created the directory, so nothing can
        exist in it yet and the per-file checks for an earlier run are skipped. Iterative:
        a tree thousands of levels deep takes memory and a descriptor per level, no
        recursion."""
        stack: list[_Frame] = []
        frame = self._open_tree(tree_id, self.root, "", fresh, self.selection is None)
        while frame is not None:
            child = self._walk_dir(frame)
            if child is not None:
                stack.append(frame)
                frame = child
                continue
            self._release(frame.dir)
            frame = stack.pop() if stack else None

    def _open_tree(
        self, tree_id: str, where: _Dir, rel: str, fresh: bool, whole: bool
    ) -> _Frame | None:
        """Load the tree of directory ``where`` (or report it and let go of ``where``)."""
        self.dir_no += 1
        try:
            ahead = self.trees_ahead.pop(tree_id, None)
            nodes = ahead.result() if ahead is not None else self.repo.load_tree(tree_id)
        except CorruptObject as exc:
            if self.part == 0:  # every part reads it; one message is enough
                self._error(where.path, f"directory cannot be read from the repository: {exc}")
            self._release(where)
            return None
        # The subdirectories' trees are loaded in the background, one level ahead of the
        # walk: on a cold cache each is a disk read that would otherwise stall the walk,
        # which feeds the workers.
        names: list[object] = []
        selection = self.selection
        for node in nodes:
            names.append(node.get("name"))
            sub = node.get("subtree")
            if (
                node.get("type") == "dir"
                and isinstance(sub, str)
                and sub not in self.trees_ahead
                and (
                    whole
                    or selection is None
                    or selection.decide(f"{rel}/{node.get('name')}".lstrip("/"), True, False)[0]
                )
            ):
                self.trees_ahead[sub] = self.tree_pool.submit(self.repo.load_tree, sub)
        dups = _duplicates(names)
        if dups and self.part == 0:
            for name in sorted(dups):
                self._error(
                    where.path + _shown(name),
                    "the snapshot's directory holds this name more than once: none restored",
                )
        return _Frame(iter(enumerate(nodes)), where, rel, fresh, self.dir_no, dups, whole)

    def _walk_dir(self, frame: _Frame) -> _Frame | None:
        """Restore the entries of ``frame`` in order, up to its next subdirectory: return
        that subdirectory's frame (the walk comes back for the rest), or None when done."""
        where, rel, fresh, dir_no, dups = (
            frame.dir,
            frame.rel,
            frame.fresh,
            frame.dir_no,
            frame.dups,
        )
        part, nparts = self.part, self.nparts
        prefix = where.path
        selection = None if frame.whole else self.selection
        whole = True
        for position, node in frame.entries:
            try:
                kind = node["type"]
                mine = nparts == 1 or (dir_no + position // FILES_PER_OWNER) % nparts == part
                if not (mine or kind == "dir" or part == 0 or len(node.get("content", ())) > 1):
                    continue  # another part's, and nothing part 0 notes: the quickest way out
                name = node["name"]
                if type(name) is not str or bad_name(name):
                    if mine:
                        self._error(prefix + _shown(name), "unsafe name in snapshot, skipped")
                    continue
                if dups is not None and name in dups:
                    continue  # reported once by _open_tree
                node_rel = f"{rel}/{name}" if rel else name
                if selection is not None:
                    restore, whole = selection.decide(node_rel, kind == "dir", False)
                    if not restore:
                        continue
                elif self.selection is not None and self.selection.filter.excluded(node_rel):
                    continue  # in a directory selected whole, an excluded entry
                path = prefix + name
                if kind == "dir":
                    child = self._enter(where, name, path, node_rel, node, fresh, whole)
                    if child is not None:
                        return child
                    continue
                if kind == "file":
                    content = node.get("content")
                    if (
                        fresh
                        and nparts == 1
                        and isinstance(content, list)
                        and len(content) == 1
                        and "hardlink" not in node
                    ):
                        self._new_one_chunk_file(where, name, path, node_rel, node, content[0])
                    elif nparts == 1:
                        self._file(where, name, path, node_rel, node, fresh)
                    else:
                        self._file_of_part(where, name, path, node_rel, node, mine)
                elif not mine:
                    continue
                elif kind == "symlink":
                    self._symlink(where, name, path, node, fresh)
                else:
                    self._special(where, name, path, node, fresh)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                # only a crafted tree (the decoder checks every field): this entry only
                if part == 0:
                    what = node.get("name") if isinstance(node, dict) else None
                    self._error(prefix + _shown(what), f"malformed entry in snapshot ({exc})")
        return None

    def _enter(
        self,
        where: _Dir,
        name: str,
        path: str,
        rel: str,
        node: Node,
        fresh: bool,
        whole: bool,
    ) -> _Frame | None:
        """Create (or open) the directory ``name`` of ``where``; its frame, to walk it
        (``whole``: everything in it is selected)."""
        try:
            if fresh:
                try:
                    fd, _ = enter_dir(name, where.fd, create_only=True)
                except FileExistsError:
                    if self.nparts == 1:  # with parts, another may have come first
                        raise
                    fd = os.open(name, DIR_FLAGS, dir_fd=where.fd)
                sub_fresh = True
            else:
                fd, sub_fresh = enter_dir(name, where.fd)
        except OSError as exc:
            if self.part == 0:  # every part tries; one message is enough
                self._error(path, f"cannot create directory: {exc.strerror}")
            return None
        child = self._adopt(fd, path + "/", rel)
        if self.part == 0:
            self.dirs.append((rel, path, node))
            self.result.dirs += 1
        sub = node.get("subtree")
        if isinstance(sub, str):
            return self._open_tree(sub, child, rel, sub_fresh, whole)
        self._release(child)
        return None

    def _symlink(self, where: _Dir, name: str, path: str, node: Node, fresh: bool) -> None:
        dir_fd = where.fd
        try:
            target = str(node.get("target", ""))
            if not fresh:
                try:
                    if os.readlink(name, dir_fd=dir_fd) == target:
                        self._meta_entry(where, name, path, node, True)
                        self.result.links += 1
                        return
                except OSError:
                    pass
                clear(name, dir_fd)
            os.symlink(target, name, dir_fd=dir_fd)
            self._meta_entry(where, name, path, node, True)
            self.result.links += 1
        except (OSError, ValueError) as exc:
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._error(path, f"cannot create symlink: {msg}")

    def _special(self, where: _Dir, name: str, path: str, node: Node, fresh: bool) -> None:
        """A FIFO, socket or device node (a socket's node is made with ``mknod``, as
        binding would; nobody listens on it, as after a reboot)."""
        try:
            if not fresh:
                clear(name, where.fd)
            mode = _SPECIAL_KINDS[node["type"]] | int(node.get("mode", 0o600)) & 0o7777
            os.mknod(name, mode, int(node.get("rdev", 0)), dir_fd=where.fd)
            self._meta_entry(where, name, path, node, False)
            self.result.special += 1
        except (OSError, KeyError) as exc:
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._error(path, f"cannot create {node['type']}: {msg}")

    def _file(
        self, where: _Dir, name: str, path: str, rel: str, node: Node, fresh: bool = False
    ) -> None:
        size = int(node.get("size", 0))
        link = node.get("hardlink")
        if isinstance(link, str) and (self.selection is None or self.selection.selects(link)):
            self.hardlinks.append((where.rel, name, path, link, node))
            return
        dir_fd = where.fd
        exists = False
        if not fresh:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                exists = True
                if (
                    stat.S_ISREG(st.st_mode)
                    and st.st_size == size
                    and st.st_mtime_ns == int(node.get("mtime_ns", -1))
                ):
                    self.result.files_skipped += 1
                    self.progress.files_done += 1
                    self.progress.bytes_done += size
                    self.restored.add(rel)
                    return
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._error(path, f"cannot inspect: {exc.strerror}")
                return
        content = [bytes.fromhex(c) for c in node.get("content", [])]
        single = len(content) == 1
        try:
            # Whatever is there is replaced, not written through: a symlink is removed, and
            # so is a file (it may be a hard link to a file elsewhere).
            if exists:
                clear(name, dir_fd)
            if not single:
                fd = os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
                try:
                    os.ftruncate(fd, size)
                    if not content:
                        self._meta_fd(fd, path, node)
                finally:
                    os.close(fd)
        except OSError as exc:
            self._error(path, f"cannot create file: {exc.strerror}")
            return
        self.restored.add(rel)
        if not content:
            with self.lock:
                self.result.files += 1
                self.progress.files_done += 1
            return
        pending = _PendingFile(where, name, path, node, len(content), size, single)
        offset = 0
        raw_size = self.repo.index.raw_size
        plan = self.plan
        for blob_id in content:
            raw = raw_size(blob_id)
            if raw is None:
                pending.failed = True
                self._error(path, f"chunk {blob_id.hex()} is in no index: data lost")
                break
            plan[blob_id].append((pending, offset))
            offset += raw
        self.plan_uses += len(content)
        if offset != size and not pending.failed:
            pending.failed = True
            self._error(path, f"chunks add up to {offset} bytes, the snapshot says {size}")
        self._planned(pending)

    def _planned(self, pending: _PendingFile) -> None:
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
            self.plan_uses >= _BATCH_BLOBS
            or len(self.batch_files) >= _BATCH_FILES
            or len(batch.dirs) >= self.batch_dirs
        ):
            self.run_batch()

    def _new_one_chunk_file(
        self, where: _Dir, name: str, path: str, rel: str, node: Node, hex_id: str
    ) -> None:
        """A file of one chunk (most files) in a new target, planned with the least work:
        a worker creates, writes and completes it (:meth:`_create`)."""
        blob_id = bytes.fromhex(hex_id)
        size = int(node.get("size", 0))
        if self.repo.index.raw_size(blob_id) != size:  # lost or inconsistent: _file says which
            self._file(where, name, path, rel, node, fresh=True)
            return
        self.restored.add(rel)
        pending = _PendingFile(where, name, path, node, 1, size, True)
        self.plan[blob_id].append((pending, 0))
        self.plan_uses += 1
        self._planned(pending)

    def _file_of_part(
        self, where: _Dir, name: str, path: str, rel: str, node: Node, mine: bool
    ) -> None:
        """A file, when the restore is split between processes (the target is new).

        A file of one chunk is this part's or not; the chunks of a larger file are shared
        out by chunk id, and part 0 sets its size and metadata once every part is done.
        """
        link = node.get("hardlink")
        if isinstance(link, str) and (self.selection is None or self.selection.selects(link)):
            if self.part == 0:
                self.hardlinks.append((where.rel, name, path, link, node))
            return
        content = node.get("content", [])
        if len(content) <= 1:
            if mine and len(content) == 1:
                self._new_one_chunk_file(where, name, path, rel, node, content[0])
            elif mine:
                self._file(where, name, path, rel, node, fresh=True)
            elif self.part == 0:
                self.restored.add(rel)  # by another part: a hard link may point to it
            return
        size = int(node.get("size", 0))
        # One step more than its chunks: the last, size and metadata, is part 0's once every
        # part is done (so no part counts it complete, see _write_chunks).
        pending = _PendingFile(where, name, path, node, len(content) + 1, size, False)
        if self.part == 0:
            self.restored.add(rel)
            self.deferred.append(pending)
        offset = 0
        raw_size = self.repo.index.raw_size
        plan = self.plan
        part, nparts = self.part, self.nparts
        for hex_id in content:
            blob_id = bytes.fromhex(hex_id)
            raw = raw_size(blob_id)
            if raw is None:
                pending.failed = True
                if part == 0:
                    self._error(path, f"chunk {hex_id} is in no index: data lost")
                return
            if blob_id[0] % nparts == part:
                plan[blob_id].append((pending, offset))
                self.plan_uses += 1
            offset += raw
        if offset != size:
            pending.failed = True
            if part == 0:
                self._error(path, f"chunks add up to {offset} bytes, the snapshot says {size}")
            return
        self._planned(pending)

    # ------------------------------------------------------------ data
    def run_batch(self) -> None:
        """Submit the planned chunks, pack by pack, to the pool.

        A bounded number of reads is in flight (the walk waits for a slot), so the
        walk, the reads and the writes overlap without a batch ever waiting for its
        slowest read, and memory stays bounded.
        """
        plan, self.plan, self.plan_uses = self.plan, defaultdict(list), 0
        batch, self.batch = self.batch, _Batch()
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
            for group in _groups(sorted(blobs, key=lambda b: b[3]), self.max_read)
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

    def _batch_step(self, batch: _Batch) -> None:
        """One of the batch's groups is done (or its submission): after the last, let go of
        its directories. Called with the lock held."""
        batch.pending -= 1
        if batch.pending == 0:
            for where in batch.dirs:
                self._release_locked(where)
            batch.dirs = []

    def _group_done(self, batch: _Batch, crash: BaseException | None = None) -> None:
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

    def _done(self, pending: _PendingFile) -> None:
        """All of a file's bytes are written: its metadata last (this marks it complete)."""
        if not pending.meta_done:
            self._file_meta(pending)
        with self.lock:
            self.result.files += 1
            self.progress.files_done += 1

    def _fetch_group(
        self,
        pack: str,
        group: list[_Blob],
        plan: dict[bytes, list[tuple[_PendingFile, int]]],
        batch: _Batch,
    ) -> None:
        """Stage one: read a group's byte range, then hand it to a worker (stage two)."""
        start = group[0][3]
        end = group[-1][3] + group[-1][4]
        try:
            data = self.repo.storage.get(pack_object_name(pack), start, end - start)
            self.pool.submit(self._write_group, pack, group, plan, memoryview(data), batch)
        except StorageError as exc:
            for blob_id, *_ in group:
                self._fail(plan[blob_id], f"pack {pack} cannot be read: {exc}")
            self._group_done(batch)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the walking thread
            self._group_done(batch, exc)

    def _write_group(
        self,
        pack: str,
        group: list[_Blob],
        plan: dict[bytes, list[tuple[_PendingFile, int]]],
        data: memoryview,
        batch: _Batch,
    ) -> None:
        """Stage two: authenticate, decode, check and write a group's chunks."""
        try:
            self._write_chunks(pack, group, plan, data, group[0][3])
        except BaseException as exc:  # noqa: BLE001 - re-raised by the walking thread
            self._group_done(batch, exc)
        else:
            self._group_done(batch)

    def _write_chunks(
        self,
        pack: str,
        group: list[_Blob],
        plan: dict[bytes, list[tuple[_PendingFile, int]]],
        data: memoryview,
        start: int,
    ) -> None:
        try:  # format version 2: the pack's own subkey, from its first bytes
            aead = self.repo.pack_aead(pack, data if start == 0 else None)
        except CorruptObject as exc:
            for blob_id, *_ in group:
                self._fail(plan[blob_id], f"chunk {blob_id.hex()} cannot be read ({exc})")
            return
        id_of = self.repo.keys.blob_id
        for blob_id, blob_type, flags, offset, stored, raw in group:
            uses = plan[blob_id]
            sealed = data[offset - start : offset - start + stored]
            try:
                if len(sealed) != stored or blob_type != BLOB_DATA:
                    raise ValueError("pack is shorter than the index says")
                plain = decode_blob(aead, blob_type, blob_id, flags, raw, sealed)
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
                if last and not pending.meta_done:
                    self._done(pending)

    def _create(self, pending: _PendingFile, plain: bytes, zero: bool) -> None:
        """Create a file of one chunk, write it and set its metadata through one file
        descriptor, in a worker (one lookup, in its directory's descriptor: a new entry,
        never anything that was there, a symlink least of all)."""
        node = pending.node
        mode = int(node.get("mode", 0o644)) & 0o7777
        fd = os.open(pending.name, NEW_FILE_FLAGS, mode & 0o777, dir_fd=pending.dir.fd)
        try:
            if zero:
                os.ftruncate(fd, pending.size)
            elif node.get("sparse"):
                self._write_sparse(fd, plain, 0)
                os.ftruncate(fd, pending.size)
            else:
                os.write(fd, plain)
            try:
                uid, gid = int(node.get("uid", -1)), int(node.get("gid", -1))
                if self.owners and (self.chown_always or uid != self.euid or gid != self.egid):
                    os.fchown(fd, uid, gid)
                # the mode open() gave (umask applied), unless chown cleared set-id bits
                if mode != mode & 0o777 & ~self.umask:
                    os.fchmod(fd, mode)
                os.utime(fd, ns=(int(node.get("atime_ns", 0)), int(node.get("mtime_ns", 0))))
            except OSError as exc:
                self._error(pending.path, f"metadata: {exc.strerror}")
            pending.meta_done = True
        finally:
            os.close(fd)

    def _write_at(self, pending: _PendingFile, plain: bytes, offset: int) -> None:
        """Write one chunk of a file of several, created at its size by the walk (or, when
        the restore is split between processes, by whichever part writes to it first)."""
        create = os.O_CREAT if self.nparts > 1 else 0
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | create
        fd = os.open(pending.name, flags, 0o600, dir_fd=pending.dir.fd)
        try:
            if pending.node.get("sparse"):
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

    def _fail(self, uses: list[tuple[_PendingFile, int]], message: str) -> None:
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

    def _merge(self, results: list[PartResult]) -> None:
        """Count the other parts' work, and complete the files that parts shared: size and
        metadata, except for a file a part could not write (its metadata must not say
        that it is complete, so that another run redoes it)."""
        result = self.result
        failed = {e["path"] for e in result.errors}
        for other in results:
            result.files += other.files
            result.links += other.links
            result.special += other.special
            result.bytes_written += other.bytes_written
            result.errors.extend(other.errors)
            failed.update(e["path"] for e in other.errors)
        for pending in self.deferred:
            if pending.failed or pending.path in failed:
                continue
            self._trim_rel_fds()
            try:
                dir_fd = self._reopen(pending.dir.rel)
                flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(pending.name, flags, 0o600, dir_fd=dir_fd)
            except OSError as exc:
                self._error(pending.path, f"cannot create file: {exc.strerror}")
                continue
            try:
                os.ftruncate(fd, pending.size)  # a file ending in a hole, or all holes
                self._meta_fd(fd, pending.path, pending.node)
            except OSError as exc:
                self._error(pending.path, f"cannot create file: {exc.strerror}")
                continue
            finally:
                os.close(fd)
            result.files += 1
            self.progress.files_done += 1
        self.deferred = []

    def close(self) -> None:
        self.tree_pool.shutdown(wait=True)
        self.fetch_pool.shutdown(wait=True)
        self.pool.shutdown(wait=True)
        self._close_rel_fds()
        for where in self.open_dirs:  # all of them after a failure, else the target
            os.close(where.fd)
            where.fd = -1
        self.open_dirs = set()

    def finish(self) -> None:
        """Part 0: wait for the other parts, then what needs all files: the metadata of
        files that parts shared, hard links, and directories' metadata (last, as writing
        into a directory changes its mtime). Directories are opened again from the target,
        one name at a time, never following a symlink."""
        self.drain()
        if self.nparts > 1:
            self._merge(self.parts.wait())
        for dir_rel, name, path, link, node in self.hardlinks:
            self._hardlink(dir_rel, name, path, link, node)
        self.drain()
        for rel, path, node in reversed(self.dirs):
            self._trim_rel_fds()
            try:
                fd = self._reopen(rel)
            except OSError as exc:
                self._error(path, f"metadata: {exc.strerror}")
                continue
            # its subdirectories came after it in the walk, so they are done: so is it
            del self.rel_fds[rel]
            try:
                self._meta_fd(fd, path, node)
            finally:
                os.close(fd)
        self._close_rel_fds()

    def _hardlink(self, dir_rel: str, name: str, path: str, link: str, node: Node) -> None:
        """``name`` of directory ``dir_rel`` as a hard link to the file ``link`` (both in the
        snapshot), or, when that was not restored, from its own content list."""
        self._trim_rel_fds()
        try:
            dir_fd = self._reopen(dir_rel)
        except OSError as exc:
            self._error(path, f"cannot create hard link: {exc.strerror}")
            return
        first_rel, _, first_name = link.rpartition("/")
        first = None
        if link in self.restored:
            try:
                first_fd = self._reopen(first_rel)
                st = os.stat(first_name, dir_fd=first_fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    first = st
            except OSError:
                pass
        if first is not None:
            try:
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if (st.st_dev, st.st_ino) == (first.st_dev, first.st_ino):
                        self.result.files_skipped += 1
                        return
                except FileNotFoundError:
                    pass
                clear(name, dir_fd)
                os.link(
                    first_name,
                    name,
                    src_dir_fd=first_fd,
                    dst_dir_fd=dir_fd,
                    follow_symlinks=False,
                )
                self.result.files += 1
                self.progress.files_done += 1
            except OSError as exc:
                self._error(path, f"cannot create hard link: {exc.strerror}")
            return
        # The first name was not restored: write this one from its own content list, in a
        # descriptor of its own (the batch holds it until the file is written).
        clone = dict(node)
        clone.pop("hardlink")
        try:
            where = self._adopt(os.dup(dir_fd), path[: -len(name)], dir_rel)
        except OSError as exc:
            self._error(path, f"cannot create file: {exc.strerror}")
            return
        try:
            self._file(where, name, path, link, clone)
        finally:
            self._release(where)


def _shown(name: object) -> str:
    """A name of a crafted snapshot as an error message shows it: NUL escaped, anything
    that is not a string as Python writes it."""
    if isinstance(name, str):
        return name.replace("\x00", "\\x00") if name else "''"
    return repr(name)


def _duplicates(names: list[object]) -> set[str] | None:
    """The names that a directory of the snapshot holds more than once (a crafted tree:
    the decoder refuses them too), or None."""
    try:
        if len(set(names)) == len(names):
            return None
    except TypeError:  # a name that is not a string: reported entry by entry
        pass
    seen: set[str] = set()
    dups: set[str] = set()
    for name in names:
        if isinstance(name, str):
            (dups if name in seen else seen).add(name)
    return dups or None


def _groups(blobs: list[_Blob], max_read: int = _MAX_READ) -> Iterator[list[_Blob]]:
    """Split a pack's needed blobs (sorted by offset) into ranges worth one read each."""
    group: list[_Blob] = []
    for blob in blobs:
        if group:
            start = group[0][3]
            prev_end = group[-1][3] + group[-1][4]
            if (
                blob[3] - prev_end > _GAP
                or blob[3] + blob[4] - start > max_read
                or len(group) >= _MAX_GROUP
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


def _absent_or_empty(target: str) -> bool:
    """True when nothing of an earlier run can be under ``target``: it does not exist or is
    an empty directory. Then every file is new, which spares an ``lstat`` (and the checks
    for an earlier, interrupted run) per file: a restore into a directory just created for
    it (the usual case) is as fast as one into a path that did not exist."""
    try:
        with os.scandir(target) as it:
            return next(it, None) is None
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        return False


def restore_snapshot(
    repo: Repository,
    snap: Snapshot,
    target: str,
    options: RestoreOptions | None = None,
    progress: ProgressCallback | None = None,
) -> RestoreResult:
    """Restore ``snap`` under ``target`` (created if missing).

    With ``options.includes``/``excludes``, only the selected entries are restored; a bad
    pattern raises :class:`~safehold.engine.patterns.PatternError` and a selection of nothing
    :class:`NothingSelected`, before ``target`` is touched."""
    options = options or RestoreOptions()
    selection = plan_selection(repo, snap.tree, options.includes, options.excludes)
    tune_malloc()
    fresh = _absent_or_empty(target)
    os.makedirs(target, exist_ok=True)
    chown_always = not fresh or bool(os.stat(target).st_mode & stat.S_ISGID)
    parts = Parts(_process_count(repo, options, fresh))
    with rare_gc():
        if parts.fork():  # before any thread of the restore starts
            _restore_part(repo, snap, target, options, parts, chown_always, selection)
        with ProgressTracker("restore", progress) as tracker:
            summary = snap.summary
            if selection is None:  # a selection's totals are not known: none is shown
                tracker.files_total = int(summary.get("total_files", 0)) or None
                tracker.bytes_total = int(summary.get("total_bytes", 0)) or None
            tracker.elsewhere = parts.progress_elsewhere
            r = _Restore(repo, snap, target, options, tracker, parts, selection)
            r.chown_always = chown_always
            r.result.processes = parts.count
            if selection is not None:
                r.result.unmatched = [asdict(u) for u in selection.unmatched]
            try:
                r.walk(snap.tree, fresh)
                r.finish()
            finally:
                parts.abandon()  # only after a failure are parts left
                r.close()
    return r.result


def _process_count(repo: Repository, options: RestoreOptions, fresh: bool) -> int:
    """How many processes restore: one per CPU, at most :data:`_MAX_PROCESSES`, into a new
    target from a local repository (an object store's client must not be shared by forked
    processes, see restore_parts)."""
    if not fresh or not hasattr(os, "fork") or not repo.storage.location.startswith("file:"):
        return 1
    return options.processes or min(available_cpus(), _MAX_PROCESSES)


def _restore_part(
    repo: Repository,
    snap: Snapshot,
    target: str,
    options: RestoreOptions,
    parts: Parts,
    chown_always: bool,
    selection: Selection | None,
) -> NoReturn:
    """A child's share of the restore; it ends the process (see :meth:`Parts.exit`)."""
    tracker = ProgressTracker("restore", None)
    try:
        r = _Restore(repo, snap, target, options, tracker, parts, selection)
        r.chown_always = chown_always
        r.walk(snap.tree, True)
        r.drain()
        r.close()
    except BaseException as exc:  # noqa: BLE001 - reported by part 0
        parts.exit(None, exc)
    parts.publish(tracker.files_done, tracker.bytes_done)
    res = r.result
    parts.exit(PartResult(res.files, res.links, res.special, res.bytes_written, res.errors))
