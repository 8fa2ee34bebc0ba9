"""What the watch streams told the operator: its four kinds and its Jobs, kept in memory.

The operator reconciles from this cache rather than re-reading the apiserver (issue 17):
kopf's watch events :meth:`Cache.put` and :meth:`Cache.drop` objects, and the answers of
the operator's own writes (a status patch, a created Job) are put too, so a reconcile
right after a write sees it even before its watch event arrives.

A namespace is served from the cache only once a watch event came from it (so the
operator watches it: reads in a namespace it does not watch, such as a restore's target,
go to the apiserver). Its objects of one kind are served once they were *seeded*: the
first read lists them from the apiserver (one LIST), after which the watch keeps them
current. Seeds expire after :data:`RESEED_SECONDS`, so anything a broken watch missed (a
deletion during a reconnect) is corrected by the next LIST. Between two versions of an
object the newer ``resourceVersion`` wins, so a late watch event never undoes a write.

Only equality label selectors (``a=b,c=d``) are understood: the only kind the operator
writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["RESEED_SECONDS", "Cache", "matches", "newer"]

Json = dict[str, Any]
#: Seconds after which a namespace's seed is listed again.
RESEED_SECONDS = 600.0


def _version(obj: Mapping[str, Any]) -> int | None:
    raw = (obj.get("metadata") or {}).get("resourceVersion")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def newer(candidate: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """Whether ``candidate`` is at least as new as ``current`` (true when either version
    is not a number: the apiserver's versions are opaque in general, numbers in etcd)."""
    if current is None:
        return True
    mine, theirs = _version(candidate), _version(current)
    return mine is None or theirs is None or mine >= theirs


def matches(labels: Mapping[str, str] | None, selector: str | None) -> bool:
    """Whether ``labels`` satisfy an equality selector ``a=b,c=d`` (empty: everything)."""
    if not selector:
        return True
    have = labels or {}
    for term in selector.split(","):
        key, sep, value = term.partition("=")
        if not sep or key.endswith("!"):
            raise ValueError(f"only equality label selectors are cached, not {term!r}")
        if have.get(key.strip()) != value.strip():
            return False
    return True


class Cache:
    """Objects by (plural, namespace, name) for the ``plurals`` the watch feeds."""

    def __init__(self, plurals: Iterable[str], *, clock: Callable[[], float] = time.monotonic):
        self.plurals = frozenset(plurals)
        self._clock = clock
        self._objects: dict[tuple[str, str], dict[str, Json]] = {}
        self._seeded: dict[tuple[str, str], float] = {}
        self._watched: set[str] = set()
        self._lock = threading.Lock()

    def holds(self, plural: str, namespace: str) -> bool:
        """Whether reads of ``plural`` in ``namespace`` may be answered from here."""
        return plural in self.plurals and namespace in self._watched

    def watched(self, plural: str, obj: Mapping[str, Any]) -> None:
        """A watch event's object: put, and its namespace known to be watched."""
        self._watched.add(str((obj.get("metadata") or {}).get("namespace")))
        self.put(plural, obj)

    def seeded(self, plural: str, namespace: str) -> bool:
        with self._lock:
            when = self._seeded.get((plural, namespace))
        return when is not None and self._clock() - when < RESEED_SECONDS

    def seed(self, plural: str, namespace: str, listing: Mapping[str, Any]) -> None:
        """Replace a namespace's objects of ``plural`` with a LIST answer (``items`` and
        the list's ``metadata.resourceVersion``), keeping anything newer than it."""
        as_of = _version(listing)
        with self._lock:
            old = self._objects.get((plural, namespace), {})
            new: dict[str, Json] = {}
            for item in listing.get("items") or []:
                name = item["metadata"]["name"]
                new[name] = item if newer(item, old.get(name)) else old[name]
            for name, obj in old.items():  # created after the LIST was answered
                version = _version(obj)
                late = as_of is not None and version is not None and version > as_of
                if name not in new and late:
                    new[name] = obj
            self._objects[(plural, namespace)] = new
            self._seeded[(plural, namespace)] = self._clock()

    def put(self, plural: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        with self._lock:
            bucket = self._objects.setdefault((plural, ns), {})
            if newer(obj, bucket.get(name)):
                bucket[name] = dict(obj)

    def drop(self, plural: str, namespace: str, name: str) -> None:
        with self._lock:
            self._objects.get((plural, namespace), {}).pop(name, None)

    def get(self, plural: str, namespace: str, name: str) -> Json | None:
        with self._lock:
            return self._objects.get((plural, namespace), {}).get(name)

    def select(self, plural: str, namespace: str, selector: str | None = None) -> list[Json]:
        with self._lock:
            items = list(self._objects.get((plural, namespace), {}).values())
        return [o for o in items if matches((o.get("metadata") or {}).get("labels"), selector)]

    def everything(self, plural: str) -> list[Json]:
        """Every cached object of ``plural`` in every namespace (seeded or not)."""
        with self._lock:
            buckets = [objs for (p, _ns), objs in self._objects.items() if p == plural]
        return [o for objs in buckets for o in objs.values()]
