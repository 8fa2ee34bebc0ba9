"""What a backup keeps of a tree under include/exclude patterns.

The walk (:mod:`.walk`), both the backup's and the ETA's pre-scan, keeps a directory's
entries through :func:`in_scope`, so the totals count exactly what the backup stores.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from safehold.engine.patterns import PathFilter

__all__ = ["ALL", "NONE", "SOME", "in_scope", "is_dir", "select_entries"]

#: What the patterns leave of a directory's contents (with a PathFilter only).
ALL = 0  # everything not excluded
SOME = 1  # what include patterns match (and directories leading to it)
NONE = 2  # nothing: the directory is stored empty, without reading it


def select_entries(
    filt: PathFilter, prefix: str, scope: int, names: Iterable[tuple[str, bool]]
) -> list[tuple[int, int]]:
    """The entries of a directory (``(name, is_dir)``) that the patterns keep, as
    ``(index, scope of a kept directory)``; ``prefix`` is the directory's path relative
    to the backed-up root plus ``/`` (empty at the root)."""
    kept: list[tuple[int, int]] = []
    for k, (name, is_dir) in enumerate(names):
        path = prefix + name
        if filt.excluded(path):
            continue
        if not is_dir:
            if scope == ALL or filt.included(path):
                kept.append((k, ALL))
            continue
        if scope == SOME and not filt.includes_all_under(path):
            if filt.may_include_under(path) and not filt.excludes_all_under(path):
                kept.append((k, SOME))
            continue
        kept.append((k, NONE if filt.excludes_all_under(path) else ALL))
    return kept


def is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def in_scope(
    entries: Iterable[os.DirEntry[str]], filt: PathFilter | None, prefix: str, scope: int
) -> Iterator[tuple[os.DirEntry[str], int]]:
    """The entries of a directory in scope ``scope`` that the walk stores, each with the
    scope of its contents (:func:`select_entries`); without patterns every entry, streamed."""
    if filt is None:
        for entry in entries:
            yield entry, ALL
        return
    listed = list(entries)
    for k, child in select_entries(filt, prefix, scope, ((e.name, is_dir(e)) for e in listed)):
        yield listed[k], child
