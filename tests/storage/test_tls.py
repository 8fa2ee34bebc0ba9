"""Servers behind a private CA: option ``ca_file`` on every provider, against the real
servers on HTTPS (SeaweedFS, fake-gcs-server, Azurite) with a certificate of the test
ground's own CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.storage import (
    AlreadyExists,
    CertificateNotTrusted,
    InvalidLocation,
    PermanentError,
    StorageError,
    open_storage,
)
from testground.objectstores import PROVIDERS, RunningStore, start_store
from testground.pki import Pki, make_pki

BUCKET = "tls"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("tls-pki"))


@pytest.fixture(scope="module", params=PROVIDERS)
def tls_store(
    request: pytest.FixtureRequest, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStore]:
    store = start_store(request.param, tmp_path_factory.mktemp("tls-store"), tls=pki)
    store.make_bucket(BUCKET)
    try:
        yield store
    finally:
        store.stop()


def _without(options: dict[str, str], key: str) -> dict[str, str]:
    return {k: v for k, v in options.items() if k != key}


def test_a_server_behind_a_private_ca_is_reached_with_its_ca(tls_store: RunningStore) -> None:
    assert tls_store.endpoint.startswith("https://")
    storage = open_storage(tls_store.url(BUCKET, "ok"), tls_store.options, wrap=True)
    try:
        storage.put("data/ab/one", b"x" * 1000)
        storage.create("locks/a", b"lock")
        with pytest.raises(AlreadyExists):
            storage.create("locks/a", b"again")
        assert storage.get("data/ab/one", offset=10, length=5) == b"xxxxx"
        assert [i.name for i in storage.list("")] == ["data/ab/one", "locks/a"]
        storage.delete("locks/a")
    finally:
        storage.close()


def test_without_its_ca_the_certificate_is_refused_at_once_with_what_to_set(
    tls_store: RunningStore,
) -> None:
    """Not an outage: no retries (the default retries transient errors for 10 minutes),
    and the message says which option (and which field of a BackupLocation) to set."""
    options = _without(tls_store.options, "ca_file")
    storage = open_storage(tls_store.url(BUCKET, "no-ca"), options, wrap=True)
    try:
        with pytest.raises(StorageError) as caught:
            storage.get("config")
    finally:
        storage.close()
    assert type(caught.value) is CertificateNotTrusted
    assert isinstance(caught.value, PermanentError)  # never retried
    message = str(caught.value)
    assert f"the TLS certificate of {tls_store.endpoint}" in message
    assert "unable to get local issuer certificate" in message
    assert "set option ca_file" in message
    assert "spec.caCert" in message


def test_a_ca_that_did_not_sign_the_certificate_is_named(
    tls_store: RunningStore, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other")
    options = {**tls_store.options, "ca_file": str(other.ca_cert)}
    storage = open_storage(tls_store.url(BUCKET, "wrong-ca"), options, wrap=True)
    try:
        with pytest.raises(PermanentError, match="unable to get local issuer certificate"):
            storage.get("config")
    finally:
        storage.close()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_ca_file_without_a_certificate_is_refused_by_its_name(
    provider: str, tmp_path: Path
) -> None:
    url = {"s3": "s3://b/p", "gcs": "gs://b/p", "azure": "azure://c/p"}[provider]
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    options = {"ca_file": str(empty), "account_name": "a", "account_key": "a2V5"}
    options = options if provider == "azure" else {"ca_file": str(empty)}
    with pytest.raises(InvalidLocation, match=f"option ca_file: no PEM certificate in {empty}"):
        open_storage(url, options)
    missing = tmp_path / "missing.pem"
    with pytest.raises(
        InvalidLocation, match=f"option ca_file: No such file or directory in {missing}"
    ):
        open_storage(url, {**options, "ca_file": str(missing)})
