"""The wrappers: retry (with injected faults and a real server outage), limit, metrics, faults."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from safehold.storage import (
    AlreadyExists,
    Body,
    FileBody,
    NotFound,
    ObjectInfo,
    PermanentError,
    Storage,
    TransientError,
    open_storage,
)
from safehold.storage.wrappers import (
    ForwardingStorage,
    LimitedStorage,
    MeteredStorage,
    RetryingStorage,
    RetryPolicy,
    wrap,
)
from testground.faults import FaultyStorage
from testground.objectstores import RunningStore


@pytest.fixture
def fs(tmp_path: Path) -> Storage:
    return open_storage(tmp_path.as_uri())


def no_sleep_policy(attempts: int = 5) -> tuple[RetryPolicy, list[float]]:
    pauses: list[float] = []
    return RetryPolicy(
        attempts=attempts, base_delay=0.1, max_delay=1.0, sleep=pauses.append
    ), pauses


# ---------------------------------------------------------------- retry with injected faults


def test_retry_recovers_from_transient_failures(fs: Storage) -> None:
    fs.put("obj", b"data")
    faulty = FaultyStorage(fs).fail("get", nth=1, times=2)
    policy, pauses = no_sleep_policy()
    storage = RetryingStorage(faulty, policy)
    assert storage.get("obj") == b"data"
    assert faulty.calls["get"] == 3
    assert storage.retries == 2
    # Full jitter: each pause is within its exponential cap.
    assert 0 <= pauses[0] <= 0.1
    assert 0 <= pauses[1] <= 0.2


def test_retry_gives_up_after_the_attempt_budget(fs: Storage) -> None:
    faulty = FaultyStorage(fs).fail("put", times=100)
    policy, pauses = no_sleep_policy(attempts=4)
    with pytest.raises(TransientError) as caught:
        RetryingStorage(faulty, policy).put("obj", b"data")
    assert faulty.calls["put"] == 4
    assert len(pauses) == 3
    assert fs.location in str(caught.value)


def test_retry_gives_up_after_the_time_budget(fs: Storage) -> None:
    faulty = FaultyStorage(fs).fail("stat", times=1000)
    policy = RetryPolicy(attempts=1000, base_delay=0.05, max_delay=0.05, budget=0.5)
    start = time.monotonic()
    with pytest.raises(TransientError):
        RetryingStorage(faulty, policy).stat("obj")
    assert time.monotonic() - start < 5.0  # 1,000 tries would take 50 s
    assert 3 < faulty.calls["stat"] < 1000


@pytest.mark.parametrize("error", [PermanentError, NotFound, AlreadyExists])
def test_retry_never_repeats_final_errors(fs: Storage, error: type[Exception]) -> None:
    faulty = FaultyStorage(fs).fail("get", error=error)  # type: ignore[arg-type]
    policy, pauses = no_sleep_policy()
    with pytest.raises(error):
        RetryingStorage(faulty, policy).get("obj")
    assert faulty.calls["get"] == 1
    assert pauses == []


def test_retried_create_whose_response_was_lost_succeeds(fs: Storage) -> None:
    """The first create reached the storage but its answer was lost: it is still ours."""
    faulty = FaultyStorage(fs).fail_after("create", nth=1)
    policy, _ = no_sleep_policy()
    RetryingStorage(faulty, policy).create("lock", b"mine")
    assert fs.get("lock") == b"mine"
    assert faulty.calls["create"] == 2


def test_retried_create_still_loses_to_someone_else(fs: Storage) -> None:
    fs.create("lock", b"theirs")
    faulty = FaultyStorage(fs).fail("create", nth=1)
    policy, _ = no_sleep_policy()
    with pytest.raises(AlreadyExists):
        RetryingStorage(faulty, policy).create("lock", b"mine")
    assert fs.get("lock") == b"theirs"


class _DropsFirstUpload(ForwardingStorage):
    """Reads part of the first upload's file and fails, as a connection dropped mid-send
    would: the file is left part-read."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.creates = 0

    def create(self, name: str, data: Body) -> None:
        self.creates += 1
        if self.creates == 1:
            assert isinstance(data, FileBody)
            data.stream().read(3 * 1024 * 1024)
            raise TransientError(self.location, "connection reset during the upload")
        super().create(name, data)


