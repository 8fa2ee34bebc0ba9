"""Read an exported tree back out of a snapshot (:mod:`.diff` compares two of them).

A resource snapshot is an ordinary directory snapshot whose top directory is
``resources``; it is restored into a temporary directory and read from there, so
the restore and diff commands share the engine's one restore path (and its checks).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from safehold.engine.cluster.apply import Manifest, read_tree
from safehold.engine.cluster.export import TREE_ROOT
from safehold.engine.restore import NothingSelected, RestoreOptions, restore_snapshot
from safehold.repo import Repository
from safehold.repo.snapshot import Snapshot

__all__ = ["NotAResourceSnapshot", "snapshot_manifests", "snapshot_tree"]


class NotAResourceSnapshot(Exception):
    """The snapshot has no ``resources`` tree."""


@contextlib.contextmanager
def snapshot_tree(repo: Repository, snap: Snapshot) -> Iterator[str]:
    """The snapshot's exported tree, restored into a temporary directory."""
    with tempfile.TemporaryDirectory(
        prefix="safehold-resources-", dir=os.environ.get("SAFEHOLD_TMPDIR")
    ) as tmp:
        # the top-level directory only ("resources" alone would match at any depth)
        with contextlib.suppress(NothingSelected):  # said below, for what it means here
            restore_snapshot(repo, snap, tmp, RestoreOptions(includes=["/" + TREE_ROOT]))
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
