"""``Storage.get_stream`` through the wrappers, and S3's body as it arrives.

The conformance suite proves, per provider, that a stream joins to what ``get`` returns.
Here: retries resume at the first byte not yet yielded (and give up as ``get`` does); the
limit holds a slot only while a piece is fetched; metrics count one get and its bytes;
the throttle counts each piece; a wrapper that changes ``get`` (a test's fault injection)
is not bypassed; and on SeaweedFS a large range comes in pieces, not whole.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from safehold.storage import NotFound, PermanentError, Storage, TransientError, open_storage
from safehold.storage.base import innermost
from safehold.storage.providers.s3 import STREAM_PIECE
from safehold.storage.wrappers import (
    Bandwidth,
    ForwardingStorage,
    LimitedStorage,
    MeteredStorage,
    RetryingStorage,
    RetryPolicy,
    ThrottledStorage,
    TokenBucket,
    wrap,
)
from testground.objectstores import RunningStore

DATA = bytes(range(256)) * 64  # 16 KiB, every offset's byte distinct within 256


@pytest.fixture
def fs(tmp_path: Path) -> Storage:
    storage = open_storage(tmp_path.as_uri())
    storage.put("obj", DATA)
    return storage


class _Pieces(ForwardingStorage):
    """Streams in pieces of ``size`` bytes; the first ``breaks`` streams fail with ``error``
    after ``after`` pieces. Notes each stream's (offset, length)."""

    def __init__(
        self,
        inner: Storage,
        size: int = 1000,
        breaks: int = 0,
        after: int = 3,
        error: type[Exception] = TransientError,
    ) -> None:
        super().__init__(inner)
        self.size, self.breaks, self.after, self.error = size, breaks, after, error
        self.opened: list[tuple[int, int | None]] = []

    def get_stream(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        self.opened.append((offset, length))
        data = self.inner.get(name, offset, length)
        for n, at in enumerate(range(0, len(data), self.size)):
            if n == self.after and len(self.opened) <= self.breaks:
                raise self.error(self.location, "connection reset", name=name)
            yield data[at : at + self.size]


def _policy(attempts: int = 5) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, base_delay=0.01, sleep=lambda _: None)


# ---------------------------------------------------------------- retry


def test_a_broken_stream_resumes_at_the_first_byte_not_yet_given(fs: Storage) -> None:
    pieces = _Pieces(fs, breaks=2, after=3)
    storage = RetryingStorage(pieces, _policy())
    got = list(storage.get_stream("obj", 100, 10_000))
    assert b"".join(got) == DATA[100:10_100]
    # three pieces of 1000 bytes each time, then from where it broke
    assert pieces.opened == [(100, 10_000), (3100, 7000), (6100, 4000)]
    assert storage.retries == 2


def test_a_stream_to_the_end_resumes_to_the_end(fs: Storage) -> None:
    pieces = _Pieces(fs, breaks=1, after=5)
    storage = RetryingStorage(pieces, _policy())
    assert b"".join(storage.get_stream("obj")) == DATA
    assert pieces.opened == [(0, None), (5000, None)]


def test_a_stream_that_keeps_breaking_gives_up_saying_how_far_it_got(fs: Storage) -> None:
    storage = RetryingStorage(_Pieces(fs, breaks=99, after=2), _policy(attempts=3))
    got = bytearray()

    def read_all() -> None:
        for piece in storage.get_stream("obj"):
            got.extend(piece)

    with pytest.raises(TransientError) as caught:
        read_all()
    assert bytes(got) == DATA[: len(got)]  # what came was right, and came once
    assert "read failed after" in str(caught.value)
    assert "3 attempts" in str(caught.value)


def test_a_final_error_part_way_is_not_retried(fs: Storage) -> None:
    pieces = _Pieces(fs, breaks=1, after=2, error=PermanentError)
    storage = RetryingStorage(pieces, _policy())
    with pytest.raises(PermanentError):
        list(storage.get_stream("obj"))
    assert len(pieces.opened) == 1
    assert storage.retries == 0