def test_a_retried_file_body_is_sent_whole_again(
    object_store_factory: Callable[[str], RunningStore], tmp_path: Path
) -> None:
    """A pack staged in a file, its first upload to S3 cut off part-way: the retry sends
    the whole file from its start, and the object holds exactly the file's bytes."""
    store = object_store_factory("s3")
    store.make_bucket("resend")
    s3 = open_storage(store.url("resend", "repo"), store.options)
    dropping = _DropsFirstUpload(s3)
    policy, _ = no_sleep_policy()
    data = bytes(range(256)) * (40 * 1024)  # 10 MiB
    with open(tmp_path / "pack", "w+b") as file:
        file.write(data)
        RetryingStorage(dropping, policy).create("data/pack", FileBody(file))
    assert dropping.creates == 2
    assert s3.get("data/pack") == data


def test_a_file_body_whose_answer_was_lost_is_recognised_as_ours(
    fs: Storage, tmp_path: Path
) -> None:
    """The lost-answer check of a retried create compares the stored object with the
    file's bytes, and another's object of that name still refuses."""
    faulty = FaultyStorage(fs).fail_after("create", nth=1)
    policy, _ = no_sleep_policy()
    with open(tmp_path / "pack", "w+b") as file:
        file.write(b"pack bytes" * 1000)
        RetryingStorage(faulty, policy).create("data/pack", FileBody(file))
        fs.create("data/theirs", b"other bytes")
        faulty = FaultyStorage(fs).fail("create", nth=1)
        with pytest.raises(AlreadyExists):
            RetryingStorage(faulty, policy).create("data/theirs", FileBody(file))
    assert fs.get("data/pack") == b"pack bytes" * 1000
    assert fs.get("data/theirs") == b"other bytes"


class _BreaksListing(ForwardingStorage):
    """Fails the first listing after ``after`` items, as a dropped connection would."""

    def __init__(self, inner: Storage, after: int) -> None:
        super().__init__(inner)
        self.after = after
        self.listings = 0

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self.listings += 1
        for count, info in enumerate(self.inner.list(prefix)):
            if self.listings == 1 and count == self.after:
                raise TransientError(self.location, "connection reset")
            yield info


def test_retried_listing_resumes_without_repeating_names(fs: Storage) -> None:
    wanted = [f"n/{i:03d}" for i in range(30)]
    for name in wanted:
        fs.put(name, b"")
    broken = _BreaksListing(fs, after=12)
    policy, _ = no_sleep_policy()
    assert [i.name for i in RetryingStorage(broken, policy).list()] == wanted
    assert broken.listings == 2


# ---------------------------------------------------------------- retry against a real outage


def test_retry_rides_out_a_server_restart(
    object_store_factory: Callable[[str], RunningStore],
) -> None:
    """SeaweedFS stops mid-test and comes back on the same ports; retried calls succeed."""
    store = object_store_factory("s3")
    store.make_bucket("outage")
    plain = open_storage(store.url("outage", "repo"), {**store.options, "timeout": "5"})
    # as many tries as 60 s allow: a restart on a loaded machine can outlast 50 tries
    policy = RetryPolicy(attempts=None, base_delay=0.2, max_delay=1.0, budget=60)
    storage = RetryingStorage(plain, policy)
    storage.put("before", b"written before the outage")

    store.stop()
    with pytest.raises(TransientError) as caught:  # without retries the outage shows at once
        plain.get("before")
    assert plain.location in str(caught.value)
    assert store.endpoint in str(caught.value)
    assert "check the endpoint" in str(caught.value)

    restarter = threading.Timer(1.5, store.start)
    restarter.start()
    try:
        assert storage.get("before") == b"written before the outage"
        storage.put("during", b"written across the outage")
    finally:
        restarter.join()
    assert storage.retries > 0
    assert plain.get("during") == b"written across the outage"
    assert [i.name for i in storage.list()] == ["before", "during"]


# ---------------------------------------------------------------- the fault wrapper


