"""A snapshot's trees read ahead in few requests, for repositories on object stores.

Walking a snapshot reads its trees one blob, one request, at a time: on an object store that
is a round trip per directory, and a restore in several processes pays it in every process.
:func:`prefetch_trees` reads the trees under a root level by level: each level's tree blobs,
grouped by pack, in one ranged read per run of blobs that lie close together, several reads in
flight; a later level's run that lies within bytes an earlier level read is taken from them
(a pack of trees holds the children before their parent: the root's read, from the pack's
start, often holds every tree, and the pack is read once); every blob is authenticated and
checked against its id (:meth:`~safehold.repo.repository.Repository.open_blob`). The plain
trees go into the repository's ``tree_cache``, where
:meth:`~safehold.repo.repository.Repository.load_tree` finds them (a forked restore's parts
inherit it). A blob that cannot be read is left out: its walk reads it as before and reports
it there.

The cache holds at most ``budget`` bytes of plain trees (about 200 bytes per file); beyond it
the rest is read as before. A repository opened with a local cache (repo/local_cache.py) keeps
no plain trees in memory: the read-ahead still reads each level's packs in parallel, which puts
every pack of trees the walk needs into the local cache (whole, once), and the walk reads each
tree from there (100,000 small files restored from S3: 20 MB less at the peak). When the local
cache holds every pack of trees of the index already (the command before this one, on this
machine, read or wrote them), there is nothing to read ahead, and nothing is: decoding the
trees only to find the next level's took 60 ms of an unchanged re-run of 100,000 small files.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from safehold.repo import layout
from safehold.repo.errors import CorruptObject
from safehold.repo.index import BlobLocation
from safehold.repo.pack import BLOB_TREE
from safehold.repo.repository import Repository
from safehold.storage import StorageError

__all__ = ["prefetch_trees"]

#: Plain tree bytes kept at most (64 MiB: about 300,000 files).
BUDGET = 64 * 1024 * 1024
#: Read across gaps up to this size rather than send another request, and at most this much
#: per read.
_GAP = 1024 * 1024
_MAX_READ = 8 * 1024 * 1024
#: The bytes of each pack read so far, by pack: a later level's run that lies within them is
#: taken from there, not read again (a tree pack holds the children before their parent, so
#: the read for the root, from the pack's start, often holds every tree below it).
_Held = dict[str, tuple[int, bytes]]
_THREADS = 8

_Wanted = tuple[bytes, BlobLocation]


def prefetch_trees(repo: Repository, root: str, budget: int = BUDGET) -> int:
    """Read the trees under ``root`` (itself included) into ``repo.tree_cache``, until it
    holds ``budget`` bytes; return how many trees were read."""
    if repo.cache is not None and repo.cache.holds_packs():
        return 0  # every pack of trees is on the disk already: nothing to read ahead
    level, read, held = [root], 0, sum(map(len, repo.tree_cache.values()))
    spans: _Held = {}
    with ThreadPoolExecutor(_THREADS, thread_name_prefix="tree-prefetch") as pool:
        while level and held < budget:
            wanted: list[_Wanted] = []
            for tree in dict.fromkeys(level):
                loc = repo.index.lookup(bytes.fromhex(tree))
                if loc is not None and loc.type == BLOB_TREE and tree not in repo.tree_cache:
                    wanted.append((bytes.fromhex(tree), loc))
            level = []
            for found in pool.map(lambda run: _read_run(repo, run, spans), _runs(wanted)):
                for blob_id, data in found:
                    if repo.cache is None:
                        repo.tree_cache[blob_id.hex()] = data
                        held += len(data)
                    read += 1
                    level += subtrees(data)
    return read


#: A ``subtree`` key of a node as :func:`~safehold.repo.tree.encode_tree` writes it (format
#: section 9: keys sorted, no spaces). Inside a JSON string a quote is always escaped
#: (``\"``), so ``subtree"`` (a quote right after a letter) is never inside a name or a
#: link target: only the key has it. The pattern begins with a literal, which the regex
#: engine scans for at memchr speed: 100,000 files' trees (31 MB) in 15 ms, where a first
#: ``[,{]`` (stopping at every node and comma) took 170 ms.
_SUBTREE = re.compile(rb'"subtree":"([0-9a-f]{64})"')


def subtrees(data: bytes) -> list[str]:
    """The subtree ids of a tree blob's plain bytes, found without decoding it: the walk
    decodes and checks every tree anyway, and decoding each twice cost a restore of 100,000
    small files half a second before its first file. Only a hint: an id that is no tree in
    the index is not read, and a malformed tree is read ahead like any other and reported
    by the walk when it decodes it."""
    return [m.decode() for m in _SUBTREE.findall(data)]


def _runs(wanted: list[_Wanted]) -> Iterator[list[_Wanted]]:
    """The wanted blobs by pack, in runs worth one read each."""
    by_pack: dict[str, list[_Wanted]] = defaultdict(list)
    for item in wanted:
        by_pack[item[1].pack].append(item)
    for items in by_pack.values():
        items.sort(key=lambda item: item[1].offset)
        run: list[_Wanted] = []
        for item in items:
            if run:
                start = run[0][1].offset
                end = run[-1][1].offset + run[-1][1].stored
                loc = item[1]
                if loc.offset - end > _GAP or loc.offset + loc.stored - start > _MAX_READ:
                    yield run
                    run = []
            run.append(item)
        if run:
            yield run


def _read_run(repo: Repository, run: list[_Wanted], spans: _Held) -> list[tuple[bytes, bytes]]:
    """The plain trees of one run; those that cannot be read or opened are left out. A pack
    is read from its start when the run begins within :data:`_GAP` of it: its prefix (format
    version 2: its subkey) comes in the same request, not one of its own."""
    first, last = run[0][1], run[-1][1]
    end = last.offset + last.stored
    span = spans.get(first.pack)
    if span is not None and span[0] <= first.offset and end <= span[0] + len(span[1]):
        start, data = span
    else:
        start = 0 if first.offset <= _GAP else first.offset
        try:
            data = repo.storage.get(layout.pack_object_name(first.pack), start, end - start)
        except StorageError:
            return []
        spans[first.pack] = (start, data)
    view = memoryview(data)
    if start == 0:
        try:  # the pack's key from the prefix at hand
            repo.pack_aead(first.pack, view)
        except CorruptObject:
            return []
    out: list[tuple[bytes, bytes]] = []
    for blob_id, loc in run:
        sealed = view[loc.offset - start : loc.offset - start + loc.stored]
        try:
            out.append((blob_id, repo.open_blob(blob_id, loc, sealed)))
        except CorruptObject:
            continue
    return out
