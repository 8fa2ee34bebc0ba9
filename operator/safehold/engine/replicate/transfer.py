"""Copying objects to the site: at most ``jobs`` at once, server-side where the two
ends allow it, each verified against its name, transient errors retried."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from safehold.engine.progress import ProgressTracker
from safehold.engine.replicate.results import ReplicateOptions
from safehold.repo import CorruptObject, layout
from safehold.repo.crypto import object_hash
from safehold.repo.errors import RepositoryError
from safehold.storage import AlreadyExists, Storage, StorageError, TransientError

__all__ = ["Arrived", "Copier"]

#: Attempts per object on a transient storage error (then the run fails; resume later).
_ATTEMPTS = 4


@dataclass(frozen=True)
class Arrived:
    size: int
    server_side: bool


class Copier:
    """Copies objects with at most ``jobs`` in flight (and so in memory), each verified."""

    def __init__(
        self, source: Storage, target: Storage, options: ReplicateOptions, tracker: ProgressTracker
    ) -> None:
        self.source = source
        self.target = target
        self.options = options
        self.tracker = tracker
        self._server_side = options.server_side
        self._lock = threading.Lock()

    def run(self, names: Iterable[str]) -> Iterator[tuple[str, Arrived | str]]:
        """Yield (name, what arrived) or (name, error message) as transfers finish."""
        jobs = max(1, self.options.jobs)
        with ThreadPoolExecutor(jobs, thread_name_prefix="replicate") as pool:
            running: dict[Future[Arrived], str] = {}
            for name in names:
                while len(running) >= jobs:
                    yield from self._collect(running, FIRST_COMPLETED)
                running[pool.submit(self._transfer, name)] = name
            while running:
                yield from self._collect(running, FIRST_COMPLETED)

    def _collect(
        self, running: dict[Future[Arrived], str], how: str
    ) -> Iterator[tuple[str, Arrived | str]]:
        done, _ = wait(list(running), return_when=how)
        for future in done:
            name = running.pop(future)
            try:
                yield name, future.result()
            except (RepositoryError, StorageError, OSError) as exc:
                yield name, str(exc)

    def _transfer(self, name: str) -> Arrived:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                arrived = self._once(name)
            except TransientError:
                if attempt == _ATTEMPTS:
                    raise
                time.sleep(0.2 * 2**attempt)
                continue
            self.tracker.files_done += 1
            self.tracker.bytes_done += arrived.size
            return arrived
        raise AssertionError("unreachable")

    def _once(self, name: str) -> Arrived:
        expected = layout.object_id(name)
        if self._server_side and self.target.copy_from(self.source, name):
            # The bytes never passed through us: read them back at the site and check them.
            data = self.target.get(name)
            if object_hash(data) != expected:
                self.target.delete(name)
                raise CorruptObject(
                    f"{self.source.location}/{name}",
                    "the copy's bytes do not match the object's name: the object is damaged "
                    "at the primary (run 'safehold verify --read-data' there)",
                )
            return Arrived(len(data), True)
        if self._server_side:
            with self._lock:
                self._server_side = False  # probed once: the two ends have no server path
        data = self.source.get(name)
        if object_hash(data) != expected:
            raise CorruptObject(
                f"{self.source.location}/{name}",
                "bytes do not match the object's name: the object is damaged at the primary "
                "and was not copied (run 'safehold verify --read-data' there)",
            )
        try:
            self.target.create(name, data)
        except AlreadyExists:
            # A damaged or partial object of that name at the site (a listing showed a
            # different size): content-addressed, so replacing it with the right bytes is safe.
            self.target.put(name, data)
        if self.options.read_back and object_hash(self.target.get(name)) != expected:
            raise TransientError(
                self.target.location, "read back bytes do not match the name", name=name
            )
        return Arrived(len(data), False)