def test_faults_corrupt_and_delay(fs: Storage) -> None:
    fs.put("obj", b"abc")
    faulty = FaultyStorage(fs).corrupt("get", nth=2).delay(1.0, "stat", nth=1, times=1)
    assert faulty.get("obj") == b"abc"
    assert faulty.get("obj") == b"\x9ebc"
    assert faulty.get("obj") == b"abc"
    start = time.monotonic()
    assert faulty.stat("obj").size == 3
    assert time.monotonic() - start >= 1.0
    start = time.monotonic()
    faulty.stat("obj")
    assert time.monotonic() - start < 1.0  # not delayed (a second: room for a loaded machine)


def test_faults_count_any_operation(fs: Storage) -> None:
    faulty = FaultyStorage(fs).fail(nth=3, error=PermanentError)
    faulty.put("a", b"1")
    faulty.get("a")
    with pytest.raises(PermanentError, match="injected fault"):
        faulty.stat("a")
    assert faulty.calls["*"] == 3


# ---------------------------------------------------------------- limit


class _InFlight(ForwardingStorage):
    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    def put(self, name: str, data: bytes) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.02)
        self.inner.put(name, data)
        with self._lock:
            self.now -= 1


def test_limit_bounds_concurrent_calls(fs: Storage) -> None:
    probe = _InFlight(fs)
    storage = LimitedStorage(probe, 3)
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda i: storage.put(f"o/{i}", b"x"), range(36)))
    assert probe.peak == 3
    assert len(list(storage.list("o/"))) == 36


# ---------------------------------------------------------------- metrics


def test_metrics_count_operations_bytes_errors_and_latency(fs: Storage) -> None:
    registry = CollectorRegistry()
    storage = MeteredStorage(fs, registry)
    storage.put("obj", b"0123456789")
    assert storage.get("obj") == b"0123456789"
    with io.BytesIO(b"abcde") as file:  # a file body counts its size, as bytes do
        storage.create("staged", FileBody(file))
    with pytest.raises(NotFound):
        storage.get("missing")
    assert [i.name for i in storage.list()] == ["obj", "staged"]

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"provider": "file", **labels})

    assert value("safehold_storage_operations_total", operation="put", outcome="ok") == 1
    assert value("safehold_storage_operations_total", operation="get", outcome="ok") == 1
    assert value("safehold_storage_operations_total", operation="get", outcome="NotFound") == 1
    assert value("safehold_storage_operations_total", operation="list", outcome="ok") == 1
    assert value("safehold_storage_errors_total", operation="get", error="NotFound") == 1
    assert value("safehold_storage_bytes_total", operation="put") == 10
    assert value("safehold_storage_bytes_total", operation="create") == 5
    assert value("safehold_storage_bytes_total", operation="get") == 10
    assert value("safehold_storage_operation_seconds_count", operation="get") == 2


def test_open_storage_with_standard_wrappers(tmp_path: Path) -> None:
    storage = open_storage(tmp_path.as_uri(), wrap=True)
    assert isinstance(storage, RetryingStorage)
    storage.put("a/b", b"x")
    assert storage.get("a/b") == b"x"
    assert storage.location == tmp_path.as_uri()
    stacked = wrap(open_storage(tmp_path.as_uri()), concurrency=2, registry=CollectorRegistry())
    assert [i.name for i in stacked.list()] == ["a/b"]


def test_a_backup_uploads_as_many_packs_at_once_as_its_provider_takes(
    tmp_path: Path, object_store_factory: Callable[[str], RunningStore]
) -> None:
    """The provider's uploads in flight reach the pack writer through every wrapper: one
    to a directory, six to S3 (packs sent from their files), four to GCS and Azure."""
    from safehold.repo import BlobWriter, Repository

    store = object_store_factory("s3")
    store.make_bucket("inflight")
    expected = {tmp_path.as_uri(): 1, store.url("inflight", "repo"): 6}
    for url, uploads in expected.items():
        storage = wrap(open_storage(url, store.options if url.startswith("s3") else None))
        assert storage.uploads_in_flight == uploads
        repo = Repository.init(storage, "a long enough password")
        writer = BlobWriter(repo)
        assert writer._pool._max_workers == uploads
        writer.close()
    from safehold.storage.providers.azure import AzureStorage
    from safehold.storage.providers.gcs import GCSStorage

    assert GCSStorage.uploads_in_flight == AzureStorage.uploads_in_flight == 4
