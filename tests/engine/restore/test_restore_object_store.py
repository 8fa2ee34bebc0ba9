"""A restore from an object store (SeaweedFS's S3) runs as several processes, as one from a
local repository does (safehold.engine.restore.parts): each child reopens the storage, so no
request goes out on a connection of part 0's; what they restore together equals the source;
a damaged pack and a child that cannot start are reported; a download limit keeps one
process."""

from __future__ import annotations

import itertools
import json
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safehold.engine import (
    BackupOptions,
    RestoreOptions,
    RestoreResult,
    backup_paths,
    restore_snapshot,
)
from safehold.engine.restore.parts import PartFailed
from safehold.engine.restore.shares import BLOB_COST, MIN_PIECE, PIECES
from safehold.repo import BLOB_TREE, Config, Repository, Snapshot, pack_object_name
from safehold.repo.index import MARKS
from safehold.storage import (
    PermanentError,
    Storage,
    StorageError,
    TransientError,
    open_storage,
)
from safehold.storage.base import innermost
from safehold.storage.providers.s3 import S3Storage
from safehold.storage.wrappers import (
    ForwardingStorage,
    LimitedStorage,
    RetryingStorage,
    RetryPolicy,
    shared_bandwidth,
)
from testground.objectstores import RunningStore

from ..conftest import PASSWORD, SMALL_CHUNKER
from .test_restore_parts import _make_source


class _Clients(ForwardingStorage):
    """Notes, in ``log``, which process read a pack through which SDK client."""

    def __init__(self, inner: Storage, log: Path) -> None:
        super().__init__(inner)
        self.log = log

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("data/"):
            client = id(innermost(self.inner).__dict__["_client"])
            with self.log.open("a") as f:
                f.write(json.dumps([os.getpid(), client]) + "\n")
        return super().get(name, offset, length)


@pytest.fixture
def s3_url(s3_store: RunningStore) -> str:
    bucket = f"parts-{uuid.uuid4().hex[:12]}"
    s3_store.make_bucket(bucket)
    return s3_store.url(bucket, "repo")


@pytest.fixture
def source(tmp_path: Path, tree_factory: Callable[..., Path]) -> Path:
    return _make_source(tmp_path / "src", tree_factory)


@pytest.fixture
def snap(s3_store: RunningStore, s3_url: str, source: Path) -> Snapshot:
    config = Config.new(chunker=SMALL_CHUNKER, pack_size=512 * 1024)
    storage = open_storage(s3_url, s3_store.options, wrap=True)
    repo = Repository.init(storage, PASSWORD, config)
    snap = backup_paths(repo, [str(source)], BackupOptions(source="app")).snapshot
    storage.close()
    return snap


@pytest.fixture
def reopened(s3_store: RunningStore, s3_url: str, snap: Snapshot) -> Iterator[Repository]:
    """The repository (holding ``snap``) opened anew, as a restore command opens it."""
    storage = open_storage(s3_url, s3_store.options, wrap=True)
    yield Repository.open(storage, PASSWORD)
    storage.close()


def test_processes_restore_every_byte_mode_and_link_with_clients_of_their_own(
    reopened: Repository,
    snap: Snapshot,
    source: Path,
    tmp_path: Path,
    same_tree: Callable[..., None],
) -> None:
    log = tmp_path / "clients.jsonl"
    reopened.storage = _Clients(reopened.storage, log)
    parent_client = id(innermost(reopened.storage).__dict__["_client"])
    result = restore_snapshot(reopened, snap, str(tmp_path / "out"), RestoreOptions(processes=2))
    assert result.errors == []
    assert result.processes == 2
    same_tree(source, tmp_path / "out" / "src")
    reads = [json.loads(line) for line in log.read_text().splitlines()]
    by_pid: dict[int, set[int]] = {}
    for pid, client in reads:
        by_pid.setdefault(pid, set()).add(client)
    assert len(by_pid) == 2, "both processes read packs"
    child = by_pid.keys() - {os.getpid()}
    assert parent_client not in by_pid[child.pop()], "a child used part 0's client"
    # part 0 still works on its own connections
    assert reopened.load_tree(snap.tree)


def test_a_damaged_pack_is_reported_with_its_file(
    reopened: Repository, snap: Snapshot, source: Path, tmp_path: Path
) -> None:
    node = next(
        n for n in reopened.load_tree(_subtree(reopened, snap)) if n["name"] == "random.bin"
    )
    # a chunk of the big file, whichever part writes it (the parts share its packs)
    chunk = next(bytes.fromhex(c) for c in node["content"] if bytes.fromhex(c)[0] % 2 == 1)
    loc = reopened.index.lookup(chunk)
    assert loc is not None
    name = pack_object_name(loc.pack)
    data = bytearray(reopened.storage.get(name))
    data[loc.offset + 10] ^= 0x01
    reopened.storage.put(name, bytes(data))

    out = tmp_path / "out"
    result = restore_snapshot(reopened, snap, str(out), RestoreOptions(processes=2))
    assert result.processes == 2
    assert [e["path"] for e in result.errors] == [str(out / "src" / "random.bin")]
    assert "is damaged" in result.errors[0]["error"]
    assert (out / "src" / "text.log").read_bytes() == (source / "text.log").read_bytes()


