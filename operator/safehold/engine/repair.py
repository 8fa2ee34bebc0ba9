"""Repair: an index rebuilt from the packs that exist, and snapshots without the lost data.

What verify reports as damage (docs/repair.md) is mended in three steps, in restic's
spirit:

1. :func:`repair_index` rebuilds the index from the packs on the storage. Every pack
   describes itself (format section 7): its header lists its blobs, so the index is what
   the headers say. Index entries of packs that are missing, truncated or unreadable are
   dropped; packs no index names are checked and added back; the good blobs of a damaged
   pack are copied into a new pack ("salvaged") and the damaged pack is left unindexed
   (prune deletes it). With ``read_data`` every pack is read whole and every blob is
   opened and checked against its id, so that blobs damaged inside a pack are dropped
   too. Afterwards the index names only data that exists, so the next backup's dedup
   check no longer finds the lost data and stores it again.
2. A backup of each affected source stores the lost data again where the source still
   has it (a snapshot that needed only that data is whole again).
3. :func:`repair_snapshots` finds the snapshots that still reference data the index
   lacks and writes a repaired copy of each: a file with a lost chunk is left out
   (never kept with a hole or cut short: a restore never writes wrong bytes), a
   directory whose tree is lost becomes an empty directory, and the copy carries the
   tag ``repaired`` and, in its ``meta``, the original's id and what was lost. The
   originals stay until the user forgets them (``forget=True`` removes them, and the
   snapshot objects that cannot be read at all).

Both run under the exclusive lock (a shared one for a dry run) and write in the order of
format section 10: new packs, then the index objects naming them (the last one
superseding every index object read), then snapshot objects, and only then delete. A
crash at any point leaves unreferenced packs, superseded index objects or an extra
repaired copy, which readers ignore; running the repair again completes the work.
"""

from __future__ import annotations

import contextlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold import __version__
from safehold.engine.progress import ProgressCallback, ProgressTracker
from safehold.repo.crypto import MAX_KEY_VERSIONS, SealError, object_hash
from safehold.repo.errors import CorruptObject, RepositoryError
from safehold.repo.index import IndexFile, decode_index
from safehold.repo.layout import (
    DATA,
    INDEX,
    SNAPSHOTS,
    index_name,
    object_id,
    pack_object_name,
    snapshot_name,
)
from safehold.repo.locks import RepositoryLock
from safehold.repo.pack import (
    BLOB_TREE,
    BlobEncoder,
    PackBlob,
    decode_blob,
    pack_trailer,
    parse_pack,
    parse_pack_header,
    reseal_blob,
)
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.tree import Node, TreeNode, encode_tree
from safehold.repo.walk import blobs_of, subtree_of
from safehold.repo.writer import BlobWriter
from safehold.storage import NotFound, ObjectInfo, ObjectLocked

__all__ = [
    "REPAIRED_TAG",
    "IndexFirst",
    "IndexRepairReport",
    "RepairError",
    "SnapshotRepair",
    "SnapshotRepairReport",
    "repair_index",
    "repair_snapshots",
]

#: The tag every repaired copy of a snapshot gets.
REPAIRED_TAG = "repaired"
#: ``meta`` keys of a repaired copy: the original's id, and what it lost.
META_ORIGINAL = "repair.original"
META_LOST = "repair.lost"
META_TIME = "repair.time"
#: Packs per index object the rebuilt index is written in (as prune does).
_PACKS_PER_INDEX = 2000
#: Bytes read from the end of a pack to find its header in one request (a 16 MiB pack of
#: 512 KiB chunks has a header of about 1.3 KiB; a longer one costs a second read).
_TAIL = 64 * 1024
_HEX = re.compile(r"^[0-9a-f]{64}$")
#: Paths listed per snapshot in reports (all are counted).
_MAX_PATHS = 1000


class RepairError(RepositoryError):
    """A repair cannot go on (the message says what to do first); nothing was changed."""


class IndexFirst(RepairError):
    """``repair snapshots`` refused: the index names data that is not there."""


#: How a reader says that something is sealed with a data key version its key lacks.
_NEWER_KEY = "which this key does not hold"


