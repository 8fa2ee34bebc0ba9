"""Repository locks: shared for backup/restore/verify, exclusive for prune (format section 11).

A lock is a sealed object under ``locks/`` created with put-if-absent. After
creating it the holder lists the others and backs off on a conflict. A
background thread replaces it every few minutes so that it never looks stale
while held; a lock not refreshed for ``STALE_AFTER`` is ignored, so a crashed
Job never blocks later runs for long.

A refresh that fails (the storage is down beyond the retry budget) is tried again a minute
later; the operation goes on. When the lock could not be refreshed for longer than
``STALE_AFTER``, others may have removed it and pruned under it: the lock is *lost*, and
:func:`check_lock` (which the backup calls before each pack and before its snapshot) raises
:class:`LockLost`. Releasing never raises: a lock that cannot be deleted goes stale by itself,
and an error already on its way out must not be replaced by the cleanup's. After such an error
each deletion retries for ``CLEANUP_RETRY_SECONDS`` only, not the storage's whole budget.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo.crypto import AAD_LOCK, Sealer, SealError, object_hash, open_sealed, seal
from safehold.repo.errors import CorruptObject, LockConflict, RepositoryError
from safehold.repo.layout import LOCKS, lock_name
from safehold.repo.snapshot import parse_time
from safehold.storage import NotFound
from safehold.storage.wrappers import capped_retries

if TYPE_CHECKING:
    from safehold.repo.repository import Repository

__all__ = [
    "REFRESH_EVERY",
    "STALE_AFTER",
    "LockInfo",
    "LockLost",
    "RepositoryLock",
    "check_lock",
    "decode_lock",
    "list_locks",
    "unlock",
]

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=30)
REFRESH_EVERY = timedelta(minutes=5)
#: After a failed refresh, the next try comes this soon (or at REFRESH_EVERY, if sooner).
RETRY_REFRESH_AFTER = timedelta(minutes=1)
#: How long each deletion of the lock may retry when the operation holding it failed: the
#: storage is likely what failed, and a lock left behind only goes stale (STALE_AFTER).
CLEANUP_RETRY_SECONDS = 30.0

#: Locks held in this process (usually one): what :func:`check_lock` looks at.
_HELD: list[RepositoryLock] = []


class LockLost(RepositoryError):
    """The repository lock could not be refreshed for longer than the stale-lock age."""


def check_lock(repo: Repository) -> None:
    """Raise :class:`LockLost` when a lock this process holds on ``repo`` is lost.

    Cheap (a look at a short list): called once per pack, not per blob."""
    for lock in _HELD:
        if lock.lost is not None and lock.repo is repo:
            raise lock.lost


@dataclass(frozen=True)
class LockInfo:
    name: str
    exclusive: bool
    time: datetime
    hostname: str
    pid: int
    operation: str
    readable: bool = True

    def stale(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        if now - self.time > STALE_AFTER:
            return True
        if self.readable and self.hostname == socket.gethostname() and self.pid > 0:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def describe(self, now: datetime | None = None) -> str:
        age = int(((now or datetime.now(UTC)) - self.time).total_seconds())
        kind = "exclusive" if self.exclusive else "shared"
        return (
            f"{kind} lock by {self.operation or 'unknown'} on {self.hostname or '?'} "
            f"pid {self.pid}, {age}s old ({self.name})"
        )


def decode_lock(aead: AESGCM | Sealer, data: bytes, name: str) -> LockInfo:
    """A lock object's content; :class:`CorruptObject` naming it and the field when it
    fails authentication or breaks format section 11."""
    try:
        doc = json.loads(open_sealed(aead, AAD_LOCK, data))
    except SealError as exc:
        raise CorruptObject(name, "lock fails authentication") from exc
    except (ValueError, RecursionError) as exc:
        raise CorruptObject(name, "lock is not JSON") from exc
    try:
        if type(doc) is not dict:
            raise ValueError("not a JSON object")
        exclusive = doc.get("exclusive")
        if type(exclusive) is not bool:
            raise ValueError("field 'exclusive' is not true or false")
        try:
            moment = parse_time(doc.get("time"))
        except ValueError as exc:
            raise ValueError(f"field 'time' is not an RFC 3339 time ({exc})") from None
        pid = doc.get("pid", 0)
        if type(pid) is not int or not 0 <= pid < 2**31:
            raise ValueError("field 'pid' is not a process id")
        texts = {}
        for key in ("hostname", "operation"):
            value = doc.get(key, "")
            if type(value) is not str or len(value) > 1024:
                raise ValueError(f"field {key!r} is not a string")
            texts[key] = value
    except ValueError as exc:
        raise CorruptObject(name, f"lock is malformed ({exc})") from exc
    return LockInfo(name, exclusive, moment, texts["hostname"], pid, texts["operation"])


def _read_lock(repo: Repository, name: str) -> LockInfo | None:
    try:
        data = repo.storage.get(name)
    except NotFound:
        return None
    try:
        return decode_lock(repo.aead, data, name)
    except CorruptObject:
        # Unreadable: treat as an exclusive lock of unknown age (now), so nothing prunes under it.
        return LockInfo(name, True, datetime.now(UTC), "", 0, "unreadable", readable=False)


def list_locks(repo: Repository, *, besides: str = "") -> list[LockInfo]:
    """Every lock in the repository but ``besides`` (the lock the caller has just written:
    it knows what that says without reading it back)."""
    found = []
    for info in repo.storage.list(LOCKS):
        if info.name == besides:
            continue
        lock = _read_lock(repo, info.name)
        if lock is not None:
            found.append(lock)
    return found


def unlock(repo: Repository, *, remove_all: bool = False) -> list[LockInfo]:
    """Delete stale locks (or every lock); return what was removed."""
    removed = []
    for lock in list_locks(repo):
        if remove_all or lock.stale():
            repo.storage.delete(lock.name)
            removed.append(lock)
    return removed


class RepositoryLock:
    """A held lock; use as a context manager. Refreshes itself until released."""

    def __init__(self, repo: Repository, *, exclusive: bool, operation: str) -> None:
        self.repo = repo
        self.exclusive = exclusive
        self.operation = operation
        self.name = ""
        #: Set by the refresh thread when the lock went stale before it could be refreshed.
        self.lost: LockLost | None = None
        self._written = 0.0  # time.monotonic() when the current lock object's time was taken
        self._leftover: list[str] = []  # replaced lock objects whose delete failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> str:
        try:
            username = getpass.getuser()
        except (KeyError, OSError):
            username = ""
        doc = {
            "exclusive": self.exclusive,
            "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "username": username,
            "operation": self.operation,
            "nonce": os.urandom(16).hex(),
        }
        data = seal(self.repo.aead, AAD_LOCK, json.dumps(doc).encode())
        name = lock_name(object_hash(data))
        self.repo.storage.create(name, data)
        return name

    def acquire(self) -> RepositoryLock:
        written = time.monotonic()
        self.name = self._write()
        self._written = written
        # The index was loaded before this lock: a prune may have ended in between (format
        # section 11). Checked beside the listing of the locks, a round trip each.
        with ThreadPoolExecutor(1, thread_name_prefix="lock-index") as pool:
            recheck = pool.submit(self.repo.recheck_index)
            try:
                conflicts = [
                    lock
                    for lock in list_locks(self.repo, besides=self.name)
                    if not lock.stale() and (self.exclusive or lock.exclusive)
                ]
                if conflicts:
                    held = "; ".join(c.describe() for c in conflicts)
                    raise LockConflict(
                        f"{self.repo.location}: the repository is locked ({held}). Wait for "
                        "that operation to finish; if it crashed, the lock goes stale after "
                        f"{int(STALE_AFTER.total_seconds() // 60)} minutes, or run "
                        "'safehold repo unlock' to remove stale locks"
                    )
                recheck.result()
            except BaseException:
                wait([recheck])
                self._delete_quietly(self.name)
                self.name = ""
                raise
        _HELD.append(self)
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        every = REFRESH_EVERY.total_seconds()
        wait = every
        while not self._stop.wait(wait):
            stale = STALE_AFTER.total_seconds()
            started = time.monotonic()
            try:
                name = self._write()  # the storage's retries ride out an outage meanwhile
            except Exception as exc:  # noqa: BLE001 - tried again soon, unless too late
                age = time.monotonic() - self._written
                if age > stale:
                    self._lose(age, exc)
                    return
                wait = min(every, RETRY_REFRESH_AFTER.total_seconds())
                log.warning(
                    "could not refresh the repository lock (%s); trying again in %.0f s "
                    "(it goes stale in %.0f s)",
                    exc,
                    wait,
                    stale - age,
                )
                continue
            old, self.name = self.name, name
            if started - self._written > stale:  # refreshed, but it was stale in between
                self._lose(started - self._written, None)
                return
            self._written = started
            wait = every
            try:
                self.repo.storage.delete(old)
            except NotFound:
                pass
            except Exception as exc:  # noqa: BLE001 - deleted again at release
                self._leftover.append(old)
                log.warning("could not remove the replaced repository lock %s (%s)", old, exc)

    def _lose(self, age: float, cause: BaseException | None) -> None:
        why = f": {cause}" if cause is not None else ""
        self.lost = LockLost(
            f"{self.repo.location}: the repository lock ({self.operation}) could not be "
            f"refreshed for {age:.0f} s, longer than the stale-lock age of "
            f"{STALE_AFTER.total_seconds():.0f} s, so another process may have removed it "
            f"(and pruned): stopped to keep the repository safe; run the operation again{why}"
        )
        self.lost.__cause__ = cause
        log.error("%s", self.lost)

    def _delete_quietly(self, name: str) -> None:
        """Delete a lock object; a failure is a warning (the lock goes stale by itself)."""
        try:
            self.repo.storage.delete(name)
        except NotFound:
            pass
        except Exception as exc:  # noqa: BLE001 - must not replace the error in flight
            log.warning(
                "could not remove the repository lock %s (%s); it goes stale after %d minutes, "
                "or run 'safehold repo unlock'",
                name,
                exc,
                int(STALE_AFTER.total_seconds() // 60),
            )

    def release(self) -> None:
        """Stop refreshing and delete the lock objects. Never raises: see the module doc."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self in _HELD:
            _HELD.remove(self)
        names, self._leftover = [*self._leftover, self.name], []
        self.name = ""
        for name in names:
            if name:
                self._delete_quietly(name)

    def __enter__(self) -> RepositoryLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.release()
            return
        with capped_retries(CLEANUP_RETRY_SECONDS):
            self.release()
