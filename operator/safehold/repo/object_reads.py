"""Index objects read in background threads, a bounded number ahead of their decoding.

Opening a repository derives the key (a third of a second of scrypt, which releases the
GIL) and then reads every index object. Read one after another, each is a round trip: on an
object store tens of milliseconds, times the number of index objects (a backup writes one
per eight packs). :class:`IndexReads` lists ``index/`` and starts the reads as soon as the
open begins, so they overlap the key's derivation and each other; :meth:`objects` yields
each object's bytes in listing order as the index is merged. Nothing here can decrypt:
the bytes are checked and decoded by the caller, with the key.

Threads: started by :class:`IndexReads`, all joined by :meth:`close` (the open ends with
it), so a backup that forks its workers after opening forks a process with one thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from safehold.repo import layout
from safehold.storage import NotFound, Storage

__all__ = ["IndexReads"]

#: Reads in flight at once (an object store answers each after a round trip).
_THREADS = 8
#: Objects read ahead of the merge at most: their bytes wait in memory meanwhile.
_AHEAD = 32


class IndexReads:
    """The repository's index objects, listed and read in the background."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="index-reads")
        self._queue: deque[tuple[str, Future[bytes | None]]] = deque()
        self._names: Future[list[str]] = self._pool.submit(self._list)

    def _list(self) -> list[str]:
        names = [info.name for info in self._storage.list(layout.INDEX)]
        # The first reads start here, in the listing's thread: before the caller asks.
        for name in names[:_AHEAD]:
            self._queue.append((name, self._pool.submit(self._get, name)))
        return names

    def _get(self, name: str) -> bytes | None:
        try:
            return self._storage.get(name)
        except NotFound:  # deleted since the listing (a prune): no longer part of the index
            return None

    def objects(self) -> Iterator[tuple[str, bytes | None]]:
        """Each index object's name and bytes (None: gone since the listing), in listing
        order; raises what listing or reading raised."""
        names = self._names.result()
        for upcoming in names[_AHEAD:]:
            name, future = self._queue.popleft()
            self._queue.append((upcoming, self._pool.submit(self._get, upcoming)))
            yield name, future.result()
        while self._queue:
            name, future = self._queue.popleft()
            yield name, future.result()

    def close(self) -> None:
        """Stop: reads not started are dropped, and every thread is joined."""
        self._pool.shutdown(wait=True, cancel_futures=True)
