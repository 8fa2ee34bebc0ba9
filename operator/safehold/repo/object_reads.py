"""Every object of a kind (index objects, snapshots) read in background threads, a
bounded number ahead of their decoding.

Opening a repository derives the key (a tenth of a second of Argon2id, a third of scrypt for
keys made before 2026-12-06; both release the GIL) and then reads every index object;
listing snapshots reads every snapshot. Read one after another, each is a round trip: on an
object store tens of milliseconds, times the number of objects (a backup writes an index
object per eight packs, and a snapshot). :class:`ObjectReads` lists the prefix and starts
the reads at once (for the index: as the open begins, so they overlap the key's derivation),
8 at a time; :meth:`objects` yields each object's bytes in listing order. Nothing here can
decrypt: the bytes are checked and decoded by the caller, with the key.

Threads: started by :class:`ObjectReads`, all joined by :meth:`close` (the open ends with
it), so a backup that forks its workers after opening forks a process with one thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from safehold.storage import NotFound, Storage

__all__ = ["ObjectReads"]

#: Reads in flight at once (an object store answers each after a round trip).
_THREADS = 8
#: Objects read ahead of the merge at most: their bytes wait in memory meanwhile.
_AHEAD = 32


class ObjectReads:
    """The objects under ``prefix`` whose names ``keep`` accepts, listed and read in the
    background."""

    def __init__(
        self, storage: Storage, prefix: str, keep: Callable[[str], bool] = lambda _: True
    ) -> None:
        self._storage = storage
        self._prefix = prefix
        self._keep = keep
        self._pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="object-reads")
        self._queue: deque[tuple[str, Future[bytes | None]]] = deque()
        self._names: Future[list[str]] = self._pool.submit(self._list)

    def _list(self) -> list[str]:
        names = [i.name for i in self._storage.list(self._prefix) if self._keep(i.name)]
        # The first reads start here, in the listing's thread: before the caller asks.
        for name in names[:_AHEAD]:
            self._queue.append((name, self._pool.submit(self._get, name)))
        return names

    def _get(self, name: str) -> bytes | None:
        try:
            return self._storage.get(name)
        except NotFound:  # deleted since the listing (a prune, a forget)
            return None

    def objects(self) -> Iterator[tuple[str, bytes | None]]:
        """Each object's name and bytes (None: gone since the listing), in listing order;
        raises what listing or reading raised."""
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
