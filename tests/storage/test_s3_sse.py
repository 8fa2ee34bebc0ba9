"""S3 server-side encryption (options ``sse`` and ``sse_kms_key_id``): every object Safehold
writes carries it (single uploads, multipart uploads, creates, server-side copies), as the
server reports it, on SeaweedFS with its local KMS."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from safehold.storage import InvalidLocation, open_storage
from testground.objectstores import RunningStore

BUCKET = "sse"


@pytest.fixture(scope="module")
def bucket(s3_store: RunningStore) -> str:
    s3_store.make_bucket(BUCKET)
    return BUCKET


def _encryption(store: RunningStore, key: str) -> tuple[Any, Any]:
    head = store.s3_client().head_object(Bucket=BUCKET, Key=key)
    return head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"sse": "s3"}, ("AES256", None)),
        ({"sse": "kms", "sse_kms_key_id": "safehold-backups"}, ("aws:kms", "safehold-backups")),
    ],
)
def test_every_object_written_is_encrypted_by_the_server(
    s3_store: RunningStore, bucket: str, options: dict[str, str], expected: tuple[Any, Any]
) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    opts = {**s3_store.options, "multipart_threshold": str(5 << 20), **options}
    storage = open_storage(s3_store.url(bucket, prefix), opts, wrap=True)
    other = open_storage(s3_store.url(bucket, f"{prefix}-copy"), opts, wrap=True)
    try:
        big = uuid.uuid4().bytes * (12 << 20 // 16)  # 12 MiB: a multipart upload
        storage.put("data/ab/small", b"small")
        storage.put("data/ab/big", big)
        storage.create("locks/one", b"lock")
        assert other.copy_from(storage, "data/ab/small")  # inside the service
        written = [
            f"{prefix}/data/ab/small",
            f"{prefix}/data/ab/big",
            f"{prefix}/locks/one",
            f"{prefix}-copy/data/ab/small",
        ]
        assert {key: _encryption(s3_store, key) for key in written} == dict.fromkeys(
            written, expected
        )
        assert storage.get("data/ab/big") == big  # and read back as ever
    finally:
        storage.close()
        other.close()


def test_without_the_option_nothing_is_asked_of_the_server(
    s3_store: RunningStore, bucket: str
) -> None:
    storage = open_storage(s3_store.url(bucket, "plain"), s3_store.options)
    try:
        storage.put("x", b"x")
    finally:
        storage.close()
    assert _encryption(s3_store, "plain/x") == (None, None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sse": "aes"}, "option sse must be s3 (SSE-S3) or kms (SSE-KMS)"),
        ({"sse_kms_key_id": "k"}, "option sse_kms_key_id needs sse=kms"),
        ({"sse": "s3", "sse_kms_key_id": "k"}, "option sse_kms_key_id needs sse=kms"),
    ],
)
def test_bad_encryption_options_are_refused_by_name(options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidLocation, match=re.escape(message)):
        open_storage("s3://b/p", options)
