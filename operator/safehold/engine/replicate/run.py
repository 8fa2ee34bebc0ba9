"""The replication run: which snapshots the site lacks, the packs they need, copying
packs with fresh index objects, then the snapshot objects (the package docstring)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from safehold.engine.progress import ProgressCallback, ProgressTracker
from safehold.engine.replicate.results import (
    ObjectCounts,
    ReplicateOptions,
    ReplicateResult,
    ReplicationError,
)
from safehold.engine.replicate.site import open_site
from safehold.engine.replicate.transfer import Copier
from safehold.repo import CorruptObject, Repository, Snapshot, layout
from safehold.repo.index import Index, IndexFile, split_packs
from safehold.repo.pack import PackBlob
from safehold.repo.snapshot import newest_per_source, source_filter
from safehold.repo.tree import TreeNode
from safehold.repo.walk import blobs_of, tree_loader, walk_trees
from safehold.storage import Storage

__all__ = ["replicate", "select_snapshots", "site_newest"]


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
    wanted = _wanted(source, site, target, options, result)
    copyable, packs = _plan(source, site, wanted, result)
    sizes, to_copy = _packs_to_copy(source, target, packs, result.counts["data"])
    tracker.files_total = len(to_copy)
    tracker.bytes_total = sum(sizes[p] for p in to_copy)
    if options.dry_run or site is None:
        result.counts["data"].copied = len(to_copy)
        result.counts["data"].copied_bytes = tracker.bytes_total
        result.snapshots_copied = [s.id for s in copyable]
        return
    copier = Copier(source.storage, target, options, tracker)
    _copy_packs(source, site, options, result, copier, packs, to_copy)
    _copy_snapshots(target, result, copier, copyable)


def _wanted(
    source: Repository,
    site: Repository | None,
    target: Storage,
    options: ReplicateOptions,
    result: ReplicateResult,
) -> list[Snapshot]:
    """The selected snapshots that the site lacks (and, with ``only_newer``, that are not
    older than its newest of their source and host); the others are counted in ``result``."""
    errors: dict[str, str] = {}
    selected = select_snapshots(source.iter_snapshots(errors), options)
    for name, message in errors.items():
        result.snapshots_failed[layout.object_id(name)] = message
    result.selected = len(selected)
    present = {layout.object_id(info.name): info.size for info in target.list(layout.SNAPSHOTS)}
    # A series is a source on one host (format section 9): one host's newer snapshot must
    # not hold back another host's snapshot of a source of the same name.
    newest_at_site: dict[tuple[str, str | None], Any] = {}
    if options.only_newer and site is not None:
        for s in site.iter_snapshots():
            series = (s.source, s.host)
            if series not in newest_at_site or s.datetime > newest_at_site[series]:
                newest_at_site[series] = s.datetime
    wanted: list[Snapshot] = []
    for snap in selected:
        if snap.id in present:
            result.snapshots_present.append(snap.id)
            result.counts["snapshots"].skipped += 1
            result.counts["snapshots"].skipped_bytes += present[snap.id]
        elif (snap.source, snap.host) in newest_at_site and snap.datetime < newest_at_site[
            (snap.source, snap.host)
        ]:
            result.snapshots_older.append(snap.id)
        else:
            wanted.append(snap)
    return wanted


def _plan(
    source: Repository, site: Repository | None, wanted: list[Snapshot], result: ReplicateResult
) -> tuple[list[Snapshot], set[str]]:
    """The snapshots that can be copied (all their blobs are indexed at the primary) and
    the primary's packs they need that the site's index lacks."""
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
    return copyable, packs


def _packs_to_copy(
    source: Repository, target: Storage, packs: set[str], data: ObjectCounts
) -> tuple[dict[str, int], list[str]]:
    """The sizes of ``packs`` at the primary, and those of them not whole at the site
    (the others are counted as skipped in ``data``)."""
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
    for p in packs:
        if at_site.get(p) == source_sizes[p]:
            data.skipped += 1
            data.skipped_bytes += source_sizes[p]
    return source_sizes, to_copy


def _copy_packs(
    source: Repository,
    site: Repository,
    options: ReplicateOptions,
    result: ReplicateResult,
    copier: Copier,
    packs: set[str],
    to_copy: list[str],
) -> None:
    """Copy ``to_copy`` and index at the site, every ``index_every`` packs, what arrived
    (also the packs an interrupted run brought)."""
    entries = _pack_entries(source.index, packs)
    arrived = [p for p in packs if p not in to_copy]  # from an interrupted run: index them
    data = result.counts["data"]
    failures: dict[str, str] = {}
    pending: list[str] = []

    def flush() -> None:
        if pending:
            for chunk in split_packs((p, entries[p]) for p in pending):
                _write_index(site, chunk, result.counts["index"])
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
            f"{len(failures)} pack(s) could not be copied to {copier.target.location} (first: "
            f"{first[0]}: {first[1]}); what arrived is kept and indexed: run replicate again"
        )


def _waves(copyable: list[Snapshot]) -> list[list[Snapshot]]:
    """The snapshots in rounds: round k holds the k-th oldest of every series (a source on
    one host, format section 9)."""
    series: dict[tuple[str, str | None], list[Snapshot]] = {}
    for snap in sorted(copyable, key=lambda s: s.datetime):
        series.setdefault((snap.source, snap.host), []).append(snap)
    depth = max((len(snaps) for snaps in series.values()), default=0)
    return [[snaps[k] for snaps in series.values() if k < len(snaps)] for k in range(depth)]


def _copy_snapshots(
    target: Storage, result: ReplicateResult, copier: Copier, copyable: list[Snapshot]
) -> None:
    """Snapshots last, each one only once everything it reaches is indexed, and within a
    series oldest first: the rounds of :func:`_waves` one after another, the series of a
    round in parallel, and no round after one that failed. So a failed or killed copy
    leaves each series at the site whole up to some snapshot, never with a hole that
    ``--only-newer`` would then skip for good (a WAL archive's drain, without which a
    point-in-time restore from the site stops there)."""
    failures: dict[str, str] = {}
    counts = result.counts["snapshots"]
    arrived_ids: set[str] = set()
    for wave in _waves(copyable):
        for name, outcome in copier.run([layout.snapshot_name(snap.id) for snap in wave]):
            if isinstance(outcome, str):
                failures[name] = outcome
                continue
            arrived_ids.add(layout.object_id(name))
            counts.copied += 1
            counts.copied_bytes += outcome.size
            counts.server_side += int(outcome.server_side)
        if failures:
            break
    result.snapshots_copied = [s.id for s in copyable if s.id in arrived_ids]
    if failures:
        first = next(iter(failures.items()))
        left = len(copyable) - len(arrived_ids) - len(failures)
        raise ReplicationError(
            f"{len(failures)} snapshot object(s) could not be copied to {target.location} "
            f"(first: {first[0]}: {first[1]}); {left} newer one(s) were not tried, so that "
            "each series stays whole; run replicate again"
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
    """The primary's index entries of ``packs``, to write the site's fresh index objects:
    each blob where the index has it, and each pack's own dictionary (the index keeps one
    location per blob, and a dictionary is in every pack of its blobs: format section 7)."""
    entries: dict[str, list[PackBlob]] = {p: [] for p in packs}
    for blob_id, loc in index.items():
        group = entries.get(loc.pack)
        if group is not None:
            group.append(PackBlob(loc.type, loc.flags, loc.offset, loc.stored, loc.raw, blob_id))
    for pack, group in entries.items():
        dictionary = index.dictionary_of(pack)
        if dictionary is not None and all(b.offset != dictionary.offset for b in group):
            group.append(dictionary)
        group.sort(key=lambda b: b.offset)
    return entries


def _write_index(site: Repository, packs: dict[str, list[PackBlob]], counts: ObjectCounts) -> None:
    _, size = site.write_index(IndexFile(packs=packs))
    site.index.add_file(IndexFile(packs=packs))
    counts.copied += 1
    counts.copied_bytes += size
