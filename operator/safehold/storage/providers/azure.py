"""The Azure Blob Storage provider (azure-storage-blob): block blobs in one container.

Objects up to ``multipart_threshold`` go up in one Put Blob; larger ones as staged blocks
(random block ids, sent in parallel) committed by one Put Block List, which is when the blob
appears, so puts are atomic. ``create`` sends ``If-None-Match: *``; the loser gets 409/412
(:class:`AlreadyExists`).

The SDK's own retries are off (``retry_total=0``): retrying is the job of
:mod:`safehold.storage.wrappers.retry`. Credentials: ``connection_string``, or
``account_name`` with ``account_key`` or ``sas_token``, each falling back to the
``AZURE_STORAGE_*`` environment; an account with neither uses Microsoft Entra ID
(azure-identity's default chain: workload identity, managed identity, the Azure CLI).
See docs/storage.md.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

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
    option_int,
    option_timeouts,
    redact_endpoint,
)
from safehold.storage.registry import Location
from safehold.storage.tls import ca_file, untrusted_certificate

# azure-storage-blob imports azure-core's aiohttp transport whenever aiohttp is installed
# (kopf brings it into the image) for an isinstance check that only its async clients reach.
# That is aiohttp's whole import, for a transport this provider never uses: 0.18 s of every
# command (`snapshots` 0.75 -> 0.57 s, docs/performance.md "Azure start-up (session 13)").
# So aiohttp is hidden while the SDK loads, unless it is loaded already (the operator's
# process), and the check then sees no aiohttp transport, as it should.
_HIDE_AIOHTTP = "aiohttp" not in sys.modules
if _HIDE_AIOHTTP:
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # import aiohttp: ImportError
try:
    from azure.storage.blob import BlobServiceClient, ContainerClient, ImmutabilityPolicy
finally:
    if _HIDE_AIOHTTP:
        del sys.modules["aiohttp"]

__all__ = ["AzureStorage", "open"]

_UPLOAD_THREADS = 4
#: How long to wait for an asynchronous server-side copy (Copy Blob) to finish.
COPY_TIMEOUT_S = 600.0
_DENIED_CODES = {
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "AuthorizationResourceTypeMismatch",
    "AuthorizationServiceMismatch",
    "InsufficientAccountPermissions",
}

#: Error codes of a delete refused by an immutability policy or legal hold.
_IMMUTABLE_CODES = ("BlobImmutableDueToPolicy", "BlobImmutableDueToLegalHold")


def open(location: Location) -> AzureStorage:
    connect_timeout, read_timeout = option_timeouts(location)
    threshold = option_int(location, "multipart_threshold", MULTIPART_THRESHOLD)
    settings: dict[str, Any] = {
        "retry_total": 0,
        "connection_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "max_single_put_size": threshold,
        "max_block_size": threshold,
        "connection_verify": ca_file(location) or True,
    }
    endpoint = location.options.get("endpoint") or None
    connection_string = option(location, "connection_string", "AZURE_STORAGE_CONNECTION_STRING")
    try:
        if connection_string:
            service = BlobServiceClient.from_connection_string(connection_string, **settings)
        else:
            account = option(location, "account_name", "AZURE_STORAGE_ACCOUNT")
            key = option(location, "account_key", "AZURE_STORAGE_KEY")
            sas = option(location, "sas_token", "AZURE_STORAGE_SAS_TOKEN")
            if not endpoint and not account:
                raise InvalidLocation(
                    location.url,
                    "no Azure account: set option connection_string, or account_name (or "
                    "endpoint) with account_key or sas_token",
                )
            url = endpoint or f"https://{account}.blob.core.windows.net"
            credential: Any
            if key:
                if not account:
                    raise InvalidLocation(
                        location.url, "option account_key needs account_name as well"
                    )
                credential = {"account_name": account, "account_key": key}
            elif sas:
                credential = sas.lstrip("?")
            else:
                credential = _entra_credential(location)
            service = BlobServiceClient(url, credential=credential, **settings)
    except ValueError as exc:  # a malformed connection string, URL or key; never echo it
        raise InvalidLocation(
            location.url,
            "the Azure credentials or endpoint are malformed: check option connection_string "
            "(or account_name, account_key, sas_token and endpoint)",
        ) from exc
    return AzureStorage(
        location,
        service.get_container_client(location.bucket),
        endpoint=redact_endpoint(service.url),
        multipart_threshold=threshold,
    )


def _entra_reason(text: str) -> str:
    """The part of azure-identity's failure that says why: Entra ID's own error, else the
    first credential of the chain that was configured and failed (a TLS or network
    error), else that none was configured; without the troubleshooting links."""
    found = re.search(r"Microsoft Entra ID error '([^']{1,400})'", text)
    if found:
        return found.group(1)
    for name, why in re.findall(r"(\w+Credential): ([^\n]*)", text):
        if "unavailable" not in why and name.startswith(("Workload", "Managed")):
            return f"{name}: {why[:300]}"
    return (
        "no workload identity (AZURE_FEDERATED_TOKEN_FILE), managed identity or Azure CLI "
        "login was found"
    )


def _entra_credential(location: Location) -> Any:
    """Microsoft Entra ID, for an account given without a key or SAS: azure-identity's
    ``DefaultAzureCredential`` (Azure Workload Identity's token file, a managed identity,
    the Azure CLI's login, ...), which asks for a token at the first request."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise InvalidLocation(
            location.url,
            "no Azure key or SAS token, and azure-identity (for Microsoft Entra ID) is not "
            "installed: set option account_key or sas_token, or install safehold[azure]",
        ) from exc
    # azure-identity logs each failed attempt as a warning (to stderr, with links); the
    # storage error that follows says why, once (``AzureStorage._error``)
    logging.getLogger("azure.identity").setLevel(logging.ERROR)
    return DefaultAzureCredential()