def _check_key_version(repo: Repository, name: str, head: bytes) -> None:
    """:class:`RepairError` when ``head`` (an object's or pack's first bytes) names a data
    key version newer than the key that opened the repository holds (format section 5b):
    such an object is not damaged, and a repair must not drop it or its data."""
    if repo.aead.prefix_size == 0 or len(head) < 4:
        return
    version = int.from_bytes(head[:4], "little")
    held = len(repo.keys.data_keys)
    if held < version <= MAX_KEY_VERSIONS:
        raise RepairError(
            f"{repo.location}: {name} is sealed with data key version {version}, which the "
            f"key that opened the repository does not hold (it holds 1 to {held}): the key "
            "object predates a rotation, the data is not damaged. Open the repository with a "
            "key object that holds it (at a recovery site: copy the primary's new key object "
            "there, docs/replication.md), then run the repair again; nothing was changed"
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ====================================================================== repair index
@dataclass
class IndexRepairReport:
    """What :func:`repair_index` found and did (with ``dry_run``: would do)."""

    dry_run: bool = False
    read_data: bool = False
    #: packs on the storage, and of them the ones the new index names
    packs: int = 0
    packs_indexed: int = 0
    #: packs no live index object named, added back (their blobs checked)
    packs_added: int = 0
    #: packs the old index named that are not on the storage
    packs_missing: list[str] = field(default_factory=list)
    #: packs that are damaged (pack id -> why): their good blobs are salvaged
    packs_damaged: dict[str, str] = field(default_factory=dict)
    #: new packs holding salvaged blobs, and the blobs in them
    packs_written: int = 0
    blobs_salvaged: int = 0
    #: blobs the old index named that the new one does not (their data is lost)
    blobs_lost: int = 0
    #: blobs the new index names that the old one did not
    blobs_added: int = 0
    blobs: int = 0
    index_read: int = 0
    #: index objects that could not be read (name -> why): superseded and deleted
    index_damaged: dict[str, str] = field(default_factory=dict)
    index_written: int = 0
    index_deleted: int = 0
    #: object name -> when its object lock ends (not deleted; superseded, so ignored)
    locked: dict[str, str] = field(default_factory=dict)
    #: whether the index had to change at all
    changed: bool = False
    duration_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "read_data": self.read_data,
            "changed": self.changed,
            "packs": self.packs,
            "packs_indexed": self.packs_indexed,
            "packs_added": self.packs_added,
            "packs_missing": len(self.packs_missing),
            "missing": sorted(self.packs_missing)[:20],
            "packs_damaged": len(self.packs_damaged),
            "damaged": dict(sorted(self.packs_damaged.items())[:20]),
            "packs_written": self.packs_written,
            "blobs": self.blobs,
            "blobs_salvaged": self.blobs_salvaged,
            "blobs_lost": self.blobs_lost,
            "blobs_added": self.blobs_added,
            "index_read": self.index_read,
            "index_damaged": len(self.index_damaged),
            "index_written": self.index_written,
            "index_deleted": self.index_deleted,
            "locked": len(self.locked),
            "duration_s": round(self.duration_s, 3),
        }


class _PackBuilder:
    """New packs of salvaged blobs, written as they fill (nothing with ``dry_run``)."""

    def __init__(self, repo: Repository, report: IndexRepairReport) -> None:
        self.repo = repo
        self.report = report
        self.written: dict[str, list[PackBlob]] = {}
        #: ids of the blobs salvaged (also in a dry run, which writes nothing)
        self.ids: set[bytes] = set()
        self._new()

    def _new(self) -> None:
        self.key = self.repo.aead.new_pack_key()  # version 2: a subkey per pack (5a)
        self.buf = bytearray(self.key.prefix)
        self.out: list[PackBlob] = []

    def add(self, source: AESGCM, blob: PackBlob, sealed: bytes | memoryview) -> None:
        if self.key.prefix:  # another pack's subkey: open and seal again (same length)
            sealed = reseal_blob(source, self.key.aead, blob.type, blob.id, sealed)
        self.out.append(
            PackBlob(blob.type, blob.flags, len(self.buf), blob.stored, blob.raw, blob.id)
        )
        self.buf += sealed
        self.ids.add(blob.id)
        self.report.blobs_salvaged += 1
        if len(self.buf) >= self.repo.config.pack_size:
            self.finish()

    def finish(self) -> None:
        if not self.out:
            return
        if not self.report.dry_run:
            data = bytes(self.buf) + pack_trailer(self.key.aead, self.out)
            pack = self.repo.save_object("data", data)
            self.written[pack] = self.out
        self.report.packs_written += 1
        self._new()


