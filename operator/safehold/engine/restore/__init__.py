"""Restore: a snapshot (or selected paths of it) into a directory, and the check that reads
it back (``restore --verify``).

One module per concern:

- :mod:`.run`: :func:`restore_snapshot`, the entry point (how many processes, the selection,
  the verification after);
- :mod:`.options`: :class:`RestoreOptions`, :class:`RestoreResult`;
- :mod:`.select`: ``--include``/``--exclude``, planned before anything is written;
- :mod:`.state`: what one restore process holds (open directories, pools, metadata setters);
- :mod:`.write`: a file, the one way it is restored (its chunks planned, fetched pack by pack
  and written);
- :mod:`.walk`: the snapshot's trees walked into the target (directories, symlinks, special
  files, files handed to :mod:`.write`);
- :mod:`.finish`: what needs every file (hard links, directories' metadata, the parts'
  results);
- :mod:`.parts`: one restore split over several processes (a measured speed win for many
  small files);
- :mod:`.safe_fs`: file system operations that stay inside the target;
- :mod:`.check`: :func:`verify_restored`, every restored entry read back and checked.

A restore stays inside its target, whatever the target already holds and whatever the
snapshot says, and it resumes: a file's metadata is set last, so a second run after a crash
skips the complete files and redoes the rest.
"""

from __future__ import annotations

from safehold.engine.restore.check import RestoreCheck, verify_restored
from safehold.engine.restore.options import RestoreOptions, RestoreResult
from safehold.engine.restore.run import restore_snapshot
from safehold.engine.restore.select import NothingSelected, Selection, Unmatched, plan_selection

__all__ = [
    "NothingSelected",
    "RestoreCheck",
    "RestoreOptions",
    "RestoreResult",
    "Selection",
    "Unmatched",
    "plan_selection",
    "restore_snapshot",
    "verify_restored",
]
