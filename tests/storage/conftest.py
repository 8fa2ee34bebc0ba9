"""The storage test tier: one ``backend`` fixture, parametrised over the four providers.

A test that takes ``backend`` runs once per provider, with the provider's name in its id
(``test_roundtrip[s3]``). Servers start lazily, so ``-k filesystem`` starts none. Two more
backends: ``s3-throttled`` is S3 inside the bandwidth throttle (``ThrottledStorage``) with
a limit set: a wrapper keeps every guarantee of what it wraps; ``azure-entra`` is Azurite
on HTTPS reached with Microsoft Entra ID tokens instead of a key (Azure Workload
Identity's environment, testground/entra.py): the provider keeps every guarantee with
either credential.

Server gaps: ``GAPS`` maps (test function, backend) to the documented reason a server fails
that case; the case is then ``xfail(strict=True)`` for that backend only, so it still runs,
and it fails the suite if the server ever starts passing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from safehold.storage import Storage, open_storage
from safehold.storage.wrappers import Bandwidth, ThrottledStorage, TokenBucket
from testground.objectstores import RunningStore

BACKENDS = ("filesystem", "s3", "gcs", "azure", "s3-throttled", "azure-entra")
BUCKET = "conformance"
#: The throttled backend's limit per direction: low enough that its calls wait, high
#: enough that the suite's few hundred MiB take seconds.
THROTTLE_BYTES_PER_SECOND = 16 * 1024 * 1024

GAPS: dict[tuple[str, str], str] = {
    ("test_a_name_may_also_prefix_other_names", "filesystem"): (
        "a file cannot also be a directory: the filesystem provider cannot hold both "
        "'a' and 'a/b' (docs/storage.md); the repository layout never needs it"
    ),
    ("test_create_large_refuses_existing", "gcs"): (
        "fake-gcs-server ignores if_generation_match=0 on resumable uploads over 8 MiB "
        "(TESTBED.md); real GCS honours it"
    ),
    ("test_writes_with_read_only_credentials_are_denied", "gcs"): (
        "fake-gcs-server checks no credentials or permissions; real GCS answers 403"
    ),
}


@dataclass
class Target:
    """One backend under test: opens storages at fresh prefixes of one bucket."""

    backend: str
    store: RunningStore | None  # None for the filesystem
    root: Path  # the filesystem backend's directory
    opened: list[Storage] = field(default_factory=list)
    bandwidth: Bandwidth | None = None  # the throttle around every storage opened

    def url(self, prefix: str) -> str:
        if self.store is None:
            return (self.root / prefix).as_uri()
        return self.store.url(BUCKET, prefix)

    def options(self, **overrides: str) -> dict[str, str]:
        # Parts of 8 MiB (the default is 32 MiB): the multipart cases stay small and quick.
        base = {**self.store.options, "multipart_threshold": str(8 << 20)} if self.store else {}
        return {**base, **overrides}

    def open(self, prefix: str | None = None, **overrides: str) -> Storage:
        """A storage at ``prefix`` (a fresh unique one by default) with ``overrides``."""
        storage = open_storage(self.url(prefix or fresh_prefix()), self.options(**overrides))
        return self._opened(storage)

    def _opened(self, storage: Storage) -> Storage:
        if self.bandwidth is not None:
            storage = ThrottledStorage(storage, self.bandwidth)
        self.opened.append(storage)
        return storage

    def open_read_only(self, prefix: str) -> Storage:
        """The storage at ``prefix`` with credentials that may read but not write."""
        if self.store is None:
            if os.geteuid() == 0:  # root ignores modes; sysfs refuses new files even to root
                return open_storage("file:///sys/fs/safehold-read-only")
            (self.root / prefix).chmod(0o555)
            return open_storage(self.url(prefix))
        options = self.store.readonly_options or self.store.options
        return self._opened(open_storage(self.url(prefix), options))


def fresh_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def _filesystem_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("filesystem-backend")


@pytest.fixture(scope="session")
def _prepared(request: pytest.FixtureRequest) -> dict[str, RunningStore]:
    """Servers whose conformance bucket exists, by backend (filled as backends are used)."""
    return {}


@dataclass
class EntraStore:
    """Azurite on HTTPS taking Entra ID tokens, and the environment that gets them."""

    store: RunningStore
    environment: dict[str, str]


@pytest.fixture(scope="session")
def _azure_entra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EntraStore]:
    from testground.entra import start_azurite_oauth, start_entra
    from testground.pki import make_pki

    root = tmp_path_factory.mktemp("azure-entra")
    pki = make_pki(root / "pki")
    entra = start_entra(root / "entra", pki)
    store = start_azurite_oauth(root / "azurite", pki)
    client_id = entra.trust("safehold", "backups")
    try:
        yield EntraStore(
            store, entra.environment(client_id, entra.token_file("safehold", "backups"))
        )
    finally:
        store.stop()
        entra.stop()


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, _filesystem_root: Path, _prepared: dict[str, RunningStore]
) -> Iterator[Target]:
    name: str = request.param
    provider = name.removesuffix("-throttled")
    store: RunningStore | None = None
    if provider == "azure-entra":
        entra: EntraStore = request.getfixturevalue("_azure_entra")
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        for key, value in entra.environment.items():
            monkeypatch.setenv(key, value)
        store = entra.store
    elif provider != "filesystem":
        store = request.getfixturevalue(f"{provider}_store")
    if store is not None and provider not in _prepared:
        store.make_bucket(BUCKET)
        _prepared[provider] = store
    target = Target(name, store, _filesystem_root)
    if name.endswith("-throttled"):
        rate = THROTTLE_BYTES_PER_SECOND
        target.bandwidth = Bandwidth(upload=TokenBucket(rate), download=TokenBucket(rate))
    yield target
    for storage in target.opened:
        storage.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec: Any = getattr(item, "callspec", None)
        if callspec is None or "backend" not in callspec.params:
            continue
        original = getattr(item, "originalname", item.name)
        reason = GAPS.get((original, callspec.params["backend"]))
        if reason:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
        if item.path.name == "test_conformance.py":
            item.add_marker(pytest.mark.conformance)


_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "tests/storage/" in report.nodeid and not hasattr(report, "wasxfail"):
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped storage test is a backend that was not tested: that fails the run."""
    if _SKIPPED and exitstatus == 0:
        print(f"\nstorage tests were skipped, which counts as failure: {', '.join(_SKIPPED)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
