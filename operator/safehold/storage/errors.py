"""The errors every storage provider raises, and nothing else.

Providers translate their SDK's exceptions into these, so the layers above never
see a boto3, google or azure exception. Every message names the location (its URL,
never a credential) and says what to check.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "CertificateNotTrusted",
    "InvalidLocation",
    "MissingExtra",
    "NotFound",
    "ObjectLockUnsupported",
    "ObjectLocked",
    "PermanentError",
    "PermissionDenied",
    "StorageError",
    "TransientError",
]


class StorageError(Exception):
    """Base class: an operation on ``location`` failed.

    ``location`` is the redacted URL of the storage (no secrets); ``name`` is the
    object name the operation was about, when there was one.
    """

    def __init__(self, location: str, message: str, *, name: str | None = None) -> None:
        self.location = location
        self.name = name
        #: The message without the location and name in front.
        self.message = message
        where = f"{location}: {name}" if name else location
        super().__init__(f"{where}: {message}")


class NotFound(StorageError):
    """The object (or the bucket/container/directory) does not exist."""


class AlreadyExists(StorageError):
    """``create`` found an object of that name: someone else created it first."""


class PermissionDenied(StorageError):
    """The credentials are wrong, expired, or lack the right for this operation."""


class TransientError(StorageError):
    """A failure worth retrying: throttling, 5xx, timeouts, connection resets."""


class PermanentError(StorageError):
    """A failure that retrying will not fix (bad request, misconfiguration)."""


class CertificateNotTrusted(PermanentError):
    """The server's TLS certificate did not verify: no trusted CA signs it (option
    ``ca_file`` names the CA of a private one), or it names another host."""


class InvalidLocation(StorageError):
    """The location URL or its options cannot name a storage (unknown scheme, bad form)."""


class MissingExtra(StorageError):
    """The provider's SDK is not installed; the message names the extra to install."""


class ObjectLocked(StorageError):
    """The server refused to delete (or replace) an object whose lock has not expired.

    Raised by a delete on an object under S3 Object Lock, a GCS retention or hold, or an
    Azure immutability policy. Not retried: only time (or an administrator) lifts it.
    """


class ObjectLockUnsupported(StorageError):
    """An object lock was asked of a provider that cannot enforce one (``file://``)."""
