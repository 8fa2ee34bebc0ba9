"""The walk: a directory tree, under the include/exclude patterns, into nodes.

One scope-aware walk serves the backup (:class:`Walker`) and the ETA's pre-scan
(:func:`scan_totals`): both read a directory through :func:`listing`, which keeps what the
patterns keep (:mod:`.scope`) and skips left-out directories without reading them, so the
totals count exactly what the backup stores.

The walker decides per file whether the parent snapshot's chunk list can be reused
(incremental), has small files read ahead, hands big files to their own threads
(:class:`~.read.FileReader`), and gives each finished directory to the tree thread
(:class:`~.trees.TreeThread`).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING

from safehold.engine.ahead import TreesAhead
from safehold.engine.backup.counts import BackupCounts
from safehold.engine.backup.meta import Names, meta
from safehold.engine.backup.pending import PendingContent
from safehold.engine.backup.read import FileReader
from safehold.engine.backup.scope import ALL, NONE, SOME, in_scope
from safehold.engine.backup.trees import DirJob, TreeThread, same_as_parent
from safehold.engine.patterns import PathFilter
from safehold.engine.progress import ProgressTracker
from safehold.repo import CorruptObject, Node, Repository

if TYPE_CHECKING:
    from safehold.engine.backup.shares import Shares

__all__ = ["SHARE_MIN_DIRS", "Walker", "listing", "scan_totals", "top_scope"]

#: A directory with at least this many subdirectories has them walked by the worker
#: processes, when there are (:mod:`.shares`).
SHARE_MIN_DIRS = 4

#: One directory's walk (:meth:`Walker._walk_dir`): yields its subdirectories' walks,
#: is sent their jobs, returns its own.
_DirWalk = Generator["_DirWalk", "DirJob | None", "DirJob | None"]


def top_scope(filt: PathFilter | None) -> int:
    """The scope of a backed-up root: with include patterns only what they match."""
    return SOME if filt is not None and filt.has_include else ALL


def listing(
    path: str, filt: PathFilter | None, prefix: str, scope: int
) -> tuple[list[os.DirEntry[str]], list[int] | None]:
    """The entries of directory ``path`` that the walk keeps, sorted by name, and (with
    patterns) the scope of each; ``prefix`` is its path relative to the backed-up root
    plus ``/`` (empty at the root). Raises OSError when it cannot be read."""
    if scope == NONE:
        return [], None
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name)
    if filt is None:
        return entries, None
    kept = list(in_scope(entries, filt, prefix, scope))
    return [entry for entry, _ in kept], [child for _, child in kept]


def scan_totals(
    roots: Iterable[str], stop: threading.Event, filt: PathFilter | None = None
) -> tuple[int, int] | None:
    """The files and bytes the backup will find, for the ETA (None when ``stop`` was set
    before the walk's end). Only lstat, no reads: through :func:`listing`, the same scope
    rules as the backup's walk, and in its order (depth first, by name)."""
    files = 0
    total = 0
    top = top_scope(filt)
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
    stack.reverse()
    while stack and not stop.is_set():
        path, prefix, scope = stack.pop()
        try:
            entries, scopes = listing(path, filt, prefix, scope)
        except OSError:
            continue
        subdirs: list[tuple[str, str, int]] = []
        for k, entry in enumerate(entries):
            try:
                if entry.is_dir(follow_symlinks=False):
                    child = scopes[k] if scopes is not None else ALL
                    subdirs.append((entry.path, f"{prefix}{entry.name}/", child))
                elif entry.is_file(follow_symlinks=False):
                    files += 1
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
        stack.extend(reversed(subdirs))
    return None if stack else (files, total)  # stopped before the end: no totals


class Walker:
    """Walks backed-up roots into nodes; files' contents are :class:`PendingContent`
    until the tree thread stores their directory."""

    def __init__(
        self,
        repo: Repository,
        reader: FileReader,
        trees: TreeThread,
        counts: BackupCounts,
        progress: ProgressTracker,
    ) -> None:
        self.repo = repo
        self.reader = reader
        self.trees = trees
        self.counts = counts
        self.progress = progress
        self.names = Names()
        self.hardlinks: dict[tuple[int, int], tuple[str, list[str] | PendingContent]] = {}
        #: The parent snapshot's trees of the directories this walk will enter, a few ahead.
        self._trees_ahead = TreesAhead(reader.readers, self._read_parent_tree)
        self.filter: PathFilter | None = None
        #: the worker processes, when directories are handed out (:mod:`.shares`)
        self.shares: Shares | None = None
        self.root_len = 0  # len of the current root's name plus "/": rel[root_len:] is
        # the path relative to the backed-up root, which patterns match

    def walk_roots(self, roots: list[tuple[str, str]], parent_root: dict[str, Node]) -> DirJob:
        """Walk ``(path, name)`` roots; the job of the snapshot's root directory."""
        self.prefetch_parent_trees(
            [s for n in parent_root.values() if isinstance(s := _subtree(n), str)]
        )
        nodes: list[Node] = []
        scope = top_scope(self.filter)
        for path, name in roots:
            try:
                st = os.lstat(path)
            except OSError as exc:
                self.counts.error(path, exc)
                continue
            self.root_len = len(name) + 1
            node = self._node(path, name, name, st, parent_root.get(name), scope=scope)
            if node is not None:
                nodes.append(node)
        return self.trees.add(nodes)

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
        node = meta(self.names, name, st)
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
                self.counts.error(path, exc)
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
        counts = self.counts
        counts["total_files"] += 1
        counts["total_bytes"] += size
        if st.st_blocks * 512 < size:
            node["sparse"] = True
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.hardlinks.get(key)
            if first is not None:
                node["hardlink"] = first[0]
                node["content"] = first[1]
                counts["files_new" if parent is None else "files_unmodified"] += 1
                self.progress.file("new" if parent is None else "unchanged", path)
                self.progress.files_done += 1
                self.progress.bytes_done += size
                return True
        if self._unchanged(parent, st) if unchanged is None else unchanged:
            assert parent is not None
            node["content"] = list(parent.get("content", []))
            counts["files_unmodified"] += 1
            self.progress.file("unchanged", path)
            self.progress.bytes_done += size
        else:
            category = "files_changed" if parent is not None else "files_new"
            if size > self.reader.small:
                # Big files are read and cut by their own threads, two at a time, while
                # this thread walks on; the tree thread waits for their chunk lists.
                node["content"] = PendingContent(future=self.reader.read_big(path, category))
            else:
                refs = self.reader.read_file(path, size)
                if refs is None:
                    return False
                node["content"] = PendingContent(refs)
            counts[category] += 1
            self.progress.file("changed" if parent is not None else "new", path)
        if st.st_nlink > 1:
            self.hardlinks[(st.st_dev, st.st_ino)] = (rel, node["content"])
        self.progress.files_done += 1
        return True

    def _same_file(self, path: str, parent: Node | None, st: os.stat_result) -> Node | None:
        """The parent's node itself for an unchanged file (see :meth:`_unchanged`) whose
        every other field is as it was too, so that the node :meth:`_node` would build
        equals it; counted as :meth:`_file` counts an unchanged file. None: build the node
        (a hard link, whose first path the walk decides, or any field that differs). An
        unchanged re-run of small files spent a third of its time building nodes equal to
        the parent's."""
        if (
            parent is None
            or st.st_nlink != 1
            or len(parent) != (16 if parent.get("sparse") else 15)  # no field unknown here
            or parent.get("mode") != stat.S_IMODE(st.st_mode)
            or parent.get("uid") != st.st_uid
            or parent.get("gid") != st.st_gid
            or parent.get("atime_ns") != st.st_atime_ns
            or parent.get("dev") != st.st_dev
            or parent.get("links") != 1
            or parent.get("user") != self.names.user(st.st_uid)
            or parent.get("group") != self.names.group(st.st_gid)
            or bool(parent.get("sparse")) != (st.st_blocks * 512 < st.st_size)
        ):
            return None
        counts = self.counts
        counts["total_files"] += 1
        counts["total_bytes"] += st.st_size
        counts["files_unmodified"] += 1
        progress = self.progress
        progress.file("unchanged", path)
        progress.bytes_done += st.st_size
        progress.files_done += 1
        return parent

    def _stored(self, tree_id: str) -> bool:
        """The parent's tree ``tree_id`` is in the repository's index."""
        try:
            return bytes.fromhex(tree_id) in self.repo.index
        except ValueError:  # not an id: a damaged parent snapshot
            return False

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
            and all(bytes.fromhex(c) in self.repo.index for c in parent.get("content", []))
        )

    # ------------------------------------------------------------ parent snapshot's trees
    def _load_parent_tree(self, tree_id: object) -> dict[str, Node]:
        if not isinstance(tree_id, str):
            return {}
        return self._trees_ahead.take(tree_id)

    def _read_parent_tree(self, tree_id: str) -> dict[str, Node]:
        try:
            return {n["name"]: n for n in self.repo.load_tree(tree_id)}
        except CorruptObject:
            return {}

    def prefetch_parent_trees(self, subtrees: list[str]) -> None:
        """The parent snapshot's trees of the directories this walk enters next, in its
        order, are loaded in reader threads a few ahead of it (engine/ahead.py): each is a
        ranged read, a decryption and a JSON parse, which otherwise stall the walk once per
        directory. Only those: a directory handed to a worker process has its tree sent
        there, and decoding every subdirectory's tree at once held a whole parent snapshot
        in memory (100 directories of 1,000 files: 100,000 nodes, about 100 MB)."""
        self._trees_ahead.want(subtrees)

    # ------------------------------------------------------------ directories
    def _dir_node(
        self, node: Node, path: str, rel: str, parent: Node | None, scope: int
    ) -> _DirWalk:
        """Count the directory ``node`` and start its walk (see :meth:`_walk_dir`)."""
        self.counts["dirs"] += 1
        parent_tree = parent.get("subtree") if parent and parent["type"] == "dir" else None
        return self._walk_dir(path, rel, parent_tree, scope)

    @staticmethod
    def _walk(top: _DirWalk) -> DirJob | None:
        """Run a directory's walk and, depth first, those of the directories below it: an
        explicit stack of suspended walks, so that the depth of a tree is bounded by
        memory, not by Python's recursion limit (a tree 500 levels deep used to fail
        every backup of its volume with RecursionError)."""
        stack = [top]
        result: DirJob | None = None
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

    def _stat_entries(
        self, entries: list[os.DirEntry[str]], scopes: list[int] | None
    ) -> tuple[list[tuple[os.DirEntry[str], os.stat_result]], list[int]]:
        """lstat each entry (one that fails is recorded and left out), with its scope."""
        stats: list[tuple[os.DirEntry[str], os.stat_result]] = []
        child_scopes: list[int] = []
        for k, entry in enumerate(entries):
            try:
                stats.append((entry, entry.stat(follow_symlinks=False)))
            except OSError as exc:
                self.counts.error(entry.path, exc)
                continue
            child_scopes.append(scopes[k] if scopes is not None else ALL)
        return stats, child_scopes

    def _to_read(
        self, stats: list[tuple[os.DirEntry[str], os.stat_result]], parents: dict[str, Node]
    ) -> tuple[list[bool], list[int]]:
        """Which entries are unchanged files (the parent's chunks reused), and the places
        of the small files to read."""
        small = self.reader.small
        same = [
            stat.S_ISREG(st.st_mode) and self._unchanged(parents.get(entry.name), st)
            for entry, st in stats
        ]
        wanted = [
            k
            for k, (entry, st) in enumerate(stats)
            if stat.S_ISREG(st.st_mode) and 0 < st.st_size <= small and not same[k]
        ]
        return same, wanted

    def _share(self, path: str, rel: str, parent: Node | None) -> DirJob:
        """Have a worker process walk the directory ``path`` (see :mod:`.shares`)."""
        assert self.shares is not None
        self.counts["dirs"] += 1
        parent_tree = parent.get("subtree") if parent and parent["type"] == "dir" else None
        return self.shares.hand_out(path, rel, parent_tree, self.root_len)

    def _walk_dir(self, path: str, rel: str, parent_tree: object, scope: int = ALL) -> _DirWalk:
        """The walk of one directory, a generator: it yields the walk of each
        subdirectory for :meth:`_walk` to run and is sent back that subdirectory's job
        (None: left out), and returns the directory's own job: None when it cannot be read
        (recorded as an error) or, in scope ``SOME``, when nothing under it is included."""
        prefix = rel[self.root_len :]
        try:
            entries, scopes = listing(path, self.filter, f"{prefix}/" if prefix else "", scope)
        except OSError as exc:
            self.counts.error(path, exc)
            return None
        parents = self._load_parent_tree(parent_tree) if scope != NONE else {}
        stats, child_scopes = self._stat_entries(entries, scopes)
        # Small files that must be read are read ahead (by reader threads, or by the
        # kernel in a worker process), a window at a time: on a cold cache each read
        # waits for the disk, and many waits overlap instead of queueing behind the walk.
        same, wanted = self._to_read(stats, parents)
        share_out = self.shares is not None and (
            sum(stat.S_ISDIR(st.st_mode) for _, st in stats) >= SHARE_MIN_DIRS
        )
        self.prefetch_parent_trees(
            [
                sub
                for (entry, st), sc in zip(stats, child_scopes, strict=True)
                if stat.S_ISDIR(st.st_mode)
                and sc != NONE
                and not (share_out and sc == ALL)
                and isinstance(sub := _subtree(parents.get(entry.name)), str)
            ]
        )
        reader = self.reader
        nxt = 0
        ahead = 0  # bytes and files asked for ahead, not read yet
        files_ahead = 0
        nodes: list[Node] = []
        for k, (entry, st) in enumerate(stats):
            while nxt < len(wanted) and (
                (ahead < reader.ahead_bytes and files_ahead < reader.ahead_files)
                or wanted[nxt] <= k
            ):
                want, want_st = stats[wanted[nxt]]
                reader.prefetch(want.path, want_st.st_size)
                ahead += want_st.st_size
                files_ahead += 1
                nxt += 1
            if reader.is_ahead(entry.path):
                ahead -= st.st_size
                files_ahead -= 1
            node: Node | None
            if stat.S_ISDIR(st.st_mode):  # walked by _walk, not by recursion
                node = meta(self.names, entry.name, st)
                if share_out and child_scopes[k] == ALL:
                    node["subtree"] = self._share(
                        entry.path, f"{rel}/{entry.name}", parents.get(entry.name)
                    )
                    nodes.append(node)
                    continue
                job = yield self._dir_node(
                    node,
                    entry.path,
                    f"{rel}/{entry.name}",
                    parents.get(entry.name),
                    child_scopes[k],
                )
                if job is None:
                    continue
                node["subtree"] = job
            else:
                parent = parents.get(entry.name)
                node = self._same_file(entry.path, parent, st) if same[k] else None
                if node is None:
                    node = self._node(
                        entry.path, f"{rel}/{entry.name}", entry.name, st, parent, same[k]
                    )
                reader.drop(entry.path)
            if node is not None:
                nodes.append(node)
        if scope == SOME and not nodes and len(rel) >= self.root_len:
            self.counts["dirs"] -= 1  # not the root, and leads to no included path: left out
            return None
        if (
            isinstance(parent_tree, str)
            and same_as_parent(nodes, parents)
            and self._stored(parent_tree)  # else stored again: a lost tree is healed
        ):
            return DirJob.reused(parent_tree)
        return self.trees.add(nodes)


def _subtree(node: Node | None) -> object:
    """The tree id of a parent snapshot's directory node (None for anything else)."""
    return node.get("subtree") if node is not None and node["type"] == "dir" else None
