"""Behaviour around a storage, not in it: retries, a concurrency limit, metrics, and a
bandwidth throttle.

Every wrapper is a :class:`~safehold.storage.Storage` around another one. :func:`wrap`
stacks the standard three (and the throttle when given a :class:`Bandwidth`);
``open_storage(url, options, wrap=True, bandwidth=...)`` does the same.
The fault-injecting wrapper for tests lives with the test ground (``testground.faults``).
"""

from safehold.storage.wrappers.bandwidth import (
    Bandwidth,
    ThrottledStorage,
    TokenBucket,
    shared_bandwidth,
)
from safehold.storage.wrappers.base import ForwardingStorage
from safehold.storage.wrappers.limit import LimitedStorage
from safehold.storage.wrappers.metrics import MeteredStorage, StorageMetrics, storage_metrics
from safehold.storage.wrappers.retry import RetryingStorage, RetryPolicy, capped_retries
from safehold.storage.wrappers.stack import DEFAULT_CONCURRENCY, wrap

__all__ = [
    "DEFAULT_CONCURRENCY",
    "Bandwidth",
    "ForwardingStorage",
    "LimitedStorage",
    "MeteredStorage",
    "RetryPolicy",
    "RetryingStorage",
    "StorageMetrics",
    "ThrottledStorage",
    "TokenBucket",
    "capped_retries",
    "shared_bandwidth",
    "storage_metrics",
    "wrap",
]
