"""SIGKILL a real ``repair index`` and ``repair snapshots`` process at many points of their
writes and deletes (as tests/engine/test_prune_sigkill.py does for prune): each time the
repository verifies as before or better (no damage that was not there before the repair
began), a rerun completes, its result is that of an unkilled repair, and a third run finds
nothing to do.

The kill points are exact: the repair runs with a storage wrapper that sends itself SIGKILL
just before its Nth write or delete (or Nth read). A first, unkilled run on a copy counts
the writes and deletes, so the points cover the whole run whatever the data.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.engine.repair import repair_index, repair_snapshots
from safehold.engine.verify import VerifyReport
from safehold.repo import BLOB_DATA, Repository, pack_object_name
from safehold.storage import open_storage

PASSWORD = "correct horse battery staple"  # tests/engine/conftest.py's
KILL_POINTS = 16

# SAFEHOLD_TEST_KILL = "write:N" or "read:N": SIGKILL just before the Nth mutating or
# reading call (locks aside). argv: repository URL, password, "index" or "snapshots".
DRIVER = r"""
import os, signal, sys
import safehold.engine.repair as repair
import safehold.engine.repair.index as repair_index_module
from safehold.repo import Repository
from safehold.storage import open_storage
from safehold.storage.wrappers.base import ForwardingStorage

kind, nth = os.environ["SAFEHOLD_TEST_KILL"].split(":")
nth = int(nth)
calls = {"n": 0}
repair_index_module._PACKS_PER_INDEX = 2  # several index objects: more points between them

