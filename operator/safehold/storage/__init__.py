"""The storage layer: objects at a location on a filesystem, S3, GCS or Azure Blob.

The public surface is this module: :func:`open_storage`, the :class:`Storage`
interface, :class:`ObjectInfo` and the errors. See ``docs/storage.md``.
"""

from safehold.storage.base import ObjectInfo, Storage, close_stream
from safehold.storage.errors import (
    AlreadyExists,
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
    "close_stream",
    "open_storage",
    "parse_location",
]
