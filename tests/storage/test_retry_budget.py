"""The retry budget (issue 15, item 8): outages of several minutes are ridden out by default,
the budget is a setting (option ``retry_seconds``, ``SAFEHOLD_RETRY_SECONDS``), a storage that
never answered fails fast, and a give-up names the cause and how long it was retried.

A fake clock drives the wrapper, so ten simulated minutes take milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.repo import Repository
from safehold.repo.layout import LOCKS
from safehold.repo.locks import CLEANUP_RETRY_SECONDS, RepositoryLock
from safehold.storage import (
    InvalidLocation,
    NotFound,
    ObjectInfo,
    Storage,
    TransientError,
    open_storage,
)
from safehold.storage.wrappers import (
    ForwardingStorage,
    RetryingStorage,
    RetryPolicy,
    capped_retries,
)
from safehold.storage.wrappers import retry as retry_module


class Clock:
    """time.monotonic and time.sleep for the retry wrapper: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Outage(ForwardingStorage):
    """Calls fail transiently (connection refused) until the clock passes ``until``."""

    def __init__(self, inner: Storage, clock: Clock, until: float) -> None:
        super().__init__(inner)
        self.clock = clock
        self.until = until

    def _check(self) -> None:
        if self.clock.now < self.until:
            raise TransientError(self.location, "connection refused; check the endpoint")

    def put(self, name: str, data: bytes) -> None:
        self._check()
        self.inner.put(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._check()
        return self.inner.get(name, offset, length)

    def stat(self, name: str) -> ObjectInfo:
        self._check()
        return self.inner.stat(name)

    def delete(self, name: str) -> None:
        self._check()
        self.inner.delete(name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(retry_module, "time", fake)
    return fake


@pytest.fixture
def fs(tmp_path: Path) -> Storage:
    return open_storage(tmp_path.as_uri())


def _answered(storage: RetryingStorage) -> RetryingStorage:
    with pytest.raises(NotFound):
        storage.get("nothing-here")  # the server answered: mid-run from now on
    return storage


def test_the_default_rides_out_an_outage_of_several_minutes(fs: Storage, clock: Clock) -> None:
    fs.put("obj", b"data")
    outage = Outage(fs, clock, until=0)
    storage = _answered(RetryingStorage(outage, RetryPolicy(sleep=clock.sleep)))
    outage.until = clock.now + 8 * 60  # an 8-minute outage starts
    assert storage.get("obj") == b"data"
    assert clock.now >= outage.until
    assert clock.now - outage.until <= 10  # resumed within max_delay of the end
    assert storage.retries > 8  # more than the old 8 attempts


def test_an_outage_longer_than_the_budget_fails_naming_the_cause(fs: Storage, clock: Clock) -> None:
    outage = Outage(fs, clock, until=0)
    storage = _answered(RetryingStorage(outage, RetryPolicy(sleep=clock.sleep)))
    outage.until = clock.now + 3600
    started = clock.now
    with pytest.raises(TransientError) as caught:
        storage.put("obj", b"data")
    assert 590 <= clock.now - started <= 600
    message = str(caught.value)
    assert "connection refused; check the endpoint" in message
    assert "still failing after" in message
    assert "retry_seconds" in message
    assert isinstance(caught.value.__cause__, TransientError)


def test_a_storage_that_never_answered_fails_within_a_minute(fs: Storage, clock: Clock) -> None:
    """A wrong endpoint is not an outage: the first call does not wait ten minutes."""
    storage = RetryingStorage(Outage(fs, clock, until=float("inf")), RetryPolicy(sleep=clock.sleep))
    started = clock.now
    with pytest.raises(TransientError, match="connection refused"):
        storage.stat("config")
    assert clock.now - started <= 60


def test_retry_seconds_is_an_option_and_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def budget(options: dict[str, str]) -> float:
        storage = open_storage(tmp_path.as_uri(), options, wrap=True)
        assert isinstance(storage, RetryingStorage)
        return storage.policy.budget

    monkeypatch.delenv("SAFEHOLD_RETRY_SECONDS", raising=False)
    assert budget({}) == 600
    assert budget({"retry_seconds": "90"}) == 90
    monkeypatch.setenv("SAFEHOLD_RETRY_SECONDS", "1800")
    assert budget({}) == 1800
    assert budget({"retry_seconds": "30"}) == 30  # the option wins
    for bad in ("soon", "-1", "inf"):
        with pytest.raises(InvalidLocation, match=r"retry_seconds .* number of seconds"):
            open_storage(tmp_path.as_uri(), {"retry_seconds": bad}, wrap=True)


def test_retry_seconds_is_a_known_option_of_every_cloud_provider() -> None:
    with pytest.raises(InvalidLocation) as caught:
        open_storage("s3://bucket/p", {"retry_secs": "5", "endpoint": "http://127.0.0.1:9"})
    assert "retry_seconds" in str(caught.value)  # listed among the known options


def test_capped_retries_shortens_every_call_in_the_block_and_only_there(
    fs: Storage, clock: Clock
) -> None:
    outage = Outage(fs, clock, until=0)
    storage = _answered(RetryingStorage(outage, RetryPolicy(sleep=clock.sleep)))
    outage.until = clock.now + 3600
    started = clock.now
    with capped_retries(30), capped_retries(60), pytest.raises(TransientError):
        storage.delete("obj")  # the smaller of nested caps holds
    assert clock.now - started <= 30
    started = clock.now
    with pytest.raises(TransientError):
        storage.delete("obj")
    assert clock.now - started >= 590  # outside the block: the whole budget again


def test_a_lock_is_deleted_with_a_short_budget_after_a_failure_and_the_failure_stays(
    fs: Storage, clock: Clock
) -> None:
    """A backup that gave up after an outage must not spend another ten minutes deleting
    its lock (issue 15): the lock goes stale by itself; the error that ended it is kept."""
    outage = Outage(fs, clock, until=0)
    storage = _answered(RetryingStorage(outage, RetryPolicy(sleep=clock.sleep)))
    repo = Repository.init(storage, "retry budget password")
    started = 0.0
    lock = RepositoryLock(repo, exclusive=False, operation="backup")
    with pytest.raises(RuntimeError, match="the backup failed"), lock:  # noqa: PT012
        outage.until = clock.now + 3600
        started = clock.now
        raise RuntimeError("the backup failed")
    assert clock.now - started <= CLEANUP_RETRY_SECONDS
    assert [o.name for o in fs.list(LOCKS)]  # left behind: it goes stale