class _IndexRepair:
    def __init__(
        self, repo: Repository, *, read_data: bool, dry_run: bool, tracker: ProgressTracker
    ) -> None:
        self.repo = repo
        self.tracker = tracker
        self.read_data = read_data
        self.report = IndexRepairReport(dry_run=dry_run, read_data=read_data)
        self.files: dict[str, IndexFile] = {}
        self.infos: dict[str, ObjectInfo] = {}
        #: pack -> its blobs as the live index objects list them
        self.old: dict[str, dict[bytes, PackBlob]] = {}
        #: pack -> its blobs as the new index will list them
        self.new: dict[str, list[PackBlob]] = {}
        #: damaged packs -> the blobs they should hold (their header's, else the index's)
        self.salvage: dict[str, list[PackBlob]] = {}

    # ------------------------------------------------------------ reading
    def read_index(self) -> set[str]:
        """Every index object; return the ids some readable one supersedes."""
        repo = self.repo
        for info in repo.storage.list(INDEX):
            digest = object_id(info.name)
            data = b""
            try:
                data = repo.storage.get(info.name)
                if object_hash(data) != digest:
                    raise CorruptObject(info.name, "bytes do not match the object's name")
                self.files[digest] = decode_index(repo.aead, data, info.name)
            except NotFound:
                continue
            except CorruptObject as exc:
                _check_key_version(repo, info.name, data)
                self.report.index_damaged[info.name] = str(exc)
            self.infos[digest] = info
        self.report.index_read = len(self.infos)
        superseded = {old for f in self.files.values() for old in f.supersedes}
        # A damaged object that a readable one supersedes is ignored (an earlier repair
        # superseded it; an object lock may keep it): only deleted again, not rewritten.
        for name in [n for n in self.report.index_damaged if object_id(n) in superseded]:
            del self.report.index_damaged[name]
        for digest in sorted(self.files):
            if digest in superseded:
                continue
            for pack, blobs in self.files[digest].packs.items():
                entries = self.old.setdefault(pack, {})
                for b in blobs:
                    entries.setdefault(b.id, b)
        return superseded

    def _header(self, pack: str, size: int) -> list[PackBlob]:
        """The pack's header, from one or two reads at its end (:class:`CorruptObject`)."""
        repo = self.repo
        name = pack_object_name(pack)
        prefix = repo.aead.prefix_size
        want = min(size, _TAIL)
        tail = repo.storage.get(name, size - want, want) if want else b""
        if len(tail) >= 4:
            needed = int.from_bytes(tail[-4:], "little") + 4
            if len(tail) < needed <= size - prefix:
                tail = repo.storage.get(name, size - needed, needed)
        return parse_pack_header(repo.pack_aead(pack), tail, size, name, prefix)

    def _whole(self, pack: str) -> tuple[bytes, AESGCM | None, list[PackBlob] | None, str]:
        """(bytes, key, header or None, why it is damaged or "") of a pack read whole."""
        repo = self.repo
        name = pack_object_name(pack)
        data = repo.storage.get(name)
        why = "" if object_hash(data) == pack else "its bytes do not match its name"
        aead: AESGCM | None = None
        header: list[PackBlob] | None = None
        try:
            aead = repo.pack_aead(pack, data)
            header = parse_pack(repo.aead, data, name)
        except CorruptObject as exc:
            _check_key_version(repo, name, data)
            why = why or str(exc).removeprefix(name + ": ")
        return data, aead, header, why

    def _blob_ok(self, aead: AESGCM | None, data: bytes, b: PackBlob) -> bool:
        if aead is None or b.offset + b.stored > len(data):
            return False
        try:
            plain = decode_blob(
                aead, b.type, b.id, b.flags, b.raw, memoryview(data)[b.offset : b.offset + b.stored]
            )
        except (SealError, ValueError):
            return False
        return self.repo.keys.blob_id(plain) == b.id

    def _check(self, pack: str, size: int) -> tuple[list[PackBlob] | None, str] | None:
        """(the pack's blobs, "") when it is good; (its header or None, why) when it is
        damaged; None when it vanished meanwhile. Runs in worker threads: reads only."""
        try:
            # Unindexed packs are read whole: a damaged pack an earlier repair left
            # unindexed must not come back because its header still reads.
            if self.read_data or pack not in self.old:
                data, aead, header, why = self._whole(pack)
                if not why and header is not None and self.read_data:
                    bad = [b for b in header if not self._blob_ok(aead, data, b)]
                    if bad:
                        why = f"{len(bad)} blob(s) are damaged"
                return header, why
            try:
                return self._header(pack, size), ""
            except CorruptObject as exc:
                name = pack_object_name(pack)
                if _NEWER_KEY in str(exc):
                    _check_key_version(self.repo, name, self.repo.storage.get(name, 0, 4))
                return None, str(exc).removeprefix(name + ": ")
        except NotFound:  # deleted while we looked: as if it had never been there
            return None

    def check_packs(self) -> None:
        """Sort every pack on the storage into good (indexed by its header) or damaged."""
        report = self.report
        packs = {
            object_id(i.name): i.size
            for i in self.repo.storage.list(DATA)
            if _HEX.match(object_id(i.name))
        }
        report.packs = len(packs)
        report.packs_missing = sorted(p for p in self.old if p not in packs)
        order = sorted(packs)
        # Progress counts packs; bytes when they are read whole (with --read-data).
        self.tracker.files_total = len(order)
        if self.read_data:
            self.tracker.bytes_total = sum(packs.values())
        # A few packs at a time: the reads are small (headers), or whole packs of a
        # bounded size; the storage's clients are thread-safe.
        workers = 2 if self.read_data else 8
        with ThreadPoolExecutor(workers, thread_name_prefix="repair") as pool:
            results = pool.map(lambda p: self._check(p, packs[p]), order)
            for pack, result in zip(order, results, strict=True):
                self.tracker.files_done += 1
                if self.read_data:
                    self.tracker.bytes_done += packs[pack]
                if result is None:
                    continue
                header, why = result
                if why:
                    self._damaged(pack, why, header)
                    continue
                assert header is not None
                self.new[pack] = header
                if pack not in self.old:
                    report.packs_added += 1

    def _damaged(self, pack: str, why: str, header: list[PackBlob] | None) -> None:
        self.report.packs_damaged[pack] = why
        listed = list(self.old.get(pack, {}).values())
        self.salvage[pack] = header if header is not None else listed

    def salvage_blobs(self, builder: _PackBuilder) -> None:
        """Copy the good blobs of damaged packs that no good pack holds into new packs."""
        available = {b.id for blobs in self.new.values() for b in blobs}
        for pack, blobs in sorted(self.salvage.items()):
            wanted = [b for b in blobs if b.id not in available]
            if not wanted:
                continue
            try:
                data = self.repo.storage.get(pack_object_name(pack))
            except NotFound:
                continue
            try:
                aead: AESGCM | None = self.repo.pack_aead(pack, data)
            except CorruptObject:
                aead = None
            for b in wanted:
                if aead is not None and self._blob_ok(aead, data, b):
                    builder.add(aead, b, memoryview(data)[b.offset : b.offset + b.stored])
                    available.add(b.id)
        builder.finish()

    # ------------------------------------------------------------ writing
    def _delete(self, name: str, info: ObjectInfo | None) -> bool:
        days = self.repo.object_lock_days
        now = datetime.now(UTC)
        if days:
            written = info.modified if info is not None and info.modified else now
            expiry = written + timedelta(days=days)
            if expiry > now:
                self.report.locked[name] = _iso(expiry)
                return False
        try:
            self.repo.storage.delete(name)
        except ObjectLocked:
            self.report.locked[name] = "unknown (the server refused the delete)"
            return False
        except NotFound:
            return False
        return True

    def write_index(self, packs: dict[str, list[PackBlob]]) -> None:
        """Index objects for ``packs``; the last supersedes every index object read."""
        items = sorted(packs.items())
        chunks = [
            dict(items[i : i + _PACKS_PER_INDEX]) for i in range(0, len(items), _PACKS_PER_INDEX)
        ] or [{}]
        read = sorted(d for d in self.infos if _HEX.match(d))  # damaged ones too
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            self.repo.write_index(IndexFile(packs=chunk, supersedes=read if last else []))
            self.report.index_written += 1

    def run(self) -> IndexRepairReport:
        started = time.monotonic()
        report = self.report
        superseded = self.read_index()
        self.check_packs()
        builder = _PackBuilder(self.repo, report)
        self.salvage_blobs(builder)
        new = {**self.new, **builder.written}
        report.packs_indexed = len(self.new) + report.packs_written
        new_ids = {b.id for blobs in self.new.values() for b in blobs} | builder.ids
        old_ids = {i for entries in self.old.values() for i in entries}
        report.blobs = len(new_ids)
        report.blobs_lost = len(old_ids - new_ids)
        report.blobs_added = len(new_ids - old_ids)
        same = {p: sorted(b) for p, b in self.new.items()} == {
            p: sorted(e.values()) for p, e in self.old.items()
        }
        report.changed = not same or bool(report.index_damaged) or report.packs_written > 0
        # Nothing to rewrite: only what an earlier (crashed) repair or prune superseded
        # is left to delete.
        stale = {d for d in self.infos if d in superseded}
        if report.dry_run:
            report.duration_s = time.monotonic() - started
            return report
        if report.changed:
            # Packs (salvaged above), then the index objects naming them, the last one
            # superseding every index object read; only then the old ones go (format
            # section 10). A crash before the last one is written leaves the old index
            # live beside the new objects: as before, plus duplicates.
            self.write_index(new)
            stale = set(self.infos)
        for digest in sorted(stale):
            if self._delete(index_name(digest), self.infos[digest]):
                report.index_deleted += 1
        self.repo.load_index()
        report.duration_s = time.monotonic() - started
        return report


