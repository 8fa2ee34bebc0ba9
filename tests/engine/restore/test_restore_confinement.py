"""A restore stays inside its target (issue 15, item 2), whatever the target already holds
and whatever the snapshot says.

Hostile snapshots are built the way an attacker would: ordinary backups of trees with
symlinks that point out of the target (restored one after the other into one target, as the
operator restores into existing claims), and trees written directly with the repository's
own writer (duplicate names, ``..``, names with ``/`` or NUL, a hard link through a
symlink, modes 0777 and set-user-id). After each: nothing outside the target was written,
created, chmod'ed or touched (its tree, modes and mtimes are unchanged), the bad entries are
reported by name (the CLI exits with the partial code, 3), and everything else is restored
byte for byte. Crafted trees are also restored with the tree decoder's checks bypassed, so
the restore's own defences are tested, not only the decoder's; in one process and in two
(:mod:`safehold.engine.restore.parts`)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from safehold.engine import BackupOptions, RestoreOptions, backup_paths, restore_snapshot
from safehold.repo import BLOB_DATA, BLOB_TREE, BlobEncoder, BlobWriter, Repository, Snapshot
from safehold.storage import open_storage

from ..conftest import PASSWORD

PARTIAL = 3
Node = dict[str, Any]
State = dict[str, tuple[Any, ...]]


# ---------------------------------------------------------------- what a user checks
def _state(root: Path) -> State:
    """Every entry under ``root`` and ``root`` itself: type, mode, mtime, size, bytes."""
    out: State = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        body: object = None
        if stat.S_ISREG(st.st_mode):
            body = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            body = os.readlink(path)
        out[str(path.relative_to(root))] = (
            stat.S_IFMT(st.st_mode),
            stat.S_IMODE(st.st_mode),
            st.st_mtime_ns,
            st.st_size,
            st.st_nlink,
            body,
        )
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A directory next to the target that no restore may touch; checked after the test."""
    out = tmp_path / "outside"
    (out / "sub").mkdir(parents=True)
    (out / "secret").write_bytes(b"outside data\n")
    (out / "sub" / "deeper").write_bytes(b"more outside data\n")
    os.chmod(out, 0o755)  # noqa: S103
    for path in (out / "secret", out / "sub" / "deeper", out / "sub", out):
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = _state(out)
    yield out
    assert _state(out) == before, "the restore changed something outside its target"


def _errors(result: Any) -> dict[str, str]:
    return {e["path"]: e["error"] for e in result.errors}


# ---------------------------------------------------------------- crafted snapshots
class Crafter:
    """Writes data and tree blobs and snapshots directly (trees as given: duplicate names
    and all), then opens the repository afresh so that its index holds them."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.writer = BlobWriter(repo)
        self.encoder = BlobEncoder(repo.aead, 1)

    def _blob(self, blob_type: int, data: bytes) -> str:
        blob_id = self.repo.keys.blob_id(data)
        if self.writer.claim(blob_id):
            sealed, flags = self.encoder.encode(blob_type, blob_id, data)
            self.writer.add(blob_type, blob_id, sealed, flags, len(data))
        return blob_id.hex()

    def file(self, name: str, data: bytes, mode: int = 0o644, **extra: Any) -> Node:
        content = [self._blob(BLOB_DATA, data)] if data else []
        return _node(name, "file", mode, content=content, size=len(data), **extra)

    def dir(self, name: str, nodes: list[Node], mode: int = 0o755) -> Node:
        return _node(name, "dir", mode, subtree=self.tree(nodes))

    def tree(self, nodes: list[Node]) -> str:
        doc = {"nodes": sorted(nodes, key=lambda n: str(n["name"]))}
        return self._blob(BLOB_TREE, json.dumps(doc, sort_keys=True).encode())

    def snapshot(self, nodes: list[Node]) -> tuple[Repository, Snapshot]:
        tree = self.tree(nodes)
        self.writer.flush()
        self.writer.close()
        snap = Snapshot(
            time="2026-01-02T03:04:05Z",
            source="hostile",
            type="full",
            tree=tree,
            paths=["/data"],
            hostname="attacker",
        )
        self.repo.save_snapshot(snap)
        return Repository.open(open_storage(self.repo.storage.location), PASSWORD), snap


def _node(name: str, kind: str, mode: int, **extra: Any) -> Node:
    return {
        "name": name,
        "type": kind,
        "mode": mode,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "mtime_ns": 1_600_000_000_000_000_000,
        "atime_ns": 1_600_000_000_000_000_000,
        **extra,
    }


def _symlink(name: str, target: str) -> Node:
    return _node(name, "symlink", 0o777, target=target)


@pytest.fixture
def crafter(repo: Repository) -> Crafter:
    return Crafter(repo)


@pytest.fixture
def no_decoder_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trees read as plain JSON, without the decoder's checks of names and duplicates: what
    the restore does on its own (a forked part inherits this)."""

    def load_tree(self: Repository, tree_id: str) -> list[Node]:
        nodes: list[Node] = json.loads(self.read_blob(bytes.fromhex(tree_id), BLOB_TREE))["nodes"]
        return nodes

    monkeypatch.setattr(Repository, "load_tree", load_tree)


