"""The Google Cloud Storage provider (google-cloud-storage).

Objects up to ``multipart_threshold`` go up in one multipart request; larger ones as a
resumable upload in ``multipart_threshold``-sized chunks. GCS makes an object visible only
when its upload finalises, so puts are atomic either way. ``create`` passes
``if_generation_match=0`` ("only if no live object has this name"); the loser gets 412
(:class:`AlreadyExists`).

The client's own retries are off (``retry=None`` on every call): retrying is the job of
:mod:`safehold.storage.wrappers.retry`. Only a read on a kept-alive connection the server
had closed is sent again at once (:class:`_DroppedConnectionRetry`). Every request is one
the provider made: the client's background look-up of bucket metadata is off
(:func:`_without_bucket_metadata`).

Credentials: ``credentials_file`` (a service-account or other credentials JSON), else
``GOOGLE_APPLICATION_CREDENTIALS`` and the rest of Application Default Credentials, or
``anonymous=true`` for emulators and public buckets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar

import google.api_core.exceptions as gx
import google.auth
import google.auth.exceptions as gauth
import requests
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage
from google.resumable_media import DataCorruption
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ProtocolError
from urllib3.util.retry import Retry

from safehold.storage.base import ObjectInfo
from safehold.storage.body import Body, body_bytes
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

__all__ = ["GCSStorage", "open"]

_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
_CHUNK_UNIT = 256 * 1024  # resumable chunks are multiples of 256 KiB
_POOL = 32  # connections per host, as for S3


class _DroppedConnectionRetry(Retry):
    """Sends a GET or HEAD once more, at once, when its connection broke before any answer.

    A server may close a kept-alive connection whenever it likes; the client notices only
    when it sends the next request on it (reset, or closed without a response).
    fake-gcs-server does so after every 416. Go's HTTP client resends such a request by
    itself; requests does not, and :mod:`~safehold.storage.wrappers.retry` would spend a
    retry and a backoff on what is no outage. Every other error (a refused connection, a
    timeout, a broken upload) is raised as requests raises it without retries, for that
    wrapper to judge."""

    def increment(  # type: ignore[no-untyped-def]
        self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None
    ):
        resend = isinstance(error, ProtocolError) and method in ("GET", "HEAD")
        policy = self if resend else _NO_RETRY
        return Retry.increment(policy, method, url, response, error, _pool, _stacktrace)


#: What requests does by default: no retry of any kind.
_NO_RETRY = Retry(0, read=False)
#: One resend, and only of a request whose connection broke: never for a status (a 429 or
#: 503 with Retry-After is the retry wrapper's to wait for).
_RESEND = _DroppedConnectionRetry(
    total=1, connect=0, read=1, redirect=0, status=0, other=0, respect_retry_after_header=False
)


class _Session(AuthorizedSession):
    """Requests to the endpoint verified with option ``ca_file``. requests lets
    ``REQUESTS_CA_BUNDLE`` win over a session's own ``verify``, but not over a request's;
    the credentials' token requests (to Google) keep the system's CAs."""

    def __init__(self, credentials: Any, ca: str) -> None:
        super().__init__(credentials)  # type: ignore[no-untyped-call]
        self._ca = ca

    def request(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("verify", self._ca)
        return super().request(*args, **kwargs)  # type: ignore[no-untyped-call]


def open(location: Location) -> GCSStorage:
    endpoint = location.options.get("endpoint") or None
    project = option(location, "project", "GOOGLE_CLOUD_PROJECT")
    ca = ca_file(location)
    credentials: Any
    if option_bool(location, "anonymous"):
        if location.options.get("credentials_file"):
            raise InvalidLocation(
                location.url, "options anonymous and credentials_file go against each other"
            )
        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    else:
        path = option(location, "credentials_file", "GOOGLE_APPLICATION_CREDENTIALS")
        try:
            if path:
                credentials, found = google.auth.load_credentials_from_file(  # type: ignore[no-untyped-call]
                    path, scopes=_SCOPES
                )
            else:
                credentials, found = google.auth.default(scopes=_SCOPES)
        except gauth.DefaultCredentialsError as exc:
            where = "the file named by credentials_file" if path else "the environment"
            raise PermissionDenied(
                location.url,
                f"no usable GCS credentials in {where} ({type(exc).__name__}): set option "
                "credentials_file (or GOOGLE_APPLICATION_CREDENTIALS) to a readable "
                "credentials JSON, or anonymous=true for an emulator",
            ) from exc
        project = project or found
    threshold = option_int(
        location, "multipart_threshold", MULTIPART_THRESHOLD, minimum=_CHUNK_UNIT
    )
    # requests' default pool (10) is smaller than the thread pools above us use; a full pool
    # drops connections and logs a warning per request.
    session = _Session(credentials, ca) if ca else AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
    for scheme in ("https://", "http://"):
        session.mount(
            scheme, HTTPAdapter(pool_connections=4, pool_maxsize=_POOL, max_retries=_RESEND)
        )
    client = storage.Client(
        project=project or "safehold",  # only bucket-level calls need it; we make none
        credentials=credentials,
        client_options={"api_endpoint": endpoint} if endpoint else None,
        _http=session,
    )
    _without_bucket_metadata(client)
    timeouts = option_timeouts(location)
    return GCSStorage(
        location,
        client,
        endpoint=redact_endpoint(endpoint) if endpoint else "https://storage.googleapis.com",
        multipart_threshold=threshold - threshold % _CHUNK_UNIT,
        timeout=timeouts,
    )


def _without_bucket_metadata(client: storage.Client) -> None:
    """Turn off the client's bucket metadata cache (google-cloud-storage 3.17 and later).

    On its first call about an object, the client starts a thread that reads the bucket's
    metadata (``GET /storage/v1/b/BUCKET``), for OpenTelemetry span attributes Safehold
    does not record. That is one more request per process, on the session's connections,
    from a thread nobody waits for; and it asks for ``storage.buckets.get``, which an
    object-level role (the least privilege docs/storage.md asks for) does not grant. The
    library's switch is an environment variable
    (``DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA``); a provider must not change the
    process's environment, and every use of the cache is skipped when it is None."""
    if getattr(client, "_bucket_metadata_cache", None) is not None:
        client._bucket_metadata_cache = None


