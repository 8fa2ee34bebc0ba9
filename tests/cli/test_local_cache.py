"""The local cache (repo/local_cache.py, docs/cli.md "Local cache"), through the real command
against a real S3 server (SeaweedFS).

What a user would check: a second backup reads no index, snapshot or tree from the bucket;
a damaged copy is read again and the command succeeds; what another host forgets or prunes
leaves the cache; an unwritable cache is a warning; ``--no-cache`` writes nothing; restored
bytes equal the originals. Requests are counted by a wrapper around the real storage that
the command opens (what reaches the bucket, after the cache).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from safehold.cli.main import main
from safehold.repo import layout, local_cache
from safehold.repo.crypto import object_hash
from safehold.repo.local_cache import CACHEDIR_TAG, LocalCache
from safehold.storage import Storage, open_storage
from safehold.storage.wrappers import ForwardingStorage
from testground.objectstores import RunningStore

PASSWORD = "local cache test password"


class _Counting(ForwardingStorage):
    """Counts the GETs that reach the storage, by kind of object (``index``, ``data``...)."""

    gets: ClassVar[Counter[str]] = Counter()

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        _Counting.gets[name.split("/", 1)[0]] += 1
        return super().get(name, offset, length)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every storage a command opens counts its GETs in the returned counter."""

    def counting(*args: Any, **kwargs: Any) -> Storage:
        return _Counting(open_storage(*args, **kwargs))

    monkeypatch.setattr("safehold.storage.open_storage", counting)
    _Counting.gets = Counter()
    return _Counting.gets


class Repo:
    """A repository in a bucket of its own, and ``safehold`` run against it in this process."""

    def __init__(self, store: RunningStore, cache: Path) -> None:
        bucket = f"cache-{uuid.uuid4().hex[:12]}"
        store.make_bucket(bucket)
        self.url = store.url(bucket, "repo")
        self.options = dict(store.options)
        self.cache = cache

    def run(self, *args: str, cache: Path | None = None, code: int = 0) -> None:
        opts = [f"--option={k}={v}" for k, v in self.options.items()]
        where = ["--cache-dir", str(cache or self.cache)]
        assert main([*args, "--repo", self.url, *opts, *where, "-q"]) == code

    def storage(self) -> Storage:
        return open_storage(self.url, self.options)