GOOD = {
    "keep.txt": b"kept\n" * 1000,
    "big.bin": os.urandom(700_000),  # several chunks: shared out between parts
    "sub/inner.txt": b"inner\n",
}


def _good(crafter: Crafter) -> list[Node]:
    return [
        crafter.file("keep.txt", GOOD["keep.txt"], 0o640),
        crafter.file("big.bin", GOOD["big.bin"]),
        crafter.dir("sub", [crafter.file("inner.txt", GOOD["sub/inner.txt"])], 0o750),
    ]


def _assert_good(at: Path) -> None:
    for rel, data in GOOD.items():
        assert (at / rel).read_bytes() == data, rel
    assert stat.S_IMODE((at / "keep.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((at / "sub").stat().st_mode) == 0o750
    assert (at / "keep.txt").stat().st_mtime_ns == 1_600_000_000_000_000_000


def _hostile_names(crafter: Crafter, outside: Path) -> list[Node]:
    """One directory of every trick a crafted tree can hold about names."""
    return [
        # the same name twice: a symlink out, then a directory (0777) holding a file
        _symlink("evil", str(outside)),
        crafter.dir("evil", [crafter.file("planted", b"planted\n", 0o4777)], 0o777),
        crafter.file("twice", b"first\n"),
        crafter.file("twice", b"second\n"),
        # names that are not one entry
        crafter.dir("..", [crafter.file("planted", b"planted\n")], 0o777),
        crafter.file("../planted", b"planted\n"),
        crafter.file("../../outside/secret", b"overwritten\n"),
        crafter.file(".", b"dot\n"),
        crafter.file("", b"empty name\n"),
        crafter.file("nul\x00byte", b"nul\n"),
        # a hard link through a symlink of the snapshot
        _symlink("out", str(outside)),
        crafter.file("hl", b"linked\n", hardlink="out/secret"),
        *_good(crafter),
    ]


@pytest.mark.parametrize("processes", [1, 2])
def test_a_crafted_tree_writes_nothing_outside_and_reports_each_bad_entry(
    crafter: Crafter, outside: Path, tmp_path: Path, processes: int, no_decoder_checks: None
) -> None:
    nodes = _hostile_names(crafter, outside)
    repo, snap = crafter.snapshot(
        [crafter.dir("data", nodes), crafter.dir("other", _good(crafter))]
    )
    target = tmp_path / "target"

    result = restore_snapshot(repo, snap, str(target), RestoreOptions(processes=processes))

    assert result.processes == processes
    errors = _errors(result)
    data = f"{target}/data/"
    assert "more than once" in errors.pop(data + "evil")
    assert "more than once" in errors.pop(data + "twice")
    for name in ("..", "../planted", "../../outside/secret", ".", "''", "nul\\x00byte"):
        assert "unsafe name" in errors.pop(data + name), name
    assert errors == {}
    # neither of the duplicated names was restored, the rest of the directory was
    assert sorted(p.name for p in (target / "data").iterdir()) == [
        "big.bin",
        "hl",
        "keep.txt",
        "out",
        "sub",
    ]
    assert os.readlink(target / "data" / "out") == str(outside)
    # the hard link's first name is not a restored file: written from its own content
    assert (target / "data" / "hl").read_bytes() == b"linked\n"
    _assert_good(target / "data")
    _assert_good(target / "other")
    assert not (tmp_path / "planted").exists()


@pytest.mark.parametrize("processes", [1, 2])
def test_the_tree_decoder_refuses_a_crafted_directory_and_the_rest_is_restored(
    crafter: Crafter, outside: Path, tmp_path: Path, processes: int
) -> None:
    repo, snap = crafter.snapshot(
        [
            crafter.dir("data", _hostile_names(crafter, outside)),
            crafter.dir("other", _good(crafter)),
        ]
    )
    target = tmp_path / "target"

    result = restore_snapshot(repo, snap, str(target), RestoreOptions(processes=processes))

    messages = _errors(result)
    assert "cannot be read from the repository" in messages[f"{target}/data/"]
    assert list((target / "data").iterdir()) == []
    _assert_good(target / "other")


def test_the_cli_names_the_bad_entries_and_exits_partial(
    crafter: Crafter, outside: Path, tmp_path: Path
) -> None:
    repo, snap = crafter.snapshot(
        [
            crafter.dir("data", [_symlink("evil", str(outside)), *_good(crafter)]),
            crafter.dir(
                "data2",
                [
                    _symlink("evil", str(outside)),
                    crafter.dir("evil", [crafter.file("planted", b"planted\n")], 0o777),
                ],
            ),
        ]
    )
    target = tmp_path / "target"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": repo.storage.location,
        "SAFEHOLD_PASSWORD": PASSWORD,
    }
    done = subprocess.run(
        [sys.executable, "-m", "safehold", "restore", "--json", snap.id, str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == PARTIAL, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert [e["path"] for e in summary["error_list"]] == [f"{target}/data2/"]
    assert f"{target}/data2/" in done.stderr
    assert os.readlink(target / "data" / "evil") == str(outside)
    _assert_good(target / "data")


# ---------------------------------------------------------------- ordinary snapshots
def _two_snapshots_into_one_target(
    repo: Repository, tmp_path: Path, first: Callable[[Path], None], second: Callable[[Path], None]
) -> tuple[Path, Path, Any]:
    """Back up ``first``'s tree and restore it into the target, then back up ``second``'s
    tree (from the same source path) and restore it into the same target: the operator's
    restores into existing claims. The target, the second source and the second result."""
    src = tmp_path / "src"
    target = tmp_path / "target"
    for make in (first, second):
        if src.exists():
            _remove(src)
        src.mkdir()
        make(src)
        snap = backup_paths(repo, [str(src)], BackupOptions(source="app")).snapshot
        result = restore_snapshot(repo, snap, str(target))
    return target / "src", src, result


def _remove(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: -len(p.parts)):
        if child.is_dir() and not child.is_symlink():
            child.rmdir()
        else:
            child.unlink()
    path.rmdir()


def test_a_symlink_then_a_directory_of_the_same_name_stays_inside(
    repo: Repository, tmp_path: Path, outside: Path, same_tree: Callable[..., None]
) -> None:
    """The issue's reproduction: ``evil`` a symlink to a directory outside, then ``evil`` a
    directory (mode 0777) holding a file: the symlink is replaced by the directory."""

    def first(src: Path) -> None:
        os.symlink(outside, src / "evil")
        os.symlink("../outside/sub", src / "relative")
        (src / "plain").write_bytes(b"plain\n")

    def second(src: Path) -> None:
        (src / "evil" / "deeper").mkdir(parents=True)
        (src / "evil" / "planted").write_bytes(b"planted\n")
        (src / "evil" / "deeper" / "x").write_bytes(b"x\n")
        os.chmod(src / "evil", 0o777)  # noqa: S103
        (src / "relative").mkdir()
        (src / "relative" / "deeper").write_bytes(b"replaces nothing outside\n")
        os.chmod(src / "relative", 0o1777)  # noqa: S103
        (src / "plain").write_bytes(b"plain\n")

    restored, src, result = _two_snapshots_into_one_target(repo, tmp_path, first, second)

    assert result.errors == []
    same_tree(src, restored)


def test_a_symlink_then_a_file_of_the_same_name_replaces_the_symlink(
    repo: Repository, tmp_path: Path, outside: Path, same_tree: Callable[..., None]
) -> None:
    """A symlink to a file outside, then a file (one chunk, several chunks, empty), a FIFO
    and a socket of that name: none is written through the symlink."""
    names = ("one", "many", "empty", "fifo", "sock")

    def first(src: Path) -> None:
        for name in names:
            os.symlink(outside / "secret", src / name)

    def second(src: Path) -> None:
        (src / "one").write_bytes(b"one chunk\n")
        (src / "many").write_bytes(os.urandom(900_000))
        (src / "empty").write_bytes(b"")
        os.mkfifo(src / "fifo")
        os.mknod(src / "sock", stat.S_IFSOCK | 0o600)
        for name in names:
            os.chmod(src / name, 0o4777)  # noqa: S103

    restored, src, result = _two_snapshots_into_one_target(repo, tmp_path, first, second)

    assert result.errors == []
    same_tree(src, restored)


def test_a_target_holding_symlinks_and_hard_links_to_outside_is_restored_inside(
    repo: Repository,
    tmp_path: Path,
    outside: Path,
    tree_factory: Callable[..., Path],
    same_tree: Callable[..., None],
) -> None:
    """Whatever the target holds (as a claim a tenant wrote to): a directory replaced by a
    symlink to a directory outside, files replaced by symlinks to and hard links of a file
    outside. A second restore puts the snapshot back, inside the target only, exit 0."""
    src = tree_factory(tmp_path / "src")
    snap = backup_paths(repo, [str(src)], BackupOptions(source="app")).snapshot
    target = tmp_path / "target"
    assert restore_snapshot(repo, snap, str(target)).errors == []
    restored = target / "src"
    same_tree(src, restored)

    _remove(restored / "docs")
    os.symlink(outside, restored / "docs")  # a directory of the snapshot
    (restored / "random.bin").unlink()
    os.symlink(outside / "secret", restored / "random.bin")  # a file of several chunks
    (restored / "empty").unlink()
    os.link(outside / "secret", restored / "empty")  # a hard link to a file outside
    (restored / "text.log").unlink()
    os.link(outside / "sub" / "deeper", restored / "text.log")
    (restored / "link-to-random").unlink()
    os.symlink(outside, restored / "link-to-random")  # a symlink, pointing elsewhere

    again = restore_snapshot(repo, snap, str(target))

    assert again.errors == []
    same_tree(src, restored)


def test_a_target_entry_that_cannot_be_replaced_is_reported_and_the_rest_restored(
    repo: Repository, tmp_path: Path, outside: Path
) -> None:
    """A directory of the target where the snapshot has a file is not removed: that entry
    is reported (the CLI's partial exit), everything else is restored."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_bytes(b"a file\n")
    (src / "other").write_bytes(b"other\n")
    snap = backup_paths(repo, [str(src)], BackupOptions(source="app")).snapshot
    target = tmp_path / "target"
    (target / "src" / "file").mkdir(parents=True)
    (target / "src" / "file" / "mine").write_bytes(b"kept\n")

    result = restore_snapshot(repo, snap, str(target))

    assert list(_errors(result)) == [f"{target}/src/file"]
    assert "Is a directory" in _errors(result)[f"{target}/src/file"]
    assert (target / "src" / "file" / "mine").read_bytes() == b"kept\n"
    assert (target / "src" / "other").read_bytes() == b"other\n"


@pytest.mark.parametrize("processes", [1, 2])
def test_a_hard_link_is_linked_to_a_file_with_other_links_and_written_out_otherwise(
    crafter: Crafter, tmp_path: Path, processes: int
) -> None:
    """A restore remembers only the files whose nodes count other links (the first name of
    a hard link has them): a hard link to one of them is linked, and one to a file that
    says it has no other link (a crafted or foreign snapshot) is written from its own
    content, never left out."""
    nodes = [
        crafter.file("first", b"linked\n", links=2),
        crafter.file("second", b"linked\n", links=2, hardlink="data/first"),
        crafter.file("alone", b"alone\n", links=1),
        crafter.file("claims", b"alone\n", links=1, hardlink="data/alone"),
    ]
    repo, snap = crafter.snapshot([crafter.dir("data", nodes)])
    target = tmp_path / "target"

    result = restore_snapshot(repo, snap, str(target), RestoreOptions(processes=processes))

    assert _errors(result) == {}
    data = target / "data"
    assert os.stat(data / "second").st_ino == os.stat(data / "first").st_ino
    assert (data / "second").read_bytes() == b"linked\n"
    assert os.stat(data / "claims").st_ino != os.stat(data / "alone").st_ino
    assert (data / "claims").read_bytes() == (data / "alone").read_bytes() == b"alone\n"
