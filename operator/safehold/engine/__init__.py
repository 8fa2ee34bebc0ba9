"""The engine: one operation per module (backup, restore, verify), on top of ``repo``.

Operations report progress through a callback of :class:`ProgressEvent` and
return result objects whose ``summary()`` is what the CLI prints as JSON.
"""

from safehold.engine.backup import (
    BackupError,
    BackupOptions,
    BackupResult,
    backup_paths,
    backup_stream,
)
from safehold.engine.progress import ProgressCallback, ProgressEvent, ProgressTracker
from safehold.engine.restore import RestoreOptions, RestoreResult, restore_snapshot
from safehold.engine.verify import VerifyReport, verify_repository

__all__ = [
    "BackupError",
    "BackupOptions",
    "BackupResult",
    "ProgressCallback",
    "ProgressEvent",
    "ProgressTracker",
    "RestoreOptions",
    "RestoreResult",
    "VerifyReport",
    "backup_paths",
    "backup_stream",
    "restore_snapshot",
    "verify_repository",
]
