"""Location URLs and options: parsing and validation (pure logic, no servers)."""

from __future__ import annotations

import pytest

from safehold.storage import InvalidLocation, parse_location
from safehold.storage.options import check_options, option, option_bool, option_int, redact_endpoint


@pytest.mark.parametrize(
    ("url", "scheme", "bucket", "prefix", "canonical"),
    [
        ("file:///srv/backups/", "file", "/srv/backups", "", "file:///srv/backups"),
        ("s3://bucket", "s3", "bucket", "", "s3://bucket"),
        ("s3://bucket/a/b/", "s3", "bucket", "a/b", "s3://bucket/a/b"),
        ("GS://bucket/repo", "gs", "bucket", "repo", "gs://bucket/repo"),
        ("azure://container/x", "azure", "container", "x", "azure://container/x"),
    ],
)
def test_parse(url: str, scheme: str, bucket: str, prefix: str, canonical: str) -> None:
    location = parse_location(url)
    assert (location.scheme, location.bucket, location.prefix) == (scheme, bucket, prefix)
    assert location.url == canonical


def test_options_are_not_in_the_repr() -> None:
    location = parse_location("s3://b/p", {"secret_access_key": "hidden"})
    assert "hidden" not in repr(location)


@pytest.mark.parametrize("url", ["file://host/path", "file:relative", "s3:///p", "s3://b/p?x=1"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidLocation):
        parse_location(url)


def test_option_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    location = parse_location("s3://b/p", {"page_size": "10", "anonymous": "yes", "region": ""})
    assert option_int(location, "page_size", 1000) == 10
    assert option_int(location, "multipart_threshold", 7) == 7
    assert option_bool(location, "anonymous") is True
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert option(location, "region", "AWS_REGION") == "eu-west-1"
    check_options(location, {"region", "anonymous"})
    with pytest.raises(InvalidLocation, match="option page_size must be an integer >= 20"):
        option_int(location, "page_size", 1000, minimum=20)


def test_redact_endpoint() -> None:
    assert redact_endpoint("https://u:pw@host:8443/acct?sig=abc") == "https://host:8443/acct"
    assert redact_endpoint("http://127.0.0.1:10000/devstoreaccount1") == (
        "http://127.0.0.1:10000/devstoreaccount1"
    )


def test_the_controller_and_api_copies_of_the_provider_names_match_the_registry() -> None:
    """The controller may not import storage and the API models import nothing of Safehold,
    so each keeps its own copy of the provider names; this keeps them in step."""
    from typing import get_args

    from safehold.api.backuplocation import LocationProvider
    from safehold.controller.repository import _SCHEMES
    from safehold.storage.registry import PROVIDERS

    assert set(get_args(LocationProvider)) == {p.name for p in PROVIDERS}
    assert {p.name: p.scheme for p in PROVIDERS if not p.directory} == _SCHEMES
