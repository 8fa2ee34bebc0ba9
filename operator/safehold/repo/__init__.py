"""The repository format: chunks, packs, index, trees, snapshots, keys and locks.

Normative description: ``docs/design/repository-format.md``. The engine uses
:class:`Repository` to open a repository and :class:`BlobWriter` to add blobs.

The names here load their module on first use (PEP 562 ``__getattr__``): reading a
repository (restore) never loads the chunker and the blob writer that only backup needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safehold._lazy import lazy_attributes

if TYPE_CHECKING:
    from safehold.repo.chunker import Chunker
    from safehold.repo.config import FORMAT_VERSION, ChunkerParams, Config
    from safehold.repo.crypto import MasterKeys
    from safehold.repo.errors import (
        CorruptObject,
        LockConflict,
        NoSuchSnapshot,
        RepositoryError,
        RepositoryExists,
        RepositoryNotFound,
        UnsupportedRepository,
        WrongPassword,
    )
    from safehold.repo.layout import pack_object_name
    from safehold.repo.locks import LockInfo, RepositoryLock, list_locks, unlock
    from safehold.repo.pack import BLOB_DATA, BLOB_TREE, BlobEncoder
    from safehold.repo.repository import Repository
    from safehold.repo.snapshot import SNAPSHOT_TYPES, Snapshot, check_meta
    from safehold.repo.tree import Node, decode_tree, encode_tree
    from safehold.repo.writer import BlobWriter

__all__ = [
    "BLOB_DATA",
    "BLOB_TREE",
    "FORMAT_VERSION",
    "SNAPSHOT_TYPES",
    "BlobEncoder",
    "BlobWriter",
    "Chunker",
    "ChunkerParams",
    "Config",
    "CorruptObject",
    "LockConflict",
    "LockInfo",
    "MasterKeys",
    "NoSuchSnapshot",
    "Node",
    "Repository",
    "RepositoryError",
    "RepositoryExists",
    "RepositoryLock",
    "RepositoryNotFound",
    "Snapshot",
    "UnsupportedRepository",
    "WrongPassword",
    "check_meta",
    "decode_tree",
    "encode_tree",
    "list_locks",
    "pack_object_name",
    "unlock",
]

__getattr__ = lazy_attributes(
    __name__,
    globals(),
    {
        "chunker": ("Chunker",),
        "config": ("FORMAT_VERSION", "ChunkerParams", "Config"),
        "crypto": ("MasterKeys",),
        "errors": (
            "CorruptObject",
            "LockConflict",
            "NoSuchSnapshot",
            "RepositoryError",
            "RepositoryExists",
            "RepositoryNotFound",
            "UnsupportedRepository",
            "WrongPassword",
        ),
        "locks": ("LockInfo", "RepositoryLock", "list_locks", "unlock"),
        "pack": ("BLOB_DATA", "BLOB_TREE", "BlobEncoder"),
        "layout": ("pack_object_name",),
        "repository": ("Repository",),
        "snapshot": ("SNAPSHOT_TYPES", "Snapshot", "check_meta"),
        "tree": ("Node", "decode_tree", "encode_tree"),
        "writer": ("BlobWriter",),
    },
)
