"""Where the S3 provider finds its credentials, against a real SeaweedFS: the options, the
``AWS_*`` environment, a profile of the shared AWS files (option ``profile`` or
``AWS_PROFILE``); a profile that is not there is a clear error (docs/storage.md)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from safehold.storage import InvalidLocation, PermissionDenied, open_storage
from testground.objectstores import RunningStore

_AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
)


@pytest.fixture
def bucket_url(s3_store: RunningStore) -> str:
    bucket = f"creds-{uuid.uuid4().hex[:12]}"
    s3_store.make_bucket(bucket)
    return s3_store.url(bucket, "repo")


@pytest.fixture
def aws_files(
    s3_store: RunningStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Shared AWS files of a user with two profiles: ``backup`` holds the server's keys,
    ``default`` a key the server does not know; no ``AWS_*`` credentials in the
    environment. Returns the endpoint option."""
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    key, secret = s3_store.options["access_key_id"], s3_store.options["secret_access_key"]
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = AKUNKNOWN\naws_secret_access_key = wrong\n\n"
        f"[backup]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
    )
    config = tmp_path / "config"
    config.write_text("[default]\nregion = us-east-1\n\n[profile backup]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    return {"endpoint": s3_store.options["endpoint"]}


def _round_trip(url: str, options: dict[str, str]) -> bytes:
    storage = open_storage(url, options)
    try:
        storage.put("data/x", b"payload")
        return storage.get("data/x")
    finally:
        storage.close()


def test_a_profile_named_by_the_option_is_used(bucket_url: str, aws_files: dict[str, str]) -> None:
    assert _round_trip(bucket_url, {**aws_files, "profile": "backup"}) == b"payload"


def test_a_profile_named_by_aws_profile_is_used(
    bucket_url: str, aws_files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "backup")
    assert _round_trip(bucket_url, aws_files) == b"payload"


def test_without_a_profile_the_default_one_is_used(
    bucket_url: str, aws_files: dict[str, str]
) -> None:
    with pytest.raises(PermissionDenied, match="check access_key_id and secret_access_key"):
        _round_trip(bucket_url, aws_files)


def test_keys_in_the_environment_are_used(
    s3_store: RunningStore,
    bucket_url: str,
    aws_files: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_store.options["access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_store.options["secret_access_key"])
    assert _round_trip(bucket_url, aws_files) == b"payload"


def test_keys_in_the_options_win_over_the_profile(
    s3_store: RunningStore, bucket_url: str, aws_files: dict[str, str]
) -> None:
    keys = {k: s3_store.options[k] for k in ("access_key_id", "secret_access_key")}
    assert _round_trip(bucket_url, {**aws_files, **keys}) == b"payload"


def test_a_profile_that_is_not_in_the_files_is_named_as_the_problem(
    bucket_url: str, aws_files: dict[str, str]
) -> None:
    with pytest.raises(InvalidLocation) as caught:
        open_storage(bucket_url, {**aws_files, "profile": "nosuch"})
    assert "the profile named by option profile is not in the AWS config files" in str(caught.value)
    assert str(caught.value).startswith(bucket_url)
