"""What every handler shares in one operator process: the API door, the Job image, and
a lock per object so that an event and the periodic pass never reconcile it at once.

Nothing here is state that must survive a restart: that lives in the cluster (Jobs
found by name and labels, and the status of each resource).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from safehold.api import Progress
from safehold.controller.jobs import DEFAULT_IMAGE
from safehold.controller.kube import Kube

__all__ = ["Runtime", "runtime", "set_runtime"]


@dataclass
class Runtime:
    kube: Kube
    image: str = field(default_factory=lambda: os.environ.get("SAFEHOLD_IMAGE", DEFAULT_IMAGE))
    #: Latest body of every watched object, by (plural, namespace, name).
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    #: When each running Job's log was last read for progress (monotonic seconds).
    progress_read: dict[str, float] = field(default_factory=dict)
    #: The latest progress read per running Job.
    progress: dict[str, Progress] = field(default_factory=dict)
    _locks: dict[tuple[str, str, str], threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def exclusive(self, key: tuple[str, str, str]) -> Iterator[bool]:
        """Yields True when this caller holds the object's lock, False when another does."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        got = lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                lock.release()


_current: Runtime | None = None


def set_runtime(value: Runtime | None) -> None:
    global _current
    _current = value


def runtime() -> Runtime:
    """The process's runtime, created on first use (after the kubeconfig was loaded)."""
    global _current
    if _current is None:
        _current = Runtime(Kube())
    return _current