class AzureStorage(ObjectStore):
    """Block blobs under ``prefix/`` in one container. An object lock needs a container (or
    account) with version-level immutability support enabled."""

    lock_mode_names: ClassVar[Mapping[str, str]] = {
        "governance": "Unlocked",
        "compliance": "Locked",
    }
    connections: ClassVar[tuple[str, ...]] = ("_container",)

    def __init__(
        self,
        location: Location,
        container: ContainerClient,
        *,
        endpoint: str,
        multipart_threshold: int,
    ) -> None:
        super().__init__(location, endpoint=endpoint, multipart_threshold=multipart_threshold)
        self.container_name = location.bucket
        self._container = container
        #: A Microsoft Entra ID token credential (no key, no SAS).
        self._entra = hasattr(container.credential, "get_token")

    def _read(self, name: str, offset: int, length: int | None) -> bytes:
        blob = self._key(name)
        try:
            stream = self._container.download_blob(
                blob,
                offset=offset if offset or length is not None else None,
                length=length,
                max_concurrency=_UPLOAD_THREADS,
            )
            data: bytes = stream.readall()
        except HttpResponseError as exc:
            if exc.status_code == 416:  # the blob exists; the range starts past its end
                return b""
            raise self._error(exc, name, "get") from exc
        except AzureError as exc:
            raise self._error(exc, name, "get") from exc
        return data

    def stat(self, name: str) -> ObjectInfo:
        try:
            props = self._container.get_blob_client(self._key(name)).get_blob_properties()
        except AzureError as exc:
            raise self._error(exc, name, "stat") from exc
        return ObjectInfo(name, int(props.size), props.last_modified)

    def _list(self, prefix: str) -> Iterator[tuple[str, int, datetime | None]]:
        try:
            blobs = self._container.list_blobs(
                name_starts_with=prefix, results_per_page=self.page_size
            )
            for blob in blobs:
                yield blob.name, int(blob.size), blob.last_modified
        except AzureError as exc:
            raise self._error(exc, None, "list") from exc

    def delete(self, name: str) -> None:
        try:
            self._container.delete_blob(self._key(name))
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                raise self._error(exc, name, "delete") from exc
        except AzureError as exc:
            if getattr(exc, "error_code", None) in _IMMUTABLE_CODES:
                raise ObjectLocked(
                    self.location,
                    "the blob is under an immutability policy or legal hold that has not expired",
                    name=name,
                ) from exc
            raise self._error(exc, name, "delete") from exc

    def _copy_within(self, origin: ObjectStore, name: str) -> bool:
        """Copy Blob from ``origin``'s container in the same account: the request's Shared
        Key or Entra ID token authorises the source as well; another account (or SAS
        credentials) would need a SAS on the source URL, so those stream instead, as does
        a copy the service refuses (403)."""
        assert isinstance(origin, AzureStorage)
        same_account = (
            origin._container.url.rsplit("/", 1)[0] == self._container.url.rsplit("/", 1)[0]
        )
        shared_key = type(self._container.credential).__name__ in (
            "StorageSharedKeyCredential",
            "SharedKeyCredentialPolicy",
        )
        if not (same_account and (shared_key or self._entra)):
            return False
        target = self._container.get_blob_client(self._key(name))
        source = origin._container.get_blob_client(origin._key(name)).url
        try:
            status = target.start_copy_from_url(source).get("copy_status")
            deadline = time.monotonic() + COPY_TIMEOUT_S
            while status == "pending" and time.monotonic() < deadline:
                time.sleep(0.05)
                status = target.get_blob_properties().copy.status
        except ClientAuthenticationError:
            return False
        except AzureError as exc:
            if int(getattr(exc, "status_code", None) or 0) == 403:
                return False
            raise self._error(exc, name, "copy") from exc
        if status != "success":
            raise TransientError(self.location, f"server-side copy ended as {status!r}", name=name)
        return True

    def close(self) -> None:
        self._container.close()

    def check_object_lock(self) -> None:
        try:
            props = self._container.get_container_properties()
        except AzureError as exc:
            raise self._error(exc, None, "inspect") from exc
        if not getattr(props, "immutable_storage_with_versioning_enabled", False):
            raise ObjectLockUnsupported(
                self.location,
                f"container {self.container_name!r} does not have version-level immutability "
                "support, so blobs cannot be locked: enable version-level immutability on the "
                "container (az storage container-rm create ... --enable-vlw, or on the storage "
                "account, with blob versioning on); docs/immutability.md",
            )

    # -- uploads
    def _lock_args(self, name: str) -> dict[str, Any]:
        lock = self._lock_for(name)
        if lock is None:
            return {}
        policy = ImmutabilityPolicy(expiry_time=lock[1], policy_mode=lock[0])
        return {"immutability_policy": policy}

    def _upload(self, name: str, body: Body, *, create: bool) -> None:
        data = body_bytes(body)  # one request: the client would read a file whole anyway
        blob = self._key(name)
        try:
            self._container.upload_blob(
                blob,
                data,
                length=len(data),
                overwrite=not create,  # False sends If-None-Match: * with the final request
                max_concurrency=_UPLOAD_THREADS,
                **self._lock_args(name),
            )
        except (ResourceExistsError, ResourceModifiedError) as exc:
            if create and getattr(exc, "error_code", None) in (
                "BlobAlreadyExists",
                "ConditionNotMet",
                None,
            ):
                raise AlreadyExists(
                    self.location, "an object of this name exists", name=name
                ) from exc
            raise self._error(exc, name, "create" if create else "put") from exc
        except AzureError as exc:
            raise self._error(exc, name, "create" if create else "put") from exc

    # -- errors
    def _error(self, exc: AzureError, name: str | None, op: str) -> StorageError:
        where = f"at {self.endpoint}"
        untrusted = untrusted_certificate(self.location, exc, self.endpoint, name)
        if untrusted is not None:
            return untrusted
        code = getattr(exc, "error_code", None) or ""
        status = int(getattr(exc, "status_code", None) or 0)
        if code == "ContainerNotFound":
            return NotFound(
                self.location,
                f"container {self.container_name!r} does not exist {where}: create it, or "
                "check the container in the URL and the account or endpoint option",
                name=name,
            )
        if isinstance(exc, ResourceNotFoundError) or status == 404:
            return NotFound(self.location, "no such object", name=name)
        if isinstance(exc, ClientAuthenticationError) and not status:
            # no response from the storage service: the credential got no token
            return PermissionDenied(
                self.location,
                f"{op} denied {where}: Microsoft Entra ID gave no token "
                f"({_entra_reason(str(exc))}): check the pod's workload identity (the "
                "ServiceAccount's azure.workload.identity/client-id and the identity's "
                "federated credential) or managed identity, or give an account_key or "
                "sas_token",
                name=name,
            )
        if self._entra and (code in _DENIED_CODES or status == 403):
            return PermissionDenied(
                self.location,
                f"{op} denied ({code or status}) {where}: the Microsoft Entra identity "
                f"may not {op} blobs in container {self.container_name!r}: give it the role "
                "Storage Blob Data Contributor on the container or account",
                name=name,
            )
        if isinstance(exc, ClientAuthenticationError) or code in _DENIED_CODES or status == 403:
            return PermissionDenied(
                self.location,
                f"{op} denied ({code or status}) {where}: check the account key, SAS token or "
                "connection string, that it is not expired, and that it may "
                f"{op} blobs in container {self.container_name!r}",
                name=name,
            )
        if isinstance(exc, ServiceRequestError | ServiceResponseError | IncompleteReadError):
            return TransientError(
                self.location,
                f"cannot reach the Azure endpoint {self.endpoint} ({type(exc).__name__}): "
                "check the endpoint or account option and that the server is running",
                name=name,
            )
        if status >= 500 or status in (408, 429) or code in ("ServerBusy", "OperationTimedOut"):
            return TransientError(
                self.location, f"{op} failed ({code or status}) {where}", name=name
            )
        return PermanentError(
            self.location, f"{op} failed ({code or type(exc).__name__}) {where}", name=name
        )
