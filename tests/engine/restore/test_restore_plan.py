"""How a restore orders its reads: pure logic, no repository needed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safehold.engine.restore.state import Dir, FileMeta, PendingFile, Uses, add_use, uses_of
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


def _pending(name: str) -> PendingFile:
    return PendingFile(Dir(-1, "/t/", ""), name, FileMeta({}), 1, 0, True)


def test_a_chunk_planned_once_at_offset_0_is_held_bare_and_later_uses_keep_their_offsets() -> None:
    a, b, c = _pending("a"), _pending("b"), _pending("c")
    plan: dict[bytes, Uses] = {}
    add_use(plan, b"x", a, 0)
    assert plan[b"x"] is a  # no list, no tuple: the common case costs one reference
    assert uses_of(plan[b"x"]) == [(a, 0)]
    add_use(plan, b"x", b, 0)
    add_use(plan, b"x", a, 300_000)
    assert uses_of(plan[b"x"]) == [(a, 0), (b, 0), (a, 300_000)]
    add_use(plan, b"y", c, 65_536)  # first use not at 0
    assert uses_of(plan[b"y"]) == [(c, 65_536)]
    assert b.path == "/t/b"


@pytest.mark.parametrize(
    "node",
    [
        {},
        {"mode": 0o104755, "uid": 4_294_967_294, "gid": 0, "sparse": True},
        {"mode": 0o600, "uid": -1, "gid": -1, "atime_ns": -86_400 * 10**9, "mtime_ns": 2**62},
    ],
)
def test_file_metadata_packed_for_a_pending_file_reads_back_as_the_node_says(
    node: dict[str, object],
) -> None:
    meta = FileMeta(node)  # type: ignore[arg-type]
    expected = (
        int(node.get("mode", 0o644)) & 0o7777,  # type: ignore[call-overload]
        node.get("uid", -1),
        node.get("gid", -1),
        node.get("atime_ns", 0),
        node.get("mtime_ns", 0),
        bool(node.get("sparse")),
    )
    assert meta.fields() == expected
    assert meta.sparse == expected[5]


def test_metadata_out_of_range_is_a_malformed_entry_not_a_crash() -> None:
    with pytest.raises(ValueError, match="metadata out of range"):
        FileMeta({"uid": 2**64})  # type: ignore[arg-type]