def test_a_child_that_cannot_reopen_the_storage_fails_the_restore_with_its_message(
    reopened: Repository, snap: Snapshot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = os.getpid()
    real = S3Storage.reopen

    def reopen(self: S3Storage) -> None:
        if os.getpid() != parent:
            raise StorageError(self.location, "no credentials in the child")
        real(self)

    monkeypatch.setattr(S3Storage, "reopen", reopen)
    with pytest.raises(PartFailed, match=r"part 1: .*no credentials in the child"):
        restore_snapshot(reopened, snap, str(tmp_path / "out"), RestoreOptions(processes=2))


def test_a_download_limit_keeps_one_process(
    s3_store: RunningStore,
    s3_url: str,
    snap: Snapshot,
    source: Path,
    tmp_path: Path,
    same_tree: Callable[..., None],
) -> None:
    """The limit's token bucket is one process's: forked parts would each get the whole
    rate. (A generous rate: this checks the split, not the throttle.)"""
    bandwidth = shared_bandwidth(None, 1 << 30)
    storage = open_storage(s3_url, s3_store.options, wrap=True, bandwidth=bandwidth)
    repo = Repository.open(storage, PASSWORD)
    result = restore_snapshot(repo, snap, str(tmp_path / "out"), RestoreOptions(processes=2))
    storage.close()
    assert result.errors == []
    assert result.processes == 1
    same_tree(source, tmp_path / "out" / "src")


def test_reopen_gives_the_storage_new_clients_and_keeps_its_settings(
    s3_store: RunningStore, s3_url: str
) -> None:
    storage = open_storage(
        s3_url, {**s3_store.options, "object_lock_mode": "governance", "object_lock_days": "1"}
    )
    provider = innermost(storage)
    assert isinstance(provider, S3Storage)
    before, lock = provider.__dict__["_client"], provider.object_lock
    wrapped = open_storage(s3_url, s3_store.options, wrap=True)
    wrapped.put("x", b"1")
    inner_before = innermost(wrapped).__dict__["_client"]
    wrapped.reopen()
    assert innermost(wrapped).__dict__["_client"] is not inner_before
    assert wrapped.get("x") == b"1"
    storage.reopen()
    assert provider.__dict__["_client"] is not before
    assert provider.object_lock == lock
    storage.close()
    wrapped.close()


def _subtree(repo: Repository, snap: Snapshot) -> str:
    node = next(n for n in repo.load_tree(snap.tree) if n["name"] == "src")
    return str(node["subtree"])


class _Ranges(ForwardingStorage):
    """Notes, in ``log``, every byte range of a pack that any process read."""

    def __init__(self, inner: Storage, log: Path) -> None:
        super().__init__(inner)
        self.log = log

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        data = super().get(name, offset, length)
        self._note(name, offset, len(data))
        return data

    def get_stream(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        got = 0
        try:
            for piece in self.inner.get_stream(name, offset, length):  # a restore's pack reads
                got += len(piece)
                yield piece
        finally:  # read to its end, or closed once its last blob was taken
            self._note(name, offset, got)

    def _note(self, name: str, offset: int, size: int) -> None:
        if name.startswith("data/"):
            with self.log.open("a") as f:
                f.write(json.dumps([os.getpid(), size, name[-6:], offset]) + "\n")


def test_the_parts_read_each_piece_of_a_pack_once_in_one_request(
    s3_store: RunningStore, s3_url: str, tmp_path: Path, same_tree: Callable[..., None]
) -> None:
    """What a bill shows: a restore in two processes sends at most one GET per piece of a
    pack of data (and one for the pack's key, by a part that reads only its second piece)
    and one per pack of trees, reads no byte twice, and downloads no more than the packs
    hold; and what the clock shows: the two parts have about as much to do. Small files are
    owned by the piece of the pack their chunk lies in, read once, by its part (owned by
    directory runs, their blobs alternated within a pack and each part's reads spanned the
    other's: twice the bytes; in batches of 5,000 files, reads of 4 MiB and 1,024 blobs, a
    pack took many GETs)."""
    src = tmp_path / "many"
    for d in range(4):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(600):
            (src / f"d{d}" / f"f{i:03d}").write_bytes(os.urandom(200 + (i * 37) % 7800))
    # ~10 MB of files in packs of ~3 MiB: both parts have packs to read, and each pack of
    # ~800 files can be cut anywhere in its middle MiB (no piece is shorter than MIN_PIECE)
    config = Config.new(chunker=SMALL_CHUNKER, pack_size=3 * 1024 * 1024)
    storage = open_storage(s3_url, s3_store.options, wrap=True)
    snap = backup_paths(
        Repository.init(storage, PASSWORD, config), [str(src)], BackupOptions()
    ).snapshot
    storage.close()

    storage = open_storage(s3_url, s3_store.options, wrap=True)
    repo = Repository.open(storage, PASSWORD)
    infos = list(storage.list("data/"))
    packs = sum(info.size for info in infos)
    log = tmp_path / "ranges.jsonl"
    repo.storage = _Ranges(repo.storage, log)
    result = restore_snapshot(repo, snap, str(tmp_path / "out"), RestoreOptions(processes=2))
    storage.close()
    assert result.errors == []
    assert result.processes == 2
    same_tree(src, tmp_path / "out" / "many")
    reads = [json.loads(line) for line in log.read_text().splitlines()]
    assert len({r[0] for r in reads}) == 2, "both processes read packs"
    tree_packs = {loc.pack[-6:] for _, loc in repo.index.items() if loc.type == BLOB_TREE}
    data_reads = [r for r in reads if r[2] not in tree_packs]
    data_packs = len(infos) - len(tree_packs)
    # a part that reads only the second half of a pack reads its subkey prefix apart
    prefix = repo.aead.prefix_size
    keys = [r for r in data_reads if r[3] == 0 and r[1] == prefix]
    ranges = [r for r in data_reads if r not in keys]
    assert data_packs <= len(ranges) <= PIECES * data_packs, ranges
    starts = {(r[0], r[2]) for r in ranges if r[3] == 0}
    assert len(keys) == len({(r[0], r[2]) for r in keys}), keys
    assert not starts & {(r[0], r[2]) for r in keys}, "a key read by a part that has it"
    spans = sorted((r[2], r[3], r[3] + r[1]) for r in ranges)
    for (pack, _, end), (next_pack, start, _) in itertools.pairwise(spans):
        assert pack != next_pack or end <= start, f"{pack}: a range read twice"
    # the parts share the pieces out by what restoring them costs (shares.share_packs, by
    # their numbers in the index; a pack cut where its marks say the parts come level):
    # neither waits long on the other. Cut at the middle byte, the parts once differed by
    # more than half a pack (CI, session 24: files of 200 B to 7.8 KB lie unevenly); by the
    # pack's hash, one part once got 2 of 11 packs and the other 9; by whole packs, one part
    # of two got 62,000 of 100,000 small files.
    work = {pid: 0 for pid in {r[0] for r in reads}}
    for _, loc in repo.index.items():
        if loc.type != BLOB_TREE:
            (pid,) = (
                r[0]
                for r in data_reads
                if r[2] == loc.pack[-6:] and r[3] <= loc.offset < r[3] + r[1]
            )
            work[pid] += BLOB_COST + loc.stored
    # They differ by no more than a pack too short to cut, read whole by one part, and
    # the error of the marks' straight lines (each cut within a sixteenth of its pack's).
    costs = [(load.blobs * BLOB_COST + load.size, load.size) for load in repo.index.pack_loads()]
    whole = max((cost for cost, size in costs if size < 2 * MIN_PIECE), default=0)
    cut = sum(cost for cost, size in costs if size >= 2 * MIN_PIECE)
    assert max(work.values()) - min(work.values()) <= whole + cut / MARKS, work
    # the trees: their pack read once, from its start (the root lies last), for every level
    assert len(reads) - len(data_reads) == len(tree_packs), reads
    downloaded = sum(r[1] for r in reads if r not in keys)
    assert downloaded <= packs, f"{downloaded} bytes read for {packs} bytes of packs"


def test_a_part_killed_while_it_downloads_a_pack_fails_the_restore_and_a_rerun_finishes_it(
    s3_store: RunningStore,
    s3_url: str,
    source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    same_tree: Callable[..., None],
) -> None:
    """A part that owns whole packs and dies reading one (the OOM killer, say) must not
    leave a restore that looks complete: it fails with which part died, and the next run
    into the same target restores what is missing. (Packs of 64 KiB: dozens, so part 1
    surely owns some.)"""
    config = Config.new(chunker=SMALL_CHUNKER, pack_size=64 * 1024)
    storage = open_storage(s3_url, s3_store.options, wrap=True)
    snap = backup_paths(
        Repository.init(storage, PASSWORD, config), [str(source)], BackupOptions()
    ).snapshot
    storage.close()
    storage = open_storage(s3_url, s3_store.options, wrap=True)
    reopened = Repository.open(storage, PASSWORD)
    assert len(list(storage.list("data/"))) > 20
    parent = os.getpid()
    real = S3Storage.get

    def get(self: S3Storage, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if os.getpid() != parent and name.startswith("data/"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, name, offset, length)

    def get_stream(
        self: S3Storage, name: str, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        if os.getpid() != parent and name.startswith("data/"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_stream(self, name, offset, length)

    real_stream = S3Storage.get_stream
    monkeypatch.setattr(S3Storage, "get", get)
    monkeypatch.setattr(S3Storage, "get_stream", get_stream)
    out = tmp_path / "out"
    with pytest.raises(PartFailed, match="part 1 was killed by SIGKILL"):
        restore_snapshot(reopened, snap, str(out), RestoreOptions(processes=2))
    monkeypatch.undo()
    result = restore_snapshot(reopened, snap, str(out))
    storage.close()
    assert result.errors == []
    same_tree(source, out / "src")


# ---------------------------------------------------------------- packs read as they arrive


class _BreakingStreams(ForwardingStorage):
    """Streams packs in pieces of 16 KiB and breaks each pack's first stream after
    ``after`` bytes, with ``error``: a connection that drops part-way through a body."""

    def __init__(self, inner: Storage, after: int, error: type[StorageError]) -> None:
        super().__init__(inner)
        self.after, self.error = after, error
        self.broken: set[str] = set()

    def get_stream(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        sent = 0
        for piece in self.inner.get_stream(name, offset, length):
            for at in range(0, len(piece), 16 * 1024):
                if name.startswith("data/") and name not in self.broken and sent >= self.after:
                    self.broken.add(name)
                    raise self.error(self.location, "connection reset by peer", name=name)
                sent += len(piece[at : at + 16 * 1024])
                yield piece[at : at + 16 * 1024]


def _restore_through(
    s3_store: RunningStore,
    s3_url: str,
    snap: Snapshot,
    out: Path,
    breaker: Callable[[Storage], _BreakingStreams],
) -> tuple[RestoreResult, _BreakingStreams, RetryingStorage]:
    """Restore ``snap`` in one process through retry( limit( breaker( S3 ) ) )."""
    breaking = breaker(open_storage(s3_url, s3_store.options))
    retrying = RetryingStorage(
        LimitedStorage(breaking, 16), RetryPolicy(attempts=3, base_delay=0.01)
    )
    repo = Repository.open(retrying, PASSWORD)
    result = restore_snapshot(repo, snap, str(out), RestoreOptions(processes=1))
    retrying.close()
    return result, breaking, retrying


def test_a_pack_whose_download_breaks_part_way_is_resumed_where_it_broke(
    s3_store: RunningStore,
    s3_url: str,
    snap: Snapshot,
    source: Path,
    tmp_path: Path,
    same_tree: Callable[..., None],
) -> None:
    result, breaking, retrying = _restore_through(
        s3_store,
        s3_url,
        snap,
        tmp_path / "out",
        lambda inner: _BreakingStreams(inner, 100 * 1024, TransientError),
    )
    assert result.errors == []
    assert breaking.broken, "no pack's download broke: the test proves nothing"
    assert retrying.retries == len(breaking.broken)
    same_tree(source, tmp_path / "out" / "src")


def test_a_pack_that_cannot_be_read_part_way_fails_only_the_files_it_holds(
    s3_store: RunningStore, s3_url: str, snap: Snapshot, source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result, breaking, _ = _restore_through(
        s3_store,
        s3_url,
        snap,
        out,
        lambda inner: _BreakingStreams(inner, 100 * 1024, PermanentError),
    )
    assert breaking.broken
    assert result.errors, "a pack broke for good, and no file says so"
    for error in result.errors:
        assert "cannot be read" in error["error"]
        assert "connection reset" in error["error"]
    # a file that failed fails under each of its names (hard links are one file)
    failed = {
        (source / Path(e["path"]).relative_to(out / "src")).stat().st_ino for e in result.errors
    }
    restored = 0
    for path in source.rglob("*"):
        copy = out / "src" / path.relative_to(source)
        if path.is_file() and not path.is_symlink() and path.stat().st_ino not in failed:
            assert copy.read_bytes() == path.read_bytes(), copy
            restored += 1
    assert restored > 10  # the other packs' files were restored
    # every file written is counted, those written before the break in a range too
    errors = {e["path"] for e in result.errors}
    written = [
        p for p in out.rglob("*") if p.is_file() and not p.is_symlink() and str(p) not in errors
    ]
    assert result.files == len(written)