def test_a_missing_object_is_not_found_from_the_first_piece(fs: Storage) -> None:
    storage = wrap(fs, retry=_policy())
    stream = storage.get_stream("missing")  # nothing is asked until the first piece
    with pytest.raises(NotFound):
        next(stream)


# ---------------------------------------------------------------- the other wrappers


def test_the_limit_holds_a_slot_only_while_a_piece_is_fetched(fs: Storage) -> None:
    storage = LimitedStorage(_Pieces(fs), 1)
    first = storage.get_stream("obj")
    second = storage.get_stream("obj")
    got: list[bytes] = []

    def interleave() -> None:  # with the slot held for a whole stream, this would block
        for a, b in zip(first, second, strict=True):
            got.extend((a, b))

    thread = threading.Thread(target=interleave, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the second stream waited for the first to end"
    assert b"".join(got[::2]) == b"".join(got[1::2]) == DATA
    assert storage.get("obj") == DATA  # every slot given back


def test_metrics_count_a_stream_as_one_get_with_its_bytes(fs: Storage) -> None:
    registry = CollectorRegistry()
    storage = MeteredStorage(_Pieces(fs), registry)
    assert b"".join(storage.get_stream("obj", 10, 5000)) == DATA[10:5010]
    with pytest.raises(NotFound):
        list(storage.get_stream("missing"))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"provider": "file", "operation": "get", **labels})

    assert value("safehold_storage_operations_total", outcome="ok") == 1
    assert value("safehold_storage_operations_total", outcome="NotFound") == 1
    assert value("safehold_storage_bytes_total") == 5000
    assert value("safehold_storage_operation_seconds_count") == 2
    closed = storage.get_stream("obj")  # closed after a piece: it had what it needed
    assert next(closed) == DATA[:1000]
    closed.close()
    assert value("safehold_storage_operations_total", outcome="ok") == 2
    assert value("safehold_storage_bytes_total") == 6000


def test_the_throttle_counts_every_piece(fs: Storage) -> None:
    taken: list[int] = []
    bucket = TokenBucket(10**9)
    real = bucket.take
    bucket.take = lambda size: (taken.append(size), real(size))[1]  # type: ignore[method-assign]
    storage = ThrottledStorage(_Pieces(fs), Bandwidth(download=bucket))
    assert b"".join(storage.get_stream("obj")) == DATA
    assert taken == [1000] * 16 + [384]


def test_a_wrapper_that_changes_get_is_not_bypassed(fs: Storage) -> None:
    class Corrupting(ForwardingStorage):
        def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
            return b"X" + self.inner.get(name, offset, length)[1:]

    storage = wrap(Corrupting(fs), retry=_policy())
    assert b"".join(storage.get_stream("obj")) == b"X" + DATA[1:]


# ---------------------------------------------------------------- S3


def test_s3_streams_a_large_range_in_pieces(s3_store: RunningStore) -> None:
    bucket = f"stream-{uuid.uuid4().hex[:12]}"
    s3_store.make_bucket(bucket)
    storage = open_storage(s3_store.url(bucket, "p"), s3_store.options, wrap=True)
    data = bytes(range(256)) * (13 * 1024)  # 3.25 MiB
    storage.put("big", data)
    pieces = list(storage.get_stream("big", 1, len(data) - 2))
    assert b"".join(pieces) == data[1:-1]
    assert len(pieces) >= 3
    assert max(map(len, pieces)) <= STREAM_PIECE
    # closed after its first piece, a stream gives its connection back: the pool's
    # connections stay usable and none is left reading the rest of a body
    for _ in range(3):
        stream = storage.get_stream("big")
        assert len(next(stream)) <= STREAM_PIECE
        stream.close()
    assert storage.get("big", 0, 10) == data[:10]
    assert type(innermost(storage)).__name__ == "S3Storage"
    storage.close()
