"""Retry transient failures with exponential backoff, full jitter and a bounded budget.

Only :class:`TransientError` is retried (throttling, 5xx, timeouts, connection resets, a
server that is restarting); everything else is final at once. Each call has ``budget``
seconds (the ``retry_seconds`` option, 10 minutes by default: outages of several minutes are
ridden out, as restic does for up to 15) and optionally at most ``attempts`` tries. Until the
storage has answered once, calls get only ``first_contact`` seconds: a wrong endpoint fails
in a minute, not ten. When retrying gives up, the error keeps the last failure's message and
says how long it was retried (the last failure is its ``__cause__``).

Two operations need more than "call again":

* ``create`` after a transient failure may find the object it created itself (the response
  was lost, the request was not). Then :class:`AlreadyExists` is checked against the bytes:
  the same bytes mean our earlier attempt won, and the call succeeds.
* ``list`` resumes after the last name it yielded instead of starting again, so a caller
  never sees a name twice.
* ``get_stream`` resumes at the first byte it has not yielded: a connection that breaks
  part-way through a pack costs the rest of the pack, and the caller sees each byte once.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from safehold.storage.base import ObjectInfo, Storage
from safehold.storage.body import Body, body_bytes
from safehold.storage.errors import AlreadyExists, NotFound, StorageError, TransientError
from safehold.storage.wrappers.base import ForwardingStorage

__all__ = [
    "DEFAULT_RETRY_SECONDS",
    "FIRST_CONTACT_SECONDS",
    "RetryPolicy",
    "RetryingStorage",
    "capped_retries",
]

#: Per call: rides out an outage of several minutes (docs/storage.md, option retry_seconds).
DEFAULT_RETRY_SECONDS = 600.0
#: Per call until the storage has answered once: a misconfigured endpoint fails fast.
FIRST_CONTACT_SECONDS = 60.0

T = TypeVar("T")

_CAP = threading.local()


@contextmanager
def capped_retries(seconds: float) -> Iterator[None]:
    """Within the block, this thread's storage calls retry for at most ``seconds`` each.

    For cleanup after a failure (deleting a lock when a backup has given up): the storage
    is likely still down, and a second full budget would keep a failed Job alive for ten
    more minutes to remove an object that goes stale by itself.
    """
    previous: float | None = getattr(_CAP, "seconds", None)
    _CAP.seconds = seconds if previous is None else min(previous, seconds)
    try:
        yield
    finally:
        _CAP.seconds = previous


class RetryPolicy:
    """How often and how long to retry: exponential backoff with full jitter."""

    def __init__(
        self,
        attempts: int | None = None,
        base_delay: float = 0.1,
        max_delay: float = 10.0,
        budget: float = DEFAULT_RETRY_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        first_contact: float = FIRST_CONTACT_SECONDS,
    ) -> None:
        if attempts is not None and attempts < 1:
            raise ValueError("attempts must be at least 1")
        #: At most this many tries per call; None: as many as ``budget`` allows.
        self.attempts = attempts
        self.base_delay = base_delay
        #: The longest pause: after an outage ends, calls resume within about this long.
        self.max_delay = max_delay
        #: Seconds per call (first try to last), once the storage has answered.
        self.budget = budget
        #: Seconds per call until the storage has answered once (capped by ``budget``).
        self.first_contact = min(first_contact, budget)
        self.sleep = sleep

    def gives_up(self, attempt: int, pause: float, deadline: float) -> bool:
        """Whether try number ``attempt`` was the last: no tries or time left for another."""
        if self.attempts is not None and attempt >= self.attempts:
            return True
        return time.monotonic() + pause > deadline

    def delay(self, retry: int) -> float:
        """The pause before retry number ``retry`` (1-based): uniform in [0, base*2^(n-1)]."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (retry - 1)))


