"""Round trips on the three real object-store servers (SeaweedFS S3, fake-gcs-server,
Azurite): the same engine, the same bytes back, a clean verify, and working locks."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.repo import ChunkerParams, Config, LockConflict, Repository, RepositoryLock
from safehold.storage import open_storage

PASSWORD = "object store password"


@pytest.fixture(params=["s3_store", "gcs_store", "azure_store"])
def store_url(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    store = request.getfixturevalue(request.param)
    bucket = f"eng-{uuid.uuid4().hex[:12]}"
    store.make_bucket(bucket)
    return store.url(bucket, "team/repo"), dict(store.options)


def test_round_trip_on_a_real_object_store(
    store_url: tuple[str, dict[str, str]],
    tmp_path: Path,
    tree_factory: Callable[..., Path],
    same_tree: Callable[..., None],
) -> None:
    url, options = store_url
    storage = open_storage(url, options)
    config = Config.new(
        chunker=ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024),
        pack_size=512 * 1024,
    )
    repo = Repository.init(storage, PASSWORD, config)
    src = tree_factory(tmp_path / "src", big=600_000)
    first = backup_paths(repo, [str(src)], BackupOptions(source="vol")).snapshot
    (src / "docs" / "note-9.txt").write_text("changed on the volume")
    second = backup_paths(repo, [str(src)], BackupOptions(source="vol")).snapshot
    assert second.parent == first.id
    assert second.summary["files_changed"] == 1

    again = Repository.open(open_storage(url, options), PASSWORD)
    assert [s.id for s in again.snapshots(source="vol")] == [first.id, second.id]
    result = restore_snapshot(again, second, str(tmp_path / "out"))
    assert result.errors == []
    same_tree(src, tmp_path / "out" / "src")
    assert verify_repository(again, read_data_percent=100).ok

    with RepositoryLock(repo, exclusive=True, operation="prune"), pytest.raises(LockConflict):
        RepositoryLock(again, exclusive=False, operation="backup").acquire()
