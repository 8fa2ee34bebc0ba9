"""The bandwidth throttle: the token bucket's arithmetic with an injected clock (rates,
bursts, fairness across threads), and the wrapper's accounting of object bodies.

The limit measured end to end against a real object store is tests/cli/test_bandwidth.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.storage import Storage, open_storage
from safehold.storage.wrappers import (
    Bandwidth,
    RetryingStorage,
    ThrottledStorage,
    TokenBucket,
    shared_bandwidth,
    wrap,
)


class ManualClock:
    """A clock that moves only when told to; ``sleep`` records and moves it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def bucket(rate: float, burst: float, clock: ManualClock) -> TokenBucket:
    return TokenBucket(rate, burst, clock=clock, sleep=clock.sleep)


# ---------------------------------------------------------------- rates and bursts


def test_a_bucket_without_burst_passes_exactly_its_rate() -> None:
    clock = ManualClock()
    limited = bucket(1000, 0, clock)
    for _ in range(50):
        limited.take(200)
    assert clock.now == pytest.approx(10.0)  # 10,000 bytes at 1,000 bytes/s
    assert clock.slept == pytest.approx([0.2] * 50)


def test_an_object_larger_than_the_burst_waits_its_whole_share() -> None:
    clock = ManualClock()
    limited = bucket(1000, 100, clock)  # starts with 100 bytes of credit
    limited.take(5100)
    assert clock.now == pytest.approx(5.0)
    limited.take(1000)
    assert clock.now == pytest.approx(6.0)  # no credit left: exactly its share


def test_idle_time_earns_at_most_the_burst() -> None:
    clock = ManualClock()
    limited = bucket(1000, 300, clock)
    limited.take(300)  # the starting credit
    assert clock.slept == []
    clock.now += 3600  # an hour idle earns 300 bytes, not 3.6 MB
    for _ in range(3):
        limited.take(100)
    assert clock.slept == []
    limited.take(100)
    assert clock.slept == pytest.approx([0.1])


def test_partial_idle_time_earns_its_share() -> None:
    clock = ManualClock()
    limited = bucket(1000, 1000, clock)
    limited.take(1000)
    clock.now += 0.25
    assert limited.reserve(250) == 0.0
    assert limited.reserve(500) == pytest.approx(0.5)


def test_default_burst_is_a_tenth_of_a_second() -> None:
    assert TokenBucket(2048).burst == pytest.approx(204.8)


@pytest.mark.parametrize(("rate", "burst"), [(0, None), (-1, None), (10, -1)])
def test_a_bucket_refuses_nonsense(rate: float, burst: float | None) -> None:
    with pytest.raises(ValueError, match=r"rate|burst"):
        TokenBucket(rate, burst)


# ---------------------------------------------------------------- threads


def test_concurrent_calls_each_book_their_own_share() -> None:
    """No booking is lost under contention: 8 threads x 50 calls of 1 s each, on a clock
    that does not move, wait 1, 2, ..., 400 s: every second exactly once."""
    clock = ManualClock()
    waits: list[float] = []
    lock = threading.Lock()
    limited = TokenBucket(100, 0, clock=clock, sleep=lambda s: None)
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(50):
            wait = limited.reserve(100)
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(round(w) for w in waits) == list(range(1, 401))


