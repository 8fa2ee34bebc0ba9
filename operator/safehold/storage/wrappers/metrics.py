"""Prometheus metrics for every storage operation, by provider and operation.

* ``safehold_storage_operations_total{provider, operation, outcome}``: calls, by outcome
  (``ok`` or the error class, e.g. ``NotFound``).
* ``safehold_storage_errors_total{provider, operation, error}``: failed calls by error class
  (``NotFound`` from ``get``/``stat`` counts too: the caller decides whether it is a problem).
* ``safehold_storage_bytes_total{provider, operation}``: bytes sent (put, create) and
  received (get).
* ``safehold_storage_operation_seconds{provider, operation}``: latency histogram.

Metrics are registered once per :class:`prometheus_client.CollectorRegistry` (the default
one unless given), so any number of wrapped storages share them. prometheus-client is
imported on first use: a ``safehold`` command that exports no metrics does not load it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from safehold.storage.base import ObjectInfo, Storage
from safehold.storage.body import Body, body_size
from safehold.storage.errors import StorageError
from safehold.storage.wrappers.base import ForwardingStorage

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["MeteredStorage", "StorageMetrics", "storage_metrics"]

T = TypeVar("T")
_LABELS = ("provider", "operation")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass(frozen=True)
class StorageMetrics:
    operations: Counter
    errors: Counter
    bytes: Counter
    seconds: Histogram


_by_registry: dict[int, StorageMetrics] = {}
_lock = threading.Lock()


def storage_metrics(registry: CollectorRegistry | None = None) -> StorageMetrics:
    """The storage metrics in ``registry`` (prometheus-client's default one when None),
    registered on first use."""
    from prometheus_client import REGISTRY, Counter, Histogram

    registry = REGISTRY if registry is None else registry
    with _lock:
        found = _by_registry.get(id(registry))
        if found is None:
            found = StorageMetrics(
                operations=Counter(
                    "safehold_storage_operations",
                    "Storage operations by outcome",
                    (*_LABELS, "outcome"),
                    registry=registry,
                ),
                errors=Counter(
                    "safehold_storage_errors",
                    "Failed storage operations by error class",
                    (*_LABELS, "error"),
                    registry=registry,
                ),
                bytes=Counter(
                    "safehold_storage_bytes",
                    "Bytes sent (put, create) and received (get)",
                    _LABELS,
                    registry=registry,
                ),
                seconds=Histogram(
                    "safehold_storage_operation_seconds",
                    "Storage operation latency",
                    _LABELS,
                    buckets=_BUCKETS,
                    registry=registry,
                ),
            )
            _by_registry[id(registry)] = found
        return found


class MeteredStorage(ForwardingStorage):
    """Counts and times every call into ``inner``."""

    def __init__(self, inner: Storage, registry: CollectorRegistry | None = None) -> None:
        super().__init__(inner)
        self.metrics = storage_metrics(registry)

    def _measure(self, operation: str, call: Callable[[], T], sent: int = 0) -> T:
        labels = (self.provider, operation)
        start = time.perf_counter()
        try:
            result = call()
        except StorageError as exc:
            self._failed(labels, exc)
            raise
        finally:
            self.metrics.seconds.labels(*labels).observe(time.perf_counter() - start)
        self.metrics.operations.labels(*labels, "ok").inc()
        received = len(result) if isinstance(result, bytes) else 0
        if sent or received:
            self.metrics.bytes.labels(*labels).inc(sent + received)
        return result

    def _failed(self, labels: tuple[str, str], exc: StorageError) -> None:
        kind = type(exc).__name__
        self.metrics.operations.labels(*labels, kind).inc()
        self.metrics.errors.labels(*labels, kind).inc()

    def put(self, name: str, data: Body) -> None:
        self._measure("put", lambda: self.inner.put(name, data), body_size(data))

    def create(self, name: str, data: Body) -> None:
        self._measure("create", lambda: self.inner.create(name, data), body_size(data))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._measure("get", lambda: self.inner.get(name, offset, length))

    def stat(self, name: str) -> ObjectInfo:
        return self._measure("stat", lambda: self.inner.stat(name))

    def delete(self, name: str) -> None:
        self._measure("delete", lambda: self.inner.delete(name))

    def copy_from(self, source: Storage, name: str) -> bool:
        return self._measure("copy", lambda: self.inner.copy_from(source, name))

    def get_stream(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        # One "get" operation, its bytes counted as they arrive; its latency is the time to
        # read it to the end (as a listing's).
        # A stream the caller closes before its end (it had what it needed) counts as ok.
        labels = (self.provider, "get")
        start = time.perf_counter()
        received = 0
        ok = True
        try:
            for piece in self.inner.get_stream(name, offset, length):
                received += len(piece)
                yield piece
        except StorageError as exc:
            ok = False
            self._failed(labels, exc)
            raise
        except Exception:
            ok = False  # not the storage's answer (as for the other operations): not counted
            raise
        finally:
            self.metrics.seconds.labels(*labels).observe(time.perf_counter() - start)
            if received:
                self.metrics.bytes.labels(*labels).inc(received)
            if ok:
                self.metrics.operations.labels(*labels, "ok").inc()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # One "list" operation per listing; its latency is the time to exhaust it.
        labels = (self.provider, "list")
        start = time.perf_counter()
        try:
            yield from self.inner.list(prefix)
        except StorageError as exc:
            self._failed(labels, exc)
            raise
        finally:
            self.metrics.seconds.labels(*labels).observe(time.perf_counter() - start)
        self.metrics.operations.labels(*labels, "ok").inc()
