"""Replication between filesystem repositories: what is copied, what is skipped, and that
a site is a whole repository on its own (restore, verify, forget with no primary)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.engine.replicate import (
    ReplicateOptions,
    ReplicationError,
    replicate,
)
from safehold.repo import ChunkerParams, Config, Repository
from safehold.storage import Storage, open_storage

PASSWORD = "correct horse battery staple"  # the ``repo`` fixture's (tests/engine/conftest.py)


def _site(path: Path) -> Storage:
    return open_storage(path.as_uri())


def _names(storage: Storage, prefix: str) -> set[str]:
    return {info.name for info in storage.list(prefix)}


def _history(repo: Repository, src: Path) -> dict[str, list[str]]:
    """Three sources, three snapshots each, an hour apart; tags on some."""
    ids: dict[str, list[str]] = {}
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for n in range(3):
        for source in ("db", "web", "logs"):
            (src / source).mkdir(parents=True, exist_ok=True)
            (src / source / f"f{n}").write_bytes(os.urandom(150_000))
            tags = ["weekly"] if n == 1 else []
            snap = backup_paths(
                repo,
                [str(src / source)],
                BackupOptions(source=source, tags=tags, time=start + timedelta(hours=n)),
            ).snapshot
            ids.setdefault(source, []).append(snap.id)
    return ids


def test_a_replica_restores_and_verifies_with_no_primary(
    repo: Repository,
    tmp_path: Path,
    tree_factory: Callable[..., Path],
    same_tree: Callable[..., None],
) -> None:
    src = tree_factory(tmp_path / "src")
    backup_paths(repo, [str(src)], BackupOptions(source="vol"))
    (src / "docs" / "note-3.txt").write_text("second version")
    last = backup_paths(repo, [str(src)], BackupOptions(source="vol")).snapshot

    result = replicate(repo, _site(tmp_path / "site"), PASSWORD)
    assert result.site_created
    assert len(result.snapshots_copied) == 2
    # byte for byte: the site holds the primary's packs, keys, config and snapshots
    primary, site = repo.storage, _site(tmp_path / "site")
    for prefix in ("data/", "keys/", "snapshots/"):
        assert _names(site, prefix) == _names(primary, prefix)
    for name in _names(primary, "data/"):
        assert site.get(name) == primary.get(name)
    assert site.get("config") == primary.get("config")

    shutil.rmtree(tmp_path / "repo")  # the primary is gone
    replica = Repository.open(_site(tmp_path / "site"), PASSWORD)
    assert verify_repository(replica, read_data_percent=100).ok
    restore_snapshot(replica, replica.find_snapshot(last.id[:12]), str(tmp_path / "out"))
    same_tree(src, tmp_path / "out" / "src")


def test_a_second_run_copies_nothing_and_reports_what_it_skipped(
    repo: Repository, tmp_path: Path
) -> None:
    _history(repo, tmp_path / "src")
    first = replicate(repo, _site(tmp_path / "site"), PASSWORD)
    again = replicate(repo, _site(tmp_path / "site"), PASSWORD)
    assert first.total().copied > 0
    assert again.total().copied == 0
    assert again.total().copied_bytes == 0
    assert again.counts["snapshots"].skipped == 9
    assert again.summary()["snapshots_present"] == 9


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (ReplicateOptions(), {"db": 3, "web": 3, "logs": 3}),
        (ReplicateOptions(sources=["db", "web"]), {"db": 3, "web": 3}),
        (ReplicateOptions(tags=["weekly"]), {"db": 1, "web": 1, "logs": 1}),
        (ReplicateOptions(newest=1), {"db": 1, "web": 1, "logs": 1}),
        (ReplicateOptions(sources=["logs"], newest=2), {"logs": 2}),
    ],
)
def test_select_by_source_tags_and_newest_n(
    repo: Repository, tmp_path: Path, options: ReplicateOptions, expected: dict[str, int]
) -> None:
    ids = _history(repo, tmp_path / "src")
    replicate(repo, _site(tmp_path / "site"), PASSWORD, options)
    site = Repository.open(_site(tmp_path / "site"), PASSWORD)
    got: dict[str, list[str]] = {}
    for snap in site.snapshots():
        got.setdefault(snap.source, []).append(snap.id)
    assert {k: len(v) for k, v in got.items()} == expected
    for source, copied in got.items():
        if options.newest:
            assert copied == ids[source][-options.newest :]  # the newest ones
    # exactly the packs those snapshots need: the site verifies, and has no extra packs
    report = verify_repository(site, read_data_percent=100)
    assert report.ok
    assert report.unreferenced_packs == 0
    if len(expected) < 3:
        assert len(_names(site.storage, "data/")) < len(_names(repo.storage, "data/"))


def test_resume_after_packs_arrived_copies_them_again_never(
    repo: Repository, tmp_path: Path
) -> None:
    _history(repo, tmp_path / "src")
    replicate(repo, _site(tmp_path / "site"), PASSWORD)
    site = _site(tmp_path / "site")
    packs = len(_names(site, "data/"))
    # As if killed after the packs arrived but before index and snapshots did:
    for prefix in ("index/", "snapshots/"):
        for name in _names(site, prefix):
            site.delete(name)
    # ... and before the last few packs arrived.
    gone = sorted(_names(site, "data/"))[:2]
    for name in gone:
        site.delete(name)

    resumed = replicate(repo, _site(tmp_path / "site"), PASSWORD)
    assert resumed.counts["data"].copied == 2
    assert resumed.counts["data"].skipped == packs - 2
    assert len(resumed.snapshots_copied) == 9
    assert verify_repository(Repository.open(site, PASSWORD), read_data_percent=100).ok


def test_refuses_a_site_that_holds_another_repository(repo: Repository, tmp_path: Path) -> None:
    other = Repository.init(
        _site(tmp_path / "other"), PASSWORD, Config.new(chunker=ChunkerParams())
    )
    with pytest.raises(ReplicationError) as err:
        replicate(repo, other.storage, PASSWORD)
    assert str(tmp_path / "other") in str(err.value)
    assert "another repository" in str(err.value)
    assert _names(other.storage, "snapshots/") == set()


def test_a_damaged_pack_at_the_primary_is_never_copied(repo: Repository, tmp_path: Path) -> None:
    _history(repo, tmp_path / "src")
    # a pack of file data (150 kB), not of trees (trees have packs of their own, and a
    # damaged tree stops the plan of its snapshot before any pack is copied)
    packs = sorted(_names(repo.storage, "data/"))
    victim = next(n for n in packs if (tmp_path / "repo" / n).stat().st_size > 100_000)
    path = tmp_path / "repo" / victim
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(ReplicationError) as err:
        replicate(repo, _site(tmp_path / "site"), PASSWORD)
    assert victim in str(err.value)
    assert "damaged at the primary" in str(err.value)
    site = _site(tmp_path / "site")
    assert victim not in _names(site, "data/")
    assert _names(site, "snapshots/") == set()  # no snapshot whose data is not all there
    assert verify_repository(Repository.open(site, PASSWORD)).ok


def test_a_snapshot_whose_blobs_are_in_no_index_is_reported_not_copied(
    repo: Repository, tmp_path: Path
) -> None:
    ids = _history(repo, tmp_path / "src")
    # A snapshot whose tree no index names (as if the index object naming it were lost),
    # stored for real: a reload of the index cannot bring it back.
    good = repo.snapshots(source="db")[-1]
    lost = dataclasses.replace(good, tree="ab" * 32, time="2026-11-02T00:00:00Z", id="")
    lost_id = repo.save_snapshot(lost)
    result = replicate(repo, _site(tmp_path / "site"), PASSWORD)
    assert not result.ok
    assert list(result.snapshots_failed) == [lost_id]
    assert "is in no index" in result.snapshots_failed[lost_id]
    assert len(result.snapshots_copied) == 9
    assert ids["db"][-1] in result.snapshots_copied


def test_each_site_keeps_its_own_retention(repo: Repository, tmp_path: Path) -> None:
    """A site forgets on its own (deleting snapshot objects, as forget does); --only-newer
    keeps the next run from bringing the forgotten ones back, but copies new ones."""
    ids = _history(repo, tmp_path / "src")
    replicate(repo, _site(tmp_path / "site"), PASSWORD)
    site = _site(tmp_path / "site")
    for snap_id in ids["db"][:2]:
        site.delete(f"snapshots/{snap_id}")

    (tmp_path / "src" / "db" / "new").write_bytes(os.urandom(10_000))
    newer = backup_paths(
        repo,
        [str(tmp_path / "src" / "db")],
        BackupOptions(source="db", time=datetime(2026, 11, 2, tzinfo=UTC)),
    ).snapshot
    result = replicate(repo, _site(tmp_path / "site"), PASSWORD, ReplicateOptions(only_newer=True))
    assert result.snapshots_copied == [newer.id]
    assert sorted(result.snapshots_older) == sorted(ids["db"][:2])
    replica = Repository.open(site, PASSWORD)
    assert [s.id for s in replica.snapshots(source="db")] == [ids["db"][2], newer.id]
    assert verify_repository(replica).ok


def test_dry_run_writes_nothing(repo: Repository, tmp_path: Path) -> None:
    _history(repo, tmp_path / "src")
    result = replicate(repo, _site(tmp_path / "site"), PASSWORD, ReplicateOptions(dry_run=True))
    assert result.counts["data"].copied == len(_names(repo.storage, "data/"))
    assert result.counts["keys"].copied == 1
    assert not (tmp_path / "site").exists() or _names(_site(tmp_path / "site"), "") == set()


def test_a_site_with_another_password_for_the_same_keys(repo: Repository, tmp_path: Path) -> None:
    """After creation, keys are the site's own: a key added at the site opens it."""
    _history(repo, tmp_path / "src")
    replicate(repo, _site(tmp_path / "site"), PASSWORD, ReplicateOptions(newest=1))
    site = Repository.open(_site(tmp_path / "site"), PASSWORD)
    site.add_key("site password")
    result = replicate(repo, _site(tmp_path / "site"), "site password")
    assert len(result.snapshots_copied) == 6
    assert result.counts["keys"].copied == 0


