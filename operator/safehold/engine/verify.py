"""Verify: is every snapshot restorable, and if not, exactly what is lost?

Structure (always): every index object opens; every pack the index names exists
and is long enough; every snapshot opens; every tree reachable from a snapshot
is indexed and decodes; every chunk a file names is indexed, in an existing pack.

Data (``read_data_percent``, or ``read_data_subset``): read packs (all, a random share,
or part K of N: the packs whose id, its first 32 bits read as a number, modulo N is K-1,
so the N parts are disjoint, cover every pack and stay the same from run to run, as
restic's ``--read-data-subset K/N``), check each pack's bytes against its name, open its
header and every blob, and check each blob against its id. Damaged blobs are then traced
to the snapshots and file paths that use them, which is what the report lists.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from safehold.engine.progress import ProgressCallback, ProgressTracker
from safehold.repo import CorruptObject, Repository, Snapshot
from safehold.repo.audit import check_chain
from safehold.repo.crypto import SealError, object_hash
from safehold.repo.dictionary import Dictionary
from safehold.repo.layout import AUDIT, DATA, INDEX, SNAPSHOTS, object_id, pack_object_name
from safehold.repo.pack import decode_blob, open_dictionary, parse_pack
from safehold.repo.tree import TreeNode
from safehold.repo.walk import blobs_of, subtree_of, tree_loader
from safehold.storage import NotFound, StorageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["VerifyReport", "in_subset", "repair_steps", "verify_repository", "verify_snapshot"]

_MAX_LISTED = 50


@dataclass
class VerifyReport:
    snapshots: int = 0
    packs: int = 0
    packs_read: int = 0
    blobs: int = 0
    bytes_read: int = 0
    unreferenced_packs: int = 0
    #: problems with repository objects: name -> message
    objects: dict[str, str] = field(default_factory=dict)
    #: damaged snapshots: id -> list of {"path", "error"}
    damaged: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    #: what to run to mend the damage, in order (docs/repair.md); empty when ok
    repair: list[str] = field(default_factory=list)

    @property
    def repair_hint(self) -> str:
        """One sentence saying which repair to run (empty when nothing is damaged)."""
        if not self.repair:
            if any(name.startswith(AUDIT) for name in self.objects):
                return (
                    "the audit trail was changed or a record deleted: no repair rewrites it "
                    "(records are write-once); find out who had write access (see "
                    "docs/monitoring.md, Audit trail)"
                )
            return ""
        said = [
            f"a new '{step}' of each affected source" if step == BACKUP_STEP else f"'{step}'"
            for step in self.repair
        ]
        hint = "to repair, run " + ", then ".join(said)
        if self.repair[-1] == FORGET_STEP:
            hint += (
                " (--dry-run shows first what a repair would change; --forget removes the "
                "damaged originals once their repaired copies are written, and the snapshot "
                "objects that cannot be read: copy those back from a recovery site first if "
                "one has them)"
            )
        return hint + "; see docs/repair.md"

    @property
    def ok(self) -> bool:
        return not self.objects and not self.damaged

    def summary(self) -> dict[str, Any]:
        """A compact summary (fits a Kubernetes termination message)."""
        damaged = {
            sid: {"files": len(items), "paths": [i["path"] for i in items[:5]]}
            for sid, items in list(self.damaged.items())[:10]
        }
        return {
            "ok": self.ok,
            "snapshots": self.snapshots,
            "packs": self.packs,
            "packs_read": self.packs_read,
            "blobs": self.blobs,
            "bytes_read": self.bytes_read,
            "unreferenced_packs": self.unreferenced_packs,
            "damaged_objects": len(self.objects),
            "objects": dict(list(self.objects.items())[:5]),
            "damaged_snapshots": len(self.damaged),
            "damaged": damaged,
            "repair": list(self.repair),
            "repair_hint": self.repair_hint,
        }


class _Verifier:
    def __init__(self, repo: Repository, tracker: ProgressTracker) -> None:
        self.repo = repo
        self.tracker = tracker
        self.report = VerifyReport()
        self.pack_sizes: dict[str, int] = {}
        self.bad_blobs: dict[bytes, str] = {}
        self.tree_memo: dict[str, list[dict[str, str]]] = {}
        self.load_tree = tree_loader(repo)

    def structure(self) -> None:
        repo = self.repo
        load = repo.load_index()
        for name, message in load.damaged.items():
            self.report.objects[name] = message
        for info in repo.storage.list(DATA):
            self.pack_sizes[object_id(info.name)] = info.size
        indexed = set(repo.index.packs())
        self.report.packs = len(indexed)
        self.report.unreferenced_packs = len(set(self.pack_sizes) - indexed)
        ends: dict[str, int] = {}
        for blob_id, loc in repo.index.items():
            self.report.blobs += 1
            end = loc.offset + loc.stored
            if end > ends.get(loc.pack, 0):
                ends[loc.pack] = end
            size = self.pack_sizes.get(loc.pack)
            if size is None:
                self.bad_blobs[blob_id] = f"pack {loc.pack} is missing"
            elif end > size:
                self.bad_blobs[blob_id] = f"pack {loc.pack} is truncated"
        for pack in indexed:
            size = self.pack_sizes.get(pack)
            name = pack_object_name(pack)
            if size is None:
                self.report.objects[name] = "pack named by the index is missing"
            elif ends.get(pack, 0) > size:
                self.report.objects[name] = f"pack is truncated ({size} bytes)"

    def read_data(
        self, percent: float, workers: int = 2, subset: tuple[int, int] | None = None
    ) -> None:
        packs = sorted(p for p in self.repo.index.packs() if p in self.pack_sizes)
        if subset is not None:
            packs = [p for p in packs if in_subset(p, *subset)]
        elif percent < 100:
            count = max(1, round(len(packs) * percent / 100)) if packs else 0
            packs = sorted(random.sample(packs, count))
        self.tracker.files_total = len(packs)
        self.tracker.bytes_total = sum(self.pack_sizes[p] for p in packs)
        with ThreadPoolExecutor(workers, thread_name_prefix="verify") as pool:
            for _ in pool.map(self._check_pack, packs):
                pass

    def _check_pack(self, pack: str) -> None:
        repo = self.repo
        name = pack_object_name(pack)
        expected = {bid: loc for bid, loc in self._pack_blobs(pack)}
        try:
            data = repo.storage.get(name)
        except (NotFound, StorageError) as exc:
            self._damage_pack(name, expected, f"cannot be read: {exc}")
            return
        self.report.packs_read += 1
        self.report.bytes_read += len(data)
        self.tracker.files_done += 1
        self.tracker.bytes_done += len(data)
        if object_hash(data) != pack:
            self.report.objects[name] = "pack bytes do not match its name (changed or corrupt)"
        view = memoryview(data)
        aead: AESGCM | None = None
        try:
            aead = repo.pack_aead(pack, data)  # version 2: the pack's own subkey
            header = {b.id: b for b in parse_pack(repo.aead, data, name)}
        except CorruptObject as exc:
            self.report.objects[name] = str(exc)
            header = {}
        dictionary = self._dictionary(pack, view, aead) if aead is not None else None
        for blob_id, loc in expected.items():
            entry = header.get(blob_id)
            if header and (
                entry is None or entry.offset != loc.offset or entry.stored != loc.stored
            ):
                self.bad_blobs[blob_id] = f"pack {pack} header disagrees with the index"
                continue
            try:
                sealed = view[loc.offset : loc.offset + loc.stored]
                if aead is None:
                    raise ValueError("the pack's subkey prefix is damaged")
                plain = decode_blob(aead, loc.type, blob_id, loc.flags, loc.raw, sealed, dictionary)
                if repo.keys.blob_id(plain) != blob_id:
                    raise ValueError("content does not match its id")
            except (SealError, ValueError) as exc:
                self.bad_blobs[blob_id] = f"damaged in pack {pack} ({exc or 'authentication'})"
                self.report.objects.setdefault(name, "pack holds damaged blobs")

    def _dictionary(self, pack: str, view: memoryview, aead: AESGCM) -> Dictionary | None:
        """The pack's own copy of its dictionary, checked (a damaged copy is reported, and
        another pack's copy stands in for it); None when the pack holds none."""
        where = self.repo.index.dictionary_of(pack)
        if where is None:
            return None
        try:
            return open_dictionary(aead, view, where, self.repo.keys.blob_id)
        except (SealError, ValueError) as exc:
            name = pack_object_name(pack)
            self.report.objects[name] = f"pack's dictionary is damaged ({exc or 'authentication'})"
        try:
            return self.repo.dictionary(where.id)
        except CorruptObject:
            return None

    def _pack_blobs(self, pack: str) -> list[tuple[bytes, Any]]:
        if not hasattr(self, "_by_pack"):
            by_pack: dict[str, list[tuple[bytes, Any]]] = {}
            for blob_id, loc in self.repo.index.items():
                by_pack.setdefault(loc.pack, []).append((blob_id, loc))
            self._by_pack = by_pack
        return self._by_pack.get(pack, [])

    def _damage_pack(self, name: str, expected: dict[bytes, Any], message: str) -> None:
        self.report.objects[name] = message
        for blob_id in expected:
            self.bad_blobs[blob_id] = f"{name} {message}"

    def snapshots(self) -> None:
        errors: dict[str, str] = {}
        for snap in self.repo.snapshots(errors=errors):
            self.report.snapshots += 1
            problems = self._tree(snap.tree, "")
            if problems:
                self.report.damaged[snap.id] = problems
        self.report.objects.update(errors)

    def _tree(self, tree_id: str, prefix: str) -> list[dict[str, str]]:
        """Damaged paths below a tree, relative to it; memoised (snapshots share subtrees).

        Walked with an explicit stack, children before their parent, so that a tree of
        any depth is verified (recursion failed at about 1,000 levels)."""
        memo = self.tree_memo
        if tree_id not in memo:
            # (tree id, its nodes once loaded, its own load error)
            stack: list[tuple[str, Sequence[TreeNode] | None, str]] = [(tree_id, None, "")]
            loading: set[str] = set()  # the trees whose walk is under way: the path
            while stack:
                current, nodes, error = stack[-1]
                if nodes is None:
                    if current in memo or current in loading:  # done by another path
                        stack.pop()
                        continue
                    nodes, error = self._load(current)
                    stack[-1] = (current, nodes, error)
                    loading.add(current)
                    below = [
                        sub
                        for node in nodes
                        if (sub := subtree_of(node)) is not None
                        and sub not in memo
                        and sub not in loading  # a cycle: reported by _damage
                    ]
                    if below:
                        stack.extend((sub, None, "") for sub in below)
                        continue
                stack.pop()
                loading.discard(current)
                memo[current] = self._damage(nodes, error)
        found = memo[tree_id]
        if not prefix:
            return found
        return [{"path": f"{prefix}/{m['path']}", "error": m["error"]} for m in found]

    def _load(self, tree_id: str) -> tuple[Sequence[TreeNode], str]:
        """A tree's nodes, or none and why the directory is lost."""
        blob = bytes.fromhex(tree_id)
        if blob in self.bad_blobs:
            return [], f"directory lost: {self.bad_blobs[blob]}"
        try:
            return self.load_tree(tree_id), ""
        except CorruptObject as exc:
            return [], f"directory lost: {exc}"

    def _damage(self, nodes: Sequence[TreeNode], error: str) -> list[dict[str, str]]:
        """A tree's damaged paths, from its nodes and its subtrees' (already in the memo)."""
        found = [{"path": "", "error": error}] if error else []
        for node in nodes:
            name = node["name"]
            subtree = subtree_of(node)
            if subtree is not None:
                below = self.tree_memo.get(subtree)
                if below is None:  # only a cycle, which content-addressed ids rule out
                    found.append({"path": name, "error": "directory contains itself"})
                    continue
                for item in below:
                    sub = f"{name}/{item['path']}" if item["path"] else name
                    found.append({"path": sub, "error": item["error"]})
            else:
                for c in blobs_of(node):
                    chunk = bytes.fromhex(c)
                    if chunk in self.bad_blobs:
                        found.append({"path": name, "error": self.bad_blobs[chunk]})
                        break
                    if chunk not in self.repo.index:
                        found.append({"path": name, "error": f"chunk {c} is in no index"})
                        break
        return found


