"""The S3 provider (botocore): Amazon S3 or any S3-compatible endpoint.

Objects above ``multipart_threshold`` go up as a multipart upload whose parts are sent in
parallel; nothing is visible until CompleteMultipartUpload, so puts stay atomic. ``create``
sends ``If-None-Match: *`` on PutObject and on CompleteMultipartUpload: the server decides
atomically, and the losers get 412 (:class:`AlreadyExists`).

botocore's own retries are switched off (one attempt per call): retrying is the job of
:mod:`safehold.storage.wrappers.retry`, so there is one retry policy and one budget.
Credentials come from the options, else from botocore's default chain (``AWS_*``
environment, shared config/profile, container and instance roles). See docs/storage.md.

botocore, not boto3: boto3 adds resources and s3transfer, which this provider does not use
and every command would import (0.03-0.1 s). And the client's data loader is told that S3
is the one service it will be asked for (:class:`_S3Loader`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, cast

import botocore.exceptions as bce
import botocore.session
import msgspec
from botocore import UNSIGNED
from botocore.config import Config
from botocore.handlers import add_expect_header
from botocore.loaders import JSONFileLoader, Loader

from safehold.storage.base import ObjectInfo
from safehold.storage.body import Body, FileBody, body_range, body_size
from safehold.storage.errors import (
    AlreadyExists,
    InvalidLocation,
    NotFound,
    ObjectLocked,
    ObjectLockUnsupported,
    PermanentError,
    PermissionDenied,
    StorageError,
    TransientError,
)
from safehold.storage.object_store import MULTIPART_THRESHOLD, ObjectStore
from safehold.storage.options import (
    option,
    option_bool,
    option_int,
    option_timeouts,
    redact_endpoint,
)
from safehold.storage.registry import Location
from safehold.storage.tls import ca_file, untrusted_certificate

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3Storage", "open"]

_MIB = 1024 * 1024
#: Bytes per piece of :meth:`S3Storage.get_stream`: what one read of the socket asks for.
STREAM_PIECE = 1024 * 1024
_MIN_PART = 5 * _MIB  # S3's smallest part (all but the last)
_MAX_PARTS = 10_000
_UPLOAD_THREADS = 4
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
    "403",
}
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "ConditionalRequestConflict",  # a concurrent conditional write; retrying gives 412 or 200
    "OperationAborted",
}


def open(location: Location) -> S3Storage:
    endpoint = option(location, "endpoint", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    region = option(location, "region", "AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1"
    style = location.options.get("addressing_style") or ("path" if endpoint else "auto")
    if style not in ("path", "virtual", "auto"):
        raise InvalidLocation(location.url, "option addressing_style must be path, virtual or auto")
    connect_timeout, read_timeout = option_timeouts(location)
    config = Config(
        region_name=region,
        s3={"addressing_style": style},  # type: ignore[arg-type]
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1},
        max_pool_connections=32,
        signature_version=UNSIGNED if option_bool(location, "anonymous") else None,
    )
    key_id = location.options.get("access_key_id")
    secret = location.options.get("secret_access_key")
    if bool(key_id) != bool(secret):
        raise InvalidLocation(
            location.url, "options access_key_id and secret_access_key go together: set both"
        )
    if location.options.get("session_token") and not key_id:
        raise InvalidLocation(
            location.url,
            "option session_token belongs to temporary access keys: set the options "
            "access_key_id and secret_access_key with it (keys from the environment take "
            "AWS_SESSION_TOKEN)",
        )
    try:
        session = botocore.session.Session()
        loader = session.get_component("data_loader")
        session.register_component("data_loader", _S3Loader(loader.search_paths))
        if location.options.get("profile"):
            session.set_config_variable("profile", location.options["profile"])
        if key_id and secret:
            session.set_credentials(key_id, secret, location.options.get("session_token") or None)
        connect = partial(_client, session, endpoint or None, config, ca_file(location))
        client = connect()
    except bce.ProfileNotFound as exc:
        raise InvalidLocation(
            location.url, "the profile named by option profile is not in the AWS config files"
        ) from exc
    except ValueError as exc:  # a malformed endpoint URL
        raise InvalidLocation(
            location.url, "option endpoint is not a valid URL (http(s)://host:port)"
        ) from exc
    return S3Storage(
        location,
        client,
        sse=_sse(location),
        connect=connect,
        endpoint=redact_endpoint(endpoint) if endpoint else f"AWS S3 ({region})",
        multipart_threshold=option_int(
            location, "multipart_threshold", MULTIPART_THRESHOLD, minimum=_MIN_PART
        ),
    )


#: Option ``sse`` -> the ``x-amz-server-side-encryption`` it sends.
_SSE = {"s3": "AES256", "kms": "aws:kms"}


def _sse(location: Location) -> dict[str, str]:
    """Options ``sse`` and ``sse_kms_key_id`` as the arguments of every upload and copy:
    server-side encryption with S3's keys (``s3``) or a KMS key (``kms``: the key named, or
    the account's ``aws/s3`` key without one). On top of the repository's own encryption,
    for buckets whose policy demands the header."""
    mode = location.options.get("sse") or None
    key = location.options.get("sse_kms_key_id") or None
    if mode is not None and mode not in _SSE:
        raise InvalidLocation(location.url, "option sse must be s3 (SSE-S3) or kms (SSE-KMS)")
    if key and mode != "kms":
        raise InvalidLocation(location.url, "option sse_kms_key_id needs sse=kms")
    if mode is None:
        return {}
    args = {"ServerSideEncryption": _SSE[mode]}
    if key:
        args["SSEKMSKeyId"] = key
    return args


def _client(
    session: botocore.session.Session, endpoint: str | None, config: Config, ca: str | None
) -> S3Client:
    """An S3 client that sends a PUT's body with its headers, without ``Expect:
    100-continue``.

    botocore asks for ``100 Continue`` on every PUT with a file body and holds the body back
    until it comes: a round trip more per pack on a real bucket, up to one second against a
    server or proxy that answers it late or not at all, and a connection left unusable after
    an empty body (boto/botocore#3755, #3613). What the wait could save, a pack's bytes sent
    to a request that fails, is rare: a backup's first writes are small objects (the lock),
    which meet a wrong credential or region first. urllib3 still reads the server's answer
    when it stops reading a body early, so a refusal is reported as such
    (tests/storage/test_conformance.py, a pack-sized body with read-only credentials)."""
    client = cast(
        "S3Client", session.create_client("s3", endpoint_url=endpoint, config=config, verify=ca)
    )
    client.meta.events.unregister("before-call.s3", add_expect_header)
    return client


#: The services whose entries the session's endpoints document keeps (:class:`_S3Loader`):
#: S3, and those botocore's credential chain makes clients for (assumed roles and web
#: identity, as in a pod with IRSA: STS; SSO profiles: SSO and SSO OIDC).
ENDPOINT_SERVICES = frozenset({"s3", "sts", "sso", "sso-oidc"})


class _JSONFiles(JSONFileLoader):
    """botocore's model files decoded into plain dicts by msgspec.

    botocore decodes them with :mod:`json` into ``OrderedDict`` objects: 25 ms for the
    three large ones an S3 client loads (the endpoints document, S3's service model and its
    endpoint rules), in every command that opens an S3 repository. Plain dicts keep their
    order as well, and msgspec makes them in 9.5 ms (docs/performance.md, "botocore's model
    files decoded by msgspec").
    A file msgspec refuses (JSON it reads otherwise than :mod:`json`: NaN, a lone
    surrogate) is read by :mod:`json`."""

    def _load_file(self, full_path: str, open_method: Callable[..., Any]) -> Any:
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as fp:
            payload = fp.read()
        try:
            return msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return json.loads(payload)


class _S3Loader(Loader):
    """botocore's data loader for a session that makes S3 clients only.

    * The stock loader lists every service's directory (400 of them) for each kind of model
      a client loads, three times per client: 0.02 s with a warm page cache, 0.1 s with a
      cold one, in every command.
    * botocore's endpoints document names every service in every partition (1.2 MB of JSON);
      decoded, it held 7 MB in every process that made a client, for as long as the
      session lived (each part of a restore from S3 kept one). Only the entries of
      :data:`ENDPOINT_SERVICES` are kept: for those services the session resolves every
      region of every partition as before (tests/storage/test_s3_endpoints.py).
    * Its files are decoded by :class:`_JSONFiles`."""

    FILE_LOADER_CLASS = _JSONFiles

    _cache: dict[Any, Any]  # botocore's instance_cache
    _trimmed: dict[str, Any] | None = None

    def __init__(self, search_paths: list[str]) -> None:
        super().__init__(extra_search_paths=search_paths, include_default_search_paths=False)

    def list_available_services(self, type_name: str) -> list[str]:
        return ["s3"]

    def load_data_with_path(self, name: str) -> tuple[Any, str]:
        data, path = super().load_data_with_path(name)
        if name != "endpoints" or data is self._trimmed:
            return data, path
        trimmed = only_services(data, ENDPOINT_SERVICES)
        # The loader keeps what it loaded (botocore's instance_cache, in self._cache): keep
        # the trimmed document there instead, so that the whole one is freed.
        for key, value in list(self._cache.items()):
            if isinstance(value, tuple) and value and value[0] is data:
                self._cache[key] = (trimmed, path)
        self._trimmed = trimmed
        return trimmed, path


def only_services(endpoints: dict[str, Any], services: frozenset[str]) -> dict[str, Any]:
    """botocore's endpoints document with each partition's ``services`` cut to ``services``
    (everything else, the partitions' regions and defaults included, as it was)."""
    partitions = [
        {**part, "services": {k: v for k, v in part.get("services", {}).items() if k in services}}
        for part in endpoints.get("partitions", [])
    ]
    return {**endpoints, "partitions": partitions}


class S3Storage(ObjectStore):
    """Objects under ``prefix/`` in one bucket. With an object lock (the bucket must have
    S3 Object Lock enabled, which turns versioning on) a delete removes every version."""

    lock_mode_names: ClassVar[Mapping[str, str]] = {
        "governance": "GOVERNANCE",
        "compliance": "COMPLIANCE",
    }
    connections: ClassVar[tuple[str, ...]] = ("_client",)
    #: Packs are sent from their files (storage/body.py), so more in flight cost no memory;
    #: restic's S3 backend keeps five connections.
    uploads_in_flight = 6

    def __init__(
        self,
        location: Location,
        client: S3Client,
        *,
        endpoint: str,
        multipart_threshold: int,
        sse: Mapping[str, str] | None = None,
        connect: Callable[[], S3Client] | None = None,
    ) -> None:
        super().__init__(location, endpoint=endpoint, multipart_threshold=multipart_threshold)
        self.bucket = location.bucket
        self._client = client
        #: Server-side encryption arguments of every upload and copy (options sse, ...).
        self._sse: dict[str, Any] = dict(sse or {})
        self._connect = connect
        #: whether the bucket has S3 Object Lock (asked on the first delete without a lock,
        #: unless an upload's answer told: :meth:`_note_versions`)
        self._bucket_locks: bool | None = None

    def _read(self, name: str, offset: int, length: int | None) -> bytes:
        body = self._body(name, offset, length)
        if body is None:
            return b""
        try:
            return cast("bytes", body.read())
        except bce.BotoCoreError as exc:
            raise self._error(exc, name, "get") from exc

    def get_stream(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The response body as it arrives, in pieces of :data:`STREAM_PIECE` bytes."""
        if length == 0:
            self.get(name, offset, length)  # nothing to read, but a missing object is NotFound
            return
        body = self._body(name, offset, length)
        if body is None:
            return
        try:
            yield from body.iter_chunks(STREAM_PIECE)
        except bce.BotoCoreError as exc:
            raise self._error(exc, name, "get") from exc
        finally:
            body.close()

    def _body(self, name: str, offset: int, length: int | None) -> Any:
        """The GetObject response's body for a non-empty range; None when the range starts
        past the object's end."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(name)}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            args["Range"] = f"bytes={offset}-{end}"
        try:
            return self._client.get_object(**args)["Body"]
        except bce.ClientError as exc:
            if _code(exc) == "InvalidRange":  # the object exists; the range starts past its end
                return None
            raise self._error(exc, name, "get") from exc
        except bce.BotoCoreError as exc:
            raise self._error(exc, name, "get") from exc

    def stat(self, name: str) -> ObjectInfo:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(name))
        except (bce.ClientError, bce.BotoCoreError) as exc:
            raise self._error(exc, name, "stat") from exc
        return ObjectInfo(name, int(head["ContentLength"]), head.get("LastModified"))

    def _list(self, prefix: str) -> Iterator[tuple[str, int, datetime | None]]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.page_size}
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"], int(item["Size"]), item.get("LastModified")
        except (bce.ClientError, bce.BotoCoreError) as exc:
            raise self._error(exc, None, "list") from exc

    def delete(self, name: str) -> None:
        try:
            if self.object_lock is not None or self._lock_enabled_bucket():
                self._delete_versions(name, self._key(name))
                return
            self._client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except bce.ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return
            raise self._error(exc, name, "delete") from exc
        except bce.BotoCoreError as exc:
            raise self._error(exc, name, "delete") from exc

    def _copy_within(self, origin: ObjectStore, name: str) -> bool:
        """CopyObject from ``origin``'s bucket at the same endpoint."""
        assert isinstance(origin, S3Storage)
        if origin.endpoint != self.endpoint:
            return False
        try:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=self._key(name),
                CopySource={"Bucket": origin.bucket, "Key": origin._key(name)},
                **self._sse,
            )
        except bce.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status == 403 or code in ("AccessDenied", "EntityTooLarge", "NotImplemented"):
                return False
            raise self._error(exc, name, "copy") from exc
        except bce.BotoCoreError as exc:
            raise self._error(exc, name, "copy") from exc
        return True

    def close(self) -> None:
        self._client.close()

    def reopen(self) -> None:
        """A new client from the same botocore session: a session holds no connection, and its
        loaded service model and credentials make this ten times quicker than a new open."""
        if self._connect is None:
            super().reopen()
        else:
            self._client = self._connect()

    def check_object_lock(self) -> None:
        enabled: str | None = None
        try:
            found = self._client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = found.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        except bce.ClientError as exc:
            if _code(exc) != "ObjectLockConfigurationNotFoundError":
                raise self._error(exc, None, "inspect") from exc
        except bce.BotoCoreError as exc:
            raise self._error(exc, None, "inspect") from exc
        if enabled != "Enabled":
            raise ObjectLockUnsupported(
                self.location,
                f"bucket {self.bucket!r} has no S3 Object Lock, so objects cannot be locked: "
                "create the bucket with object lock enabled (aws s3api create-bucket --bucket "
                f"{self.bucket} --object-lock-enabled-for-bucket), or enable it on the "
                "versioned bucket (aws s3api put-object-lock-configuration "
                "--object-lock-configuration ObjectLockEnabled=Enabled); docs/immutability.md",
            )

    def _lock_enabled_bucket(self) -> bool:
        """Whether the bucket has S3 Object Lock, for deletes without a lock of our own (a
        recovery site locking what replication writes): a plain DELETE there only adds a
        delete marker, reported as a success while nothing is freed and the object stays."""
        if self._bucket_locks is None:
            try:
                self.check_object_lock()
                self._bucket_locks = True
            except (ObjectLockUnsupported, PermissionDenied):  # none, or cannot tell: as ever
                self._bucket_locks = False
        return self._bucket_locks

    def _lock_args(self, name: str) -> dict[str, Any]:
        lock = self._lock_for(name)
        if lock is None:
            return {}
        return {"ObjectLockMode": lock[0], "ObjectLockRetainUntilDate": lock[1]}

    def _retained(self, key: str, version: str) -> bool:
        """Whether a version's retention is still running: tells a refusal by the lock
        from missing delete rights (both are AccessDenied)."""
        try:
            found = self._client.get_object_retention(
                Bucket=self.bucket, Key=key, VersionId=version
            )
        except bce.ClientError:
            return False
        until = found.get("Retention", {}).get("RetainUntilDate")
        return until is not None and until > datetime.now(UTC)

    def _delete_versions(self, name: str, key: str) -> None:
        """On a versioned (object-lock) bucket a plain DELETE only hides an object behind a
        delete marker: delete every version, so prune frees the space, and report a version
        the lock still protects as :class:`ObjectLocked`."""
        paginator = self._client.get_paginator("list_object_versions")
        versions: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if item["Key"] == key:
                    versions.append(str(item["VersionId"]))
        for version in versions:
            try:
                self._client.delete_object(Bucket=self.bucket, Key=key, VersionId=version)
            except bce.ClientError as exc:
                if _code(exc) in ("NoSuchKey", "NoSuchVersion", "404"):
                    continue
                if _code(exc) in ("AccessDenied", "ObjectLocked") and self._retained(key, version):
                    raise ObjectLocked(
                        self.location,
                        "the object is under S3 Object Lock and its retention has not "
                        "expired: it can be deleted after its retain-until date",
                        name=name,
                    ) from exc
                raise

    # -- uploads
    def _upload(self, name: str, data: Body, *, create: bool) -> None:
        key = self._key(name)
        op = "create" if create else "put"
        condition: dict[str, Any] = {"IfNoneMatch": "*"} if create else {}
        lock = self._lock_args(name)
        try:
            if body_size(data) <= self.multipart_threshold:
                # a file body is read by botocore in pieces (its checksums, then the send)
                body = data.stream() if isinstance(data, FileBody) else data
                stored: Mapping[str, Any] = self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, **condition, **lock, **self._sse
                )
            else:
                stored = self._multipart(key, data, condition, lock)
            self._note_versions(stored)
        except bce.ClientError as exc:
            if create and _status(exc) == 412:
                raise AlreadyExists(
                    self.location, "an object of this name exists", name=name
                ) from exc
            raise self._error(exc, name, op) from exc
        except bce.BotoCoreError as exc:
            raise self._error(exc, name, op) from exc

    def _note_versions(self, stored: Mapping[str, Any]) -> None:
        """A bucket that gives what it stores no version id keeps no versions, so it has no
        S3 Object Lock (which needs versioning on): its deletes need not ask
        (:meth:`_lock_enabled_bucket`), which spares every backup a request. A version id
        leaves the question to the first delete, as before."""
        if self._bucket_locks is None and stored.get("VersionId") in (None, "", "null"):
            self._bucket_locks = False

    def _multipart(
        self, key: str, body: Body, condition: dict[str, Any], lock: dict[str, Any]
    ) -> Mapping[str, Any]:
        size = body_size(body)
        part_size = max(self.multipart_threshold, -(-size // _MAX_PARTS))
        offsets = range(0, size, part_size)
        upload = self._client.create_multipart_upload(
            Bucket=self.bucket, Key=key, **lock, **self._sse
        )
        upload_id = upload["UploadId"]

        def send(number: int, start: int) -> dict[str, Any]:
            part = self._client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body_range(body, start, part_size),
            )
            return {"PartNumber": number, "ETag": part["ETag"]}

        try:
            with ThreadPoolExecutor(_UPLOAD_THREADS, thread_name_prefix="s3-part") as pool:
                parts = list(pool.map(send, range(1, len(offsets) + 1), offsets))
            return self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                **condition,
            )
        except BaseException:
            # What we cannot abort, the bucket's lifecycle rules clean up.
            with contextlib.suppress(bce.ClientError, bce.BotoCoreError):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    # -- errors
    def _error(self, exc: Exception, name: str | None, op: str) -> StorageError:
        where = f"at {self.endpoint}"
        untrusted = untrusted_certificate(self.location, exc, self.endpoint, name)
        if untrusted is not None:
            return untrusted
        if isinstance(exc, bce.ClientError):
            code, status = _code(exc), _status(exc)
            if code == "NoSuchBucket":
                return NotFound(
                    self.location,
                    f"bucket {self.bucket!r} does not exist {where}: create it, or check the "
                    "bucket in the URL and the endpoint and region options",
                    name=name,
                )
            if code in ("NoSuchKey", "404") or status == 404:
                return NotFound(self.location, "no such object", name=name)
            if code in _DENIED or status == 403:
                return PermissionDenied(
                    self.location,
                    f"{op} denied ({code}) {where}: check access_key_id and "
                    "secret_access_key (or the AWS_* environment and profile), that they are "
                    "not expired, and that they may "
                    f"{op} objects in bucket {self.bucket!r}",
                    name=name,
                )
            if code == "InvalidBucketName":
                return InvalidLocation(
                    self.location, f"{self.bucket!r} is not a valid bucket name", name=name
                )
            if code in _TRANSIENT or status >= 500 or status in (408, 429):
                return TransientError(
                    self.location, f"{op} failed ({code}, HTTP {status}) {where}", name=name
                )
            return PermanentError(
                self.location, f"{op} failed ({code}, HTTP {status}) {where}", name=name
            )
        if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
            return PermissionDenied(
                self.location,
                "no S3 credentials found: set options access_key_id and secret_access_key, "
                "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or anonymous=true",
                name=name,
            )
        if isinstance(exc, bce.IncompleteReadError):
            return TransientError(
                self.location, f"{op} failed: the response ended early {where}", name=name
            )
        if isinstance(exc, bce.ConnectionError | bce.HTTPClientError):
            return TransientError(
                self.location,
                f"cannot reach the S3 endpoint {self.endpoint} ({type(exc).__name__}): check "
                "the endpoint option and that the server is running and reachable",
                name=name,
            )
        return PermanentError(self.location, f"{op} failed: {type(exc).__name__}", name=name)


def _code(exc: bce.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: bce.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
