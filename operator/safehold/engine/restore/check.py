"""``restore --verify``: read a restored tree back and check it against its snapshot.

:func:`verify_restored` walks the snapshot's trees (within the restore's selection) beside
the target and checks that every directory, file, symlink, special file and hard link is
there with its type; a symlink's target; a file's size, and its content chunk by chunk: each
chunk of the snapshot's content list is read back (at the offsets the index's plain sizes
give) and its keyed id computed as backup computes it (``repo.keys.blob_id``), so a byte that
differs anywhere is found without the repository's data being read. Files are read in a few
threads, one chunk at a time each: memory stays bounded, whatever the file sizes.

Like the restore, the check never follows a symlink below the target: directories are opened
relative to their parent's descriptor (:mod:`safehold.engine.restore.safe_fs`). Entries the
restore refuses (unsafe names, names a directory holds twice) are not checked: the restore
reported them.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from safehold.engine.progress import ProgressCallback, ProgressTracker
from safehold.engine.restore.safe_fs import DIR_FLAGS, bad_name, open_rel
from safehold.engine.restore.select import Selection
from safehold.engine.tuning import available_cpus
from safehold.repo import CorruptObject, Node, Repository, Snapshot

__all__ = ["LISTED_PROBLEMS", "RestoreCheck", "verify_restored"]

#: Problems a check lists (the first ones); ``problems_total`` counts them all.
LISTED_PROBLEMS = 100
#: Opens a restored file to read it back (never blocks on a FIFO, never follows a symlink).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_KINDS = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFBLK: "dev",
    stat.S_IFCHR: "chardev",
}
_NAMES = {
    "dir": "a directory",
    "file": "a file",
    "symlink": "a symlink",
    "fifo": "a FIFO",
    "socket": "a socket",
    "dev": "a block device",
    "chardev": "a character device",
}


@dataclass
class RestoreCheck:
    """What reading a restored tree back found: ``files`` checked (hard links included),
    ``bytes`` read back, and the problems (the first :data:`LISTED_PROBLEMS` found of
    ``problems_total``, by path), each ``{"path": <in the snapshot>, "error": <what
    differs>}``."""

    files: int = 0
    bytes: int = 0
    problems_total: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problems_total == 0

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "problems_total": self.problems_total,
            "problems": self.problems,
        }


class _Frame:
    """A directory being checked: its entries, its descriptor, its path in the snapshot."""

    __slots__ = ("entries", "fd", "rel", "whole")

    def __init__(self, entries: Iterator[Node], fd: int, rel: str, whole: bool) -> None:
        self.entries = entries
        self.fd = fd
        self.rel = rel
        self.whole = whole


class _Checker:
    def __init__(
        self,
        repo: Repository,
        root_fd: int,
        selection: Selection | None,
        progress: ProgressTracker,
        workers: int,
    ) -> None:
        self.repo = repo
        self.root_fd = root_fd
        self.selection = selection
        self.progress = progress
        self.check = RestoreCheck()
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="restore-check")
        self.slots = threading.BoundedSemaphore(2 * workers)  # files open at once, at most
        self.buffers = threading.local()
        self.chunk_max = repo.config.chunker.max_size
        self.hardlinks: list[tuple[str, str, str, Node]] = []  # dir rel, name, link, node
        self.crash: BaseException | None = None  # a bug in a reading thread, raised at the end

    def problem(self, rel: str, error: str) -> None:
        with self.lock:
            check = self.check
            check.problems_total += 1
            if len(check.problems) < LISTED_PROBLEMS:
                check.problems.append({"path": "/" + rel, "error": error})

    # ------------------------------------------------------------ the walk
    def walk(self, tree_id: str) -> None:
        """Check the tree ``tree_id`` against the target, depth first, without recursion."""
        stack: list[_Frame] = []
        frame = self._open_tree(tree_id, os.dup(self.root_fd), "", self.selection is None)
        while frame is not None:
            child = self._check_entries(frame)
            if child is not None:
                stack.append(frame)
                frame = child
                continue
            os.close(frame.fd)
            frame = stack.pop() if stack else None

    def _open_tree(self, tree_id: str, fd: int, rel: str, whole: bool) -> _Frame | None:
        try:
            nodes = self.repo.load_tree(tree_id)
        except CorruptObject as exc:
            os.close(fd)
            self.problem(rel, f"directory cannot be read from the repository: {exc}")
            return None
        names = Counter(str(n.get("name")) for n in nodes)
        if len(names) != len(nodes):  # a crafted tree: the restore skips those names
            nodes = [n for n in nodes if names[str(n.get("name"))] == 1]
        return _Frame(iter(nodes), fd, rel, whole)

    def _check_entries(self, frame: _Frame) -> _Frame | None:
        """Check the entries of ``frame`` up to its next subdirectory: return that
        subdirectory's frame (the walk comes back for the rest), or None when done."""
        selection = None if frame.whole else self.selection
        for node in frame.entries:
            name, kind = node.get("name"), node.get("type")
            if not isinstance(name, str) or bad_name(name):
                continue  # the restore reports it and restores nothing
            rel = f"{frame.rel}/{name}" if frame.rel else name
            whole = True
            if selection is not None:
                chosen, whole = selection.decide(rel, kind == "dir", False)
                if not chosen:
                    continue
            elif self.selection is not None and self.selection.filter.excluded(rel):
                continue
            if kind == "dir":
                child = self._enter(frame.fd, name, rel, node, whole)
                if child is not None:
                    return child
            elif kind == "file":
                self._file(frame.fd, name, rel, node, frame.rel)
            elif kind == "symlink":
                self._symlink(frame.fd, name, rel, node)
            else:
                self._special(frame.fd, name, rel, str(kind))
        return None

    def _found(self, dir_fd: int, name: str, rel: str, kind: str) -> os.stat_result | None:
        """The entry ``name``, when it is there with the type ``kind`` (else reported)."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            self.problem(rel, "missing")
            return None
        except OSError as exc:
            self.problem(rel, f"cannot inspect: {exc.strerror}")
            return None
        found = _KINDS.get(stat.S_IFMT(st.st_mode), "something else")
        if found != kind:
            self.problem(rel, f"{_NAMES.get(found, found)} where the snapshot has {_NAMES[kind]}")
            return None
        return st

    def _enter(self, dir_fd: int, name: str, rel: str, node: Node, whole: bool) -> _Frame | None:
        if self._found(dir_fd, name, rel, "dir") is None:
            return None
        sub = node.get("subtree")
        if not isinstance(sub, str):
            return None
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            self.problem(rel, f"cannot open: {exc.strerror}")
            return None
        return self._open_tree(sub, fd, rel, whole)

    def _symlink(self, dir_fd: int, name: str, rel: str, node: Node) -> None:
        if self._found(dir_fd, name, rel, "symlink") is None:
            return
        want = str(node.get("target", ""))
        try:
            got = os.readlink(name, dir_fd=dir_fd)
        except OSError as exc:
            self.problem(rel, f"cannot read the symlink: {exc.strerror}")
            return
        if got != want:
            self.problem(rel, f"symlink to {got!r} (snapshot: {want!r})")

    def _special(self, dir_fd: int, name: str, rel: str, kind: str) -> None:
        if kind in _NAMES:
            self._found(dir_fd, name, rel, kind)

    # ------------------------------------------------------------ files
    def _file(self, dir_fd: int, name: str, rel: str, node: Node, dir_rel: str) -> None:
        """Open the file and hand it to a reading thread (hard links wait for the end)."""
        link = node.get("hardlink")
        if isinstance(link, str) and (self.selection is None or self.selection.selects(link)):
            self.hardlinks.append((dir_rel, name, link, node))
            return
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            self.problem(rel, "missing")
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.problem(rel, "a symlink where the snapshot has a file")
            else:
                self.problem(rel, f"cannot open: {exc.strerror}")
            return
        self.slots.acquire()
        try:
            self.pool.submit(self._read_back, fd, rel, node)
        except BaseException:
            self.slots.release()
            os.close(fd)
            raise

    def _read_back(self, fd: int, rel: str, node: Node) -> None:
        """In a reading thread: the open file ``fd`` against the file ``node``."""
        try:
            with io.FileIO(fd, "rb", closefd=True) as f:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    found = _KINDS.get(stat.S_IFMT(st.st_mode), "something else")
                    self.problem(rel, f"{_NAMES.get(found, found)} where the snapshot has a file")
                    return
                self._content(f, st.st_size, rel, node)
        except OSError as exc:
            self.problem(rel, f"cannot read: {exc.strerror}")
        except BaseException as exc:  # noqa: BLE001 - raised by finish, in the caller's thread
            self.crash = self.crash or exc
        finally:
            self.slots.release()

    def _content(self, f: io.FileIO, actual: int, rel: str, node: Node) -> None:
        """Size, then each chunk's id, read back one chunk at a time."""
        size = int(node.get("size", 0))
        if actual != size:
            self.problem(rel, f"size {actual} (snapshot: {size})")
            self._count(0)
            return
        buffer = getattr(self.buffers, "data", None)
        if buffer is None:
            buffer = self.buffers.data = memoryview(bytearray(self.chunk_max))
        raw_size, id_of = self.repo.index.raw_size, self.repo.keys.blob_id
        offset = 0
        differ: list[tuple[int, int]] = []
        for hex_id in node.get("content", []):
            blob_id = bytes.fromhex(hex_id)
            raw = raw_size(blob_id)
            if raw is None or raw > len(buffer):
                self.problem(rel, f"chunk {hex_id} is in no index: cannot be checked")
                self._count(offset)
                return
            view = buffer[:raw]
            got = _read_into(f, view)
            if got != raw or id_of(view) != blob_id:
                if differ and differ[-1][1] == offset:
                    differ[-1] = (differ[-1][0], offset + raw)
                else:
                    differ.append((offset, offset + raw))
            offset += raw
            self.progress.bytes_done += got
        self._count(offset)
        if offset != size:
            self.problem(rel, f"its chunks add up to {offset} bytes, the snapshot says {size}")
        elif differ:
            start, end = differ[0]
            more = f" (and {len(differ) - 1} more range(s))" if len(differ) > 1 else ""
            self.problem(
                rel, f"content differs from the snapshot at byte range {start}-{end - 1}{more}"
            )

    def _count(self, read: int) -> None:
        with self.lock:
            self.check.files += 1
            self.check.bytes += read
            self.progress.files_done += 1

    def finish(self) -> None:
        """Wait for the reading threads, then check the hard links: each name shares the
        inode of the name it links to, or (when that one is not there to link to, as the
        restore does then) holds the content on its own."""
        self.pool.shutdown(wait=True)
        if self.crash is not None:
            raise self.crash
        dirs: dict[str, int] = {}
        try:
            for dir_rel, name, link, node in self.hardlinks:
                self._hardlink(dirs, dir_rel, name, link, node)
        finally:
            for fd in dirs.values():
                os.close(fd)

    def _hardlink(
        self, dirs: dict[str, int], dir_rel: str, name: str, link: str, node: Node
    ) -> None:
        rel = f"{dir_rel}/{name}" if dir_rel else name
        try:
            dir_fd = open_rel(self.root_fd, dir_rel, dirs)
        except OSError as exc:
            self.problem(rel, f"cannot open its directory: {exc.strerror}")
            return
        st = self._found(dir_fd, name, rel, "file")
        if st is None:
            return
        first_rel, _, first_name = link.rpartition("/")
        try:
            first = os.stat(
                first_name, dir_fd=open_rel(self.root_fd, first_rel, dirs), follow_symlinks=False
            )
        except OSError:
            first = None
        if first is not None and stat.S_ISREG(first.st_mode):  # the restore linked the two
            self._count(0)  # the bytes were read under the other name
            if (first.st_dev, first.st_ino) != (st.st_dev, st.st_ino):
                self.problem(rel, f"a file of its own, not a hard link to /{link}")
            return
        try:  # the other name is not a good file: this one holds the content itself
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            self.problem(rel, f"cannot open: {exc.strerror}")
            return
        self.slots.acquire()
        self._read_back(fd, rel, node)


def _read_into(f: io.FileIO, view: memoryview) -> int:
    """Fill ``view`` from ``f``; fewer bytes only at the end of the file."""
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def verify_restored(
    repo: Repository,
    snap: Snapshot,
    target: str,
    selection: Selection | None = None,
    progress: ProgressCallback | None = None,
    workers: int = 0,
) -> RestoreCheck:
    """Check the tree restored from ``snap`` under ``target`` against the snapshot: every
    entry ``selection`` selects (None: all) is there with its type, each file with its
    size and content. ``workers``: threads reading files back (0: one per available CPU)."""
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with ProgressTracker("restore-verify", progress) as tracker:
            if selection is None:  # as the restore shows them: a selection's are not known
                tracker.files_total = int(snap.summary.get("total_files", 0)) or None
                tracker.bytes_total = int(snap.summary.get("total_bytes", 0)) or None
            checker = _Checker(repo, root_fd, selection, tracker, workers or available_cpus())
            try:
                checker.walk(snap.tree)
            finally:
                checker.finish()
    finally:
        os.close(root_fd)
    # files are read in several threads: the problems are listed by path, as found
    checker.check.problems.sort(key=lambda p: p["path"])
    return checker.check
