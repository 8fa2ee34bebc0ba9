"""Prune: delete the data no snapshot uses, in an order that survives a crash anywhere.

Under an exclusive repository lock, prune

1. reads every index object and every snapshot, and refuses to go on when one cannot be
   read (it could not know what that snapshot uses);
2. walks the trees of all snapshots into a :class:`CompactIdSet` of used blob ids
   (8 bytes per id, so millions of chunks stay within tens of megabytes);
3. sorts each pack into *keep*, *delete* (no used blob), or *repack* (more than
   ``max_unused`` percent of its bytes unused): a used blob counts for the one pack the
   index resolves it to, so duplicates left by concurrent backups count as unused;
4. copies the used blobs of the packs to repack into new packs (in a version-1
   repository sealed blobs are copied as they are: their associated data names the blob,
   not the pack; in version 2 each new pack has its own subkey under the newest data key,
   so each blob is opened and sealed again, which also moves it to a rotated key);
5. writes new index objects for everything that stays, the last of them superseding
   every index object that existed;
6. deletes the superseded index objects, then the deleted and repacked packs, then old
   packs no index names (left by crashed backups or a crashed prune).

A crash between any two steps leaves only unreferenced objects or superseded index
objects (format section 10), so the repository verifies clean and the next prune
finishes the work.

Two guards for what locks cannot see (format section 11, "Prune and running
backups"): packs written less than ``grace`` ago are never deleted or repacked, so a
backup that raced the lock keeps the packs it is writing; and before deleting any pack
prune lists the locks again and leaves all deletions for the next run when another
lock appeared. Objects under an object lock (docs/immutability.md) are never deleted
before the lock expires: prune computes the expiry from the object's ``modified`` time
and the repository's object lock days (the config's, else the storage options'), and
reports what it kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from safehold.repo.blobset import CompactIdSet
from safehold.repo.crypto import SEAL_OVERHEAD, SealError, object_hash
from safehold.repo.dictionary import Dictionary
from safehold.repo.errors import CorruptObject, RepositoryError
from safehold.repo.index import Index, IndexFile, decode_index, split_packs
from safehold.repo.layout import DATA, INDEX, index_name, object_id, pack_object_name
from safehold.repo.locks import RepositoryLock, list_locks
from safehold.repo.pack import (
    BLOB_DICT,
    FLAG_DICT,
    HEADER_ENTRY,
    PackBlob,
    decode_blob,
    open_dictionary,
)
from safehold.repo.repacker import Repacker
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.walk import SnapshotTreeError, tree_loader, used_blobs
from safehold.storage import FileBody, NotFound, ObjectInfo, ObjectLocked

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_MAX_UNUSED",
    "PruneError",
    "PruneOptions",
    "PruneReport",
    "prune_repository",
]

#: Repack a pack when more than this percentage of its bytes is unused.
DEFAULT_MAX_UNUSED = 20.0
#: Packs younger than this are never deleted or repacked (a backup may be writing them).
DEFAULT_GRACE = timedelta(hours=2)


class PruneError(RepositoryError):
    """Prune stopped before deleting anything: the repository has damage it cannot judge."""


@dataclass(frozen=True)
class PruneOptions:
    max_unused: float = DEFAULT_MAX_UNUSED
    grace: timedelta = DEFAULT_GRACE
    dry_run: bool = False


@dataclass
class PruneReport:
    """What prune found, did (or, with ``dry_run``, would do), and had to keep."""

    dry_run: bool = False
    snapshots: int = 0
    blobs_used: int = 0
    packs: int = 0
    pack_bytes: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    bytes_deleted: int = 0
    bytes_repacked: int = 0
    bytes_written: int = 0
    unindexed_deleted: int = 0
    kept_recent: int = 0
    index_written: int = 0
    index_deleted: int = 0
    #: object name -> RFC 3339 time its object lock expires (not deleted before then)
    locked: dict[str, str] = field(default_factory=dict)
    #: deletions left for the next prune, and why
    deferred: str = ""
    duration_s: float = 0.0

    @property
    def bytes_freed(self) -> int:
        """Bytes removed from the storage (or, dry run, that would be)."""
        return self.bytes_deleted + self.bytes_repacked - self.bytes_written

    def summary(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "snapshots": self.snapshots,
            "blobs_used": self.blobs_used,
            "packs": self.packs,
            "pack_bytes": self.pack_bytes,
            "packs_deleted": self.packs_deleted,
            "packs_repacked": self.packs_repacked,
            "packs_written": self.packs_written,
            "bytes_deleted": self.bytes_deleted,
            "bytes_repacked": self.bytes_repacked,
            "bytes_written": self.bytes_written,
            "bytes_freed": self.bytes_freed,
            "unindexed_deleted": self.unindexed_deleted,
            "kept_recent": self.kept_recent,
            "index_written": self.index_written,
            "index_deleted": self.index_deleted,
            "locked": len(self.locked),
            "locked_objects": dict(sorted(self.locked.items())[:10]),
            "deferred": self.deferred,
            "duration_s": round(self.duration_s, 3),
        }


@dataclass
class _Plan:
    keep: dict[str, list[PackBlob]] = field(default_factory=dict)
    delete: set[str] = field(default_factory=set)
    repack: dict[str, list[PackBlob]] = field(default_factory=dict)  # pack -> blobs to copy
    unindexed: set[str] = field(default_factory=set)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Prune:
    def __init__(self, repo: Repository, options: PruneOptions) -> None:
        self.repo = repo
        self.options = options
        self.report = PruneReport(dry_run=options.dry_run)
        self.now = datetime.now(UTC)
        self.lock_days = timedelta(days=repo.object_lock_days)
        self.index_files: dict[str, IndexFile] = {}
        self.index_infos: dict[str, ObjectInfo] = {}
        self.packs: dict[str, ObjectInfo] = {}

    # ------------------------------------------------------------ reading
    def load(self) -> list[str]:
        """Read every index object; return the live ones (superseded by none)."""
        repo = self.repo
        for info in repo.storage.list(INDEX):
            digest = object_id(info.name)
            try:
                data = repo.storage.get(info.name)
            except NotFound:
                continue
            if object_hash(data) != digest:
                raise PruneError(
                    f"{repo.location}: index object {info.name} is damaged (its bytes do not "
                    "match its name); prune deletes nothing while an index object cannot be "
                    "read: run 'safehold verify' and restore the object from a replica"
                )
            try:
                self.index_files[digest] = decode_index(repo.aead, data, info.name)
            except CorruptObject as exc:
                raise PruneError(
                    f"{repo.location}: {exc}; prune deletes nothing while an index object "
                    "cannot be read: run 'safehold verify'"
                ) from exc
            self.index_infos[digest] = info
        superseded = {old for f in self.index_files.values() for old in f.supersedes}
        live = sorted(d for d in self.index_files if d not in superseded)
        index = Index()
        for digest in live:
            index.add_file(self.index_files[digest])
        repo.index = index
        for info in repo.storage.list(DATA):
            self.packs[object_id(info.name)] = info
        return live

    def used_blobs(self) -> CompactIdSet:
        repo = self.repo
        errors: dict[str, str] = {}
        snapshots: list[Snapshot] = list(repo.iter_snapshots(errors))
        if errors:
            name, message = next(iter(errors.items()))
            raise PruneError(
                f"{repo.location}: snapshot {name} cannot be read ({message}); prune deletes "
                "nothing while a snapshot's data is unknown: run 'safehold verify'"
            )
        self.report.snapshots = len(snapshots)
        try:
            used = used_blobs(tree_loader(repo), snapshots)
        except SnapshotTreeError as exc:
            snap = exc.snapshot
            raise PruneError(
                f"{repo.location}: snapshot {snap.id[:12]} ({snap.source}) has a tree "
                f"that cannot be read ({exc.cause}); prune deletes nothing until "
                "'safehold verify' is clean"
            ) from exc.cause
        self.report.blobs_used = len(used)
        return used

    # ------------------------------------------------------------ deciding
    def _recent(self, info: ObjectInfo | None) -> bool:
        if info is None or info.modified is None:
            return True  # unknown age: treat as new, never delete it
        return self.now - info.modified < self.options.grace

    def _lock_expiry(self, info: ObjectInfo | None) -> datetime | None:
        """When the object's lock ends, if it has not yet ended."""
        if not self.lock_days:
            return None
        if info is None or info.modified is None:
            return self.now + self.lock_days
        expiry = info.modified + self.lock_days
        return expiry if expiry > self.now else None

    def plan(self, live: list[str], used: CompactIdSet) -> _Plan:
        plan = _Plan()
        entries: dict[str, list[PackBlob]] = {}
        for digest in live:
            for pack, blobs in self.index_files[digest].packs.items():
                entries.setdefault(pack, blobs)
        index = self.repo.index
        threshold = self.options.max_unused / 100
        for pack, blobs in sorted(entries.items()):
            info = self.packs.get(pack)
            self.report.packs += 1
            if info is None:  # damage verify reports; prune must not hide it
                plan.keep[pack] = blobs
                continue
            self.report.pack_bytes += info.size
            live_blobs = []
            for b in blobs:
                if b.id in used:
                    where = index.lookup(b.id)
                    # The copy the index resolves to; any copy when that pack is missing.
                    if where is None or where.pack == pack or where.pack not in self.packs:
                        live_blobs.append(b)
            if any(b.flags & FLAG_DICT for b in live_blobs):  # they need their dictionary
                live_blobs += [b for b in blobs if b.type == BLOB_DICT]
            stored = sum(b.stored for b in blobs) or 1
            unused = 1 - sum(b.stored for b in live_blobs) / stored
            if unused == 0:
                plan.keep[pack] = blobs
            elif self._recent(info):
                self.report.kept_recent += 1
                plan.keep[pack] = blobs
            elif not live_blobs:
                plan.delete.add(pack)
            elif unused > threshold and self._lock_expiry(info) is None:
                plan.repack[pack] = live_blobs
            else:
                plan.keep[pack] = blobs
        for pack, info in self.packs.items():
            if pack in entries:
                continue
            if self._recent(info):
                self.report.kept_recent += 1
            else:
                plan.unindexed.add(pack)
        return plan

    # ------------------------------------------------------------ writing
    def repack(self, plan: _Plan) -> dict[str, list[PackBlob]]:
        """Copy the used blobs of the packs to repack into new packs; return the new packs."""
        repo = self.repo
        written: dict[str, list[PackBlob]] = {}

        def save(entries: list[PackBlob], pack: FileBody) -> None:
            written[repo.save_object("data", pack)] = entries
            self.report.packs_written += 1
            self.report.bytes_written += pack.size

        repacker = Repacker(repo, save)
        for pack, blobs in sorted(plan.repack.items()):
            name = pack_object_name(pack)
            data = repo.storage.get(name)
            if object_hash(data) != pack:
                raise PruneError(
                    f"{repo.location}: pack {name} is damaged (its bytes do not match its "
                    "name); prune stops before deleting anything: run 'safehold verify "
                    "--read-data'"
                )
            dictionary: Dictionary | None = None
            for b in blobs:
                sealed = data[b.offset : b.offset + b.stored]
                try:
                    source = repo.pack_aead(pack, data)
                    if b.flags & FLAG_DICT and dictionary is None:
                        where = repo.index.dictionary_of(pack)
                        if where is None:
                            raise ValueError("its pack holds no dictionary")
                        dictionary = open_dictionary(source, data, where, repo.keys.blob_id)
                    plain = decode_blob(source, b.type, b.id, b.flags, b.raw, sealed, dictionary)
                    if repo.keys.blob_id(plain) != b.id:
                        raise ValueError("it does not match its id")
                    repacker.add(source, b, sealed, dictionary)
                except (ValueError, SealError, CorruptObject) as exc:
                    raise PruneError(
                        f"{repo.location}: blob {b.id.hex()} in pack {name} is damaged "
                        f"({exc}); prune stops before deleting anything"
                    ) from exc
            self.report.packs_repacked += 1
            self.report.bytes_repacked += self.packs[pack].size
        repacker.finish()
        return written

    def _repacked_size(self, plan: _Plan) -> int:
        """The bytes :meth:`repack` would write: the same packing, without the data."""
        index = self.repo.index
        prefix = self.repo.aead.prefix_size
        total = 0
        lanes: dict[bytes | None, list[int]] = {}  # lane -> [bytes, blobs]
        for pack, blobs in sorted(plan.repack.items()):
            where = index.dictionary_of(pack)
            for b in blobs:
                if b.type == BLOB_DICT:
                    continue
                lane = where.id if b.flags & FLAG_DICT and where is not None else None
                state = lanes.get(lane)
                if state is None:
                    lead = where.stored if lane is not None and where is not None else 0
                    state = lanes[lane] = [prefix + lead, 1 if lead else 0]
                state[0] += b.stored
                state[1] += 1
                if state[0] >= self.repo.config.pack_size:
                    total += state[0] + state[1] * HEADER_ENTRY.size + SEAL_OVERHEAD + 4
                    del lanes[lane]
        for size, count in lanes.values():
            total += size + count * HEADER_ENTRY.size + SEAL_OVERHEAD + 4
        return total

    def write_index(self, plan: _Plan, new_packs: dict[str, list[PackBlob]]) -> None:
        """Index objects for all that stays; the last one supersedes every old one."""
        chunks = split_packs(sorted({**plan.keep, **new_packs}.items()))
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            supersedes = sorted(self.index_files) if last else []
            self.repo.write_index(IndexFile(packs=chunk, supersedes=supersedes))
            self.report.index_written += 1

    def _delete(self, name: str, info: ObjectInfo | None) -> bool:
        expiry = self._lock_expiry(info)
        if expiry is not None:
            self.report.locked[name] = _iso(expiry)
            return False
        try:
            self.repo.storage.delete(name)
        except ObjectLocked:
            self.report.locked[name] = "unknown (the server refused the delete)"
            return False
        return True

    def _others_locked(self, own: RepositoryLock | None) -> bool:
        mine = own.name if own is not None else ""
        return any(lock.name != mine and not lock.stale() for lock in list_locks(self.repo))

    # ------------------------------------------------------------ the run
    def run(self, own_lock: RepositoryLock | None = None) -> PruneReport:
        started = time.monotonic()
        live = self.load()
        used = self.used_blobs()
        plan = self.plan(live, used)
        superseded = {old for f in self.index_files.values() for old in f.supersedes}
        report = self.report
        rewrite = bool(plan.delete or plan.repack)
        if self.options.dry_run:
            report.packs_deleted = len(plan.delete)
            report.bytes_deleted = sum(self.packs[p].size for p in plan.delete)
            report.unindexed_deleted = len(plan.unindexed)
            report.bytes_deleted += sum(self.packs[p].size for p in plan.unindexed)
            report.packs_repacked = len(plan.repack)
            report.bytes_repacked = sum(self.packs[p].size for p in plan.repack)
            report.bytes_written = self._repacked_size(plan)
            report.duration_s = time.monotonic() - started
            return report
        new_packs = self.repack(plan) if plan.repack else {}
        if rewrite:
            self.write_index(plan, new_packs)
        # Superseded index objects: all old ones once the new index is stored, else only
        # those an earlier (crashed) prune already superseded.
        for digest in sorted(self.index_files if rewrite else superseded & set(self.index_files)):
            if self._delete(index_name(digest), self.index_infos.get(digest)):
                report.index_deleted += 1
        if self._others_locked(own_lock):
            report.deferred = (
                "another process took a lock while prune ran; packs are deleted by the next prune"
            )
            report.duration_s = time.monotonic() - started
            return report
        for pack in sorted(plan.delete | set(plan.repack)):
            info = self.packs[pack]
            deleted = self._delete(pack_object_name(pack), info)
            if deleted and pack in plan.delete:
                report.packs_deleted += 1
                report.bytes_deleted += info.size
        for pack in sorted(plan.unindexed):
            info = self.packs[pack]
            if self._delete(pack_object_name(pack), info):
                report.unindexed_deleted += 1
                report.bytes_deleted += info.size
        report.duration_s = time.monotonic() - started
        return report


def prune_repository(repo: Repository, options: PruneOptions | None = None) -> PruneReport:
    """Prune ``repo`` under an exclusive lock (a shared one for a dry run)."""
    options = options or PruneOptions()
    if not 0 <= options.max_unused <= 100:
        raise PruneError("--max-unused is a percentage between 0 and 100")
    if options.grace < timedelta(0):
        raise PruneError("the grace period for new packs cannot be negative")
    with RepositoryLock(repo, exclusive=not options.dry_run, operation="prune") as lock:
        return _Prune(repo, options).run(lock)
