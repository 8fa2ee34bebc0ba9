"""A recovery site that locks what replication writes, though the primary has no lock.

The operator replicates to such a site with ``-O object_lock_mode=governance -O
object_lock_days=N``. The site's config is the primary's (no lock recorded), so the lock
comes only from those options: every object written there must carry it (locks excepted),
and a later ``forget --prune`` at the site must neither fail on the locked objects nor
claim it removed them. With ``-o object_lock_*`` it also knows when each lock ends and sends
no delete that would be refused (docs/immutability.md). On SeaweedFS, which enforces S3
Object Lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from testground.objectstores import RunningStore

PASSWORD = "immutable site password"
SITE_LOCK = ["object_lock_mode=governance", "object_lock_days=2"]

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "AWS_"))}
    env["SAFEHOLD_PASSWORD"] = PASSWORD
    env["SAFEHOLD_REPOSITORY"] = (tmp_path / "primary").as_uri()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.stdout.strip(), done.stderr
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _primary_with_two_snapshots(run: Run, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    assert run("repo", "init").returncode == 0
    for day in (1, 2):
        (data / "ledger.txt").write_text(f"ledger day {day}\n" * 20_000)
        done = run("backup", str(data), "--source", "shop/nightly/vol", "--time", f"2026-11-0{day}")
        assert done.returncode == 0, done.stderr
    return data


def test_a_locking_site_of_an_unlocked_primary(
    s3_store: RunningStore, run: Run, tmp_path: Path
) -> None:
    bucket = f"site-{uuid.uuid4().hex[:10]}"
    client = s3_store.s3_client()
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    site = s3_store.url(bucket, "site")
    o = [a for k, v in s3_store.options.items() for a in ("-o", f"{k}={v}")]
    to = [a for k, v in s3_store.options.items() for a in ("-O", f"{k}={v}")]
    lock_to = [a for kv in SITE_LOCK for a in ("-O", kv)]
    lock_o = [a for kv in SITE_LOCK for a in ("-o", kv)]
    _primary_with_two_snapshots(run, tmp_path)

    done = run("replicate", "--to", site, *to, *lock_to, "--json")
    assert done.returncode == 0, done.stderr
    assert _summary(done)["snapshots_copied"] == 2

    # every object at the site is locked for two days; no lock object is left behind
    listed = client.list_objects_v2(Bucket=bucket, Prefix="site/")["Contents"]
    kinds = {obj["Key"].split("/")[1] for obj in listed}
    assert kinds == {"config", "keys", "data", "index", "snapshots"}
    for obj in listed:
        retention = client.get_object_retention(Bucket=bucket, Key=obj["Key"])["Retention"]
        assert retention["Mode"] == "GOVERNANCE", obj["Key"]
        left = retention["RetainUntilDate"] - datetime.now(UTC)
        assert timedelta(days=1, hours=23) < left <= timedelta(days=2), obj["Key"]

    # forget --prune at the site without the lock options: nothing fails, nothing is claimed
    plain = run("forget", "-r", site, *o, "--keep-last", "1", "--prune", "--grace", "0", "--json")
    assert plain.returncode == 0, plain.stderr
    doc = _summary(plain)
    assert doc["removed"] == 0
    assert doc["locked"] == 1
    (locked,) = [i for i in doc["items"] if i["locked_until"]]
    assert locked["locked_until"] == "unknown (the server refused the delete)"
    assert doc["prune"]["bytes_freed"] == 0
    assert "under an object lock" in plain.stderr

    # with the lock options it knows when the lock ends and sends no delete at all
    known = run(
        "forget", "-r", site, *o, *lock_o, "--keep-last", "1", "--prune", "--grace", "0", "--json"
    )
    assert known.returncode == 0, known.stderr
    doc = _summary(known)
    (locked,) = [i for i in doc["items"] if i["locked_until"]]
    until = datetime.fromisoformat(locked["locked_until"].replace("Z", "+00:00"))
    assert timedelta(days=1, hours=23) < until - datetime.now(UTC) <= timedelta(days=2)
    assert doc["removed"] == 0
    assert doc["prune"]["bytes_freed"] == 0

    # the site still holds both snapshots, whole: it verifies and restores
    snaps = _summary(run("snapshots", "-r", site, *o, "--json"))
    assert snaps["count"] == 2
    assert run("verify", "-r", site, *o, "--read-data").returncode == 0
    out = tmp_path / "restored"
    restored = run("restore", "latest", str(out), "-r", site, *o)
    assert restored.returncode == 0, restored.stderr
    assert (out / "data" / "ledger.txt").read_text() == "ledger day 2\n" * 20_000
    versions = client.list_object_versions(Bucket=bucket, Prefix="site/locks/")
    assert not versions.get("Versions")
    assert not versions.get("DeleteMarkers")


def test_replicating_with_a_lock_to_a_bucket_that_cannot_lock_is_refused(
    s3_store: RunningStore, run: Run, tmp_path: Path
) -> None:
    bucket = f"plain-{uuid.uuid4().hex[:10]}"
    s3_store.make_bucket(bucket)
    to = [a for k, v in s3_store.options.items() for a in ("-O", f"{k}={v}")]
    lock_to = [a for kv in SITE_LOCK for a in ("-O", kv)]
    _primary_with_two_snapshots(run, tmp_path)
    done = run("replicate", "--to", s3_store.url(bucket, "site"), *to, *lock_to, "--json")
    assert done.returncode == 1
    assert "create the bucket with object lock enabled" in _summary(done)["error"]
    assert "Contents" not in s3_store.s3_client().list_objects_v2(Bucket=bucket)
