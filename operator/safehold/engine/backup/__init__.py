"""Backup: a directory tree (or a stream) into a snapshot.

- :mod:`.options`: what a backup is asked (:class:`BackupOptions`) and returns;
- :mod:`.run`: the entry points :func:`backup_paths` and :func:`backup_stream`: the parent
  snapshot, the pipeline, then the snapshot object;
- :mod:`.prescan`: an lstat walk beside the backup that counts the ETA's totals, when
  there is a progress display and no parent to estimate them from;
- :mod:`.pipeline`: the parts below wired together (see its docstring);
- :mod:`.walk`: the one scope-aware walk, of the backup and of the ETA's pre-scan;
- :mod:`.scope`: what include/exclude patterns keep of a directory;
- :mod:`.meta`: a node's metadata from an lstat;
- :mod:`.read`: reading files (small ones read ahead, big ones in their own threads);
- :mod:`.chunks`: the chunk pool (hash, dedup, compress, seal) and its byte budget;
- :mod:`.pending`: a file's content until its chunk ids are known;
- :mod:`.trees`: the tree thread, which stores directories in post-order;
- :mod:`.counts`: the summary's counts and the errors;
- :mod:`.shares`: worker processes walking directories the main walk hands out, their
  blobs packed by the main process's one writer; :mod:`.worker`: a worker's side.
"""

from __future__ import annotations

from safehold.engine.backup.options import BackupError, BackupOptions, BackupResult
from safehold.engine.backup.run import backup_paths, backup_stream

__all__ = [
    "BackupError",
    "BackupOptions",
    "BackupResult",
    "backup_paths",
    "backup_stream",
]
