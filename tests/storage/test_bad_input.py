"""Bad input gives one clear error that names the location and what to check, never a secret."""

from __future__ import annotations

import json
import socket
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from safehold.storage import (
    InvalidLocation,
    MissingExtra,
    NotFound,
    PermissionDenied,
    Storage,
    StorageError,
    TransientError,
    open_storage,
)
from testground.objectstores import AZURITE_ACCOUNT, AZURITE_KEY, RunningStore

SECRET = "Sup3rS3cretValue-do-not-log-0123456789"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def whole_story(exc: BaseException) -> str:
    """Everything a log would show: the message, the chain of causes and the traceback."""
    return "".join(traceback.format_exception(exc))


def first_error(*calls: Callable[[], object]) -> StorageError:
    for call in calls:
        try:
            call()
        except StorageError as exc:
            return exc
    raise AssertionError("no call failed")


def touch(storage: Storage) -> None:
    storage.put("probe", b"x")


# ---------------------------------------------------------------- URLs and options


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(InvalidLocation) as caught:
        open_storage("ftp://host/backups")
    message = str(caught.value)
    assert message.startswith("ftp://host/backups:")
    assert "unknown scheme ftp://" in message
    for scheme in ("file://", "s3://", "gs://", "azure://"):
        assert scheme in message


def test_url_without_bucket() -> None:
    with pytest.raises(InvalidLocation, match=r"s3://BUCKET/PREFIX"):
        open_storage("s3:///prefix")


def test_credentials_in_the_url_are_refused_and_not_repeated() -> None:
    with pytest.raises(InvalidLocation) as caught:
        open_storage(f"s3://AKID:{SECRET}@bucket/prefix")
    assert "pass them as options" in str(caught.value)
    assert SECRET not in whole_story(caught.value)


@pytest.mark.parametrize(
    ("url", "options", "says"),
    [
        ("s3://b/p", {"session_token": SECRET}, "option session_token belongs to"),
        (
            "gs://b/p",
            {"anonymous": "true", "credentials_file": "/k.json"},
            "anonymous and credentials_file go against each other",
        ),
    ],
    ids=["s3-token-alone", "gcs-anonymous-with-key"],
)
def test_credentials_that_would_be_dropped_are_refused(
    url: str, options: dict[str, str], says: str
) -> None:
    with pytest.raises(InvalidLocation) as caught:
        open_storage(url, options)
    assert says in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_directory_refuses_the_cloud_options(tmp_path: Path) -> None:
    """file:// takes no endpoint, timeout or credentials: given one, it says so rather than
    ignore it (docs/storage.md)."""
    for key in ("endpoint", "timeout", "access_key_id"):
        with pytest.raises(InvalidLocation) as caught:
            open_storage(tmp_path.as_uri(), {key: "x"})
        assert f"unknown option(s) {key} for file://" in str(caught.value)
    open_storage(tmp_path.as_uri(), {"retry_seconds": "5"})  # what a directory does use


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("s3://b/p", {"acces_key_id": SECRET}),
        ("gs://b/p", {"credential_file": SECRET}),
        ("azure://c/p", {"acount_key": SECRET}),
    ],
    ids=["s3", "gcs", "azure"],
)
def test_misspelt_option_is_named_with_the_known_ones(url: str, options: dict[str, str]) -> None:
    with pytest.raises(InvalidLocation) as caught:
        open_storage(url, options)
    message = str(caught.value)
    (name,) = options
    assert f"unknown option(s) {name}" in message
    assert "known options:" in message
    assert url in message
    assert SECRET not in whole_story(caught.value)


def test_malformed_number_option() -> None:
    with pytest.raises(InvalidLocation, match="option page_size must be an integer"):
        open_storage("s3://b/p", {"page_size": "many", "endpoint": "http://127.0.0.1:1"})


@pytest.mark.parametrize(
    ("url", "sdk", "extra"),
    [
        ("s3://bucket/prefix", "botocore", "s3"),
        ("gs://bucket/prefix", "google.cloud", "gcs"),
        ("azure://container/prefix", "azure.storage.blob", "azure"),
    ],
    ids=["s3", "gcs", "azure"],
)
def test_missing_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, sdk: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, sdk, None)  # importing the SDK now fails
    module = f"safehold.storage.providers.{extra}"
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(MissingExtra) as caught:
        open_storage(url)
    assert f"pip install 'safehold[{extra}]'" in str(caught.value)
    assert str(caught.value).startswith(url)


# ---------------------------------------------------------------- wrong endpoint


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("s3://bucket/p", {"access_key_id": "AKID", "secret_access_key": SECRET}),
        ("gs://bucket/p", {"anonymous": "true"}),
        ("azure://container/p", {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}),
    ],
    ids=["s3", "gcs", "azure"],
)
def test_wrong_endpoint(url: str, options: dict[str, str]) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    if url.startswith("azure"):
        endpoint += f"/{AZURITE_ACCOUNT}"
    storage = open_storage(url, {**options, "endpoint": endpoint, "timeout": "3"})
    with pytest.raises(TransientError) as caught:
        touch(storage)
    message = str(caught.value)
    assert message.startswith(url)
    assert endpoint in message
    assert "check the endpoint" in message
    assert SECRET not in whole_story(caught.value)


# ---------------------------------------------------------------- missing bucket


@pytest.mark.parametrize("provider", ["s3", "gcs", "azure"])
def test_missing_bucket(provider: str, request: pytest.FixtureRequest) -> None:
    store: RunningStore = request.getfixturevalue(f"{provider}_store")
    word = "container" if provider == "azure" else "bucket"
    storage = open_storage(store.url("no-such-bucket", "p"), store.options)
    for call in (lambda: touch(storage), lambda: list(storage.list())):
        with pytest.raises(NotFound) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(store.url("no-such-bucket", "p"))
        assert f"{word} 'no-such-bucket' does not exist" in message
        assert "create it" in message


