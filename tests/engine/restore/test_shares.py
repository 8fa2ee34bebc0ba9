"""Which part of a parallel restore from an object store restores each blob
(safehold.engine.restore.shares): both parts must get about as much to do, each piece of a
pack must be worth its request, and every part must compute the same answer."""

from __future__ import annotations

import itertools
import os

from hypothesis import given
from hypothesis import strategies as st

from safehold.engine.restore.shares import (
    BLOB_COST,
    MIN_PIECE,
    PIECES,
    PackShare,
    share_packs,
)
from safehold.repo.index import MARKS, Index, PackLoad
from safehold.repo.pack import BLOB_DATA, PackBlob

MIB = 1024 * 1024


def _pack(offsets: list[int], blob: int) -> tuple[PackLoad, list[int]]:
    """A pack of blobs of ``blob`` bytes at ``offsets``, as the index loads it."""
    index = Index()
    index.add_pack(
        "a" * 64, [PackBlob(BLOB_DATA, 0, o, blob, blob, os.urandom(32)) for o in offsets]
    )
    (load,) = index.pack_loads()
    return load, offsets


def _work(packs: list[tuple[PackLoad, list[int]]], shares: list[PackShare]) -> list[int]:
    """What each of two parts restores, blob by blob (each by the piece it starts in): the
    cost of each blob and its bytes (up to the next blob's offset, or the pack's end)."""
    work = [0, 0]
    for (load, offsets), share in zip(packs, shares, strict=True):
        for offset, end in zip(offsets, [*offsets[1:], load.size], strict=True):
            work[share.owner(offset)] += BLOB_COST + end - offset
    return work


