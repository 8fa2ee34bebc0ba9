"""A BackupLocation's ``serverSideEncryption``: every object the operator's Jobs write to
the bucket is encrypted by the server with the KMS key named (SeaweedFS's local KMS)."""

from __future__ import annotations

from typing import Any

from safehold.api import validate_spec
from testground.kube import Namespace
from testground.objectstores import RunningStore


def test_every_object_the_jobs_write_carries_the_location_s_kms_key(
    namespace: Namespace, operator: Any, kit: Any, s3_store: RunningStore
) -> None:
    operator(poll_interval=1.0)
    bucket = kit.store_location(
        namespace, s3_store, "primary",
        serverSideEncryption={"mode": "kms", "kmsKeyId": "shop-backups"},
    )  # fmt: skip
    kit.round_trip(namespace, "primary", seed=21)
    client = s3_store.s3_client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any("/data/" in k for k in keys)  # packs
    assert any("/snapshots/" in k for k in keys)
    encryption = {
        key: (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId"))
        for key in keys
        for head in [client.head_object(Bucket=bucket, Key=key)]
    }
    assert encryption == dict.fromkeys(keys, ("aws:kms", "shop-backups"))


def test_encryption_is_refused_where_it_would_do_nothing() -> None:
    spec = {
        "provider": "gcs",
        "bucket": "b",
        "repositoryPasswordSecretRef": {"name": "pw"},
        "serverSideEncryption": {"mode": "s3"},
    }
    [error] = validate_spec("BackupLocation", spec)
    assert error.path == "spec.serverSideEncryption"
    assert "only used by provider s3" in error.message
    s3 = {**spec, "provider": "s3", "serverSideEncryption": {"mode": "s3", "kmsKeyId": "k"}}
    [error] = validate_spec("BackupLocation", s3)
    assert error.path == "spec.serverSideEncryption.kmsKeyId"
    assert "only mode kms uses" in error.message
