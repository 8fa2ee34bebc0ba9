"""A storage that misbehaves on purpose, for tests of everything above the storage layer.

Kept with the test ground, not in the product: nothing Safehold ships injects faults.

Rules say which calls go wrong: the Nth call of an operation (or of any operation) fails
with a chosen error, returns corrupted bytes, or is delayed. Calls are counted per operation
and in total, thread-safely, so tests can also assert how many calls reached the storage::

    faults = FaultyStorage(storage).fail("get", nth=1, times=2)   # 1st and 2nd get fail
    faults.corrupt("get", nth=3)                                   # 3rd get flips a byte
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from safehold.storage.base import ObjectInfo, Storage
from safehold.storage.body import Body
from safehold.storage.errors import StorageError, TransientError
from safehold.storage.wrappers.base import ForwardingStorage

__all__ = ["Fault", "FaultyStorage"]

ANY = "*"


@dataclass
class Fault:
    """One rule: calls ``nth`` to ``nth + times - 1`` of ``operation`` (or any, ``*``) go wrong."""

    kind: str  # "fail" | "corrupt" | "delay"
    operation: str
    nth: int
    times: int
    error: type[StorageError] = TransientError
    seconds: float = 0.0

    def matches(self, operation: str, count: int, total: int) -> bool:
        if self.operation not in (ANY, operation):
            return False
        number = total if self.operation == ANY else count
        return self.nth <= number < self.nth + self.times


class FaultyStorage(ForwardingStorage):
    """Forwards to ``inner`` except where a rule says otherwise."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    # -- rules (each returns self, so they chain)
    def fail(
        self,
        operation: str = ANY,
        *,
        nth: int = 1,
        times: int = 1,
        error: type[StorageError] = TransientError,
    ) -> FaultyStorage:
        """Calls ``nth``.. of ``operation`` raise ``error`` (without reaching the storage)."""
        self.faults.append(Fault("fail", operation, nth, times, error))
        return self

    def fail_after(self, operation: str = ANY, *, nth: int = 1, times: int = 1) -> FaultyStorage:
        """Calls ``nth``.. of ``operation`` reach the storage, then raise TransientError.

        The lost-response case: the write happened, the caller does not know it.
        """
        self.faults.append(Fault("fail_after", operation, nth, times))
        return self

    def corrupt(self, operation: str = "get", *, nth: int = 1, times: int = 1) -> FaultyStorage:
        """Calls ``nth``.. of ``get`` return the bytes with the first byte flipped."""
        self.faults.append(Fault("corrupt", operation, nth, times))
        return self

    def delay(
        self, seconds: float, operation: str = ANY, *, nth: int = 1, times: int = 1_000_000_000
    ) -> FaultyStorage:
        """Calls ``nth``.. of ``operation`` sleep ``seconds`` first."""
        self.faults.append(Fault("delay", operation, nth, times, seconds=seconds))
        return self

    # -- the mechanism
    def _enter(self, operation: str, name: str | None) -> list[Fault]:
        with self._lock:
            self.calls[operation] += 1
            self.calls[ANY] += 1
            count, total = self.calls[operation], self.calls[ANY]
            active = [f for f in self.faults if f.matches(operation, count, total)]
        for fault in active:
            if fault.kind == "delay":
                time.sleep(fault.seconds)
        for fault in active:
            if fault.kind == "fail":
                raise fault.error(
                    self.location, f"injected fault: {operation} call {count}", name=name
                )
        return active

    def _leave(self, operation: str, name: str | None, active: list[Fault]) -> None:
        if any(f.kind == "fail_after" for f in active):
            raise TransientError(
                self.location, f"injected fault after {operation} reached the storage", name=name
            )

    def put(self, name: str, data: Body) -> None:
        active = self._enter("put", name)
        self.inner.put(name, data)
        self._leave("put", name, active)

    def create(self, name: str, data: Body) -> None:
        active = self._enter("create", name)
        self.inner.create(name, data)
        self._leave("create", name, active)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        active = self._enter("get", name)
        data = self.inner.get(name, offset, length)
        self._leave("get", name, active)
        if data and any(f.kind == "corrupt" for f in active):
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    def stat(self, name: str) -> ObjectInfo:
        active = self._enter("stat", name)
        info = self.inner.stat(name)
        self._leave("stat", name, active)
        return info

    def delete(self, name: str) -> None:
        active = self._enter("delete", name)
        self.inner.delete(name)
        self._leave("delete", name, active)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        active = self._enter("list", None)
        yield from self.inner.list(prefix)
        self._leave("list", None, active)