@pytest.fixture
def repo(s3_store: RunningStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    for name in [k for k in os.environ if k.startswith("SAFEHOLD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    repo = Repo(s3_store, tmp_path / "cache")
    repo.run("repo", "init")
    return repo


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """300 small files in 10 directories: their trees are a pack of their own."""
    root = tmp_path / "source"
    for d in range(10):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(30):
            (root / f"d{d}" / f"f{f}.txt").write_bytes(os.urandom(200 + 37 * f))
    return root


def _copies(cache: Path, kind: str) -> set[str]:
    [repository] = [p for p in cache.iterdir() if len(p.name) == 64]
    return {p.name for p in (repository / kind).iterdir()}


def _tree_packs(repo: Repo) -> set[str]:
    from safehold.repo import Repository

    with repo.storage() as storage:
        opened = Repository.open(storage, PASSWORD)
        return opened.index.tree_packs()


def _same_tree(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_a_second_backup_reads_no_index_snapshot_or_tree_from_the_bucket(
    repo: Repo, source: Path, counted: Counter[str], tmp_path: Path
) -> None:
    repo.run("backup", str(source))
    # What the first backup wrote is kept as it is written: the next one needs it.
    assert _copies(repo.cache, "data") == _tree_packs(repo)
    with repo.storage() as storage:
        assert _copies(repo.cache, "index") == {
            layout.object_id(i.name) for i in storage.list(layout.INDEX)
        }
        assert _copies(repo.cache, "snapshots") == {
            layout.object_id(i.name) for i in storage.list(layout.SNAPSHOTS)
        }
    assert (repo.cache / "CACHEDIR.TAG").read_text() == CACHEDIR_TAG
    [repository] = [p for p in repo.cache.iterdir() if len(p.name) == 64]
    assert repository.stat().st_mode & 0o077 == 0  # the user's alone

    (source / "d3" / "f7.txt").write_bytes(b"changed")
    counted.clear()
    repo.run("backup", str(source))
    assert counted["index"] == counted["snapshots"] == counted["data"] == 0, counted

    counted.clear()  # without the cache, the same backup reads all three
    repo.run("backup", str(source), "--no-cache")
    assert min(counted["index"], counted["snapshots"], counted["data"]) >= 1, counted

    repo.run("restore", "latest", str(tmp_path / "restored"))
    [restored] = (tmp_path / "restored").rglob("source")
    _same_tree(source, restored)


def test_a_restore_on_another_machine_fills_its_cache_once(
    repo: Repo, source: Path, counted: Counter[str], tmp_path: Path
) -> None:
    repo.run("backup", str(source))
    elsewhere = tmp_path / "another-machine-cache"
    counted.clear()
    repo.run("ls", "latest", cache=elsewhere)
    first = counted.copy()
    assert min(first["data"], first["index"]) >= 1, first  # read from the bucket once
    assert _copies(elsewhere, "data") == _tree_packs(repo)
    counted.clear()
    repo.run("ls", "latest", cache=elsewhere)
    assert counted["index"] == counted["snapshots"] == counted["data"] == 0, counted


def test_a_damaged_copy_is_read_again_and_the_command_succeeds(
    repo: Repo, source: Path, counted: Counter[str], tmp_path: Path
) -> None:
    repo.run("backup", str(source))
    [repository] = [p for p in repo.cache.iterdir() if len(p.name) == 64]
    damaged = [
        *(repository / "data").iterdir(),
        *(repository / "index").iterdir(),
        *(repository / "snapshots").iterdir(),
    ]
    for path in damaged:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))
    counted.clear()
    repo.run("restore", "latest", str(tmp_path / "restored"))
    [restored] = (tmp_path / "restored").rglob("source")
    _same_tree(source, restored)
    assert min(counted["index"], counted["data"]) >= 1, counted  # read again from the bucket
    for path in damaged:  # and the copies are whole again
        assert object_hash(path.read_bytes()) == path.name


def test_what_another_host_forgets_and_prunes_leaves_the_cache(
    repo: Repo, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo.run("backup", str(source), "--tag", "old")
    shutil.rmtree(source / "d0")
    repo.run("backup", str(source), "--tag", "new")
    before = {kind: _copies(repo.cache, kind) for kind in ("index", "snapshots", "data")}
    assert len(before["snapshots"]) == 2

    other_host = tmp_path / "other-host-cache"
    repo.run("forget", "--keep-tag", "new", cache=other_host)
    repo.run("prune", "--max-unused", "0", "--grace", "0", cache=other_host)

    capsys.readouterr()
    repo.run("snapshots", "--json")
    listed = capsys.readouterr().out
    with repo.storage() as storage:
        [kept] = [layout.object_id(i.name) for i in storage.list(layout.SNAPSHOTS)]
        indexes = {layout.object_id(i.name) for i in storage.list(layout.INDEX)}
    assert kept in listed
    assert _copies(repo.cache, "snapshots") == {kept}
    repo.run("ls", "latest")  # opens with the index: copies of pruned objects go
    assert _copies(repo.cache, "index") <= indexes
    assert _copies(repo.cache, "data") <= _tree_packs(repo)
    # (the prune did rewrite the index and repack the trees, or this proved nothing)
    assert before["index"] - indexes
    assert before["data"] - _tree_packs(repo)


def test_an_unwritable_cache_is_a_warning_not_a_failure(
    repo: Repo, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    capsys.readouterr()
    repo.run("backup", str(source), cache=blocker / "cache")
    err = capsys.readouterr().err
    assert err.count("cannot be written") == 1, err
    repo.run("restore", "latest", str(tmp_path / "restored"), cache=blocker / "cache")
    [restored] = (tmp_path / "restored").rglob("source")
    _same_tree(source, restored)


def test_no_cache_writes_nothing(repo: Repo, source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "never-written"
    repo.run("backup", str(source), "--no-cache", cache=cache)
    repo.run("snapshots", "--no-cache", cache=cache)
    assert not cache.exists()


def test_a_repository_on_a_local_file_system_has_no_cache(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    cache = tmp_path / "cache"
    local = ["--repo", str(tmp_path / "repo"), "--cache-dir", str(cache), "-q"]
    assert main(["repo", "init", *local]) == 0
    assert main(["backup", str(source), *local]) == 0
    assert not cache.exists()  # a copy would be as far away as the original


def test_concurrent_reads_of_one_pack_download_it_once(
    repo: Repo, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.run("backup", str(source), "--no-cache")
    [pack] = _tree_packs(repo)
    name = layout.pack_object_name(pack)
    counting = _Counting(repo.storage())
    _Counting.gets = Counter()
    cache = LocalCache(counting, tmp_path / "direct" / "repository-id")
    cache.keep_packs({pack})
    whole = counting.inner.get(name)
    _Counting.gets.clear()
    got: dict[int, bytes] = {}

    def read(i: int) -> None:
        got[i] = cache.get(name, i * 10, 100)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _Counting.gets["data"] == 1
    assert all(got[i] == whole[i * 10 : i * 10 + 100] for i in range(16))
    assert cache.get(name, len(whole) - 5, 100) == whole[-5:]  # a range past the end

    # the next command (a new process: a new LocalCache) finds the copy and checks it
    # once, however many threads read it first
    checks: list[Path] = []
    real_hash = local_cache._file_hash

    def counted_hash(path: Path) -> str | None:
        checks.append(path)
        return real_hash(path)

    monkeypatch.setattr(local_cache, "_file_hash", counted_hash)
    later = LocalCache(counting, tmp_path / "direct" / "repository-id")
    later.keep_packs({pack})
    _Counting.gets.clear()
    got.clear()
    threads = [threading.Thread(target=lambda i=i: got.update({i: later.get(name, i, 9)}))
               for i in range(16)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(got[i] == whole[i : i + 9] for i in range(16))
    assert len(checks) == 1
    assert _Counting.gets["data"] == 0
    cache.close()


def test_the_tree_read_ahead_fills_the_cache_not_memory(
    repo: Repo, source: Path, tmp_path: Path
) -> None:
    """With a local cache, a restore's read-ahead puts the packs of trees in it (one GET
    each) and keeps no plain tree in memory; the walk then reads no tree from the bucket."""
    from safehold.repo import Repository
    from safehold.repo.prefetch import prefetch_trees

    repo.run("backup", str(source), "--no-cache")
    counting = _Counting(repo.storage())
    _Counting.gets = Counter()
    opened = Repository.open(counting, PASSWORD, cache_dir=tmp_path / "fresh")
    [snap] = opened.snapshots()
    _Counting.gets.clear()
    assert prefetch_trees(opened, snap.tree) > 10  # every directory's tree was read
    assert opened.tree_cache == {}
    assert _Counting.gets["data"] == len(opened.index.tree_packs())
    _Counting.gets.clear()
    todo = [snap.tree]
    while todo:
        todo += [n["subtree"] for n in opened.load_tree(todo.pop()) if n.get("subtree")]
    assert _Counting.gets["data"] == 0
    counting.close()


def test_the_tree_read_ahead_reads_nothing_when_the_cache_holds_every_pack_of_trees(
    repo: Repo, source: Path, tmp_path: Path
) -> None:
    """The second command on a machine finds every pack of trees in its cache: the
    read-ahead has nothing to download and decodes nothing (an unchanged re-run of 100,000
    small files spent 60 ms in it). With one copy gone, it reads that one pack again, and
    the walk still reads every tree without a request."""
    from safehold.repo import Repository
    from safehold.repo.prefetch import prefetch_trees

    repo.run("backup", str(source))  # fills the cache, packs of trees included
    counting = _Counting(repo.storage())
    _Counting.gets = Counter()
    opened = Repository.open(counting, PASSWORD, cache_dir=repo.cache)
    [snap] = opened.snapshots()
    _Counting.gets.clear()
    assert prefetch_trees(opened, snap.tree) == 0
    assert _Counting.gets["data"] == 0

    [repository] = [p for p in repo.cache.iterdir() if len(p.name) == 64]
    gone = sorted((repository / "data").iterdir())[0]
    gone.unlink()
    reopened = Repository.open(counting, PASSWORD, cache_dir=repo.cache)
    _Counting.gets.clear()
    assert prefetch_trees(reopened, snap.tree) > 10  # every directory's tree was read
    assert _Counting.gets["data"] == 1  # the missing pack only, once
    assert gone.exists()
    _Counting.gets.clear()
    todo = [snap.tree]
    while todo:
        todo += [n["subtree"] for n in reopened.load_tree(todo.pop()) if n.get("subtree")]
    assert _Counting.gets["data"] == 0
    counting.close()


def test_the_caches_of_repositories_unused_for_a_month_are_deleted(
    repo: Repo, source: Path
) -> None:
    days = 24 * 3600
    old, recent = repo.cache / ("a" * 64), repo.cache / ("b" * 64)
    mine = repo.cache / "not-a-repository"
    for directory in (old, recent, mine):
        (directory / "index").mkdir(parents=True)
        (directory / "index" / "copy").write_bytes(b"x")
    now = time.time()
    os.utime(old, (now, now - (local_cache.UNUSED_DAYS + 1) * days))
    os.utime(recent, (now, now - (local_cache.UNUSED_DAYS - 1) * days))
    os.utime(mine, (now, now - 400 * days))
    repo.run("snapshots")
    assert not old.exists()
    assert (recent / "index" / "copy").exists()
    assert (mine / "index" / "copy").exists()  # not a cache of ours: never touched
    # and the repository just used is marked as used
    [used] = [p for p in repo.cache.iterdir() if len(p.name) == 64 and p not in (recent,)]
    assert used.stat().st_mtime > now - 60