class GCSStorage(ObjectStore):
    """Objects under ``prefix/`` in one bucket. An object lock needs a bucket with object
    retention enabled (``gcloud storage buckets create --enable-per-object-retention``)."""

    lock_mode_names: ClassVar[Mapping[str, str]] = {
        "governance": "Unlocked",
        "compliance": "Locked",
    }
    connections: ClassVar[tuple[str, ...]] = ("_client", "_bucket")

    def __init__(
        self,
        location: Location,
        client: storage.Client,
        *,
        endpoint: str,
        multipart_threshold: int,
        timeout: tuple[float, float],
    ) -> None:
        super().__init__(location, endpoint=endpoint, multipart_threshold=multipart_threshold)
        self.bucket_name = location.bucket
        self._timeout = timeout
        self._client = client
        self._bucket = client.bucket(location.bucket)

    def _blob(self, name: str, size: int = 0) -> storage.Blob:
        chunk = self.multipart_threshold if size > self.multipart_threshold else None
        return self._bucket.blob(self._key(name), chunk_size=chunk)

    def _read(self, name: str, offset: int, length: int | None) -> bytes:
        blob = self._blob(name)
        end = None if length is None else offset + length - 1
        try:
            data: bytes = blob.download_as_bytes(
                start=offset or None, end=end, retry=None, timeout=self._timeout
            )
        except gx.RequestRangeNotSatisfiable:  # the object exists; the range starts past its end
            return b""
        except Exception as exc:  # translated, never swallowed
            raise self._error(exc, name, "get") from exc
        return data

    def stat(self, name: str) -> ObjectInfo:
        key = self._key(name)
        try:
            found = self._bucket.get_blob(key, retry=None, timeout=self._timeout)
        except Exception as exc:  # translated, never swallowed
            raise self._error(exc, name, "stat") from exc
        if found is None:
            raise NotFound(self.location, "no such object (or no such bucket)", name=name)
        return ObjectInfo(name, int(found.size or 0), found.updated)

    def _list(self, prefix: str) -> Iterator[tuple[str, int, datetime | None]]:
        try:
            blobs = self._client.list_blobs(
                self.bucket_name,
                prefix=prefix,
                page_size=self.page_size,
                retry=None,
                timeout=self._timeout,
            )
            for blob in blobs:
                yield blob.name, int(blob.size or 0), blob.updated
        except gx.NotFound as exc:
            raise self._missing_bucket(None) from exc
        except Exception as exc:  # translated, never swallowed
            raise self._error(exc, None, "list") from exc

    def delete(self, name: str) -> None:
        try:
            self._blob(name).delete(retry=None, timeout=self._timeout)
        except gx.NotFound:
            return
        except gx.Forbidden as exc:
            if self.object_lock is not None:  # retention or a hold: 403 until it expires
                raise ObjectLocked(
                    self.location,
                    "the object is under a GCS retention or hold that has not expired",
                    name=name,
                ) from exc
            raise self._error(exc, name, "delete") from exc
        except Exception as exc:  # translated, never swallowed
            raise self._error(exc, name, "delete") from exc

    def _copy_within(self, origin: ObjectStore, name: str) -> bool:
        """objects.rewrite from ``origin``'s bucket at the same endpoint (several calls for
        a large or cross-location object)."""
        assert isinstance(origin, GCSStorage)
        if origin.endpoint != self.endpoint:
            return False
        target = self._blob(name)
        source = self._client.bucket(origin.bucket_name).blob(origin.prefix + name)
        token: str | None = None
        try:
            while True:
                token, _, _ = target.rewrite(source, token=token, retry=None, timeout=self._timeout)
                if token is None:
                    return True
        except (gx.Forbidden, gx.MethodNotImplemented):
            return False
        except Exception as exc:  # translated like every other call, never swallowed
            raise self._error(exc, name, "copy") from exc

    def close(self) -> None:
        self._client.close()

    def check_object_lock(self) -> None:
        try:
            bucket = self._client.get_bucket(self.bucket_name, retry=None, timeout=self._timeout)
        except gx.NotFound as exc:
            raise self._missing_bucket(None) from exc
        except Exception as exc:  # translated, never swallowed
            raise self._error(exc, None, "inspect") from exc
        if bucket.object_retention_mode != "Enabled":
            raise ObjectLockUnsupported(
                self.location,
                f"bucket {self.bucket_name!r} does not have object retention enabled, so "
                "objects cannot be locked: create the bucket with it (gcloud storage buckets "
                f"create gs://{self.bucket_name} --enable-per-object-retention); it cannot be "
                "turned on for an existing bucket; docs/immutability.md",
            )

    # -- uploads
    def _upload(self, name: str, body: Body, *, create: bool) -> None:
        data = body_bytes(body)  # one request: the client would read a file whole anyway
        blob = self._blob(name, len(data))
        lock = self._lock_for(name)
        if lock is not None:
            blob.retention.mode, blob.retention.retain_until_time = lock
        try:
            blob.upload_from_string(
                data,
                content_type="application/octet-stream",
                if_generation_match=0 if create else None,
                retry=None,
                timeout=self._timeout,
            )
        except gx.PreconditionFailed as exc:
            if create:
                raise AlreadyExists(
                    self.location, "an object of this name exists", name=name
                ) from exc
            raise self._error(exc, name, "put") from exc
        except gx.NotFound as exc:  # an upload only 404s when its bucket is missing
            raise self._missing_bucket(name) from exc
        except Exception as exc:  # translated, never swallowed
            raise self._error(exc, name, "create" if create else "put") from exc

    # -- errors
    def _missing_bucket(self, name: str | None) -> NotFound:
        return NotFound(
            self.location,
            f"bucket {self.bucket_name!r} does not exist at {self.endpoint}: create it, or "
            "check the bucket in the URL and the endpoint option",
            name=name,
        )

    def _error(self, exc: Exception, name: str | None, op: str) -> StorageError:
        where = f"at {self.endpoint}"
        kind = type(exc).__name__
        untrusted = untrusted_certificate(self.location, exc, self.endpoint, name)
        if untrusted is not None:
            return untrusted
        if isinstance(exc, gx.NotFound):
            return NotFound(self.location, "no such object (or no such bucket)", name=name)
        if isinstance(exc, gx.Forbidden | gx.Unauthorized | gauth.RefreshError):
            return PermissionDenied(
                self.location,
                f"{op} denied ({kind}) {where}: check the credentials (credentials_file or "
                "GOOGLE_APPLICATION_CREDENTIALS), that they are not expired, and that they may "
                f"{op} objects in bucket {self.bucket_name!r}",
                name=name,
            )
        if isinstance(exc, gx.TooManyRequests | gx.ServerError):
            return TransientError(self.location, f"{op} failed ({kind}) {where}", name=name)
        if isinstance(exc, DataCorruption):
            return TransientError(
                self.location, f"{op}: checksum mismatch in transit {where}", name=name
            )
        if isinstance(
            exc,
            requests.ConnectionError | requests.Timeout | gauth.TransportError | ConnectionError,
        ):
            return TransientError(
                self.location,
                f"cannot reach the GCS endpoint {self.endpoint} ({kind}): check the endpoint "
                "option and that the server is running and reachable",
                name=name,
            )
        if isinstance(exc, gx.GoogleAPICallError):
            return PermanentError(self.location, f"{op} failed ({kind}) {where}", name=name)
        if isinstance(exc, StorageError):
            return exc
        return PermanentError(self.location, f"{op} failed ({kind}) {where}", name=name)
