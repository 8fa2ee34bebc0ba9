"""Replication across the three real object-store servers, as a user runs it: the
``safehold`` command from a filesystem repository to SeaweedFS (S3), on to
fake-gcs-server (GCS), on to Azurite (Azure), with the middle hop killed by SIGKILL and
resumed. The last site alone restores the original byte for byte, and every site verifies
clean with --read-data. Also: server-side copy between two buckets of one provider."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from safehold.engine import verify_repository
from safehold.engine.replicate import ReplicateOptions, replicate
from safehold.repo import Repository
from safehold.storage import open_storage

PASSWORD = "three clouds, one repository"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "safehold", *args]


def _site(store: Any, prefix: str = "site") -> tuple[str, dict[str, str]]:
    bucket = f"rep-{uuid.uuid4().hex[:12]}"
    store.make_bucket(bucket)
    return store.url(bucket, prefix), dict(store.options)


def _flags(flag: str, options: dict[str, str]) -> list[str]:
    return [arg for key, value in options.items() for arg in (flag, f"{key}={value}")]


def _run(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _count(url: str, options: dict[str, str], prefix: str) -> int:
    with open_storage(url, options) as storage:
        return sum(1 for _ in storage.list(prefix))


@pytest.mark.slow
def test_replicate_file_to_s3_to_gcs_to_azure_killed_midway_and_resumed(
    s3_store: Any,
    gcs_store: Any,
    azure_store: Any,
    tmp_path: Path,
    tree_factory: Callable[..., Path],
    same_tree: Callable[..., None],
) -> None:
    primary = (tmp_path / "primary").as_uri()
    env = {**os.environ, "SAFEHOLD_PASSWORD": PASSWORD, "SAFEHOLD_REPOSITORY": primary}
    subprocess.run(_cli("repo", "init", "--pack-size", "1", "-q"), env=env, check=True)
    src = tree_factory(tmp_path / "src", big=600_000)
    bulk = src / "bulk"
    bulk.mkdir()
    for i in range(24):
        (bulk / f"part-{i}").write_bytes(os.urandom(1_000_000))
    _run(_cli("backup", str(src), "--source", "vol", "--json"), env)
    (src / "docs" / "note-7.txt").write_text("changed after the first backup")
    _run(_cli("backup", str(src), "--source", "vol", "--json"), env)

    s3_url, s3_opts = _site(s3_store)
    gcs_url, gcs_opts = _site(gcs_store)
    az_url, az_opts = _site(azure_store)

    # hop 1: filesystem -> S3
    first = _run(_cli("replicate", "--to", s3_url, *_flags("-O", s3_opts), "--json"), env)
    assert first["snapshots_copied"] == 2
    assert first["site_created"]

    # hop 2: S3 -> GCS, killed once some packs arrived and before any snapshot did
    from_s3 = {**env, "SAFEHOLD_REPOSITORY": s3_url}
    hop2 = _cli(
        "replicate", *_flags("-o", s3_opts), "--to", gcs_url, *_flags("-O", gcs_opts),
        "--jobs", "1", "--json",
    )  # fmt: skip
    # at 2 MiB/s the 27 MB take ~13 s: a poll of the site slowed by a loaded machine
    # cannot see the copy finish before the kill (unlimited, it takes a second or two)
    proc = subprocess.Popen(
        [*hop2, "--limit-upload", "2048"],
        env=from_s3,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while _count(gcs_url, gcs_opts, "data/") < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, "replicate finished before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    packs_at_kill = _count(gcs_url, gcs_opts, "data/")
    assert _count(gcs_url, gcs_opts, "snapshots/") == 0
    total_packs = first["objects"]["data"]["copied"]
    assert 3 <= packs_at_kill < total_packs

    resumed = _run(hop2, from_s3)
    data = resumed["objects"]["data"]
    assert data["skipped"] >= packs_at_kill  # what arrived was not copied again
    assert data["copied"] + data["skipped"] == total_packs
    assert resumed["snapshots_copied"] == 2

    # hop 3: GCS -> Azure
    from_gcs = {**env, "SAFEHOLD_REPOSITORY": gcs_url}
    last = _run(
        _cli(
            "replicate",
            *_flags("-o", gcs_opts),
            "--to",
            az_url,
            *_flags("-O", az_opts),
            "--read-back",
            "--json",
        ),
        from_gcs,
    )
    assert last["snapshots_copied"] == 2

    # the last site alone: no primary, no S3, no GCS
    shutil.rmtree(tmp_path / "primary")
    at_azure = {**env, "SAFEHOLD_REPOSITORY": az_url}
    _run(
        _cli("restore", "latest", str(tmp_path / "out"), *_flags("-o", az_opts), "--json"),
        at_azure,
    )
    same_tree(src, tmp_path / "out" / "src")
    for url, opts in ((s3_url, s3_opts), (gcs_url, gcs_opts), (az_url, az_opts)):
        report = _run(_cli("verify", "--read-data", *_flags("-o", opts), "--json"),
                      {**env, "SAFEHOLD_REPOSITORY": url})  # fmt: skip
        assert report["ok"], url
        assert report["packs_read"] == report["packs"] > 0, url


@pytest.mark.parametrize("provider", ["s3_store", "gcs_store", "azure_store"])
def test_server_side_copy_between_two_buckets_of_one_provider(
    provider: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tree_factory: Callable[..., Path],
    same_tree: Callable[..., None],
) -> None:
    from safehold.engine import BackupOptions, backup_paths, restore_snapshot
    from safehold.repo import ChunkerParams, Config

    store = request.getfixturevalue(provider)
    url, options = _site(store, "primary")
    site_url, site_options = _site(store, "replica")
    config = Config.new(
        chunker=ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024),
        pack_size=512 * 1024,
    )
    repo = Repository.init(open_storage(url, options), PASSWORD, config)
    src = tree_factory(tmp_path / "src", big=900_000)
    backup_paths(repo, [str(src)], BackupOptions(source="vol"))

    result = replicate(repo, open_storage(site_url, site_options), PASSWORD, ReplicateOptions())
    data = result.counts["data"]
    assert data.copied > 1
    assert data.server_side == data.copied
    assert result.counts["snapshots"].server_side == 1

    site = Repository.open(open_storage(site_url, site_options), PASSWORD)
    assert verify_repository(site, read_data_percent=100).ok
    restore_snapshot(site, site.find_snapshot("latest"), str(tmp_path / "out"))
    same_tree(src, tmp_path / "out" / "src")