class RetryingStorage(ForwardingStorage):
    """Retries the inner storage's transient failures according to ``policy``."""

    def __init__(self, inner: Storage, policy: RetryPolicy | None = None) -> None:
        super().__init__(inner)
        self.policy = policy or RetryPolicy()
        #: Retries made so far (all operations); tests and metrics read it.
        self.retries = 0
        #: Whether the storage has answered a call yet (with a result or a final error).
        self.answered = False

    def _deadline(self) -> tuple[float, float]:
        """When a call starting now gives up: (monotonic start, deadline)."""
        now = time.monotonic()
        budget = self.policy.budget if self.answered else self.policy.first_contact
        cap: float | None = getattr(_CAP, "seconds", None)
        return now, now + (budget if cap is None else min(budget, cap))

    def _call(self, operation: Callable[[], T]) -> T:
        started, deadline = self._deadline()
        attempt = 1
        while True:
            try:
                result = operation()
            except TransientError as exc:
                pause = self.policy.delay(attempt)
                if self.policy.gives_up(attempt, pause, deadline):
                    if attempt == 1:
                        raise
                    raise _gave_up(exc, attempt, started) from exc
            except StorageError:
                self.answered = True
                raise
            else:
                if not self.answered:
                    self.answered = True
                return result
            attempt += 1
            self.retries += 1
            self.policy.sleep(pause)

    def put(self, name: str, data: Body) -> None:
        self._call(lambda: self.inner.put(name, data))

    def create(self, name: str, data: Body) -> None:
        failed_before = False

        def attempt() -> None:
            nonlocal failed_before
            try:
                self.inner.create(name, data)
            except AlreadyExists:
                if failed_before and self._holds(name, data):
                    return  # our own earlier attempt created it; its response was lost
                raise
            except TransientError:
                failed_before = True
                raise

        self._call(attempt)

    def _holds(self, name: str, data: Body) -> bool:
        try:
            return self._call(lambda: self.inner.get(name)) == body_bytes(data)
        except NotFound:
            return False

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(lambda: self.inner.get(name, offset, length))

    def stat(self, name: str) -> ObjectInfo:
        return self._call(lambda: self.inner.stat(name))

    def delete(self, name: str) -> None:
        self._call(lambda: self.inner.delete(name))

    def copy_from(self, source: Storage, name: str) -> bool:
        return self._call(lambda: self.inner.copy_from(source, name))

    def check_reachable(self) -> None:
        self._call(self.inner.check_reachable)

    def check_object_lock(self) -> None:
        self._call(self.inner.check_object_lock)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        last: str | None = None

        def rest() -> Iterator[ObjectInfo]:
            nonlocal last
            for info in self.inner.list(prefix):
                if last is not None and info.name <= last:
                    continue  # already yielded before the failure
                last = info.name
                yield info

        def lead() -> str:
            return f"list failed{f' after {last!r}' if last is not None else ''}: "

        return self._resuming(rest, lambda: last is not None, lead)

    def get_stream(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        done = 0

        def rest() -> Iterator[bytes]:
            nonlocal done
            left = None if length is None else length - done
            if left == 0:
                return
            for piece in self.inner.get_stream(name, offset + done, left):
                done += len(piece)
                yield piece

        def lead() -> str:
            return f"read failed after {done} bytes: " if done else ""

        return self._resuming(rest, lambda: done > 0, lead)

    def _resuming(
        self,
        rest: Callable[[], Iterator[T]],
        yielded: Callable[[], bool],
        lead: Callable[[], str],
    ) -> Iterator[T]:
        """What ``rest()`` yields, called again after each transient failure to go on from
        where the last call stopped (a listing after its last name, a stream at its first
        byte not yet given), within one call's budget. ``yielded``: whether anything was;
        ``lead``: what the error says it was doing when retrying gives up."""
        started, deadline = self._deadline()
        attempt = 1
        while True:
            try:
                for item in rest():
                    self.answered = True
                    yield item
                self.answered = True
                return
            except TransientError as exc:
                pause = self.policy.delay(attempt)
                if self.policy.gives_up(attempt, pause, deadline):
                    if attempt == 1 and not yielded():
                        raise
                    raise _gave_up(exc, attempt, started, lead()) from exc
            except StorageError:
                self.answered = True
                raise
            attempt += 1
            self.retries += 1
            self.policy.sleep(pause)


def _gave_up(exc: TransientError, attempts: int, started: float, lead: str = "") -> TransientError:
    """The last failure, saying how long it was retried (and how to retry for longer)."""
    seconds = time.monotonic() - started
    return TransientError(
        exc.location,
        f"{lead}{exc.message} (still failing after {attempts} attempts in {seconds:.0f} s; "
        "option retry_seconds sets how long each operation is retried)",
        name=exc.name,
    )