def repair_index(
    repo: Repository,
    *,
    read_data: bool = False,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
) -> IndexRepairReport:
    """Rebuild ``repo``'s index from its packs (module docstring), under the exclusive
    lock (a shared one for a dry run, which changes nothing). ``progress`` counts packs
    checked (and, with ``read_data``, their bytes)."""
    with (
        RepositoryLock(repo, exclusive=not dry_run, operation="repair index"),
        ProgressTracker("repair index", progress) as tracker,
    ):
        return _IndexRepair(repo, read_data=read_data, dry_run=dry_run, tracker=tracker).run()


# ====================================================================== repair snapshots
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
                _check_key_version(repo, name, repo.storage.get(name, 0, 4))
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
            nodes: list[TreeNode] = self.repo.load_tree(tree_id)  # type: ignore[assignment]
        except CorruptObject as exc:
            if _NEWER_KEY in str(exc):  # not lost: this key cannot read it (format 5b)
                loc = self.repo.index.lookup(bytes.fromhex(tree_id))
                if loc is not None:
                    name = pack_object_name(loc.pack)
                    _check_key_version(self.repo, name, self.repo.storage.get(name, 0, 4))
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
        days = self.repo.object_lock_days
        now = datetime.now(UTC)
        if days:
            expiry = (modified or now) + timedelta(days=days)
            if expiry > now:
                return _iso(expiry)
        try:
            self.repo.storage.delete(snapshot_name(snap_id))
        except ObjectLocked:
            return "unknown (the server refused the delete)"
        except NotFound:
            pass
        return None

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
                _check_key_version(repo, name, repo.storage.get(name, 0, 4))
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
        meta.update({META_ORIGINAL: snap.id, META_LOST: note, META_TIME: _iso(datetime.now(UTC))})
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
        )


def repair_snapshots(
    repo: Repository, *, dry_run: bool = False, forget: bool = False
) -> SnapshotRepairReport:
    """Write a repaired copy of every snapshot that references lost data (module
    docstring); with ``forget`` remove the originals and the unreadable snapshot objects.
    Under the exclusive lock (a shared one for a dry run, which changes nothing)."""
    with RepositoryLock(repo, exclusive=not dry_run, operation="repair snapshots"):
        return _SnapshotRepair(repo, dry_run=dry_run, forget=forget).run()
