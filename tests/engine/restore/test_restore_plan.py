"""How a restore orders its reads: pure logic, no repository needed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from safehold.engine.restore.write import _groups, _interleave

MiB = 1024 * 1024


@given(st.lists(st.integers(), max_size=50))
def test_interleave_yields_every_item_once_alternating_halves(items: list[int]) -> None:
    order = list(_interleave(items))
    assert sorted(order) == sorted(items)
    half = (len(items) + 1) // 2
    # neighbours in the output come from different halves (the writers then work in
    # different directories), and each half keeps its own order
    assert order[0::2] == items[:half]
    assert order[1::2] == items[half:]


def _blob(offset: int, stored: int) -> tuple[bytes, int, int, int, int, int]:
    return (offset.to_bytes(8, "big"), 1, 0, offset, stored, stored)


def test_close_blobs_share_a_read_and_far_ones_do_not() -> None:
    close = [_blob(0, 100), _blob(200, 100), _blob(400, 100)]
    far = [_blob(10 * MiB, 100)]
    groups = list(_groups(close + far))
    assert groups == [close, far]  # a gap above 1 MiB starts a new read


def test_a_read_is_at_most_4_mib_and_48_blobs() -> None:
    big = [_blob(i * 3 * MiB, 3 * MiB) for i in range(3)]
    assert [len(g) for g in _groups(big)] == [1, 1, 1]
    small = [_blob(i * 10, 10) for i in range(100)]
    assert [len(g) for g in _groups(small)] == [48, 48, 4]


def test_a_smaller_read_limit_splits_sooner() -> None:
    chunks = [_blob(i * MiB, MiB) for i in range(4)]
    assert [len(g) for g in _groups(chunks)] == [4]
    assert [len(g) for g in _groups(chunks, 2 * MiB)] == [2, 2]
