"""pytest fixtures for the object-store servers: one of each per test session, on loopback.

``s3_store``, ``gcs_store`` and ``azure_store`` start SeaweedFS, fake-gcs-server and Azurite
the first time a test asks for them and stop them at the end of the session (a test that
never asks starts nothing). ``object_store_factory`` starts private instances for tests that
stop and restart a server; it stops them when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testground.objectstores import RunningStore, start_store

__all__ = ["azure_store", "gcs_store", "object_store_factory", "s3_store"]


def _session_store(provider: str, factory: pytest.TempPathFactory) -> Iterator[RunningStore]:
    store = start_store(provider, factory.mktemp(f"objectstore-{provider}"))
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStore]:
    """SeaweedFS with an S3 gateway; ``options`` hold its endpoint and an admin key pair."""
    yield from _session_store("s3", tmp_path_factory)


@pytest.fixture(scope="session")
def gcs_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStore]:
    """fake-gcs-server (in memory); ``options`` hold its endpoint and ``anonymous=true``."""
    yield from _session_store("gcs", tmp_path_factory)


@pytest.fixture(scope="session")
def azure_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStore]:
    """Azurite's blob service; ``options`` hold its endpoint and the development account."""
    yield from _session_store("azure", tmp_path_factory)


@pytest.fixture
def object_store_factory(tmp_path: Path) -> Iterator[Callable[[str], RunningStore]]:
    """Start private servers (``factory("s3")``) that this test alone may stop and restart."""
    started: list[RunningStore] = []

    def start(provider: str) -> RunningStore:
        store = start_store(provider, tmp_path)
        started.append(store)
        return store

    yield start
    for store in started:
        store.stop()
