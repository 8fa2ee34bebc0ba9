"""Bandwidth limits: a token bucket per direction, shared by every thread of the process.

What restic's ``--limit-upload`` / ``--limit-download`` do, as a wrapper:
:class:`ThrottledStorage` holds back the bodies of the objects written (``put``,
``create``: upload) and read (``get``: download) so that, across every storage and thread
that share one :class:`Bandwidth`, bytes go at most at the bucket's rate. ("Throttle" is
bandwidth; "limit" in :mod:`~safehold.storage.wrappers.limit` is the number of calls in
flight.)

The unit is the object: an upload waits until its bytes are paid for and then goes at the
link's speed; a download is paid for when it has arrived, by the thread that read it, before
that thread asks for more. So the rate holds on average over objects, and over any window
``T`` at most ``rate * T + burst`` bytes plus the objects in flight pass; a backup's packs
(16 MiB by default) are sent in bursts at the link's speed with pauses between them.

A :class:`TokenBucket` lends: a call takes its bytes at once, the level may go below zero,
and the call waits until the level is back at zero. Calls are served in the order they
arrive, whatever their size and thread: none starves, and a call waits at most for the
bytes reserved before it. Idle time earns at most ``burst`` bytes of credit.

Not throttled: listings, ``stat``, ``delete``, server-side copies (their bytes never pass
through the process), and names under the :class:`Bandwidth`'s ``exempt`` prefixes (the
command exempts the repository's ``locks/``: a lock refresh must never queue behind pack
uploads, or a slow limit would let the lock go stale and stop the backup).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from safehold.storage.base import Storage
from safehold.storage.body import Body, body_size
from safehold.storage.wrappers.base import ForwardingStorage

__all__ = [
    "DEFAULT_BURST_SECONDS",
    "Bandwidth",
    "ThrottledStorage",
    "TokenBucket",
    "download_limited",
    "shared_bandwidth",
]

#: Credit a bucket earns while idle (and starts with), in seconds at its rate: small, so
#: that a command's idle start (opening the repository, reading files) does not let its
#: first bytes pass far above the limit.
DEFAULT_BURST_SECONDS = 0.1


class TokenBucket:
    """``rate`` bytes per second with ``burst`` bytes of credit, shared by every thread.

    ``clock`` (seconds, monotonic) and ``sleep`` are injectable for tests; the bucket holds
    its lock only to book a call, never while the call waits.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        #: Bytes per second.
        self.rate = float(rate)
        #: The most credit the bucket holds, in bytes.
        self.burst = self.rate * DEFAULT_BURST_SECONDS if burst is None else float(burst)
        if self.burst < 0:
            raise ValueError("burst must not be negative")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._level = self.burst
        self._stamp = clock()

    def reserve(self, size: int) -> float:
        """Book ``size`` bytes now; the seconds the caller must wait before they are paid."""
        with self._lock:
            now = self._clock()
            earned = (now - self._stamp) * self.rate
            self._level = min(self.burst, self._level + earned)
            self._stamp = now
            self._level -= size
            return max(0.0, -self._level / self.rate)

    def take(self, size: int) -> None:
        """Book ``size`` bytes and wait until they are paid for."""
        wait = self.reserve(size)
        if wait > 0:
            self._sleep(wait)


@dataclass(frozen=True)
class Bandwidth:
    """The buckets a :class:`ThrottledStorage` draws from; None: that direction is free."""

    upload: TokenBucket | None = None
    download: TokenBucket | None = None
    #: Names under these prefixes are neither counted nor held back.
    exempt: tuple[str, ...] = ()

    def applies_to(self, name: str) -> bool:
        return not any(name.startswith(prefix) for prefix in self.exempt)


_shared: dict[tuple[str, int], TokenBucket] = {}
_shared_lock = threading.Lock()


def _bucket(direction: str, rate: int | None) -> TokenBucket | None:
    if rate is None:
        return None
    with _shared_lock:
        return _shared.setdefault((direction, rate), TokenBucket(rate))


def shared_bandwidth(
    upload: int | None, download: int | None, exempt: tuple[str, ...] = ()
) -> Bandwidth | None:
    """The process's buckets for ``upload`` and ``download`` bytes per second (None: no
    limit; both None: no :class:`Bandwidth` at all). Storages opened with the same limits
    share the same buckets, so a command that opens two locations (replication's
    repository and site) stays within one limit per direction."""
    if upload is None and download is None:
        return None
    if (upload is not None and upload < 1) or (download is not None and download < 1):
        raise ValueError("a bandwidth limit is at least 1 byte per second")
    return Bandwidth(_bucket("upload", upload), _bucket("download", download), exempt)


class ThrottledStorage(ForwardingStorage):
    """Object bodies written to and read from ``inner`` at most at ``bandwidth``'s rates."""

    def __init__(self, inner: Storage, bandwidth: Bandwidth) -> None:
        super().__init__(inner)
        self.bandwidth = bandwidth

    def _send(self, name: str, size: int) -> None:
        bucket = self.bandwidth.upload
        if bucket is not None and self.bandwidth.applies_to(name):
            bucket.take(size)

    def put(self, name: str, data: Body) -> None:
        self._send(name, body_size(data))
        self.inner.put(name, data)

    def create(self, name: str, data: Body) -> None:
        self._send(name, body_size(data))
        self.inner.create(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        data = self.inner.get(name, offset, length)
        bucket = self.bandwidth.download
        if bucket is not None and self.bandwidth.applies_to(name):
            bucket.take(len(data))
        return data

    def get_stream(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        bucket = self.bandwidth.download
        if bucket is None or not self.bandwidth.applies_to(name):
            yield from self.inner.get_stream(name, offset, length)
            return
        for piece in self.inner.get_stream(name, offset, length):
            bucket.take(len(piece))
            yield piece


def download_limited(storage: Storage) -> bool:
    """Whether a download limit holds back ``storage``'s reads (anywhere in its stack of
    wrappers). A bucket is one process's: work split over forked processes must not be."""
    for _ in range(32):
        if isinstance(storage, ThrottledStorage) and storage.bandwidth.download is not None:
            return True
        inner = storage.__dict__.get("inner")
        if not isinstance(inner, Storage):
            return False
        storage = inner
    return False
