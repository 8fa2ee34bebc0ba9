"""Repair index: the index rebuilt from the packs that exist (the package docstring's
step 1); damaged packs' good blobs salvaged into new packs."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.engine.progress import ProgressCallback, ProgressTracker
from safehold.engine.repair.shared import HEX, NEWER_KEY, check_key_version, delete_object
from safehold.repo.crypto import SealError, object_hash
from safehold.repo.dictionary import Dictionary
from safehold.repo.errors import CorruptObject
from safehold.repo.index import IndexFile, decode_index, split_packs
from safehold.repo.layout import DATA, INDEX, index_name, object_id, pack_object_name
from safehold.repo.locks import RepositoryLock
from safehold.repo.pack import (
    BLOB_DICT,
    FLAG_DICT,
    PackBlob,
    decode_blob,
    open_dictionary,
    parse_pack,
    parse_pack_header,
)
from safehold.repo.repacker import Repacker
from safehold.repo.repository import Repository
from safehold.storage import FileBody, NotFound, ObjectInfo

__all__ = ["IndexRepairReport", "repair_index"]

#: Bytes read from the end of a pack to find its header in one request (a 16 MiB pack of
#: 512 KiB chunks has a header of about 1.3 KiB; a longer one costs a second read).
_TAIL = 64 * 1024


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
        self._repacker = Repacker(repo, self._save)

    def add(
        self,
        source: AESGCM,
        blob: PackBlob,
        sealed: bytes | memoryview,
        dictionary: Dictionary | None,
    ) -> None:
        self._repacker.add(source, blob, sealed, dictionary)

    def _save(self, entries: list[PackBlob], pack: FileBody) -> None:
        self.ids.update(b.id for b in entries)
        self.report.blobs_salvaged += sum(b.type != BLOB_DICT for b in entries)
        if not self.report.dry_run:
            self.written[self.repo.save_object("data", pack)] = entries
        self.report.packs_written += 1

    def finish(self) -> None:
        self._repacker.finish()


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
                check_key_version(repo, info.name, data)
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
            check_key_version(repo, name, data)
            why = why or str(exc).removeprefix(name + ": ")
        return data, aead, header, why

    def _blob_ok(
        self, aead: AESGCM | None, data: bytes, b: PackBlob, dictionary: Dictionary | None
    ) -> bool:
        if aead is None or b.offset + b.stored > len(data):
            return False
        try:
            sealed = memoryview(data)[b.offset : b.offset + b.stored]
            plain = decode_blob(aead, b.type, b.id, b.flags, b.raw, sealed, dictionary)
        except (SealError, ValueError):
            return False
        return self.repo.keys.blob_id(plain) == b.id

    def _dictionary(
        self, aead: AESGCM | None, data: bytes, blobs: list[PackBlob]
    ) -> Dictionary | None:
        """The dictionary that a pack read whole holds (its first blob, format section 7),
        when it reads; else another pack's copy of it; None when the pack holds none."""
        where = blobs[0] if blobs and blobs[0].type == BLOB_DICT else None
        if where is None or not any(b.flags & FLAG_DICT for b in blobs):
            return None
        if aead is not None and where.offset + where.stored <= len(data):
            try:
                return open_dictionary(aead, data, where, self.repo.keys.blob_id)
            except (SealError, ValueError):
                pass
        try:
            return self.repo.dictionary(where.id)
        except CorruptObject:
            return None

    def _check(self, pack: str, size: int) -> tuple[list[PackBlob] | None, str] | None:
        """(the pack's blobs, "") when it is good; (its header or None, why) when it is
        damaged; None when it vanished meanwhile. Runs in worker threads: reads only."""
        try:
            # Unindexed packs are read whole: a damaged pack an earlier repair left
            # unindexed must not come back because its header still reads.
            if self.read_data or pack not in self.old:
                data, aead, header, why = self._whole(pack)
                if not why and header is not None and self.read_data:
                    dictionary = self._dictionary(aead, data, header)
                    bad = [b for b in header if not self._blob_ok(aead, data, b, dictionary)]
                    if bad:
                        why = f"{len(bad)} blob(s) are damaged"
                return header, why
            try:
                return self._header(pack, size), ""
            except CorruptObject as exc:
                name = pack_object_name(pack)
                if NEWER_KEY in str(exc):
                    check_key_version(self.repo, name, self.repo.storage.get(name, 0, 4))
                return None, str(exc).removeprefix(name + ": ")
        except NotFound:  # deleted while we looked: as if it had never been there
            return None

    def check_packs(self) -> None:
        """Sort every pack on the storage into good (indexed by its header) or damaged."""
        report = self.report
        packs = {
            object_id(i.name): i.size
            for i in self.repo.storage.list(DATA)
            if HEX.match(object_id(i.name))
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
            dictionary = self._dictionary(aead, data, sorted(blobs, key=lambda b: b.offset))
            for b in wanted:
                if aead is not None and self._blob_ok(aead, data, b, dictionary):
                    sealed = memoryview(data)[b.offset : b.offset + b.stored]
                    builder.add(aead, b, sealed, dictionary)
                    available.add(b.id)
        builder.finish()

    # ------------------------------------------------------------ writing
    def _delete(self, name: str, info: ObjectInfo | None) -> bool:
        deleted, locked_until = delete_object(self.repo, name, info.modified if info else None)
        if locked_until is not None:
            self.report.locked[name] = locked_until
        return deleted

    def write_index(self, packs: dict[str, list[PackBlob]]) -> None:
        """Index objects for ``packs``; the last supersedes every index object read."""
        chunks = split_packs(sorted(packs.items()))
        read = sorted(d for d in self.infos if HEX.match(d))  # damaged ones too
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
