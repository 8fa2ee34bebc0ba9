"""Backup: a directory tree (or a stream) into a snapshot.

- :mod:`.options`: what a backup is asked (:class:`BackupOptions`) and returns;
- :mod:`.run`: the entry points :func:`backup_paths` and :func:`backup_stream`: the parent
  snapshot, the pre-scan, the pipeline, then the snapshot object;
- :mod:`.pipeline`: the walk, the reads, the batches and the tree thread (see its docstring);
- :mod:`.scope`: what include/exclude patterns keep, shared by the walk and the pre-scan;
- :mod:`.read`: the readers the chunker pulls from.
"""

from __future__ import annotations

from safehold.engine.backup.options import BackupError, BackupOptions, BackupResult
from safehold.engine.backup.run import backup_paths, backup_stream

__all__ = ["BackupError", "BackupOptions", "BackupResult", "backup_paths", "backup_stream"]
