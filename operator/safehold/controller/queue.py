"""The work queue: which object to reconcile next, and when.

Watch events put an object's key in the queue due now; a reconcile asks for the next look
(a schedule slot, a validation interval, a running Job's next progress read) by putting
its key back with a delay. A key is in the queue at most once, at its earliest due time,
and never reconciled by two workers at once: an event that arrives during a reconcile
makes the key due again right after it. This is the delaying, de-duplicating queue of
client-go's controllers; kopf's own timers and daemons would do the waiting too, but they
put finalizers on every object, and the operator writes nothing but ``status``.

The queue is driven by one asyncio task (:meth:`WorkQueue.run`); reconciles run in
threads (the Kubernetes client blocks). :meth:`WorkQueue.add` may be called from any
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["WorkQueue"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Keys due at monotonic times; ``run`` hands each due key to ``work``."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._order = 0  # ties in time keep the order of arrival
        self._busy: set[K] = set()
        self._again: dict[K, float] = {}  # due times asked for while busy
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None

    def add(self, key: K, delay: float = 0.0) -> None:
        """Make ``key`` due in ``delay`` seconds, unless it is already due sooner."""
        when = self._clock() + max(0.0, delay)
        with self._lock:
            if key in self._busy:
                if when < self._again.get(key, float("inf")):
                    self._again[key] = when
                return
            if self._due.get(key, float("inf")) <= when:
                return
            self._due[key] = when
            self._order += 1
            heapq.heappush(self._heap, (when, self._order, key))
        self._nudge()

    def forget(self, key: K) -> None:
        """Drop ``key`` (its object was deleted); a reconcile already running finishes."""
        with self._lock:
            self._due.pop(key, None)
            self._again.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._due)

    def _nudge(self) -> None:
        loop, ready = self._loop, self._ready
        if loop is None or ready is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            ready.set()
        else:
            loop.call_soon_threadsafe(ready.set)

    def _pop_due(self) -> tuple[list[K], float | None]:
        """The keys due now (marked busy), and seconds until the next one."""
        now = self._clock()
        out: list[K] = []
        with self._lock:
            while self._heap:
                when, _n, key = self._heap[0]
                if self._due.get(key) != when:  # superseded or forgotten
                    heapq.heappop(self._heap)
                    continue
                if when > now:
                    return out, when - now
                heapq.heappop(self._heap)
                del self._due[key]
                self._busy.add(key)
                out.append(key)
        return out, None

    def _done(self, key: K) -> None:
        with self._lock:
            self._busy.discard(key)
            again = self._again.pop(key, None)
        if again is not None:
            self.add(key, again - self._clock())

    async def run(self, work: Callable[[K], Awaitable[None]], *, workers: int) -> None:
        """Hand due keys to ``work``, at most ``workers`` at a time, until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        slots = asyncio.Semaphore(workers)
        tasks: set[asyncio.Task[None]] = set()

        async def one(key: K) -> None:
            try:
                await work(key)
            except Exception:  # work reports its own errors; never stop the queue
                log.exception("reconciling %s failed", key)
            finally:
                self._done(key)
                slots.release()

        try:
            while True:
                self._ready.clear()  # before looking: an add from now on wakes the wait
                keys, wait = self._pop_due()
                for key in keys:
                    await slots.acquire()
                    task = asyncio.create_task(one(key))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if keys:
                    continue
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that comes in
                # the turn its wait ends, and kopf cancels the queue only once when it stops.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._ready.wait()
        finally:
            for task in tasks:
                task.cancel()
