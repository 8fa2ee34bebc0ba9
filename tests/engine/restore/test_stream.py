"""PackStream (engine/restore/stream.py): a pack's range handed from the thread that reads
its body to the worker that decodes its blobs. Pure logic with two threads: the bytes each
take gives, the bound on what waits between the two, a blob larger than the bound, a body
that fails part-way, and a worker that stops early."""

from __future__ import annotations

import random
import threading
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


def _start(body: Body, ahead: int) -> tuple[PackStream, threading.Thread]:
    pieces = iter(body)
    stream = PackStream(pieces, ahead)
    thread = threading.Thread(target=stream.fill, daemon=True)
    thread.start()
    return stream, thread


def test_every_take_gives_its_bytes_wherever_the_pieces_end() -> None:
    rng = random.Random(7)
    data = rng.randbytes(300 * KIB)
    for piece in (1, 1000, 4 * KIB, 64 * KIB, 400 * KIB):
        stream, thread = _start(Body(data, piece), ahead=32 * KIB)
        offset = 0
        while offset < len(data):
            offset += rng.randrange(0, 3 * KIB)  # gaps between blobs: skipped
            length = rng.randrange(1, 20 * KIB)
            assert bytes(stream.take(offset, length)) == data[offset : offset + length]
            offset += length
        stream.close()
        thread.join(5)
        assert not thread.is_alive()


def test_what_waits_for_a_slow_worker_stays_within_the_bound() -> None:
    data = bytes(range(256)) * (4 * KIB)  # 1 MiB
    body = Body(data, 16 * KIB)
    stream, thread = _start(body, ahead=64 * KIB)
    taken = 0
    for offset in range(0, len(data), 8 * KIB):
        assert bytes(stream.take(offset, 8 * KIB)) == data[offset : offset + 8 * KIB]
        taken = offset  # bytes before this offset may be dropped, not the take's own
        threading.Event().wait(0.002)  # a worker slower than the body
        assert body.read - taken <= 64 * KIB + 8 * KIB + 16 * KIB  # bound, the take, a piece
    thread.join(5)
    assert body.read == len(data)
    assert body.closed


def test_a_blob_larger_than_the_bound_is_read_whole() -> None:
    data = random.Random(1).randbytes(200 * KIB)
    stream, thread = _start(Body(data, 4 * KIB), ahead=16 * KIB)
    assert bytes(stream.take(10, 150 * KIB)) == data[10 : 10 + 150 * KIB]
    assert bytes(stream.take(160 * KIB, 40 * KIB)) == data[160 * KIB :]
    thread.join(5)
    assert not thread.is_alive()


def test_a_body_that_fails_part_way_gives_what_came_and_then_its_error() -> None:
    data = random.Random(2).randbytes(100 * KIB)
    body = Body(data, 10 * KIB, fail_at=55 * KIB)
    stream, thread = _start(body, ahead=1 * KIB)
    assert bytes(stream.take(0, 50 * KIB)) == data[: 50 * KIB]
    with pytest.raises(TransientError, match="connection reset"):
        stream.take(50 * KIB, 10 * KIB)
    thread.join(5)
    assert not thread.is_alive()
    assert body.closed


def test_a_worker_that_stops_early_stops_the_reading_and_closes_the_body() -> None:
    data = bytes(10 * 1024 * KIB)
    body = Body(data, 64 * KIB)
    stream, thread = _start(body, ahead=128 * KIB)
    assert len(stream.take(0, 10)) == 10
    stream.close()
    thread.join(5)
    assert not thread.is_alive(), "the fetch thread still waits to hand over the rest"
    assert body.closed
    assert body.read < len(data) // 2  # it stopped reading; it did not drain the body


def test_a_range_past_the_bodys_end_gives_what_there_is() -> None:
    stream, thread = _start(Body(b"abcdef", 4), ahead=2)
    assert bytes(stream.take(4, 10)) == b"ef"
    assert bytes(WholeRange(memoryview(b"abcdef")).take(4, 10)) == b"ef"
    thread.join(5)
