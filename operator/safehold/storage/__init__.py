"""The storage layer: objects at a location on a filesystem, S3, GCS or Azure Blob.

The public surface is this module: :func:`open_storage`, the :class:`Storage`
interface, what it stores (:data:`Body`: bytes or a :class:`FileBody`), :class:`ObjectInfo`
and the errors. See ``docs/storage.md``.
"""

from safehold.storage.base import ObjectInfo, Storage, close_stream
from safehold.storage.body import Body, FileBody, body_bytes
from safehold.storage.errors import (
    AlreadyExists,
    CertificateNotTrusted,
    InvalidLocation,
    MissingExtra,
    NotFound,
    ObjectLocked,
    ObjectLockUnsupported,
    PermanentError,
    PermissionDenied,
    StorageError,
    TransientError,
)
from safehold.storage.object_lock import LOCK_MODES, ObjectLock
from safehold.storage.registry import Location, open_storage, parse_location

__all__ = [
    "LOCK_MODES",
    "AlreadyExists",
    "Body",
    "CertificateNotTrusted",
    "FileBody",
    "InvalidLocation",
    "Location",
    "MissingExtra",
    "NotFound",
    "ObjectInfo",
    "ObjectLock",
    "ObjectLockUnsupported",
    "ObjectLocked",
    "PermanentError",
    "PermissionDenied",
    "Storage",
    "StorageError",
    "TransientError",
    "body_bytes",
    "close_stream",
    "open_storage",
    "parse_location",
]
