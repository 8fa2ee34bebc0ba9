"""Server-side copy between two storages of one provider: an optional capability.

Replication copies objects between two storages. When both are the same provider at the
same endpoint and account (S3 CopyObject, GCS objects.rewrite, Azure Copy Blob), the
service can copy an object without its bytes passing through this process.
:func:`server_side_copy` tries that and says whether it happened:

* True: the object ``name`` of ``source`` now exists under the same name in ``target``;
* False, having written nothing: no server-side path between these two (another provider,
  endpoint or account; credentials that may not read the source; an object lock the
  target must apply on write): the caller streams the bytes through ``get`` and
  ``create`` instead;
* a :class:`~safehold.storage.errors.StorageError` for any other failure
  (:class:`~safehold.storage.errors.NotFound` when the source object is missing).

A storage (a provider or a wrapper) may offer its own ``copy_from(source, name) -> bool``
with the same contract; it is used first. Otherwise this module copies for the three cloud
providers itself, through their SDK clients, so the providers stay as they are. A copy
replaces an object of that name at the target, which is harmless for content-addressed
objects: same name, same bytes. Callers verify the copy (replication reads it back and
checks its hash), since the bytes never passed through them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from safehold.storage.base import Storage
from safehold.storage.errors import StorageError, TransientError

__all__ = ["ServerSideCopy", "innermost", "server_side_copy"]

#: How long to wait for an asynchronous (Azure) copy to finish.
COPY_TIMEOUT_S = 600.0


@runtime_checkable
class ServerSideCopy(Protocol):
    """A storage that copies an object from another storage without streaming it."""

    def copy_from(self, source: Storage, name: str) -> bool: ...


def innermost(storage: Storage) -> Storage:
    """The provider under any stack of wrappers (each wrapper keeps it in ``inner``)."""
    for _ in range(32):
        inner = storage.__dict__.get("inner")
        if not isinstance(inner, Storage):
            break
        storage = inner
    return storage


def server_side_copy(source: Storage, target: Storage, name: str) -> bool:
    """Copy ``name`` from ``source`` to ``target`` in the service; False when not possible."""
    own = getattr(target, "copy_from", None)
    if callable(own):
        return bool(own(source, name))
    src, dst = innermost(source), innermost(target)
    if getattr(dst, "retention", None) is not None:
        return False  # the provider's own writes apply the object lock; a copy would not
    scheme = dst.location.split("://", 1)[0]
    if src.location.split("://", 1)[0] != scheme:
        return False
    copier = _COPIERS.get(scheme)
    return copier(src, dst, name) if copier is not None else False


def _s3(src: Any, dst: Any, name: str) -> bool:
    import botocore.exceptions as bce

    if src.endpoint != dst.endpoint:
        return False
    try:
        dst._client.copy_object(
            Bucket=dst.bucket,
            Key=dst._key(name),
            CopySource={"Bucket": src.bucket, "Key": src._key(name)},
        )
    except bce.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if status == 403 or code in ("AccessDenied", "EntityTooLarge", "NotImplemented"):
            return False
        raise _error(dst, exc, name) from exc
    except bce.BotoCoreError as exc:
        raise _error(dst, exc, name) from exc
    return True


def _gcs(src: Any, dst: Any, name: str) -> bool:
    import google.api_core.exceptions as gx

    if src.endpoint != dst.endpoint:
        return False
    target = dst._blob(name)
    origin = dst._client.bucket(src.bucket_name).blob(src.prefix + name)
    token: str | None = None
    try:
        while True:  # a large or cross-location rewrite takes several calls
            token, _, _ = target.rewrite(origin, token=token, retry=None, timeout=dst._timeout)
            if token is None:
                return True
    except (gx.Forbidden, gx.MethodNotImplemented):
        return False
    except Exception as exc:  # translated by the provider, never swallowed
        raise _error(dst, exc, name) from exc


def _azure(src: Any, dst: Any, name: str) -> bool:
    from azure.core.exceptions import AzureError, ClientAuthenticationError

    # Within one account the request's Shared Key authorises the source as well; another
    # account (or SAS credentials) would need a SAS on the source URL: stream instead.
    same_account = src._container.url.rsplit("/", 1)[0] == dst._container.url.rsplit("/", 1)[0]
    shared_key = type(dst._container.credential).__name__ in (
        "StorageSharedKeyCredential",
        "SharedKeyCredentialPolicy",
    )
    if not (same_account and shared_key):
        return False
    target = dst._container.get_blob_client(dst._key(name))
    origin = src._container.get_blob_client(src._key(name)).url
    try:
        status = target.start_copy_from_url(origin).get("copy_status")
        deadline = time.monotonic() + COPY_TIMEOUT_S
        while status == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)
            status = target.get_blob_properties().copy.status
    except ClientAuthenticationError:
        return False
    except AzureError as exc:
        if int(getattr(exc, "status_code", None) or 0) == 403:
            return False
        raise _error(dst, exc, name) from exc
    if status != "success":
        raise TransientError(dst.location, f"server-side copy ended as {status!r}", name=name)
    return True


def _error(dst: Any, exc: Exception, name: str) -> StorageError:
    """The provider's own translation of an SDK error (same messages as its other calls)."""
    translate: Callable[..., StorageError] = dst._error
    return translate(exc, name, "copy")


_COPIERS: dict[str, Callable[[Any, Any, str], bool]] = {"s3": _s3, "gs": _gcs, "azure": _azure}
