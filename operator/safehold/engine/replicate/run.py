"""Replicate: copy the snapshots a recovery site lacks, and exactly the objects they need.

A recovery site holds a replica of the same repository: the same config and, when the
site is created, the same key objects, so the same passwords open it and every object
means the same there. Because every object is named by the BLAKE3 of its bytes, a copy
is verified without any key (hash the bytes, compare with the name) and copying is
idempotent: what arrived before is simply there.

The order keeps the site a valid repository at every instant (format section 10 and
"Replication" in docs/design/repository-format.md):

1. a new site gets the key objects, then the config (a config without a key would be a
   repository nobody can open); an existing site whose key lacks data key versions that a
   rotation added at the primary gets a key object holding them, under its own password;
2. the packs that hold the selected snapshots' blobs which the site's index lacks;
3. fresh index objects at the site naming exactly those packs (never the primary's index
   objects, which may name packs the site does not get, and whose ``supersedes`` lists
   would drop the site's own index objects);
4. the snapshot objects, oldest first.

A SIGKILL at any point leaves packs without index, or indexed blobs without snapshot:
harmless, and the next run finds the packs by listing and indexes them without copying
them again. Transfers run in a thread pool with at most ``jobs`` objects in memory.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from safehold.engine.progress import ProgressCallback, ProgressTracker
from safehold.repo import CorruptObject, Repository, Snapshot, layout
from safehold.repo.crypto import object_hash
from safehold.repo.errors import RepositoryError
from safehold.repo.index import Index, IndexFile
from safehold.repo.pack import PackBlob
from safehold.repo.snapshot import newest_per_source, source_filter
from safehold.repo.tree import TreeNode
from safehold.repo.walk import blobs_of, tree_loader, walk_trees
from safehold.storage import AlreadyExists, NotFound, Storage, StorageError, TransientError

__all__ = [
    "KINDS",
    "ObjectCounts",
    "ReplicateOptions",
    "ReplicateResult",
    "ReplicationError",
    "open_site",
    "replicate",
    "select_snapshots",
    "site_newest",
]

#: The kinds of object replication copies, in the order it writes them.
KINDS = ("keys", "config", "data", "index", "snapshots")
#: Attempts per object on a transient storage error (then the run fails; resume later).
_ATTEMPTS = 4


class ReplicationError(RepositoryError):
    """Replication cannot proceed (a different repository at the site) or did not finish."""


@dataclass
class ReplicateOptions:
    """What to copy and how.

    ``sources`` (exact names) and ``source_prefixes`` (beginnings of names, such as the
    operator's ``namespace/policy/``) and ``tags`` filter the primary's snapshots (any of the
    sources or prefixes, all of the tags); ``newest`` then keeps the newest N of each
    source; ``only_newer`` skips a snapshot older than the site's newest of its source (so a
    site's own retention is not undone by the next run).
    """

    sources: list[str] = field(default_factory=list)
    source_prefixes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    newest: int | None = None
    only_newer: bool = False
    jobs: int = 4
    server_side: bool = True
    read_back: bool = False
    dry_run: bool = False
    #: A fresh index object at the site after every this many arrived packs (and at the end).
    index_every: int = 64


@dataclass
class ObjectCounts:
    """Objects and bytes of one kind: copied (server side or streamed) and skipped."""

    copied: int = 0
    copied_bytes: int = 0
    server_side: int = 0
    skipped: int = 0
    skipped_bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "copied": self.copied,
            "copied_bytes": self.copied_bytes,
            "server_side": self.server_side,
            "skipped": self.skipped,
            "skipped_bytes": self.skipped_bytes,
        }


@dataclass
class ReplicateResult:
    source: str
    target: str
    repository: str
    site_created: bool = False
    dry_run: bool = False
    selected: int = 0
    snapshots_copied: list[str] = field(default_factory=list)
    snapshots_present: list[str] = field(default_factory=list)
    snapshots_older: list[str] = field(default_factory=list)
    #: snapshots that cannot be copied because the primary is damaged: id -> why
    snapshots_failed: dict[str, str] = field(default_factory=dict)
    counts: dict[str, ObjectCounts] = field(
        default_factory=lambda: {kind: ObjectCounts() for kind in KINDS}
    )
    duration_s: float = 0.0
    #: source -> time of the newest snapshot the site holds after the run, for every source
    #: the source options select (the operator's replication lag); empty when no site exists
    site_newest: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.snapshots_failed

    def total(self) -> ObjectCounts:
        total = ObjectCounts()
        for c in self.counts.values():
            total.copied += c.copied
            total.copied_bytes += c.copied_bytes
            total.server_side += c.server_side
            total.skipped += c.skipped
            total.skipped_bytes += c.skipped_bytes
        return total

    def summary(self) -> dict[str, Any]:
        """A compact summary (fits a Kubernetes termination message)."""
        return {
            "ok": self.ok,
            "source": self.source,
            "target": self.target,
            "repository": self.repository,
            "site_created": self.site_created,
            "dry_run": self.dry_run,
            "snapshots_selected": self.selected,
            "snapshots_copied": len(self.snapshots_copied),
            "snapshots_present": len(self.snapshots_present),
            "snapshots_older": len(self.snapshots_older),
            "snapshots_failed": dict(list(self.snapshots_failed.items())[:5]),
            "copied": [s[:12] for s in self.snapshots_copied[:20]],
            "objects": {kind: c.to_dict() for kind, c in self.counts.items()},
            "total": self.total().to_dict(),
            "duration_s": round(self.duration_s, 3),
            "site_newest": dict(sorted(self.site_newest.items())),
        }


# ------------------------------------------------------------------ the site
def open_site(
    source: Repository,
    target: Storage,
    password: str,
    *,
    create: bool = True,
    counts: dict[str, ObjectCounts] | None = None,
) -> tuple[Repository | None, bool]:
    """Open the replica at ``target``, creating it as a copy of ``source``'s identity.

    Returns the opened site (None in a dry run of a site that does not exist yet) and
    whether it was created now. Refuses a location that holds another repository.
    """
    counts = counts if counts is not None else {kind: ObjectCounts() for kind in KINDS}
    _, config_bytes = Repository.read_config(source.storage)
    try:
        site_config = target.get(layout.CONFIG)
    except NotFound:
        site_config = None
    if site_config is None:
        if any(True for _ in target.list(layout.SNAPSHOTS)) or any(
            True for _ in target.list(layout.KEYS)
        ):
            raise ReplicationError(
                f"{target.location}: holds repository objects but no config; it is not a "
                "replica this tool can complete: give an empty location or the site's URL"
            )
        if not create:  # a dry run: report what creating the site would copy
            for info in source.storage.list(layout.KEYS):
                counts["keys"].copied += 1
                counts["keys"].copied_bytes += info.size
            counts["config"].copied += 1
            counts["config"].copied_bytes += len(config_bytes)
            return None, True
        # Keys first, then the config: like 'repo init', never a config nobody can open.
        for info in source.storage.list(layout.KEYS):
            _copy_small(source.storage, target, info.name, counts["keys"])
        _copy_small(source.storage, target, layout.CONFIG, counts["config"], expected=config_bytes)
        created = True
    else:
        if site_config != config_bytes:
            raise ReplicationError(
                f"{target.location}: holds another repository (or another config) than "
                f"{source.location}; a recovery site must be a replica of the same "
                "repository: give an empty location to create one"
            )
        counts["config"].skipped += 1
        counts["config"].skipped_bytes += len(site_config)
        created = False
    site = Repository.open(target, password)
    # A data key rotation at the primary (format section 5b) reaches the site here, before
    # any object sealed with the new version does: otherwise the site's key could not
    # open what arrives. The site keeps its own password.
    if not created and site.adopt_rotation(password, source.keys) is not None:
        counts["keys"].copied += 1
    return site, created


def _copy_small(
    source: Storage, target: Storage, name: str, counts: ObjectCounts, expected: bytes | None = None
) -> None:
    """Copy a key or the config: keys are verified by their name, the config by its bytes."""
    data = source.get(name)
    if expected is not None and data != expected:
        raise ReplicationError(f"{source.location}: {name} changed while replicating; run again")
    if name.startswith(layout.KEYS) and object_hash(data) != layout.object_id(name):
        raise CorruptObject(f"{source.location}/{name}", "bytes do not match the object's name")
    try:
        target.create(name, data)
    except AlreadyExists:
        counts.skipped += 1
        counts.skipped_bytes += len(data)
        return
    counts.copied += 1
    counts.copied_bytes += len(data)


# ------------------------------------------------------------------ selection
def select_snapshots(snapshots: Iterable[Snapshot], options: ReplicateOptions) -> list[Snapshot]:
    """The primary's snapshots that the options select, oldest first."""
    wanted_tags = set(options.tags)
    selected = source_filter(options.sources, options.source_prefixes)
    chosen = [s for s in snapshots if selected(s.source) and wanted_tags <= set(s.tags)]
    chosen.sort(key=lambda s: (s.datetime, s.id))
    if options.newest is not None:
        by_source: dict[str, list[Snapshot]] = {}
        for s in chosen:
            by_source.setdefault(s.source, []).append(s)
        keep = {s.id for group in by_source.values() for s in group[-options.newest :]}
        chosen = [s for s in chosen if s.id in keep]
    return chosen


# ------------------------------------------------------------------ the run
def replicate(
    source: Repository,
    target: Storage,
    password: str,
    options: ReplicateOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    lock: Callable[[Repository], contextlib.AbstractContextManager[object]] | None = None,
) -> ReplicateResult:
    """Copy the selected snapshots that ``target`` lacks; see the module docstring.

    ``password`` opens the site (by default the primary's: the site has the same keys).
    ``lock``, when given, is entered around the work at the site (the CLI passes a
    shared repository lock, so a prune at the site never deletes packs that are not yet
    referenced by the snapshot about to arrive).
    """
    options = options or ReplicateOptions()
    if options.jobs < 1:
        raise ValueError("jobs must be at least 1")
    started = time.monotonic()
    result = ReplicateResult(source.location, target.location, source.config.id)
    result.dry_run = options.dry_run
    site, result.site_created = open_site(
        source, target, password, create=not options.dry_run, counts=result.counts
    )
    guard = lock(site) if (lock is not None and site is not None) else contextlib.nullcontext()
    with guard, ProgressTracker("replicate", progress) as tracker:
        _run(source, site, target, options, result, tracker)
        if site is not None:
            result.site_newest = site_newest(site, options)
    result.duration_s = time.monotonic() - started
    return result


def site_newest(site: Repository, options: ReplicateOptions) -> dict[str, str]:
    """Per source the options select, the time of the newest snapshot ``site`` holds
    (tags do not narrow it: the lag is about the source)."""
    selected = source_filter(options.sources, options.source_prefixes)
    chosen = (s for s in site.iter_snapshots() if selected(s.source))
    return {source: snap.time for source, snap in newest_per_source(chosen).items()}


def _run(
    source: Repository,
    site: Repository | None,
    target: Storage,
    options: ReplicateOptions,
    result: ReplicateResult,
    tracker: ProgressTracker,
) -> None:
    errors: dict[str, str] = {}
    selected = select_snapshots(source.iter_snapshots(errors), options)
    for name, message in errors.items():
        result.snapshots_failed[layout.object_id(name)] = message
    result.selected = len(selected)
    present = {layout.object_id(info.name): info.size for info in target.list(layout.SNAPSHOTS)}
    newest_at_site: dict[str, Any] = {}
    if options.only_newer and site is not None:
        for s in site.iter_snapshots():
            if s.source not in newest_at_site or s.datetime > newest_at_site[s.source]:
                newest_at_site[s.source] = s.datetime
    wanted: list[Snapshot] = []
    for snap in selected:
        if snap.id in present:
            result.snapshots_present.append(snap.id)
            result.counts["snapshots"].skipped += 1
            result.counts["snapshots"].skipped_bytes += present[snap.id]
        elif snap.source in newest_at_site and snap.datetime < newest_at_site[snap.source]:
            result.snapshots_older.append(snap.id)
        else:
            wanted.append(snap)

    site_index = site.index if site is not None else Index()
    packs: set[str] = set()
    copyable: list[Snapshot] = []
    visited: set[str] = set()
    reloaded = False
    for snap in wanted:
        while True:
            try:
                packs |= _packs_needed(source, site_index, snap, visited)
            except CorruptObject as exc:
                if not reloaded:
                    # The index was loaded when the repository was opened, the snapshots
                    # listed after: a backup that ended in between wrote its index before
                    # its snapshot (format section 10), so a fresh index has its data.
                    source.load_index()
                    reloaded = True
                    continue
                result.snapshots_failed[snap.id] = f"{exc} (run 'safehold verify' at the primary)"
                break
            copyable.append(snap)
            break

    source_sizes = {
        layout.object_id(info.name): info.size
        for info in source.storage.list(layout.DATA)
        if layout.object_id(info.name) in packs
    }
    missing_at_source = packs - source_sizes.keys()
    if missing_at_source:
        # The index names a pack the primary does not hold: those snapshots are damaged.
        raise CorruptObject(
            f"{source.location}/{layout.DATA.rstrip('/')}",
            f"{len(missing_at_source)} pack(s) the index names are missing (e.g. "
            f"{sorted(missing_at_source)[0]}); run 'safehold verify' at the primary",
        )
    at_site = {
        layout.object_id(info.name): info.size
        for info in target.list(layout.DATA)
        if layout.object_id(info.name) in packs
    }
    to_copy = sorted(p for p in packs if at_site.get(p) != source_sizes[p])
    data = result.counts["data"]
    for p in packs:
        if at_site.get(p) == source_sizes[p]:
            data.skipped += 1
            data.skipped_bytes += source_sizes[p]
    tracker.files_total = len(to_copy)
    tracker.bytes_total = sum(source_sizes[p] for p in to_copy)
    if options.dry_run or site is None:
        data.copied = len(to_copy)
        data.copied_bytes = tracker.bytes_total
        result.snapshots_copied = [s.id for s in copyable]
        return

    entries = _pack_entries(source.index, packs)
    arrived = [p for p in packs if p not in to_copy]  # from an interrupted run: index them
    copier = _Copier(source.storage, target, options, tracker)
    failures: dict[str, str] = {}
    pending: list[str] = []

    def flush() -> None:
        if pending:
            _write_index(site, {p: entries[p] for p in pending}, result.counts["index"])
            pending.clear()

    for name in arrived:
        pending.append(name)
        if len(pending) >= options.index_every:
            flush()
    for pack, outcome in copier.run(layout.pack_object_name(p) for p in to_copy):
        digest = layout.object_id(pack)
        if isinstance(outcome, str):
            failures[pack] = outcome
            continue
        data.copied += 1
        data.copied_bytes += outcome.size
        data.server_side += int(outcome.server_side)
        pending.append(digest)
        if len(pending) >= options.index_every:
            flush()
    flush()
    if failures:
        first = next(iter(failures.items()))
        raise ReplicationError(
            f"{len(failures)} pack(s) could not be copied to {target.location} (first: "
            f"{first[0]}: {first[1]}); what arrived is kept and indexed: run replicate again"
        )

    # Snapshots last, oldest first: each one only once everything it reaches is indexed.
    counts = result.counts["snapshots"]
    names = [layout.snapshot_name(snap.id) for snap in copyable]
    for name, outcome in copier.run(names):
        if isinstance(outcome, str):
            failures[name] = outcome
            continue
        counts.copied += 1
        counts.copied_bytes += outcome.size
        counts.server_side += int(outcome.server_side)
    arrived_ids = {layout.object_id(n) for n in names if n not in failures}
    result.snapshots_copied = [s.id for s in copyable if s.id in arrived_ids]
    if failures:
        first = next(iter(failures.items()))
        raise ReplicationError(
            f"{len(failures)} snapshot object(s) could not be copied to {target.location} "
            f"(first: {first[0]}: {first[1]}); run replicate again"
        )


def _packs_needed(
    source: Repository, site_index: Index, snap: Snapshot, visited: set[str]
) -> set[str]:
    """Packs of the primary holding the blobs of ``snap`` that the site's index lacks.

    Trees already walked (for an earlier snapshot of this run) are not walked again; a
    tree that is at the site is still walked, since an interrupted run may have brought
    the tree without all the data below it.
    """
    packs: set[str] = set()

    def need(blob: bytes, what: str) -> None:
        if blob in site_index:
            return
        loc = source.index.lookup(blob)
        if loc is None:
            raise CorruptObject(f"snapshot {snap.id[:12]}", f"{what} {blob.hex()} is in no index")
        packs.add(loc.pack)

    def load(tree: str) -> Sequence[TreeNode]:
        need(bytes.fromhex(tree), "tree")
        return load_tree(tree)

    load_tree = tree_loader(source)
    walked = set(visited)  # a walk that fails part way marks nothing as walked
    for _, nodes in walk_trees(load, [snap.tree], walked):
        for node in nodes:
            for chunk in blobs_of(node):
                need(bytes.fromhex(chunk), "data blob")
    visited.update(walked)  # only once the whole snapshot was found complete
    return packs


def _pack_entries(index: Index, packs: set[str]) -> dict[str, list[PackBlob]]:
    """The primary's index entries of ``packs``, to write the site's fresh index objects."""
    entries: dict[str, list[PackBlob]] = {p: [] for p in packs}
    for blob_id, loc in index.items():
        group = entries.get(loc.pack)
        if group is not None:
            group.append(PackBlob(loc.type, loc.flags, loc.offset, loc.stored, loc.raw, blob_id))
    for group in entries.values():
        group.sort(key=lambda b: b.offset)
    return entries


def _write_index(site: Repository, packs: dict[str, list[PackBlob]], counts: ObjectCounts) -> None:
    _, size = site.write_index(IndexFile(packs=packs))
    site.index.add_file(IndexFile(packs=packs))
    counts.copied += 1
    counts.copied_bytes += size


# ------------------------------------------------------------------ transfers
@dataclass(frozen=True)
class _Arrived:
    size: int
    server_side: bool


class _Copier:
    """Copies objects with at most ``jobs`` in flight (and so in memory), each verified."""

    def __init__(
        self, source: Storage, target: Storage, options: ReplicateOptions, tracker: ProgressTracker
    ) -> None:
        self.source = source
        self.target = target
        self.options = options
        self.tracker = tracker
        self._server_side = options.server_side
        self._lock = threading.Lock()

    def run(self, names: Iterable[str]) -> Iterator[tuple[str, _Arrived | str]]:
        """Yield (name, what arrived) or (name, error message) as transfers finish."""
        jobs = max(1, self.options.jobs)
        with ThreadPoolExecutor(jobs, thread_name_prefix="replicate") as pool:
            running: dict[Future[_Arrived], str] = {}
            for name in names:
                while len(running) >= jobs:
                    yield from self._collect(running, FIRST_COMPLETED)
                running[pool.submit(self._transfer, name)] = name
            while running:
                yield from self._collect(running, FIRST_COMPLETED)

    def _collect(
        self, running: dict[Future[_Arrived], str], how: str
    ) -> Iterator[tuple[str, _Arrived | str]]:
        done, _ = wait(list(running), return_when=how)
        for future in done:
            name = running.pop(future)
            try:
                yield name, future.result()
            except (RepositoryError, StorageError, OSError) as exc:
                yield name, str(exc)

    def _transfer(self, name: str) -> _Arrived:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                arrived = self._once(name)
            except TransientError:
                if attempt == _ATTEMPTS:
                    raise
                time.sleep(0.2 * 2**attempt)
                continue
            self.tracker.files_done += 1
            self.tracker.bytes_done += arrived.size
            return arrived
        raise AssertionError("unreachable")

    def _once(self, name: str) -> _Arrived:
        expected = layout.object_id(name)
        if self._server_side and self.target.copy_from(self.source, name):
            # The bytes never passed through us: read them back at the site and check them.
            data = self.target.get(name)
            if object_hash(data) != expected:
                self.target.delete(name)
                raise CorruptObject(
                    f"{self.source.location}/{name}",
                    "the copy's bytes do not match the object's name: the object is damaged "
                    "at the primary (run 'safehold verify --read-data' there)",
                )
            return _Arrived(len(data), True)
        if self._server_side:
            with self._lock:
                self._server_side = False  # probed once: the two ends have no server path
        data = self.source.get(name)
        if object_hash(data) != expected:
            raise CorruptObject(
                f"{self.source.location}/{name}",
                "bytes do not match the object's name: the object is damaged at the primary "
                "and was not copied (run 'safehold verify --read-data' there)",
            )
        try:
            self.target.create(name, data)
        except AlreadyExists:
            # A damaged or partial object of that name at the site (a listing showed a
            # different size): content-addressed, so replacing it with the right bytes is safe.
            self.target.put(name, data)
        if self.options.read_back and object_hash(self.target.get(name)) != expected:
            raise TransientError(
                self.target.location, "read back bytes do not match the name", name=name
            )
        return _Arrived(len(data), False)
