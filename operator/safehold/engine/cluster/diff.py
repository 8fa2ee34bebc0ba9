"""Compare two exported trees (restored out of snapshots by :mod:`.snapshot_tree`):
which manifests were added, removed or changed, with a unified diff of each change.
Secret contents are never shown unless asked for."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ResourceDiff", "diff_trees"]


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
