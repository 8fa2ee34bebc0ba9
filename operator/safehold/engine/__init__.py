"""The engine: the operations on top of ``repo``, one module or package each.

``backup/`` (a tree or a stream into a snapshot), ``restore/`` (a snapshot into a directory,
and the check that reads it back), ``verify``, ``forget``, ``prune``, ``replicate/``,
``repair/`` (index and snapshots), ``inspect/`` (``ls``, ``find``, ``diff``, ``cat``);
``cluster/`` (Kubernetes manifests exported into snapshots and applied back) and
``databases/`` (logical dumps in and out, and their test restores); shared helpers in
``patterns``, ``progress``, ``retention`` and ``tuning``.

Operations report progress through a callback of :class:`ProgressEvent` and
return result objects whose ``summary()`` is what the CLI prints as JSON.

The names here load their module on first use (PEP 562 ``__getattr__``): a command
imports only the operations it runs, so ``safehold restore`` never loads the chunker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safehold._lazy import lazy_attributes

if TYPE_CHECKING:
    from safehold.engine.backup import (
        BackupError,
        BackupOptions,
        BackupResult,
        backup_paths,
        backup_stream,
    )
    from safehold.engine.progress import ProgressCallback, ProgressEvent, ProgressTracker
    from safehold.engine.restore import (
        RestoreCheck,
        RestoreOptions,
        RestoreResult,
        restore_snapshot,
        verify_restored,
    )
    from safehold.engine.verify import VerifyReport, verify_repository, verify_snapshot

__all__ = [
    "BackupError",
    "BackupOptions",
    "BackupResult",
    "ProgressCallback",
    "ProgressEvent",
    "ProgressTracker",
    "RestoreCheck",
    "RestoreOptions",
    "RestoreResult",
    "VerifyReport",
    "backup_paths",
    "backup_stream",
    "restore_snapshot",
    "verify_repository",
    "verify_restored",
    "verify_snapshot",
]

__getattr__ = lazy_attributes(
    __name__,
    globals(),
    {
        "backup": (
            "BackupError",
            "BackupOptions",
            "BackupResult",
            "backup_paths",
            "backup_stream",
        ),
        "progress": ("ProgressCallback", "ProgressEvent", "ProgressTracker"),
        "restore": (
            "RestoreCheck",
            "RestoreOptions",
            "RestoreResult",
            "restore_snapshot",
            "verify_restored",
        ),
        "verify": ("VerifyReport", "verify_repository", "verify_snapshot"),
    },
)
