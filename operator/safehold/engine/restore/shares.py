"""Which part of a parallel restore from an object store restores each blob: packs shared out
by what restoring them costs (:mod:`safehold.engine.restore.parts` runs the parts).

Every part computes the same :class:`PackShare` for each pack from the index it inherited
(``Index.pack_loads``: blobs, bytes and where the blobs lie), so all agree without a word,
whatever each could read of the trees. A part reads each piece of a pack it owns in one
request, so a pack is cut in few pieces (:data:`PIECES`), none short (:data:`MIN_PIECE`).

The packs are taken in their order in the index (the packs one backup wrote have consecutive
numbers, and one snapshot mostly uses such a run; sorting them by cost would balance the
repository, not the packs one snapshot uses). A pack of small files is cut where the parts
that have done least so far come level: the least loaded gets its lag on the next plus an
equal share of the rest. Its cost at an offset is read off the pack's marks (where each
sixteenth of its blobs starts), so a pack whose first half holds most of its files is cut
early. A pack of big chunks costs its bytes and goes whole to the least loaded part (half
the requests). After any pack, the parts differ by at most the largest piece's cost, and
after a pack of small files that outweighs their lag, by little more than the error of the
marks' straight lines (unless a cut had to move to keep its pieces :data:`MIN_PIECE` long)."""

from __future__ import annotations

import itertools
from bisect import bisect_right
from dataclasses import dataclass

from safehold.repo.index import PackLoad

__all__ = ["BLOB_COST", "MIN_PIECE", "PIECES", "PackShare", "share_packs"]

#: What restoring one blob costs beside its bytes, in bytes: creating a file (open, write,
#: utime, close of a new entry) takes about as long as decoding and writing 16 KiB.
BLOB_COST = 16 * 1024
#: The most pieces an object store's pack of small files is cut in: two. Whole packs left
#: one part of two with 62,000 of the small files' 100,000 (a snapshot of four data packs);
#: more pieces would balance closer but read a pack in more, shorter requests, which costs a
#: restore from a distant bucket its time (session 13 in docs/performance.md).
PIECES = 2
#: No piece is shorter than this: a read of a short piece costs a request for little (and
#: a read of a pack's second piece that starts within its first bytes takes them with it:
#: the subkey prefix and dictionary lead a pack). A pack shorter than two is not cut.
MIN_PIECE = 1024 * 1024


@dataclass(frozen=True)
class PackShare:
    """Which part restores each piece of one pack: the blob that starts at ``offset`` goes to
    ``owners[i]``, where ``i`` counts the ``bounds`` (the offsets at which the second and
    later pieces start) at or below it. ``costs``: what each piece was reckoned to cost."""

    bounds: tuple[int, ...]
    owners: tuple[int, ...]
    costs: tuple[int, ...]

    def owner(self, offset: int) -> int:
        return self.owners[bisect_right(self.bounds, offset)]


class _Curve:
    """What restoring a pack's blobs up to an offset costs: blobs started before it times
    :data:`BLOB_COST`, plus the offset; straight between the pack's marks."""

    def __init__(self, load: PackLoad) -> None:
        marks = load.offsets()
        n = len(marks) + 1
        inner = [(o, load.blobs * i // n * BLOB_COST + o) for i, o in enumerate(marks, 1)]
        end = (load.size, load.blobs * BLOB_COST + load.size)
        self.points = [(0, 0), *(p for p in inner if p[0] < load.size), end]

    def cost_at(self, offset: int) -> int:
        return _between(self.points, offset, 0)

    def offset_at(self, cost: int) -> int:
        return _between(self.points, cost, 1)


def _between(points: list[tuple[int, int]], x: int, axis: int) -> int:
    """The other coordinate at ``x`` on the line through ``points`` (offset, cost), both of
    which rise: ``x`` an offset (``axis`` 0) or a cost (``axis`` 1)."""
    xs = [p[axis] for p in points]
    i = bisect_right(xs, x)
    if i >= len(points):
        return points[-1][1 - axis]
    x0, x1 = xs[i - 1], xs[i]
    y0, y1 = points[i - 1][1 - axis], points[i][1 - axis]
    return y0 + (y1 - y0) * (x - x0) // (x1 - x0) if x1 > x0 else y0


def _fill(costs: list[int], total: int) -> list[int]:
    """What each of ``costs`` (the least loaded parts, in rising order) gets of ``total``
    so that as many as can come level: water poured into the lowest first."""
    for j in range(len(costs), 0, -1):
        level = (total + sum(costs[:j])) // j
        if level >= costs[j - 1]:
            shares = [level - c for c in costs[:j]]
            shares[0] += total - sum(shares)  # what the division left
            return shares
    return [total]  # unreachable: one part always takes it all


def share_packs(loads: list[PackLoad], count: int, pieces: int = PIECES) -> list[PackShare]:
    """The part that restores each piece of each pack (by pack number), from what the index
    holds of each (``Index.pack_loads``). See the module's docstring."""
    costs = [0] * max(1, count)
    shares: list[PackShare] = []
    for load in loads:
        total = load.blobs * BLOB_COST + load.size
        small_files = load.blobs * BLOB_COST > load.size
        cut = min(pieces, len(costs), load.size // MIN_PIECE) if small_files else 1
        order = sorted(range(len(costs)), key=costs.__getitem__)[: max(1, cut)]
        if cut <= 1:
            costs[order[0]] += total
            shares.append(PackShare((), (order[0],), (total,)))
            continue
        curve = _Curve(load)
        amounts = [a for a in _fill([costs[p] for p in order], total) if a > 0]
        owners = order[: len(amounts)]
        bounds: list[int] = []
        reached = 0
        for i, amount in enumerate(amounts[:-1], 1):
            reached += amount
            low = (bounds[-1] if bounds else 0) + MIN_PIECE
            high = load.size - (len(amounts) - i) * MIN_PIECE
            bounds.append(min(max(curve.offset_at(reached), low), high))
        edges = [0, *bounds, load.size]
        spent = [curve.cost_at(b) - curve.cost_at(a) for a, b in itertools.pairwise(edges)]
        spent[-1] = total - sum(spent[:-1])
        for part, cost in zip(owners, spent, strict=True):
            costs[part] += cost
        shares.append(PackShare(tuple(bounds), tuple(owners), tuple(spent)))
    return shares