# ---------------------------------------------------------------- wrong or expired credentials


def test_wrong_s3_secret(s3_store: RunningStore) -> None:
    s3_store.make_bucket("badinput")
    storage = open_storage(
        s3_store.url("badinput", "p"), {**s3_store.options, "secret_access_key": SECRET}
    )
    with pytest.raises(PermissionDenied) as caught:
        touch(storage)
    message = str(caught.value)
    assert message.startswith("s3://badinput/p")
    assert "check access_key_id and secret_access_key" in message
    assert SECRET not in whole_story(caught.value)


def test_wrong_azure_key(azure_store: RunningStore) -> None:
    azure_store.make_bucket("badinput")
    wrong = AZURITE_KEY[:-8] + "AAAAAAA="
    storage = open_storage(
        azure_store.url("badinput", "p"), {**azure_store.options, "account_key": wrong}
    )
    with pytest.raises(PermissionDenied) as caught:
        touch(storage)
    message = str(caught.value)
    assert message.startswith("azure://badinput/p")
    assert "check the account key, SAS token or connection string" in message
    assert wrong not in whole_story(caught.value)


def test_expired_azure_sas(azure_store: RunningStore) -> None:
    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    azure_store.make_bucket("badinput")
    expired = generate_account_sas(
        AZURITE_ACCOUNT,
        AZURITE_KEY,
        resource_types=ResourceTypes(container=True, object=True),
        permission=AccountSasPermissions(read=True, write=True, list=True, create=True),
        start=datetime.now(UTC) - timedelta(hours=2),
        expiry=datetime.now(UTC) - timedelta(hours=1),
    )
    storage = open_storage(
        azure_store.url("badinput", "p"),
        {"endpoint": azure_store.options["endpoint"], "sas_token": expired},
    )
    with pytest.raises(PermissionDenied) as caught:
        touch(storage)
    message = str(caught.value)
    assert message.startswith("azure://badinput/p")
    assert "not expired" in message
    signature = expired.split("sig=")[1].split("&")[0]
    assert signature not in whole_story(caught.value)


def test_gcs_credentials_file_missing_or_malformed(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(PermissionDenied) as caught:
        open_storage("gs://bucket/p", {"credentials_file": str(missing)})
    assert "credentials_file" in str(caught.value)
    assert str(caught.value).startswith("gs://bucket/p")

    malformed = tmp_path / "key.json"
    malformed.write_text(json.dumps({"type": "service_account", "private_key": SECRET}))
    with pytest.raises(PermissionDenied) as caught:
        open_storage("gs://bucket/p", {"credentials_file": str(malformed)})
    assert "credentials_file" in str(caught.value)
    assert SECRET not in whole_story(caught.value)


def test_malformed_azure_connection_string() -> None:
    with pytest.raises(InvalidLocation) as caught:
        open_storage("azure://c/p", {"connection_string": f"AccountKey={SECRET}"})
    assert "check option connection_string" in str(caught.value)
    assert SECRET not in whole_story(caught.value)


def test_no_credentials_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """An account without a key or SAS token means Microsoft Entra ID; where no identity
    is found, the first request says so (and what to set), before reaching the service."""
    for name in (
        "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_CLIENT_SECRET", "IDENTITY_ENDPOINT", "MSI_ENDPOINT",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no Azure CLI, PowerShell or azd to ask
    storage = open_storage(
        "azure://c/p",
        {"account_name": "acct", "endpoint": f"https://127.0.0.1:{closed_port()}/acct"},
    )
    with pytest.raises(PermissionDenied) as caught:
        storage.get("config")
    message = str(caught.value)
    assert "Microsoft Entra ID gave no token (no workload identity" in message
    assert "account_key or sas_token" in message
    assert "aka.ms" not in message


# ---------------------------------------------------------------- secrets never leak


def test_no_error_message_or_traceback_holds_a_secret(
    s3_store: RunningStore, azure_store: RunningStore
) -> None:
    """Every failing path with a secret in the options: the secret is in no message or cause."""
    dead = f"http://127.0.0.1:{closed_port()}"
    azure_key = AZURITE_KEY[:-12] + "SECRETSECR=="
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={azure_key};BlobEndpoint={azure_store.options['endpoint']};"
    )
    secrets = [SECRET, azure_key, connection]
    cases: list[tuple[str, dict[str, str]]] = [
        (s3_store.url("conformance", "p"), {**s3_store.options, "secret_access_key": SECRET}),
        (s3_store.url("absent", "p"), {**s3_store.options, "secret_access_key": SECRET}),
        ("s3://b/p", {"endpoint": dead, "access_key_id": "AKID", "secret_access_key": SECRET}),
        (azure_store.url("conformance", "p"), {"connection_string": connection}),
        (azure_store.url("absent", "p"), {"connection_string": connection}),
        (
            "azure://c/p",
            {
                "connection_string": connection.replace(
                    azure_store.options["endpoint"], f"{dead}/{AZURITE_ACCOUNT}"
                )
            },
        ),
        ("azure://c/p", {"endpoint": dead, "sas_token": f"sv=2024&sig={SECRET}"}),
    ]
    checked = 0
    for url, options in cases:
        storage = open_storage(url, {**options, "timeout": "3"})
        error = first_error(
            lambda s=storage: touch(s),
            lambda s=storage: s.get("probe"),
            lambda s=storage: list(s.list()),
        )
        story = whole_story(error)
        for secret in secrets:
            assert secret not in story, f"{url}: a secret leaked into {error!r}"
        assert url.split("://")[1].split("/")[0] in str(error)
        checked += 1
    assert checked == len(cases)