class Killer(ForwardingStorage):
    def _tick(self, op, name):
        if op == kind and not name.startswith("locks/"):
            calls["n"] += 1
            if calls["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
    def put(self, name, data):
        self._tick("write", name); super().put(name, data)
    def create(self, name, data):
        self._tick("write", name); super().create(name, data)
    def delete(self, name):
        self._tick("write", name); super().delete(name)
    def get(self, name, offset=0, length=None):
        self._tick("read", name); return super().get(name, offset, length)

repo = Repository.open(Killer(open_storage(sys.argv[1])), sys.argv[2])
if sys.argv[3] == "index":
    repair.repair_index(repo, read_data=True)
else:
    repair.repair_snapshots(repo, forget=True)
print("finished", calls["n"])
"""


def _run(work: Path, what: str, point: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, work.as_uri(), PASSWORD, what],
        env={**os.environ, "SAFEHOLD_TEST_KILL": point},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _damage(report: VerifyReport) -> set[tuple[str, str]]:
    return {(sid, item["path"]) for sid, items in report.damaged.items() for item in items}


def _points(base: Path, tmp_path: Path, what: str) -> list[str]:
    """Kill points over the writes of an unkilled run (on a copy), plus two reads."""
    probe = tmp_path / f"probe-{what}"
    shutil.copytree(base, probe)
    done = _run(probe, what, "write:1000000")
    assert done.returncode == 0, done.stderr
    writes = int(done.stdout.split()[-1])
    assert writes >= 6, f"a repair of this repository makes only {writes} writes"
    step = max(1, writes // (KILL_POINTS - 2))
    chosen = sorted({1, writes, *range(1, writes + 1, step)})
    shutil.rmtree(probe)
    return ["read:3", "read:9"] + [f"write:{n}" for n in chosen]


def _tree(root: Path, v: int, shared: bytes) -> Path:
    tree = root / f"v{v}"
    (tree / "dir").mkdir(parents=True)
    (tree / "shared.bin").write_bytes(shared)
    (tree / f"own-{v}.bin").write_bytes(os.urandom(200_000))
    for i in range(10):
        body = os.urandom(3000) if i % 3 == v % 3 else b"stable %d" % i
        (tree / "dir" / f"f{i}").write_bytes(body)
    return tree


def _chunk(repo: Repository, snap_tree: str, *path: str) -> tuple[str, int, int]:
    """(pack, offset, stored) of the first chunk of the file at ``path``."""
    nodes = repo.load_tree(snap_tree)
    for part in path[:-1]:
        nodes = repo.load_tree(next(n for n in nodes if n["name"] == part)["subtree"])
    node = next(n for n in nodes if n["name"] == path[-1])
    loc = repo.index.lookup(bytes.fromhex(node["content"][0]))
    assert loc is not None
    return loc.pack, loc.offset, loc.stored


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


def _damaged_repository(tmp_path: Path, repo_factory: Callable[..., Repository]) -> Path:
    """Five snapshots, all damaged: bytes flipped in the chunk of the file they share and
    in a data blob of the pack with the most blobs (whose other blobs are salvaged), and
    the pack of one snapshot's own file deleted."""
    base = tmp_path / "base"
    repo = repo_factory(base, pack_size=32 * 1024)
    shared = os.urandom(150_000)
    snaps = []
    for v in range(5):
        tree = _tree(tmp_path / "src", v, shared)
        snaps.append(backup_paths(repo, [str(tree)], BackupOptions(source="vol")).snapshot)
    shared_pack, offset, stored = _chunk(repo, snaps[0].tree, "v0", "shared.bin")
    _flip(base / pack_object_name(shared_pack), offset + stored // 2)
    by_pack: dict[str, list[tuple[int, int, int]]] = {}
    for _, loc in repo.index.items():
        by_pack.setdefault(loc.pack, []).append((loc.type, loc.offset, loc.stored))
    multi = max(sorted(by_pack), key=lambda p: len(by_pack[p]))
    assert len(by_pack[multi]) >= 3
    _, offset, stored = next(b for b in sorted(by_pack[multi]) if b[0] == BLOB_DATA)
    _flip(base / pack_object_name(multi), offset + stored // 2)
    own_pack = _chunk(repo, snaps[2].tree, "v2", "own-2.bin")[0]
    assert own_pack not in (shared_pack, multi)
    (base / pack_object_name(own_pack)).unlink()
    return base


def _open(path: Path) -> Repository:
    return Repository.open(open_storage(path.as_uri()), PASSWORD)


@pytest.mark.slow
def test_sigkill_at_many_points_of_repair_index(
    tmp_path: Path, repo_factory: Callable[..., Repository]
) -> None:
    base = _damaged_repository(tmp_path, repo_factory)
    before = _damage(verify_repository(_open(base), read_data_percent=100))
    assert before
    reference = tmp_path / "reference"
    shutil.copytree(base, reference)
    done = repair_index(_open(reference), read_data=True)
    assert done.changed
    assert done.blobs_salvaged >= 2
    expected = _damage(verify_repository(_open(reference), read_data_percent=100))

    for n, point in enumerate(_points(base, tmp_path, "index")):
        work = tmp_path / f"kill-{n}"
        shutil.copytree(base, work)
        proc = _run(work, "index", point)
        assert proc.returncode == -signal.SIGKILL, f"{point}: {proc.stdout} {proc.stderr}"
        # As before or better: no damage the repository did not have before.
        killed = verify_repository(_open(work), read_data_percent=100)
        assert _damage(killed) <= before, point
        # A rerun completes, with the result of an unkilled repair; a third changes nothing.
        repair_index(_open(work), read_data=True)
        final = verify_repository(_open(work), read_data_percent=100)
        assert _damage(final) == expected, point
        assert not final.objects, (point, final.objects)
        again = repair_index(_open(work), read_data=True)
        assert not again.changed, (point, again.summary())
        shutil.rmtree(work)


@pytest.mark.slow
def test_sigkill_at_many_points_of_repair_snapshots(
    tmp_path: Path, repo_factory: Callable[..., Repository]
) -> None:
    base = _damaged_repository(tmp_path, repo_factory)
    repair_index(_open(base), read_data=True)  # the first step, done: data is lost
    damaged = verify_repository(_open(base))
    before = _damage(damaged)
    assert len(damaged.damaged) >= 2, damaged.summary()

    for n, point in enumerate(_points(base, tmp_path, "snapshots")):
        work = tmp_path / f"kill-{n}"
        shutil.copytree(base, work)
        proc = _run(work, "snapshots", point)
        assert proc.returncode == -signal.SIGKILL, f"{point}: {proc.stdout} {proc.stderr}"
        killed = verify_repository(_open(work), read_data_percent=100 if n % 4 == 0 else None)
        assert _damage(killed) <= before, point
        assert not killed.objects, (point, killed.objects)
        report = repair_snapshots(_open(work), forget=True)
        assert all(i.forgotten for i in report.items), point
        final = _open(work)
        assert verify_repository(final, read_data_percent=100).ok, point
        # one repaired copy per damaged original, and the whole snapshots untouched
        snaps = final.snapshots()
        originals = [s.meta.get("repair.original") for s in snaps]
        assert sorted(o for o in originals if o) == sorted(damaged.damaged), point
        assert len(snaps) == 5, point
        assert repair_snapshots(final, forget=True).items == [], point
        if n % 4 == 0:
            for snap in snaps:
                out = tmp_path / f"out-{n}-{snap.id[:8]}"
                assert restore_snapshot(final, snap, str(out)).errors == [], point
        shutil.rmtree(work)