class VirtualTime:
    """Threads that sleep on a shared virtual clock, which jumps to the next wake-up once
    every running thread sleeps: a deterministic picture of threads sharing a bucket."""

    def __init__(self, threads: int) -> None:
        self.now = 0.0
        self.running = threads
        self.wakes: list[float] = []
        self.cond = threading.Condition()

    def clock(self) -> float:
        with self.cond:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.cond:
            wake = self.now + seconds
            self.wakes.append(wake)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.now >= wake)

    def done(self) -> None:
        with self.cond:
            self.running -= 1
            self.cond.notify_all()

    def run(self, workers: list[Callable[[], None]]) -> None:
        def body(work: Callable[[], None]) -> None:
            try:
                work()
            finally:
                self.done()

        threads = [threading.Thread(target=body, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        with self.cond:
            while self.running:
                self.cond.wait_for(lambda: not self.running or len(self.wakes) == self.running)
                if self.running:
                    self.now = min(self.wakes)
                    self.wakes = [w for w in self.wakes if w > self.now]
                    self.cond.notify_all()
        for thread in threads:
            thread.join()


def test_threads_share_the_rate_fairly() -> None:
    """Four threads each send 10-KB objects as fast as the bucket lets them for 100 s
    (virtual): together they get the rate, and each a quarter of it."""
    time = VirtualTime(4)
    limited = TokenBucket(10_000, 0, clock=time.clock, sleep=time.sleep)
    sent = [0] * 4

    def sender(i: int) -> Callable[[], None]:
        def work() -> None:
            while time.clock() < 100:
                limited.take(10_000)
                sent[i] += 10_000

        return work

    time.run([sender(i) for i in range(4)])
    assert sum(sent) in range(1_000_000, 1_040_001)  # 100 s at 10 kB/s, + one in flight each
    assert max(sent) - min(sent) <= 10_000  # each within one object of the others


def test_a_small_call_waits_only_for_what_was_booked_before_it() -> None:
    """Calls are served in arrival order: a 1-KB read behind a 50-KB one waits for those
    50 KB, not for everything a busy thread books after it."""
    time = VirtualTime(2)
    limited = TokenBucket(10_000, 0, clock=time.clock, sleep=time.sleep)
    finished: dict[str, float] = {}
    booked = threading.Event()

    def big() -> None:
        limited.reserve(50_000)  # booked, not waited for: the other thread comes after it
        booked.set()
        for _ in range(20):
            limited.take(50_000)
        finished["big"] = time.clock()

    def small() -> None:
        booked.wait()
        limited.take(1000)
        finished["small"] = time.clock()

    time.run([big, small])
    assert finished["small"] <= 5.1 + 5.0  # behind at most the big thread's two bookings
    assert finished["big"] == pytest.approx(105.1)


# ---------------------------------------------------------------- the wrapper


@pytest.fixture
def fs(tmp_path: Path) -> Storage:
    return open_storage(tmp_path.as_uri())


def test_bodies_written_and_read_are_throttled(fs: Storage) -> None:
    clock = ManualClock()
    up, down = bucket(1000, 0, clock), bucket(500, 0, clock)
    storage = ThrottledStorage(fs, Bandwidth(upload=up, download=down))
    storage.put("data/a", b"x" * 2000)
    assert clock.now == pytest.approx(2.0)
    storage.create("data/b", b"y" * 1000)
    assert clock.now == pytest.approx(3.0)
    assert storage.get("data/a", 0, 250) == b"x" * 250
    assert clock.now == pytest.approx(3.5)
    assert storage.get("data/b") == b"y" * 1000
    assert clock.now == pytest.approx(5.5)
    # Listings, stat and delete move no bodies: free.
    assert [i.name for i in storage.list("data/")] == ["data/a", "data/b"]
    assert storage.stat("data/a").size == 2000
    storage.delete("data/b")
    assert clock.now == pytest.approx(5.5)


def test_exempt_names_are_neither_counted_nor_held_back(fs: Storage) -> None:
    clock = ManualClock()
    limited = bucket(100, 0, clock)
    storage = ThrottledStorage(fs, Bandwidth(upload=limited, download=limited, exempt=("locks/",)))
    storage.create("locks/1", b"l" * 10_000)
    assert storage.get("locks/1") == b"l" * 10_000
    assert clock.slept == []
    storage.put("data/x", b"d" * 100)
    assert clock.slept == pytest.approx([1.0])  # no debt from the lock


def test_one_direction_only(fs: Storage) -> None:
    clock = ManualClock()
    storage = ThrottledStorage(fs, Bandwidth(download=bucket(100, 0, clock)))
    storage.put("a", b"z" * 1000)
    assert clock.slept == []
    storage.get("a")
    assert clock.slept == pytest.approx([10.0])


def test_shared_bandwidth_is_one_bucket_per_direction_and_rate() -> None:
    first = shared_bandwidth(4096, 8192)
    second = shared_bandwidth(4096, None, exempt=("locks/",))
    assert first is not None
    assert second is not None
    assert first.upload is second.upload  # two locations of one command share the limit
    assert second.download is None
    assert first.download is not first.upload
    assert shared_bandwidth(None, None) is None
    with pytest.raises(ValueError, match="at least 1"):
        shared_bandwidth(0, None)


def test_the_throttle_is_the_outermost_wrapper(tmp_path: Path) -> None:
    """Waiting for bandwidth spends no retry budget and holds no concurrency slot."""
    bandwidth = Bandwidth(upload=TokenBucket(10**9))
    wrapped = wrap(open_storage(tmp_path.as_uri()), bandwidth=bandwidth)
    assert isinstance(wrapped, ThrottledStorage)
    assert isinstance(wrapped.inner, RetryingStorage)
    opened = open_storage(tmp_path.as_uri(), wrap=True, bandwidth=bandwidth)
    assert isinstance(opened, ThrottledStorage)
    assert opened.bandwidth is bandwidth
    assert not isinstance(open_storage(tmp_path.as_uri(), wrap=True), ThrottledStorage)
    with pytest.raises(ValueError, match="wrap=True"):
        open_storage(tmp_path.as_uri(), bandwidth=bandwidth)
