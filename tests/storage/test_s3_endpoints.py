"""The S3 provider's session keeps a trimmed endpoints document (storage/providers/s3.py,
``_S3Loader``): only the entries of the services it makes clients for. These tests prove
that nothing it resolves changes: every region of every partition, with and without FIPS
and dual-stack, resolves as with botocore's whole document; an S3 client for a region of
each partition gets the endpoint a stock botocore session gives it; and the whole document
is not kept. None of it sends a request."""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import BotoCoreError
from botocore.loaders import JSONFileLoader
from botocore.regions import EndpointResolver

from safehold.storage import open_storage
from safehold.storage.providers import s3
from safehold.storage.providers.s3 import ENDPOINT_SERVICES, _S3Loader, only_services

KEYS = {"access_key_id": "AKEXAMPLE", "secret_access_key": "secret-example"}


@pytest.fixture(scope="module")
def whole() -> tuple[dict[str, Any], dict[str, Any]]:
    """botocore's own endpoints and partitions documents, as a stock session loads them."""
    loader = botocore.session.Session().get_component("data_loader")
    return loader.load_data("endpoints"), loader.load_data("partitions")


def _regions(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(partition, region) for every region a partition lists or a kept service names."""
    found = set()
    for part in doc["partitions"]:
        found.update((part["partition"], r) for r in part.get("regions", {}))
        for service in ENDPOINT_SERVICES:
            endpoints = part["services"].get(service, {}).get("endpoints", {})
            found.update((part["partition"], r) for r in endpoints)
    return found


def _resolve(resolver: EndpointResolver, service: str, region: str, args: dict[str, Any]) -> Any:
    """What the resolver gives, or the error it raises (a variant it has no endpoint for)."""
    try:
        return resolver.construct_endpoint(service, region, **args)
    except BotoCoreError as exc:
        return (type(exc).__name__, str(exc))


def test_every_region_resolves_as_with_the_whole_document(
    whole: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    endpoints, partitions = whole
    stock = EndpointResolver(endpoints, partitions)
    trimmed = EndpointResolver(only_services(endpoints, ENDPOINT_SERVICES), partitions)
    regions = _regions(endpoints)
    assert len(regions) > 50  # every partition's regions, not an empty loop
    compared = 0
    for service in sorted(ENDPOINT_SERVICES):
        for partition, region in sorted(regions):
            for fips in (False, True):
                for dualstack in (False, True):
                    args = dict(
                        partition_name=partition,
                        use_fips_endpoint=fips,
                        use_dualstack_endpoint=dualstack,
                    )
                    want = _resolve(stock, service, region, args)
                    got = _resolve(trimmed, service, region, args)
                    assert got == want, (service, partition, region, fips, dualstack)
                    compared += isinstance(want, dict)
    assert compared > 100


def test_the_trimmed_document_names_only_those_services(
    whole: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    endpoints, _ = whole
    trimmed = only_services(endpoints, ENDPOINT_SERVICES)
    assert [p["partition"] for p in trimmed["partitions"]] == [
        p["partition"] for p in endpoints["partitions"]
    ]
    for part in trimmed["partitions"]:
        assert set(part["services"]) <= ENDPOINT_SERVICES
        assert "s3" in part["services"]
    assert endpoints["partitions"][0]["services"].keys() - ENDPOINT_SERVICES  # not cut in place


def _endpoint(region: str) -> str:
    storage = open_storage("s3://a-bucket/prefix", {"region": region, **KEYS})
    try:
        return str(storage._client.meta.endpoint_url)  # type: ignore[attr-defined]
    finally:
        storage.close()


@pytest.mark.parametrize(
    "region", ["us-east-1", "eu-central-1", "cn-north-1", "us-gov-west-1", "ap-southeast-5"]
)
def test_an_s3_client_gets_the_endpoint_the_whole_document_gives(
    region: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = _endpoint(region)
    monkeypatch.setattr(s3, "only_services", lambda endpoints, services: endpoints)
    assert got == _endpoint(region)
    assert region in got


def test_the_whole_document_is_not_kept() -> None:
    session = botocore.session.Session()
    base = session.get_component("data_loader")
    loader = _S3Loader(base.search_paths)
    first, _ = loader.load_data_with_path("endpoints")
    again, _ = loader.load_data_with_path("endpoints")
    assert again is first  # cached, trimmed once
    gc.collect()
    held = [
        v[0]
        for v in loader._cache.values()
        if isinstance(v, tuple) and v and isinstance(v[0], dict) and "partitions" in v[0]
    ]
    assert held
    for doc in held:
        for part in doc["partitions"]:
            assert part["services"].keys() <= ENDPOINT_SERVICES, part["partition"]


def test_the_model_files_decode_to_what_botocore_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file an S3 client loads, decoded by msgspec (``_JSONFiles``), equals what
    botocore's own JSON loader makes of it: the same keys in the same order, the same values."""
    loaded: list[tuple[str, Any]] = []
    real = s3._JSONFiles._load_file

    def recording(self: s3._JSONFiles, full_path: str, open_method: Any) -> Any:
        data = real(self, full_path, open_method)
        if data is not None:
            loaded.append((full_path, open_method))
        return data

    monkeypatch.setattr(s3._JSONFiles, "_load_file", recording)
    _endpoint("eu-central-1")
    names = {path.rsplit("/", 1)[-1] for path, _ in loaded}
    assert {"endpoints.json", "service-2.json.gz", "endpoint-rule-set-1.json.gz"} <= names
    stock = JSONFileLoader()
    for path, open_method in loaded:
        ours = real(s3._JSONFiles(), path, open_method)
        theirs = stock._load_file(path, open_method)
        assert ours == theirs, path
        assert json.dumps(ours) == json.dumps(theirs), path  # the same order, too


def test_a_model_file_msgspec_refuses_is_read_by_json(tmp_path: Path) -> None:
    path = tmp_path / "odd.json"
    path.write_text('{"limit": NaN, "name": "\\udcff"}')
    data = s3._JSONFiles()._load_file(str(path), open)
    assert math.isnan(data["limit"])
    assert data["name"] == "\udcff"
