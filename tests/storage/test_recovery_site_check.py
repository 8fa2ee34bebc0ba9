"""``safehold repo info --allow-empty``: the check of a recovery site before its first
replication, on every provider.

A reachable, empty location is a success (``"empty": true``); a location holding a
repository is reported like ``repo info`` (so a wrong password is still exit code 12); a
missing bucket or refused credentials are errors, never "empty". Each provider reports a
missing bucket on listing differently (S3 ``NoSuchBucket``, GCS 404, Azure
``ContainerNotFound``, a directory lists as empty), so each is run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any, Protocol

import pytest

PASSWORD = "site check password"


class Target(Protocol):  # the ``backend`` fixture's (tests/storage/conftest.py)
    store: Any
    root: Any

    def url(self, prefix: str) -> str: ...
    def options(self, **overrides: str) -> dict[str, str]: ...
    def open(self, prefix: str | None = None, **overrides: str) -> Any: ...


def fresh_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _run(
    options: dict[str, str], url: str, *args: str, password: str = PASSWORD
) -> subprocess.CompletedProcess[str]:
    opts = [a for k, v in options.items() for a in ("-o", f"{k}={v}")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "safehold", *args, "-r", url, *opts, "--json"],
        env={**env, "SAFEHOLD_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _missing_url(target: Target) -> str:
    if target.store is None:
        return (target.root / "no-such-directory" / "site").as_uri()
    return target.store.url(f"missing-{fresh_prefix()}", "site")


def test_an_empty_reachable_location_is_a_success(backend: Target) -> None:
    url = backend.url(fresh_prefix())
    if backend.store is None:
        (backend.root / url.rsplit("/", 1)[-1]).mkdir()
    done = _run(backend.options(), url, "repo", "info", "--allow-empty")
    assert done.returncode == 0, done.stderr
    summary = _summary(done)
    assert summary.pop("cpu_seconds") >= 0  # what the command cost, in every summary
    assert summary.pop("peak_memory_bytes") > 0
    assert summary == {
        "ok": True,
        "empty": True,
        "location": url,
        "snapshots": 0,
        "pack_bytes": 0,
        "locks": 0,
        "oldest_lock_age_seconds": 0,
    }
    # without the flag it is still "no repository here" (exit code 10)
    plain = _run(backend.options(), url, "repo", "info")
    assert plain.returncode == 10
    assert "there is no repository here" in _summary(plain)["error"]


def test_a_missing_bucket_is_an_error_not_empty(backend: Target) -> None:
    done = _run(backend.options(), _missing_url(backend), "repo", "info", "--allow-empty")
    assert done.returncode == 1
    doc = _summary(done)
    assert doc["ok"] is False
    assert "empty" not in doc
    assert "does not exist" in doc["error"]


def test_a_repository_is_reported_and_its_password_checked(backend: Target) -> None:
    url = backend.url(fresh_prefix())
    assert _run(backend.options(), url, "repo", "init").returncode == 0
    done = _run(backend.options(), url, "repo", "info", "--allow-empty")
    assert done.returncode == 0, done.stderr
    doc = _summary(done)
    assert doc["empty"] is False
    assert doc["snapshots"] == 0
    assert doc["object_lock"] is None
    wrong = _run(
        backend.options(), url, "repo", "info", "--allow-empty", password="not the password"
    )
    assert wrong.returncode == 12
    assert "the password opens none" in _summary(wrong)["error"]


def test_objects_without_a_repository_are_not_empty(backend: Target) -> None:
    prefix = fresh_prefix()
    backend.open(prefix).put("data/ab/leftover", b"not a repository")
    done = _run(backend.options(), backend.url(prefix), "repo", "info", "--allow-empty")
    assert done.returncode == 10
    assert "holds objects (such as data/ab/leftover) but no repository" in _summary(done)["error"]


@pytest.mark.parametrize(
    ("provider", "bad"),
    [("s3", {"secret_access_key": "not-the-secret"}), ("azure", {"account_key": "A" * 88})],
)
def test_refused_credentials_are_an_error_not_empty(
    provider: str, bad: dict[str, str], request: pytest.FixtureRequest
) -> None:
    # fake-gcs-server checks no credentials (TESTBED.md), so GCS is not in this list.
    store = request.getfixturevalue(f"{provider}_store")
    bucket = f"check-{fresh_prefix()}"
    store.make_bucket(bucket)
    options = {**store.options, **bad}
    done = _run(options, store.url(bucket, "site"), "repo", "info", "--allow-empty")
    assert done.returncode == 1
    doc = _summary(done)
    assert "empty" not in doc
    assert "denied" in doc["error"]