def test_the_command_reports_and_exits_as_documented(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from safehold.cli.main import main

    _history(repo, tmp_path / "src")
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    monkeypatch.setenv("SAFEHOLD_REPOSITORY", (tmp_path / "repo").as_uri())
    site = (tmp_path / "site").as_uri()

    assert main(["replicate", "--to", site, "--tag", "weekly", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["snapshots_copied"] == 3
    assert doc["objects"]["snapshots"]["copied"] == 3
    assert doc["total"]["copied_bytes"] > 0
    assert _names(_site(tmp_path / "site"), "locks/") == set()  # both locks released
    assert _names(repo.storage, "locks/") == set()

    assert main(["replicate", "--to", site]) == 0
    table = capsys.readouterr().out
    assert "snapshots" in table
    assert "6 of 9 selected snapshot(s), 3 already there" in table

    other = tmp_path / "other"
    Repository.init(_site(other), "another", Config.new(chunker=ChunkerParams()))
    assert main(["replicate", "--to", other.as_uri(), "--json"]) == 1
    captured = capsys.readouterr()
    assert f"{other.as_uri()}: holds another repository" in captured.err
    assert main(["replicate", "--to", site, "--newest", "0"]) == 2
    assert "--newest" in capsys.readouterr().err


def test_a_backup_that_ends_while_a_replication_starts_is_copied_not_called_damaged(
    repo: Repository, tmp_path: Path
) -> None:
    """The operator replicates while the next run backs up: a snapshot written after the
    replicating process loaded the index (it opened the repository first) must be copied
    like any other, not reported as a damaged primary."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(200_000))
    backup_paths(repo, [str(src)], BackupOptions(source="vol"))
    replicating = Repository.open(repo.storage, PASSWORD)  # index loaded now
    (src / "b").write_bytes(os.urandom(200_000))
    later = backup_paths(repo, [str(src)], BackupOptions(source="vol")).snapshot
    result = replicate(replicating, _site(tmp_path / "site"), PASSWORD)
    assert result.snapshots_failed == {}
    assert later.id in result.snapshots_copied
    assert len(result.snapshots_copied) == 2
    site = Repository.open(_site(tmp_path / "site"), PASSWORD)
    assert verify_repository(site, read_data_percent=100).ok


def test_only_newer_compares_within_one_host(repo: Repository, tmp_path: Path) -> None:
    """Two hosts back up a source of the same name (format section 9: a series is a source
    on one host). Host a's newer snapshot at the site must not hold back host b's older one,
    which the site has never had; within host a, the older snapshot the site forgot stays
    forgotten."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(20_000))
    start = datetime(2026, 11, 1, tzinfo=UTC)

    def snap(host: str, hours: int) -> str:
        options = BackupOptions(source="db", host=host, time=start + timedelta(hours=hours))
        return backup_paths(repo, [str(src)], options).snapshot.id

    a_old, a_new = snap("a", 0), snap("a", 2)
    replicate(repo, _site(tmp_path / "site"), PASSWORD, ReplicateOptions(sources=["db"]))
    _site(tmp_path / "site").delete(f"snapshots/{a_old}")
    b_old = snap("b", 1)  # older than a's newest at the site, but the only one of host b

    result = replicate(repo, _site(tmp_path / "site"), PASSWORD, ReplicateOptions(only_newer=True))
    assert result.snapshots_copied == [b_old]
    assert result.snapshots_older == [a_old]
    replica = Repository.open(_site(tmp_path / "site"), PASSWORD)
    assert sorted(s.id for s in replica.snapshots(source="db")) == sorted([a_new, b_old])


def test_a_failed_copy_leaves_no_hole_that_only_newer_would_skip(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A series reaches the site oldest first: when one snapshot cannot be copied, none newer
    of its series is, so the next ``--only-newer`` run still sees it as missing. (With a hole,
    it would count as older than the site's newest and stay away for good: a WAL archive's
    drain, say, without which a point-in-time restore from the site stops there.)"""
    from safehold.engine.replicate import transfer

    src = tmp_path / "src"
    src.mkdir()
    start = datetime(2026, 11, 1, tzinfo=UTC)

    def snap(source: str, minutes: int) -> str:
        (src / "f").write_bytes(os.urandom(20_000))
        options = BackupOptions(source=source, time=start + timedelta(minutes=minutes))
        return backup_paths(repo, [str(src)], options).snapshot.id

    drains = [snap("db/pg/wal", m) for m in (0, 5, 10)]
    other = snap("web", 1)
    once = transfer.Copier._once

    def failing(self: transfer.Copier, name: str) -> transfer.Arrived:
        if name == f"snapshots/{drains[0]}":
            raise OSError("injected: the site refused this object")
        return once(self, name)

    monkeypatch.setattr(transfer.Copier, "_once", failing)
    options = ReplicateOptions(only_newer=True)
    with pytest.raises(ReplicationError, match="2 newer one\\(s\\) were not tried"):
        replicate(repo, _site(tmp_path / "site"), PASSWORD, options)
    assert _names(_site(tmp_path / "site"), "snapshots/") == {f"snapshots/{other}"}

    monkeypatch.undo()
    again = replicate(repo, _site(tmp_path / "site"), PASSWORD, options)
    assert sorted(again.snapshots_copied) == sorted(drains)
    replica = Repository.open(_site(tmp_path / "site"), PASSWORD)
    assert sorted(s.id for s in replica.snapshots(source="db/pg/wal")) == sorted(drains)