def test_a_pack_whose_first_half_holds_most_files_is_cut_where_its_cost_halves() -> None:
    """A pack of 9,000 files of 200 bytes (1.7 MiB) then 1,000 of 14 KB (14 MB), as a
    backup writes a directory of small files and then one of bigger: cut at its middle
    byte, one part would create all 9,000 small files and more (the bench's 100,000 small
    files on S3 split 52,061 / 47,741 so, by cost 886 MB / 815 MB); cut by the pack's marks
    where its cost halves, each part gets about as much to do."""
    small = [i * 200 for i in range(9_000)]
    big = [small[-1] + 200 + i * 14_000 for i in range(1_000)]
    pack = _pack(small + big, 200)
    (share,) = share_packs([pack[0]], 2)
    assert len(share.owners) == 2
    work = _work([pack], [share])
    assert max(work) / min(work) < 1.02, work
    middle = PackShare((pack[0].size // 2,), share.owners, share.costs)
    work = _work([pack], [middle])
    assert max(work) / min(work) > 4, work  # what the middle byte would give


def test_a_part_behind_gets_more_of_the_next_pack() -> None:
    """A pack of 16 chunks of 1 MiB goes whole to one part; the next pack, of 16,000 small
    files, goes mostly to the other, and after it both have as much to do, to a file (the
    cut lies within one: a file moved is twice its cost of difference)."""
    big = _pack([i * MIB for i in range(16)], MIB)
    small = _pack([i * 1_000 for i in range(16_000)], 1_000)
    shares = share_packs([big[0], small[0]], 2)
    assert shares[0].owners == (0,)
    assert shares[1].owners[0] == 1  # the part behind takes the first piece, the larger
    work = _work([big, small], shares)
    assert abs(work[0] - work[1]) <= 2 * (BLOB_COST + 1_000), work


def test_the_bench_packs_are_shared_by_cost() -> None:
    """The bench's 100,000 small files on S3 (session 22): four data packs of 16,935,
    37,327, 15,026 and 30,491 blobs (text and random bytes lie in packs of their own) and
    one of trees. Taken in turn, one part got 32,000 files and the other 68,000; whole packs
    by cost gave one part 62,000 and it worked on alone for the last 1.1 s of 4.3 s."""
    loads = [
        PackLoad(16_935, 16 * MIB),
        PackLoad(37_327, 16 * MIB),
        PackLoad(0, 0),
        PackLoad(15_026, 15 * MIB),
        PackLoad(30_491, 13 * MIB),
    ]

    def files(shares: list[PackShare]) -> list[float]:
        got = [0.0, 0.0]
        for load, share in zip(loads, shares, strict=True):
            for part, cost in zip(share.owners, share.costs, strict=True):
                got[part] += load.blobs * cost / max(1, load.blobs * BLOB_COST + load.size)
        return got

    cut = files(share_packs(loads, 2))
    assert max(cut) / min(cut) < 1.01, cut
    whole = files(share_packs(loads, 2, pieces=1))  # what cutting replaced
    assert max(whole) / min(whole) > 1.5, whole


def test_a_blob_belongs_to_the_piece_it_starts_in() -> None:
    shares = share_packs([PackLoad(1_000, 10 * MIB), PackLoad(10, 10), PackLoad(20, 10 * MIB)], 2)
    (bound,) = shares[0].bounds
    assert bound == 5 * MIB  # blobs spread evenly (no marks): the middle
    assert shares[0].owner(0) == shares[0].owners[0]
    assert shares[0].owner(bound - 1) == shares[0].owners[0]
    assert shares[0].owner(bound) == shares[0].owners[1] != shares[0].owners[0]
    assert shares[0].owner(20 * MIB) == shares[0].owners[1]  # past the index's end: the last
    assert len(shares[1].owners) == 1  # shorter than two pieces of MIN_PIECE: not cut
    assert len(shares[2].owners) == 1  # big chunks, which cost their bytes: not cut
    assert MIN_PIECE > 10


def test_packs_of_big_chunks_are_shared_whole_by_their_bytes() -> None:
    """A pack of a few big chunks costs its bytes: a part that took a pack of many small
    files does not also take the next hundred packs of a big file."""
    loads = [PackLoad(10_000, 16 * MIB)] + [PackLoad(16, 16 * MIB)] * 100
    shares = share_packs(loads, 2)
    assert all(len(share.owners) == 1 for share in shares[1:])  # whole: half the GETs
    assert 49 <= sum(share.owners == (1,) for share in shares[1:]) <= 51


@st.composite
def _loads(draw: st.DrawFn) -> PackLoad:
    blobs = draw(st.integers(0, 50_000))
    size = draw(st.integers(0, 64 << 20))
    marks = b""
    if draw(st.booleans()) and size:
        offsets = sorted(
            draw(st.lists(st.integers(0, size - 1), min_size=MARKS - 1, max_size=MARKS - 1))
        )
        marks = b"".join(o.to_bytes(4, "little") for o in offsets)
    return PackLoad(blobs, size, marks)


@given(loads=st.lists(_loads(), max_size=60), count=st.integers(1, 4))
def test_after_every_pack_the_parts_differ_by_at_most_one_pieces_cost(
    loads: list[PackLoad], count: int
) -> None:
    """Every part computes the same owners from the same index; every piece is worth its
    request; and the packs of one backup (consecutive numbers) are shared out evenly as
    they come."""
    shares = share_packs(loads, count)
    assert shares == share_packs(list(loads), count)
    costs = [0] * count
    biggest = 0
    for load, share in zip(loads, shares, strict=True):
        assert 1 <= len(share.owners) <= min(PIECES, count)
        assert len(set(share.owners)) == len(share.owners)
        assert all(0 <= o < count for o in share.owners)
        assert sum(share.costs) == load.blobs * BLOB_COST + load.size
        edges = [0, *share.bounds, load.size]
        if share.bounds:  # cut: no piece short
            assert all(b - a >= MIN_PIECE for a, b in itertools.pairwise(edges)), edges
        for part, cost in zip(share.owners, share.costs, strict=True):
            costs[part] += cost
            biggest = max(biggest, cost)
        assert max(costs) - min(costs) <= biggest
