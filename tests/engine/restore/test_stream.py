"""PackStream (engine/restore/stream.py): a pack's range as its body arrives, read by the
worker that decodes its blobs. Pure logic: the bytes each take gives wherever the pieces
end, that pieces are pulled only when a blob needs them and let go once passed, a blob
across many pieces, a body that fails part-way, and a worker that stops early."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from safehold.engine.restore.stream import PackStream, WholeRange
from safehold.storage import TransientError

KIB = 1024


class Body:
    """A body of ``data`` in pieces of ``piece`` bytes; notes how far it was read, whether
    it was closed, and fails with ``error`` before the byte ``fail_at`` when given."""

    def __init__(self, data: bytes, piece: int, fail_at: int | None = None) -> None:
        self.data, self.piece, self.fail_at = data, piece, fail_at
        self.read = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for at in range(0, len(self.data), self.piece):
                if self.fail_at is not None and at + self.piece > self.fail_at:
                    raise TransientError("s3://b/p", "connection reset", name="data/x")
                self.read = at + self.piece
                yield self.data[at : at + self.piece]
        finally:
            self.closed = True


def _opened(body: Body) -> PackStream:
    """As the fetch thread hands it over: its first piece read."""
    pieces = iter(body)
    return PackStream(pieces, next(pieces, b""))


def test_every_take_gives_its_bytes_wherever_the_pieces_end() -> None:
    rng = random.Random(7)
    data = rng.randbytes(300 * KIB)
    for piece in (1, 1000, 4 * KIB, 64 * KIB, 400 * KIB):
        body = Body(data, piece)
        stream = _opened(body)
        offset = 0
        while offset < len(data):
            offset += rng.randrange(0, 3 * KIB)  # gaps between blobs: skipped
            length = rng.randrange(1, 20 * KIB)
            assert bytes(stream.take(offset, length)) == data[offset : offset + length]
            offset += length
            # pulled only as far as the blob needed, and nothing before it kept
            assert body.read <= max(offset, piece) + piece
            assert stream._queued <= length + 2 * piece
        stream.close()
        assert body.closed


def test_a_blob_across_many_pieces_is_whole() -> None:
    data = random.Random(1).randbytes(200 * KIB)
    stream = _opened(Body(data, 4 * KIB))
    assert bytes(stream.take(10, 150 * KIB)) == data[10 : 10 + 150 * KIB]
    assert bytes(stream.take(160 * KIB, 40 * KIB)) == data[160 * KIB :]


def test_a_body_that_fails_part_way_gives_what_came_and_then_its_error() -> None:
    data = random.Random(2).randbytes(100 * KIB)
    body = Body(data, 10 * KIB, fail_at=55 * KIB)
    stream = _opened(body)
    assert bytes(stream.take(0, 50 * KIB)) == data[: 50 * KIB]
    with pytest.raises(TransientError, match="connection reset"):
        stream.take(50 * KIB, 10 * KIB)
    assert body.closed


def test_a_worker_that_stops_early_closes_the_body_unread() -> None:
    data = bytes(10 * 1024 * KIB)
    body = Body(data, 64 * KIB)
    stream = _opened(body)
    assert len(stream.take(0, 10)) == 10
    stream.close()
    assert body.closed
    assert body.read == 64 * KIB  # the first piece, no more


def test_a_range_past_the_bodys_end_gives_what_there_is() -> None:
    stream = _opened(Body(b"abcdef", 4))
    assert bytes(stream.take(4, 10)) == b"ef"
    assert bytes(stream.take(6, 10)) == b""
    assert bytes(WholeRange(memoryview(b"abcdef")).take(4, 10)) == b"ef"


def test_offsets_that_go_back_are_a_bug_said_so() -> None:
    stream = _opened(Body(bytes(100), 10))
    stream.take(50, 10)
    with pytest.raises(ValueError, match="offsets must grow"):
        stream.take(0, 10)
