"""Immutable backups: object lock on every object the repository writes except locks.

SeaweedFS enforces S3 Object Lock, so the S3 tests are end to end on a lock-enabled
bucket: a locked object cannot be deleted, lock objects stay deletable, and a repository
there backs up, restores, forgets and prunes, keeping and reporting what is locked.
fake-gcs-server and Azurite cannot enforce retention (TESTBED.md), so for GCS and Azure
the tests check the requests the providers send (recorded at the HTTP layer for GCS, at
the SDK call for Azure) and how a refused delete is reported; docs/immutability.md names
the gap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.engine import BackupOptions, backup_paths, restore_snapshot, verify_repository
from safehold.engine.forget import forget_snapshots
from safehold.engine.prune import PruneOptions, _Prune, prune_repository
from safehold.engine.retention import RetentionPolicy
from safehold.repo import ChunkerParams, Config, Repository, RepositoryLock
from safehold.storage import (
    InvalidLocation,
    ObjectLock,
    ObjectLocked,
    ObjectLockUnsupported,
    open_storage,
)
from testground.objectstores import RunningStore

PASSWORD = "worm password"
LOCK = {"object_lock_mode": "governance", "object_lock_days": "1"}


@pytest.fixture
def lock_bucket(s3_store: RunningStore) -> str:
    """A bucket with object lock enabled (which turns versioning on)."""
    name = f"worm-{uuid.uuid4().hex[:10]}"
    s3_store.s3_client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def test_a_locked_object_cannot_be_deleted_and_a_lock_object_can(
    s3_store: RunningStore, lock_bucket: str
) -> None:
    storage = open_storage(s3_store.url(lock_bucket, "p"), {**s3_store.options, **LOCK})
    storage.create("data/ab/abc", b"pack bytes")
    storage.create("locks/l1", b"a lock")
    retention = s3_store.s3_client().get_object_retention(Bucket=lock_bucket, Key="p/data/ab/abc")
    assert retention["Retention"]["Mode"] == "GOVERNANCE"
    until = retention["Retention"]["RetainUntilDate"]
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(days=1)
    with pytest.raises(ObjectLocked, match="data/ab/abc") as err:
        storage.delete("data/ab/abc")
    assert "retain-until" in str(err.value)
    assert storage.get("data/ab/abc") == b"pack bytes"
    storage.delete("locks/l1")  # locks are exempt, and every version goes
    assert [i.name for i in storage.list("")] == ["data/ab/abc"]
    versions = s3_store.s3_client().list_object_versions(Bucket=lock_bucket, Prefix="p/locks/")
    assert not versions.get("Versions")
    assert not versions.get("DeleteMarkers")
    # A large object goes up as a multipart upload; it is locked just the same.
    storage.put("data/cd/big", os.urandom(9 * 1024 * 1024))
    big = s3_store.s3_client().get_object_retention(Bucket=lock_bucket, Key="p/data/cd/big")
    assert big["Retention"]["Mode"] == "GOVERNANCE"


def test_an_upload_without_a_version_spares_the_deletes_asking_for_the_lock(
    s3_store: RunningStore, lock_bucket: str
) -> None:
    """Every backup deletes its lock at the end. An upload's answer without a version id
    tells that the bucket keeps no versions, so it has no object lock: the delete sends no
    GetObjectLockConfiguration (a request per backup saved). On a lock-enabled bucket
    written without a lock of our own (a recovery site's, say) the answer has a version
    id: the delete still asks, and removes every version, delete markers included."""
    asked: list[str] = []

    def opened(bucket: str) -> Any:
        storage = open_storage(s3_store.url(bucket, "p"), s3_store.options)
        storage._client.meta.events.register(  # type: ignore[attr-defined]
            "before-call.s3.GetObjectLockConfiguration", lambda **_: asked.append(bucket)
        )
        return storage

    plain_bucket = f"plain-{uuid.uuid4().hex[:10]}"
    s3_store.make_bucket(plain_bucket)
    plain = opened(plain_bucket)
    plain.create("locks/l1", b"a lock")
    plain.delete("locks/l1")
    assert asked == []
    assert list(plain.list("")) == []

    locked = opened(lock_bucket)
    locked.create("locks/l1", b"a lock")
    locked.delete("locks/l1")
    assert asked == [lock_bucket]
    versions = s3_store.s3_client().list_object_versions(Bucket=lock_bucket, Prefix="p/locks/")
    assert not versions.get("Versions")
    assert not versions.get("DeleteMarkers")


def test_lock_options_are_checked_and_file_urls_refuse_a_lock(tmp_path: Path) -> None:
    with pytest.raises(InvalidLocation, match=r"object_lock_mode .* object_lock_days"):
        open_storage("s3://b/p", {"object_lock_mode": "governance", "endpoint": "http://x"})
    with pytest.raises(InvalidLocation, match="object_lock_days must be an integer"):
        open_storage("s3://b/p", {"object_lock_mode": "compliance", "object_lock_days": "0"})
    with pytest.raises(ObjectLockUnsupported, match="cannot lock objects"):
        open_storage(tmp_path.as_uri(), LOCK)
    storage = open_storage(tmp_path.as_uri())
    config = Config.new(object_lock_mode="governance", object_lock_days=3)
    with pytest.raises(ObjectLockUnsupported, match=r"immutability\.md"):
        Repository.init(storage, PASSWORD, config)


def test_a_repository_on_a_lock_enabled_bucket_backs_up_restores_forgets_and_prunes(
    s3_store: RunningStore,
    lock_bucket: str,
    tmp_path: Path,
) -> None:
    url = s3_store.url(lock_bucket, "repo")
    env = {**os.environ, "SAFEHOLD_REPOSITORY": url, "SAFEHOLD_PASSWORD": PASSWORD}
    opts = [a for k, v in s3_store.options.items() for a in ("-o", f"{k}={v}")]
    init = subprocess.run(
        [
            sys.executable,
            "-m",
            "safehold",
            "repo",
            "init",
            *opts,
            "--pack-size",
            "1",
            "--object-lock-mode",
            "governance",
            "--object-lock-days",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert init.returncode == 0, init.stderr
    config = json.loads(
        s3_store.s3_client().get_object(Bucket=lock_bucket, Key="repo/config")["Body"].read()
    )
    assert config["object_lock"] == {"mode": "governance", "days": 1}

    # Opened without any lock option: the config alone makes every write locked.
    repo = Repository.open(open_storage(url, s3_store.options), PASSWORD)
    src = tmp_path / "src"
    src.mkdir()
    snaps = []
    for i in range(3):
        (src / f"f{i}").write_bytes(os.urandom(300_000))
        snaps.append(backup_paths(repo, [str(src)], BackupOptions(source="vol")).snapshot)
    pack = next(iter(repo.storage.list("data/"))).name
    held = s3_store.s3_client().get_object_retention(Bucket=lock_bucket, Key=f"repo/{pack}")
    assert held["Retention"]["Mode"] == "GOVERNANCE"
    assert list(repo.storage.list("locks/")) == [], "lock objects were not deleted"

    assert restore_snapshot(repo, snaps[-1], str(tmp_path / "out")).errors == []
    for i in range(3):
        assert (tmp_path / "out" / "src" / f"f{i}").read_bytes() == (src / f"f{i}").read_bytes()

    # forget: the snapshots that go are locked for a day; forget keeps and reports them.
    report = forget_snapshots(repo, RetentionPolicy(keep_last=1))
    assert len(report.forgotten) == 2
    assert report.removed == []
    assert all(item.locked_until for item in report.forgotten)
    cli = subprocess.run(
        [sys.executable, "-m", "safehold", "forget", *opts, "--keep-last", "1"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert "under an object lock until" in cli.stderr
    assert "removed 0 snapshot" in cli.stdout

    # prune: nothing is unused yet (the snapshots stay), and it completes cleanly.
    pruned = prune_repository(repo, PruneOptions(grace=timedelta(0)))
    assert pruned.packs_deleted == 0
    assert verify_repository(repo, read_data_percent=100).ok

    # A day later (prune's clock moved on) the locks would have expired; the server still
    # refuses the delete here, and prune reports the object instead of failing.
    tomorrow = _Prune(repo, PruneOptions(grace=timedelta(0)))
    tomorrow.now = datetime.now(UTC) + timedelta(days=2)
    orphan = repo.save_object("data", os.urandom(3000))
    tomorrow.packs = {orphan: next(i for i in repo.storage.list("data/") if orphan in i.name)}
    assert tomorrow._delete(f"data/{orphan[:2]}/{orphan}", tomorrow.packs[orphan]) is False
    assert "refused" in tomorrow.report.locked[f"data/{orphan[:2]}/{orphan}"]


def test_prune_never_tries_to_delete_a_locked_object_and_reports_it(
    s3_store: RunningStore, lock_bucket: str
) -> None:
    """Unused packs under a live lock: prune leaves them, lists them with their expiry,
    and makes no delete request for them (the server would refuse it anyway)."""
    storage = open_storage(s3_store.url(lock_bucket, "r2"), s3_store.options)
    config = Config.new(
        chunker=ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024),
        pack_size=256 * 1024,
        object_lock_mode="governance",
        object_lock_days=1,
    )
    repo = Repository.init(storage, PASSWORD, config)
    orphan = repo.save_object("data", os.urandom(5000))  # a pack no index names
    deletes: list[str] = []
    real_delete = repo.storage.delete

    def recording_delete(name: str) -> None:
        deletes.append(name)
        real_delete(name)

    repo.storage.delete = recording_delete  # type: ignore[method-assign]
    report = prune_repository(repo, PruneOptions(grace=timedelta(0)))
    name = f"data/{orphan[:2]}/{orphan}"
    assert name in report.locked
    expiry = datetime.fromisoformat(report.locked[name].replace("Z", "+00:00"))
    assert timedelta(hours=23) < expiry - datetime.now(UTC) <= timedelta(days=1)
    assert name not in deletes
    assert [d for d in deletes if not d.startswith("locks/")] == []
    with RepositoryLock(repo, exclusive=True, operation="check"):
        pass  # the prune's own lock was deleted, so an exclusive lock is free again


# ---------------------------------------------------------------------------- GCS
def test_gcs_uploads_carry_object_retention(gcs_store: RunningStore) -> None:
    """fake-gcs-server stores but does not enforce retention: check the request."""
    bucket = f"worm-{uuid.uuid4().hex[:10]}"
    gcs_store.make_bucket(bucket)
    storage = open_storage(gcs_store.url(bucket, "p"), {**gcs_store.options, **LOCK})
    sent: list[bytes] = []
    session = storage._client._http  # type: ignore[attr-defined]
    real = session.request

    def record(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        data = kwargs.get("data")
        if method == "POST" and isinstance(data, bytes):
            sent.append(data)
        return real(method, url, *args, **kwargs)

    session.request = record
    storage.create("data/ab/abc", b"pack bytes")
    storage.create("locks/l1", b"a lock")
    assert len(sent) == 2
    locked, lock = sent
    meta = json.loads(locked.split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0])
    assert meta["retention"]["mode"] == "Unlocked"  # governance; compliance is "Locked"
    until = datetime.fromisoformat(meta["retention"]["retainUntilTime"].replace("Z", "+00:00"))
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(days=1)
    assert b"retention" not in lock  # locks stay deletable
    assert storage.get("data/ab/abc") == b"pack bytes"


def test_gcs_delete_refused_by_retention_is_object_locked(gcs_store: RunningStore) -> None:
    import google.api_core.exceptions as gx

    bucket = f"worm-{uuid.uuid4().hex[:10]}"
    gcs_store.make_bucket(bucket)
    storage: Any = open_storage(gcs_store.url(bucket, "p"), {**gcs_store.options, **LOCK})

    class Refusing:
        def __init__(self, name: str) -> None:
            self.name = name

        def delete(self, **kwargs: Any) -> None:
            raise gx.Forbidden("Object 'p/data/x' is subject to an object retention policy")

    storage._blob = lambda name, size=0: Refusing(name)
    with pytest.raises(ObjectLocked, match="retention or hold"):
        storage.delete("data/x")


# -------------------------------------------------------------------------- Azure
def test_azure_uploads_carry_an_immutability_policy(azure_store: RunningStore) -> None:
    """Azurite has no version-level immutability: record the SDK call, then let Azurite
    store the blob without the policy."""
    from azure.storage.blob import ImmutabilityPolicy

    container = f"worm-{uuid.uuid4().hex[:10]}"
    azure_store.make_bucket(container)
    storage: Any = open_storage(
        azure_store.url(container, "p"),
        {**azure_store.options, "object_lock_mode": "compliance", "object_lock_days": "7"},
    )
    calls: list[dict[str, Any]] = []
    real = storage._container.upload_blob

    def record(name: str, data: bytes, **kwargs: Any) -> Any:
        calls.append({"name": name, **kwargs})
        kwargs.pop("immutability_policy", None)
        return real(name, data, **kwargs)

    storage._container.upload_blob = record
    storage.create("data/ab/abc", b"pack bytes")
    storage.create("locks/l1", b"a lock")
    policy = calls[0]["immutability_policy"]
    assert isinstance(policy, ImmutabilityPolicy)
    assert policy.policy_mode == "Locked"  # compliance
    assert timedelta(days=6, hours=23) < policy.expiry_time - datetime.now(UTC) <= timedelta(days=7)
    assert "immutability_policy" not in calls[1]
    assert storage.get("data/ab/abc") == b"pack bytes"


def test_azure_delete_refused_by_immutability_is_object_locked(azure_store: RunningStore) -> None:
    from azure.core.exceptions import HttpResponseError

    container = f"worm-{uuid.uuid4().hex[:10]}"
    azure_store.make_bucket(container)
    storage: Any = open_storage(azure_store.url(container, "p"), {**azure_store.options, **LOCK})

    def refuse(name: str, **kwargs: Any) -> None:
        exc = HttpResponseError(message="This operation is not permitted as the blob is immutable")
        exc.error_code = "BlobImmutableDueToPolicy"
        exc.status_code = 409
        raise exc

    storage._container.delete_blob = refuse
    with pytest.raises(ObjectLocked, match="immutability policy"):
        storage.delete("data/x")


def test_object_lock_values() -> None:
    from safehold.storage.providers.azure import AzureStorage
    from safehold.storage.providers.gcs import GCSStorage
    from safehold.storage.providers.s3 import S3Storage

    r = ObjectLock("compliance", 30, exempt=("locks/",))
    assert S3Storage.lock_mode_names[r.mode] == "COMPLIANCE"
    assert GCSStorage.lock_mode_names[r.mode] == "Locked"
    assert AzureStorage.lock_mode_names[r.mode] == "Locked"
    assert not r.applies_to("locks/abc")
    assert r.applies_to("data/ab/abc")
    written = datetime(2026, 1, 1, tzinfo=UTC)
    assert r.expires(written) == datetime(2026, 1, 31, tzinfo=UTC)
    with pytest.raises(ValueError, match="governance, compliance"):
        ObjectLock("strict", 1)
