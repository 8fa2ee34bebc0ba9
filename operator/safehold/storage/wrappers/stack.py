"""The standard wrapper stack, in the one order that makes sense.

``throttle( retry( limit( metrics( provider ) ) ) )``: the bandwidth throttle (only when
given) sits outside everything, so a call waiting for its bytes' turn neither spends its
retry budget nor holds a concurrency slot; retries sit outside the limit, so a call that
waits out a backoff does not hold a concurrency slot; metrics sit inside it, so latencies
are the storage's, not the queue's, and every attempt (including failed ones) is counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safehold.storage.base import Storage
from safehold.storage.wrappers.bandwidth import Bandwidth, ThrottledStorage
from safehold.storage.wrappers.limit import LimitedStorage
from safehold.storage.wrappers.metrics import MeteredStorage
from safehold.storage.wrappers.retry import RetryingStorage, RetryPolicy

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["DEFAULT_CONCURRENCY", "wrap"]

DEFAULT_CONCURRENCY = 16


def wrap(
    storage: Storage,
    *,
    retry: RetryPolicy | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    registry: CollectorRegistry | None = None,
    bandwidth: Bandwidth | None = None,
) -> Storage:
    """Wrap ``storage`` in metrics (when given a ``registry``), a limit, retries and a
    bandwidth throttle (when given ``bandwidth``).

    No registry, no metrics: a ``safehold`` command is a short-lived process (a Job's pod)
    that nothing scrapes, so counting there would only cost time."""
    wrapped: Storage = storage
    if registry is not None:
        wrapped = MeteredStorage(wrapped, registry)
    wrapped = LimitedStorage(wrapped, concurrency)
    wrapped = RetryingStorage(wrapped, retry or RetryPolicy())
    return wrapped if bandwidth is None else ThrottledStorage(wrapped, bandwidth)
