"""Looking inside snapshots: paths, listings, pattern searches, differences and contents.

Pure functions over a :class:`~safehold.repo.Repository` (or only its tree loader), for
the ``ls``, ``find``, ``diff`` and ``cat`` commands (docs/cli.md, "Inspection"):

* a **path** of a snapshot is written from its root, as ``ls`` shows it: ``/data/dir/f``
  (the root tree holds one node per backed-up path, format section 9); the leading ``/``
  may be left out, and ``.`` names are ignored. :func:`resolve` finds its node or raises
  :class:`NoSuchPath` naming the nearest existing paths;
* :func:`iter_entries` lists what a directory holds, one level or all below it;
* :func:`find_entries` yields the paths that match a pattern of the backup's pattern
  language (:mod:`safehold.engine.patterns`), not descending into directories that cannot
  hold a match;
* :func:`diff_trees` compares two trees by their ids alone: an unchanged subtree (same
  id) is skipped without being read, and no data blob is read;
* :func:`read_file` yields a file's bytes blob by blob, each blob authenticated and
  checked against its id (:meth:`Repository.read_blob`); :func:`write_tar` writes a
  directory as a tar stream;
* :class:`~safehold.engine.inspect.mountfs.SnapshotFS` (not imported here) is the
  read-only file system of ``mount``, built on the above.

Every walk is iterative (an explicit stack): trees thousands of levels deep work.
"""

from __future__ import annotations

from safehold.engine.inspect.contents import read_file, write_tar
from safehold.engine.inspect.diff import PREFIXES, Change, DiffTotals, diff_trees
from safehold.engine.inspect.paths import (
    NoSuchPath,
    cached_loader,
    entry_dict,
    filemode,
    find_entries,
    iter_entries,
    join,
    resolve,
    root_node,
    split_path,
    utc_time,
)

__all__ = [
    "PREFIXES",
    "Change",
    "DiffTotals",
    "NoSuchPath",
    "cached_loader",
    "diff_trees",
    "entry_dict",
    "filemode",
    "find_entries",
    "iter_entries",
    "join",
    "read_file",
    "resolve",
    "root_node",
    "split_path",
    "utc_time",
    "write_tar",
]
