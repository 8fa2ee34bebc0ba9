"""Retry transient failures with exponential backoff, full jitter and a bounded budget.

Only :class:`TransientError` is retried (throttling, 5xx, timeouts, connection resets, a
server that is restarting); everything else is final at once. Each call has at most
``attempts`` tries and ``budget`` seconds, so a dead endpoint fails in bounded time with the
last error, which names the location and what to check.

Two operations need more than "call again":

* ``create`` after a transient failure may find the object it created itself (the response
  was lost, the request was not). Then :class:`AlreadyExists` is checked against the bytes:
  the same bytes mean our earlier attempt won, and the call succeeds.
* ``list`` resumes after the last name it yielded instead of starting again, so a caller
  never sees a name twice.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from safehold.storage.base import ObjectInfo, Storage
from safehold.storage.errors import AlreadyExists, NotFound, TransientError
from safehold.storage.wrappers.base import ForwardingStorage

__all__ = ["RetryPolicy", "RetryingStorage"]

T = TypeVar("T")


class RetryPolicy:
    """How often and how long to retry: exponential backoff with full jitter."""

    def __init__(
        self,
        attempts: int = 8,
        base_delay: float = 0.1,
        max_delay: float = 5.0,
        budget: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.budget = budget
        self.sleep = sleep

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

    def _call(self, operation: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.policy.budget
        attempt = 1
        while True:
            try:
                return operation()
            except TransientError:
                pause = self.policy.delay(attempt)
                if attempt >= self.policy.attempts or time.monotonic() + pause > deadline:
                    raise
            attempt += 1
            self.retries += 1
            self.policy.sleep(pause)

    def put(self, name: str, data: bytes) -> None:
        self._call(lambda: self.inner.put(name, data))

    def create(self, name: str, data: bytes) -> None:
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

    def _holds(self, name: str, data: bytes) -> bool:
        try:
            return self._call(lambda: self.inner.get(name)) == data
        except NotFound:
            return False

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(lambda: self.inner.get(name, offset, length))

    def stat(self, name: str) -> ObjectInfo:
        return self._call(lambda: self.inner.stat(name))

    def delete(self, name: str) -> None:
        self._call(lambda: self.inner.delete(name))

    def check_reachable(self) -> None:
        self._call(self.inner.check_reachable)

    def check_object_lock(self) -> None:
        self._call(self.inner.check_object_lock)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        last: str | None = None
        deadline = time.monotonic() + self.policy.budget
        attempt = 1
        while True:
            try:
                for info in self.inner.list(prefix):
                    if last is not None and info.name <= last:
                        continue  # already yielded before the failure
                    last = info.name
                    yield info
                return
            except TransientError as exc:
                pause = self.policy.delay(attempt)
                if attempt >= self.policy.attempts or time.monotonic() + pause > deadline:
                    if last is None:
                        raise
                    raise TransientError(
                        exc.location, f"list failed after {last!r}: {exc}", name=exc.name
                    ) from exc
            attempt += 1
            self.retries += 1
            self.policy.sleep(pause)
