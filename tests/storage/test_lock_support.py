"""Immutability asked of a bucket, and of a repository that exists already.

``repo init --object-lock-*`` checks that the bucket can lock objects before writing
anything, and says how to enable it per provider; fake-gcs-server and Azurite report no
retention support (they cannot enforce it, TESTBED.md), so on them the refusal is what a
bucket without the feature gets. ``repo init --if-absent --object-lock-*`` on an existing
repository accepts the same lock and refuses another one (exit code 2): the lock is fixed
when the repository is created.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from testground.objectstores import RunningStore

PASSWORD = "lock support password"
LOCK = ["--object-lock-mode", "governance", "--object-lock-days", "30"]


def _bucket(store: RunningStore, *, lock: bool = False) -> str:
    name = f"lock-{uuid.uuid4().hex[:10]}"
    if lock:
        store.s3_client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    else:
        store.make_bucket(name)
    return name


def _run(
    url: str, *args: str, options: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    opts = [a for k, v in (options or {}).items() for a in ("-o", f"{k}={v}")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "safehold", *args, "-r", url, *opts, "--json"],
        env={**env, "SAFEHOLD_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


@pytest.mark.parametrize(
    ("provider", "how"),
    [
        ("s3", "create the bucket with object lock enabled"),
        ("gcs", "--enable-per-object-retention"),
        ("azure", "enable version-level immutability on the container"),
    ],
)
def test_init_with_a_lock_on_a_bucket_that_cannot_lock_says_how_to_enable_it(
    provider: str, how: str, request: pytest.FixtureRequest
) -> None:
    store: RunningStore = request.getfixturevalue(f"{provider}_store")
    bucket = _bucket(store)
    url = store.url(bucket, "repo")
    done = _run(url, "repo", "init", *LOCK, options=store.options)
    assert done.returncode == 1
    error = _summary(done)["error"]
    assert how in error
    assert "docs/immutability.md" in error
    # nothing was written: the location is still empty
    empty = _run(url, "repo", "info", "--allow-empty", options=store.options)
    assert _summary(empty)["empty"] is True


def test_init_with_a_lock_on_a_directory_is_refused(tmp_path: Path) -> None:
    done = _run((tmp_path / "repo").as_uri(), "repo", "init", *LOCK)
    assert done.returncode == 1
    assert "this provider cannot lock objects" in _summary(done)["error"]


def test_init_if_absent_accepts_the_same_lock_and_refuses_another(s3_store: RunningStore) -> None:
    url = s3_store.url(_bucket(s3_store, lock=True), "repo")
    opts = s3_store.options
    created = _run(url, "repo", "init", "--if-absent", *LOCK, options=opts)
    assert created.returncode == 0, created.stderr
    assert _summary(created)["object_lock"] == {"mode": "governance", "days": 30}
    assert _summary(created)["initialized"] is True

    again = _run(url, "repo", "init", "--if-absent", *LOCK, options=opts)
    assert again.returncode == 0, again.stderr
    doc = _summary(again)
    assert doc["initialized"] is False
    assert doc["object_lock"] == {"mode": "governance", "days": 30}
    info = _run(url, "repo", "info", options=opts)
    assert _summary(info)["object_lock"] == {"mode": "governance", "days": 30}

    other = ["--object-lock-mode", "governance", "--object-lock-days", "7"]
    refused = _run(url, "repo", "init", "--if-absent", *other, options=opts)
    assert refused.returncode == 2
    error = _summary(refused)["error"]
    assert "has governance for 30 day(s), but governance for 7 day(s) was asked" in error
    assert "the object lock is fixed when a repository is created" in error
    assert "immutabilityDays" in error
    # without lock options --if-absent reports the repository as before
    plain = _run(url, "repo", "init", "--if-absent", options=opts)
    assert plain.returncode == 0


def test_init_if_absent_with_a_lock_refuses_a_repository_without_one(
    s3_store: RunningStore,
) -> None:
    url = s3_store.url(_bucket(s3_store, lock=True), "repo")
    assert _run(url, "repo", "init", options=s3_store.options).returncode == 0
    refused = _run(url, "repo", "init", "--if-absent", *LOCK, options=s3_store.options)
    assert refused.returncode == 2
    error = _summary(refused)["error"]
    assert "has no object lock, but governance for 30 day(s) was asked" in error
    assert "create a new repository in a lock-enabled bucket" in error
