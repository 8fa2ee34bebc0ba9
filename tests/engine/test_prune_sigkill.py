"""SIGKILL a real prune process at more than 20 points spread over its phases (reading,
repacking, writing the index, deleting index objects, deleting packs): each time the
repository verifies clean, the next prune completes, and every kept snapshot restores
byte for byte.

The kill points are exact: the prune process runs with a storage wrapper that sends
itself SIGKILL just before its Nth write or delete (or its Nth read, for the reading
phase). A first, unkilled run on a copy counts the writes and deletes, so the points
cover the whole run whatever the data.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.engine.forget import forget_snapshots
from safehold.engine.prune import PruneOptions, prune_repository
from safehold.engine.retention import RetentionPolicy
from safehold.repo import Repository
from safehold.storage import open_storage

PASSWORD = "correct horse battery staple"  # tests/engine/conftest.py's
KILL_POINTS = 22

# Runs prune in its own process; SAFEHOLD_TEST_KILL = "write:N" or "read:N" kills it
# (SIGKILL, no cleanup of any kind) just before the Nth mutating or reading call.
DRIVER = r"""
import os, signal, sys
from datetime import timedelta
from safehold.engine.prune import PruneOptions, prune_repository
from safehold.repo import Repository
from safehold.storage import open_storage
from safehold.storage.wrappers.base import ForwardingStorage

kind, nth = os.environ["SAFEHOLD_TEST_KILL"].split(":")
nth = int(nth)
calls = {"n": 0}

class Killer(ForwardingStorage):
    def _tick(self, op):
        if op == kind:
            calls["n"] += 1
            if calls["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
    def put(self, name, data):
        self._tick("write"); super().put(name, data)
    def create(self, name, data):
        if not name.startswith("locks/"):
            self._tick("write")
        super().create(name, data)
    def delete(self, name):
        if not name.startswith("locks/"):
            self._tick("write")
        super().delete(name)
    def get(self, name, offset=0, length=None):
        self._tick("read"); return super().get(name, offset, length)

storage = Killer(open_storage(sys.argv[1]))
repo = Repository.open(storage, sys.argv[2])
report = prune_repository(repo, PruneOptions(grace=timedelta(0), max_unused=0))
print("finished", calls["n"])
"""


def _record_writes(repo_dir: Path) -> list[str]:
    """The writes and deletes of an unkilled prune (locks aside), as "create data", ..."""
    from safehold.storage.wrappers.base import ForwardingStorage

    seen: list[str] = []

    class Recording(ForwardingStorage):
        def create(self, name: str, data: bytes) -> None:
            if not name.startswith("locks/"):
                seen.append(f"create {name.split('/')[0]}")
            super().create(name, data)

        def delete(self, name: str) -> None:
            if not name.startswith("locks/"):
                seen.append(f"delete {name.split('/')[0]}")
            super().delete(name)

    repo = Repository.open(Recording(open_storage(repo_dir.as_uri())), PASSWORD)
    prune_repository(repo, PruneOptions(grace=timedelta(0), max_unused=0))
    return seen


def _tree(root: Path, v: int, shared: bytes) -> Path:
    tree = root / f"v{v}"
    (tree / "dir").mkdir(parents=True)
    (tree / "shared.bin").write_bytes(shared)
    (tree / f"own-{v}.bin").write_bytes(os.urandom(250_000))
    for i in range(12):
        body = os.urandom(3000) if i % 3 == v % 3 else b"stable %d" % i
        (tree / "dir" / f"f{i}").write_bytes(body)
    return tree


@pytest.mark.slow
def test_sigkill_at_many_points_of_a_prune_leaves_a_valid_repository(
    tmp_path: Path, repo_factory: Callable[..., Repository]
) -> None:
    base = tmp_path / "base"
    repo = repo_factory(base, pack_size=32 * 1024)
    shared = os.urandom(200_000)
    trees, ids = [], []
    for v in range(8):
        tree = _tree(tmp_path / "src", v, shared)
        trees.append(tree)
        ids.append(backup_paths(repo, [str(tree)], BackupOptions(source="vol")).snapshot.id)
    forget_snapshots(repo, RetentionPolicy(keep_last=2))
    kept = {ids[6]: trees[6], ids[7]: trees[7]}

    probe = tmp_path / "probe"
    shutil.copytree(base, probe)
    writes = _record_writes(probe)
    phases = ["create data", "create index", "delete index", "delete data"]
    assert [p for p in phases if p in writes] == phases, writes
    assert len(writes) >= KILL_POINTS, f"a prune of this repository makes only {writes}"
    # Two points in the reading phase; the first and last write of every phase, and the
    # rest spread evenly over all writes and deletes.
    chosen = {1 + writes.index(p) for p in phases}
    chosen |= {len(writes) - writes[::-1].index(p) for p in phases}
    step = 0
    while len(chosen) < KILL_POINTS - 2:
        chosen.add(1 + round(step * (len(writes) - 1) / (KILL_POINTS - 3)))
        step += 1
    points = ["read:2", "read:6"] + [f"write:{n}" for n in sorted(chosen)]
    assert len(points) >= 20

    for n, point in enumerate(points):
        work = tmp_path / f"kill-{n}"
        shutil.copytree(base, work)
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER, work.as_uri(), PASSWORD],
            env={**os.environ, "SAFEHOLD_TEST_KILL": point},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == -signal.SIGKILL, f"{point}: {proc.stdout} {proc.stderr}"
        # The process is dead, its lock left behind: the repository must verify clean.
        opened = Repository.open(open_storage(work.as_uri()), PASSWORD)
        report = verify_repository(opened, read_data_percent=100 if n % 4 == 0 else None)
        assert report.ok, f"kill at {point}: {report.summary()}"
        # The next prune completes (the dead process's lock is stale: same host, no pid).
        finished = prune_repository(opened, PruneOptions(grace=timedelta(0), max_unused=0))
        assert not finished.deferred
        final = Repository.open(open_storage(work.as_uri()), PASSWORD)
        assert verify_repository(final, read_data_percent=100).ok, point
        again = prune_repository(final, PruneOptions(grace=timedelta(0), max_unused=0))
        assert (again.packs_deleted, again.packs_repacked, again.unindexed_deleted) == (0, 0, 0)
        assert sorted(s.id for s in final.snapshots()) == sorted(kept)
        if n % 3 == 0 or n == len(points) - 1:
            for snap_id, tree in kept.items():
                out = tmp_path / f"out-{n}-{snap_id[:6]}"
                result = restore_snapshot(final, final.find_snapshot(snap_id), str(out))
                assert result.errors == []
                for path in tree.rglob("*"):
                    if path.is_file():
                        restored = out / tree.name / path.relative_to(tree)
                        assert restored.read_bytes() == path.read_bytes(), (point, path)
        shutil.rmtree(work)