def in_subset(pack: str, part: int, parts: int) -> bool:
    """Whether the pack ``pack`` (its hex id) is in part ``part`` (1 to ``parts``) of
    ``parts``: its first 32 bits as a number, modulo ``parts``, is ``part - 1``."""
    return int(pack[:8], 16) % parts == part - 1


def verify_repository(
    repo: Repository,
    *,
    read_data_percent: float | None = None,
    read_data_subset: tuple[int, int] | None = None,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Check the repository; see the module docstring for what is checked.
    ``read_data_subset`` (part, parts) reads that part of the packs instead of a share."""
    with ProgressTracker("verify", progress) as tracker:
        v = _Verifier(repo, tracker)
        v.structure()
        if read_data_subset is not None:
            v.read_data(100, subset=read_data_subset)
        elif read_data_percent:
            v.read_data(read_data_percent)
        v.snapshots()
        v.report.objects.update(check_chain(repo.storage, repo.aead))  # format section 15
    for items in v.report.damaged.values():
        del items[_MAX_LISTED * 20 :]
    v.report.repair = repair_steps(v.report)
    return v.report


def verify_snapshot(repo: Repository, snapshot: Snapshot) -> VerifyReport:
    """The structure check of one snapshot (``backup --verify``, a BackupPolicy's
    ``verification.afterBackup``): every index object opens, every pack the index names
    exists and is long enough, every tree of ``snapshot`` is indexed and decodes, and every
    chunk its files name is indexed, in an existing pack. Reads no pack data: one listing
    of the packs, the index, and the snapshot's trees."""
    with ProgressTracker("verify", None) as tracker:
        v = _Verifier(repo, tracker)
        v.structure()
        v.report.snapshots = 1
        problems = v._tree(snapshot.tree, "")
        if problems:
            v.report.damaged[snapshot.id] = problems[: _MAX_LISTED * 20]
    v.report.repair = repair_steps(v.report)
    return v.report


#: What verify says of a pack it found missing or short without reading it.
_STRUCTURAL = ("pack named by the index is missing", "pack is truncated")
#: What a damaged path's error says when its data is absent, not damaged.
_LOST = ("is missing", "is truncated", "in no index")
#: The step between the two repairs: a backup stores the lost data again where the source
#: still has it (a snapshot that needed only that data is whole again).
BACKUP_STEP = "safehold backup"
#: The last step: repaired copies of what still references lost data, the damaged
#: originals and unreadable snapshot objects removed (restic recommends the same).
FORGET_STEP = "safehold repair snapshots --forget"


def repair_steps(report: VerifyReport) -> list[str]:
    """The commands that mend what ``report`` found, in order (docs/repair.md):

    * index objects, packs or blobs damaged, or data snapshots need that no index names:
      ``safehold repair index`` (``--read-data`` when the damage is inside packs, which
      only reading finds), then, when snapshots are damaged, a backup of each affected
      source (it stores the lost data again where the source still has it), then
      ``safehold repair snapshots --forget`` for what the backup could not store again:
      repaired copies replace the damaged originals;
    * snapshot objects that cannot be read: ``safehold repair snapshots --forget``
      removes them (copy them back from a recovery site first, if one has them).
    """
    if report.ok:
        return []
    index = any(name.startswith(INDEX) for name in report.objects)
    packs = {n: m for n, m in report.objects.items() if n.startswith(DATA)}
    # Damage inside a pack (a blob that does not open or match its id) is seen only by
    # reading: a repair that reads headers would keep such a blob indexed, and the next
    # backup would deduplicate against it again.
    inside = any(not m.startswith(_STRUCTURAL) for m in packs.values()) or any(
        not any(word in item["error"] for word in _LOST)
        for items in report.damaged.values()
        for item in items
    )
    unreadable = any(name.startswith(SNAPSHOTS) for name in report.objects)
    steps: list[str] = []
    if index or packs or report.damaged:
        steps.append("safehold repair index --read-data" if inside else "safehold repair index")
        if report.damaged:
            steps.append(BACKUP_STEP)
    if report.damaged or unreadable:
        steps.append(FORGET_STEP)
    return steps
