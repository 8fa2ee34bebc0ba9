"""Read an exported tree back out of a snapshot, and compare two of them.

A resource snapshot is an ordinary directory snapshot whose top directory is
``resources``; it is restored into a temporary directory and read from there, so
the restore and diff commands share the engine's one restore path (and its checks).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from safehold.engine.resources_apply import Manifest, read_tree
from safehold.engine.resources_export import TREE_ROOT
from safehold.engine.restore import RestoreOptions, restore_snapshot
from safehold.repo import Repository
from safehold.repo.snapshot import Snapshot

__all__ = [
    "NotAResourceSnapshot",
    "ResourceDiff",
    "diff_trees",
    "snapshot_manifests",
    "snapshot_tree",
]


class NotAResourceSnapshot(Exception):
    """The snapshot has no ``resources`` tree."""


@contextlib.contextmanager
def snapshot_tree(repo: Repository, snap: Snapshot) -> Iterator[str]:
    """The snapshot's exported tree, restored into a temporary directory."""
    with tempfile.TemporaryDirectory(
        prefix="safehold-resources-", dir=os.environ.get("SAFEHOLD_TMPDIR")
    ) as tmp:
        restore_snapshot(repo, snap, tmp, RestoreOptions(includes=[TREE_ROOT]))
        root = os.path.join(tmp, TREE_ROOT)
        if not os.path.isdir(root):
            raise NotAResourceSnapshot(
                f"snapshot {snap.id[:12]} ({snap.source}) holds no resource manifests "
                f"(no top-level {TREE_ROOT!r} directory): pick a snapshot made by export-resources"
            )
        yield root


def snapshot_manifests(repo: Repository, snap: Snapshot) -> list[Manifest]:
    with snapshot_tree(repo, snap) as root:
        return read_tree(root)


@dataclass
class ResourceDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, str] = field(default_factory=dict)  # path -> unified diff
    unchanged: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": sorted(self.changed),
            "unchanged": self.unchanged,
        }


def _files(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, encoding="utf-8") as fh:
                out[os.path.relpath(path, root)] = fh.read()
    return out


def diff_trees(old_root: str, new_root: str, *, secrets: bool = False) -> ResourceDiff:
    """What changed between two exported trees. Secret contents are never shown: a
    changed Secret is reported by path only, unless ``secrets``."""
    old, new = _files(old_root), _files(new_root)
    result = ResourceDiff()
    result.added = sorted(set(new) - set(old))
    result.removed = sorted(set(old) - set(new))
    for path in sorted(set(old) & set(new)):
        if old[path] == new[path]:
            result.unchanged += 1
            continue
        if "/core/Secret/" in path and not secrets:
            result.changed[path] = "(Secret: contents not shown)\n"
            continue
        result.changed[path] = "".join(
            difflib.unified_diff(
                old[path].splitlines(keepends=True),
                new[path].splitlines(keepends=True),
                f"a/{path}",
                f"b/{path}",
            )
        )
    return result
