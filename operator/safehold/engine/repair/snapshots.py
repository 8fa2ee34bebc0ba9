"""Repair snapshots: a repaired copy of each snapshot that references lost data (the
package docstring's step 3), without the files and trees that are lost."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from safehold import __version__
from safehold.engine.repair.shared import (
    META_LOST,
    META_ORIGINAL,
    META_TIME,
    NEWER_KEY,
    REPAIRED_TAG,
    IndexFirst,
    check_key_version,
    delete_object,
    iso,
)
from safehold.repo.errors import CorruptObject
from safehold.repo.layout import DATA, SNAPSHOTS, object_id, pack_object_name, snapshot_name
from safehold.repo.locks import RepositoryLock
from safehold.repo.pack import BLOB_TREE, BlobEncoder
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.tree import Node, TreeNode, encode_tree
from safehold.repo.walk import blobs_of, subtree_of, tree_loader
from safehold.repo.writer import BlobWriter
from safehold.storage import NotFound

__all__ = ["SnapshotRepair", "SnapshotRepairReport", "repair_snapshots"]

#: Paths listed per snapshot in reports (all are counted).
_MAX_PATHS = 1000


@dataclass
class SnapshotRepair:
    """One snapshot that references lost data, and what became of it."""

    snapshot: Snapshot
    #: (path from the snapshot root, why) of each file left out and directory emptied
    lost_files: list[tuple[str, str]] = field(default_factory=list)
    lost_dirs: list[tuple[str, str]] = field(default_factory=list)
    #: the root tree itself is lost: nothing is left to copy
    root_lost: bool = False
    #: the sizes of the files left out
    lost_bytes: int = 0
    #: the repaired copy's id (in a dry run: empty), and whether it existed already
    repaired: str = ""
    existed: bool = False
    forgotten: bool = False
    locked_until: str | None = None

    def to_dict(self) -> dict[str, Any]:
        paths = [{"path": p, "lost": "file", "error": e} for p, e in self.lost_files]
        paths += [{"path": p, "lost": "directory", "error": e} for p, e in self.lost_dirs]
        paths.sort(key=lambda i: i["path"])
        return {
            "snapshot": self.snapshot.id,
            "source": self.snapshot.source,
            "time": self.snapshot.time,
            "files_lost": len(self.lost_files),
            "dirs_lost": len(self.lost_dirs),
            "bytes_lost": self.lost_bytes,
            "root_lost": self.root_lost,
            "paths": paths[:_MAX_PATHS],
            "repaired": self.repaired or None,
            "forgotten": self.forgotten,
            "locked_until": self.locked_until,
        }


@dataclass
class SnapshotRepairReport:
    dry_run: bool = False
    forget: bool = False
    snapshots: int = 0
    items: list[SnapshotRepair] = field(default_factory=list)
    #: snapshot objects that cannot be read (name -> why), and those removed (--forget)
    unreadable: dict[str, str] = field(default_factory=dict)
    unreadable_removed: list[str] = field(default_factory=list)
    trees_written: int = 0
    locked: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "forget": self.forget,
            "snapshots": self.snapshots,
            "damaged_snapshots": len(self.items),
            "repaired": sum(1 for i in self.items if i.repaired),
            "forgotten": sum(1 for i in self.items if i.forgotten) + len(self.unreadable_removed),
            "unreadable": sorted(self.unreadable),
            "unreadable_removed": len(self.unreadable_removed),
            "trees_written": self.trees_written,
            "locked": len(self.locked),
            "items": [i.to_dict() for i in self.items],
            "duration_s": round(self.duration_s, 3),
        }


@dataclass
class _Tree:
    """A tree as repaired: its new id (None: the tree itself is lost) and the lost paths
    below it, relative to it."""

    new: str | None
    files: list[tuple[str, str]]
    dirs: list[tuple[str, str]]
    #: the sizes of the files left out (those of emptied directories are not known)
    lost_bytes: int = 0


class _SnapshotRepair:
    def __init__(self, repo: Repository, *, dry_run: bool, forget: bool) -> None:
        self.repo = repo
        self.load_tree = tree_loader(repo)
        self.report = SnapshotRepairReport(dry_run=dry_run, forget=forget)
        self.memo: dict[str, _Tree] = {}
        self.writer: BlobWriter | None = None
        self.encoder: BlobEncoder | None = None
        self.empty: str | None = None

    def check_index(self) -> None:
        """Refuse when the index itself is in doubt: a blob would look lost that is not."""
        repo = self.repo
        load = repo.load_index()
        sizes = {object_id(i.name): i.size for i in repo.storage.list(DATA)}
        for name in sorted(load.damaged):  # not damaged: sealed with a newer key?
            with contextlib.suppress(NotFound):
                check_key_version(repo, name, repo.storage.get(name, 0, 4))
        problems = [f"{n} cannot be read" for n in sorted(load.damaged)]
        ends: dict[str, int] = {}
        for _, loc in repo.index.items():
            ends[loc.pack] = max(ends.get(loc.pack, 0), loc.offset + loc.stored)
        for pack, end in sorted(ends.items()):
            size = sizes.get(pack)
            if size is None:
                problems.append(f"{pack_object_name(pack)} is missing")
            elif end > size:
                problems.append(f"{pack_object_name(pack)} is truncated")
        if problems:
            raise IndexFirst(
                f"{repo.location}: the index names data that is not there ({problems[0]}"
                f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}); run "
                "'safehold repair index' first (then a backup), so that only data that is "
                "really lost is left out of the repaired snapshots"
            )

    # ------------------------------------------------------------ trees
    def _store(self, nodes: list[Node]) -> str:
        data = encode_tree(nodes)
        blob_id = self.repo.keys.blob_id(data)
        if self.report.dry_run:
            return blob_id.hex()
        if self.writer is None:
            self.writer = BlobWriter(self.repo)
            self.encoder = BlobEncoder(self.repo.aead, self.repo.config.compression_level)
        assert self.encoder is not None
        if self.writer.claim(blob_id):
            encoded, flags = self.encoder.encode(BLOB_TREE, blob_id, data)
            self.writer.add(BLOB_TREE, blob_id, encoded, flags, len(data))
            self.report.trees_written += 1
        return blob_id.hex()

    def _empty_tree(self) -> str:
        if self.empty is None:
            self.empty = self._store([])
        return self.empty

    def _load(self, tree_id: str) -> tuple[list[TreeNode] | None, str]:
        try:
            nodes = list(self.load_tree(tree_id))
        except CorruptObject as exc:
            if NEWER_KEY in str(exc):  # not lost: this key cannot read it (format 5b)
                loc = self.repo.index.lookup(bytes.fromhex(tree_id))
                if loc is not None:
                    name = pack_object_name(loc.pack)
                    check_key_version(self.repo, name, self.repo.storage.get(name, 0, 4))
            return None, str(exc)
        return nodes, ""

    def _rebuild(self, tree_id: str, nodes: list[TreeNode]) -> _Tree:
        index = self.repo.index
        out: list[Node] = []
        files: list[tuple[str, str]] = []
        dirs: list[tuple[str, str]] = []
        lost_bytes = 0
        changed = False
        for node in nodes:
            name = node["name"]
            new_node: Node = dict(node)
            sub = subtree_of(node)
            if sub is not None:
                below = self.memo[sub]
                if below.new is None:
                    dirs.append((name, below.files[0][1] if below.files else "tree is lost"))
                    new_node["subtree"] = self._empty_tree()
                    changed = True
                else:
                    files += [(f"{name}/{p}", e) for p, e in below.files]
                    lost_bytes += below.lost_bytes
                    dirs += [(f"{name}/{p}", e) for p, e in below.dirs]
                    if below.new != sub:
                        new_node["subtree"] = below.new
                        changed = True
            missing = next((c for c in blobs_of(node) if bytes.fromhex(c) not in index), None)
            if missing is not None:
                files.append((name, f"chunk {missing} is lost"))
                lost_bytes += node.get("size") or 0
                changed = True
                continue
            out.append(new_node)
        return _Tree(self._store(out) if changed else tree_id, files, dirs, lost_bytes)

    def rewrite(self, root: str) -> _Tree:
        """The repaired tree ``root`` (memoised: snapshots share most trees). Walked with
        an explicit stack, children first, so that trees of any depth work."""
        memo = self.memo
        stack: list[tuple[str, list[TreeNode] | None]] = [(root, None)]
        loading: set[str] = set()
        while stack:
            tree_id, nodes = stack[-1]
            if nodes is None:
                if tree_id in memo:
                    stack.pop()
                    continue
                nodes, error = self._load(tree_id)
                if nodes is None:
                    stack.pop()
                    memo[tree_id] = _Tree(None, [("", error)], [])
                    continue
                stack[-1] = (tree_id, nodes)
                loading.add(tree_id)
                below = [
                    sub
                    for node in nodes
                    if (sub := subtree_of(node)) is not None and sub not in memo
                ]
                if any(sub in loading for sub in below):  # a cycle: not a tree
                    stack.pop()
                    loading.discard(tree_id)
                    memo[tree_id] = _Tree(None, [("", "directory contains itself")], [])
                    continue
                if below:
                    stack.extend((sub, None) for sub in below)
                    continue
            stack.pop()
            loading.discard(tree_id)
            memo[tree_id] = self._rebuild(tree_id, nodes)
        return memo[root]

    # ------------------------------------------------------------ the run
    def _delete_snapshot(self, snap_id: str, modified: datetime | None) -> str | None:
        """Delete a snapshot object; return when its object lock ends instead, if it does."""
        return delete_object(self.repo, snapshot_name(snap_id), modified)[1]

    def run(self) -> SnapshotRepairReport:
        started = time.monotonic()
        report = self.report
        repo = self.repo
        self.check_index()
        modified = {object_id(i.name): i.modified for i in repo.storage.list(SNAPSHOTS)}
        snapshots = repo.snapshots(errors=report.unreadable)
        report.snapshots = len(snapshots)
        for name in sorted(report.unreadable):  # not damaged: sealed with a newer key?
            with contextlib.suppress(NotFound):
                check_key_version(repo, name, repo.storage.get(name, 0, 4))
        copies: dict[tuple[str, str], str] = {}  # (original, tree) -> existing repaired copy
        for snap in snapshots:
            original = snap.meta.get(META_ORIGINAL)
            if original:
                copies.setdefault((original, snap.tree), snap.id)
        new_trees: dict[str, str] = {}
        try:
            for snap in snapshots:
                tree = self.rewrite(snap.tree)
                if tree.new == snap.tree:
                    continue
                if tree.new is None:
                    item = SnapshotRepair(snap, lost_dirs=tree.files, root_lost=True)
                else:
                    item = SnapshotRepair(
                        snap, lost_files=tree.files, lost_dirs=tree.dirs, lost_bytes=tree.lost_bytes
                    )
                    new_trees[snap.id] = tree.new
                report.items.append(item)
            if self.writer is not None:
                # The new trees are in stored packs and index objects before any snapshot
                # names them (format section 10).
                self.writer.flush()
        finally:
            if self.writer is not None:
                self.writer.close()
        for item in report.items:
            new = new_trees.get(item.snapshot.id)
            if new is None or report.dry_run:
                continue
            existing = copies.get((item.snapshot.id, new))
            if existing:
                item.repaired, item.existed = existing, True
            else:
                item.repaired = repo.save_snapshot(self._copy(item.snapshot, new, item))
        if report.forget and not report.dry_run:
            for item in report.items:
                if item.repaired or item.root_lost:
                    item.locked_until = self._delete_snapshot(
                        item.snapshot.id, modified.get(item.snapshot.id)
                    )
                    item.forgotten = item.locked_until is None
                    if item.locked_until:
                        report.locked[snapshot_name(item.snapshot.id)] = item.locked_until
            for name in sorted(report.unreadable):
                until = self._delete_snapshot(object_id(name), modified.get(object_id(name)))
                if until:
                    report.locked[name] = until
                else:
                    report.unreadable_removed.append(name)
        report.duration_s = time.monotonic() - started
        return report

    @staticmethod
    def _summary(snap: Snapshot, item: SnapshotRepair) -> dict[str, Any]:
        """The original's summary, its totals less the files left out (those of emptied
        directories are not known: their trees are lost)."""
        summary = dict(snap.summary)
        for key, less in (("total_files", len(item.lost_files)), ("total_bytes", item.lost_bytes)):
            value = summary.get(key)
            if type(value) is int:
                summary[key] = max(0, value - less)
        return summary

    def _copy(self, snap: Snapshot, tree: str, item: SnapshotRepair) -> Snapshot:
        lost = [p for p, _ in sorted(item.lost_dirs + item.lost_files)]
        note = (
            f"{len(item.lost_files)} file(s) left out and {len(item.lost_dirs)} "
            "directory(ies) emptied, their data being lost: " + ", ".join(lost)
        )
        if len(note) > 1000:
            note = note[:997] + "..."
        meta = dict(snap.meta)
        meta.update({META_ORIGINAL: snap.id, META_LOST: note, META_TIME: iso(datetime.now(UTC))})
        if len(meta) > 32:  # the format's bound: the repair's own entries win
            for key in [k for k in snap.meta if k not in (META_ORIGINAL, META_LOST, META_TIME)][
                : len(meta) - 32
            ]:
                del meta[key]
        tags = list(snap.tags)
        if REPAIRED_TAG not in tags:
            tags.append(REPAIRED_TAG)
        return Snapshot(
            time=snap.time,
            source=snap.source,
            type=snap.type,
            tree=tree,
            paths=list(snap.paths),
            hostname=snap.hostname,
            tags=tags,
            parent=snap.parent,
            program=f"safehold {__version__}",
            summary=self._summary(snap, item),
            version=snap.version,
            meta=meta,
            host=snap.host,  # the copy stays in its host's chain and retention series
        )


def repair_snapshots(
    repo: Repository, *, dry_run: bool = False, forget: bool = False
) -> SnapshotRepairReport:
    """Write a repaired copy of every snapshot that references lost data (module
    docstring); with ``forget`` remove the originals and the unreadable snapshot objects.
    Under the exclusive lock (a shared one for a dry run, which changes nothing)."""
    with RepositoryLock(repo, exclusive=not dry_run, operation="repair snapshots"):
        return _SnapshotRepair(repo, dry_run=dry_run, forget=forget).run()
