"""Trees loaded in the background a bounded number ahead of a depth-first walk (the
restore walks the snapshot's trees; a backup, its parent's).

On a cold cache (or from an object store) each tree is a read that would stall the walk,
which feeds the writers; so trees are loaded in a small pool before the walk needs them.
But a decoded tree costs about a kilobyte per entry, and loading every subdirectory of a
directory at once held a whole snapshot's trees in memory: 100 directories of 1,000 small
files took 103 MiB in one process and again in each part (issue 19). :class:`TreesAhead`
keeps at most ``limit`` trees loading or loaded ahead.

The walk is depth first, so the trees it will want next are the subdirectories of the
directory it just opened, in order, then what was wanted before: :meth:`want` puts them at
the front of the queue. :meth:`take` returns a tree, dropping the queued trees before it
(the walk went past them: a directory that could not be created, a selection that left it
out) and loading it on the spot when it was not ahead.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Generic, TypeVar

__all__ = ["TREES_AHEAD", "TreesAhead"]

#: What loading a tree gives: its nodes (the restore), or its nodes by name (a backup's
#: parent tree).
T = TypeVar("T")

#: Trees loading or loaded ahead of the walk at most: enough to keep two loader threads
#: busy while the walk writes a directory, few enough that their entries stay small.
TREES_AHEAD = 16


class _Entry(Generic[T]):
    __slots__ = ("future", "tree_id")

    def __init__(self, tree_id: str) -> None:
        self.tree_id = tree_id
        self.future: Future[T] | None = None


class TreesAhead(Generic[T]):
    """The trees the walk will want, in its order; the first ``limit`` of them loading."""

    def __init__(self, pool: Executor, load: Callable[[str], T], limit: int = TREES_AHEAD) -> None:
        self._pool = pool
        self._load = load
        self._limit = limit
        self._queue: deque[_Entry[T]] = deque()
        self._queued: Counter[str] = Counter()
        self._loading = 0  # entries of the queue with a future

    def want(self, tree_ids: Sequence[str]) -> None:
        """The walk will next want ``tree_ids``, in this order, before anything queued."""
        self._queue.extendleft(_Entry[T](t) for t in reversed(tree_ids))
        self._queued.update(tree_ids)
        self._fill()

    def take(self, tree_id: str) -> T:
        """The tree ``tree_id``, loaded ahead or now. Raises what loading raises."""
        entry: _Entry[T] | None = None
        if self._queued[tree_id]:
            while True:  # the walk went past the entries before it
                head = self._queue.popleft()
                self._queued[head.tree_id] -= 1
                if head.future is not None:
                    self._loading -= 1
                if head.tree_id == tree_id:
                    entry = head
                    break
                if head.future is not None:
                    head.future.cancel()
        self._fill()
        if entry is not None and entry.future is not None:
            return entry.future.result()
        return self._load(tree_id)

    def _fill(self) -> None:
        """Start loading the first queued trees, up to ``limit`` loading in all. Futures
        further back (siblings queued before a deeper directory's) count too, so memory
        stays bounded; the front then waits for them to be taken."""
        for entry in self._queue:
            if self._loading >= self._limit:
                return
            if entry.future is None:
                entry.future = self._pool.submit(self._load, entry.tree_id)
                self._loading += 1

    def __len__(self) -> int:
        """Trees queued (loading or not)."""
        return len(self._queue)
