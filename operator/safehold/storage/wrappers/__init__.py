"""Behaviour around a storage, not in it: retries, a concurrency limit, metrics, faults.

Every wrapper is a :class:`~safehold.storage.Storage` around another one. :func:`wrap`
stacks the standard three; ``open_storage(url, options, wrap=True)`` does the same.
:class:`FaultyStorage` is for tests.
"""

from safehold.storage.wrappers.base import ForwardingStorage
from safehold.storage.wrappers.faults import Fault, FaultyStorage
from safehold.storage.wrappers.limit import LimitedStorage
from safehold.storage.wrappers.metrics import MeteredStorage, StorageMetrics, storage_metrics
from safehold.storage.wrappers.retry import RetryingStorage, RetryPolicy, capped_retries
from safehold.storage.wrappers.stack import DEFAULT_CONCURRENCY, wrap

__all__ = [
    "DEFAULT_CONCURRENCY",
    "Fault",
    "FaultyStorage",
    "ForwardingStorage",
    "LimitedStorage",
    "MeteredStorage",
    "RetryPolicy",
    "RetryingStorage",
    "StorageMetrics",
    "capped_retries",
    "storage_metrics",
    "wrap",
]
