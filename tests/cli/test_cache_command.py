"""``safehold cache`` (docs/cli.md, "Local cache"): the caches a user has, how large, when
last used; ``--cleanup`` deletes the unused ones and nothing else. The listing is checked
against a cache that real backups to a real S3 server (SeaweedFS) filled."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from safehold.cli.main import main
from testground.objectstores import RunningStore

PASSWORD = "cache command test password"
DAY = 86400


def _cache(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> dict[str, object]:
    """Run ``safehold cache ... --json``; its summary."""
    capsys.readouterr()
    assert main(["cache", *args, "--json"]) == code
    doc: dict[str, object] = json.loads(capsys.readouterr().out.splitlines()[-1])
    return doc


def _fake_cache(root: Path, name: str, size: int, age_days: float) -> Path:
    """A cache directory as a command leaves it, last used ``age_days`` ago."""
    path = root / name
    (path / "index").mkdir(parents=True)
    (path / "index" / ("ab" * 32)).write_bytes(b"x" * size)
    when = time.time() - age_days * DAY
    os.utime(path, (when, when))
    return path


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_the_listing_shows_the_cache_backups_filled_with_its_size(
    s3_store: RunningStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    bucket = f"cachecmd-{uuid.uuid4().hex[:12]}"
    s3_store.make_bucket(bucket)
    common = [
        "--repo",
        s3_store.url(bucket, "repo"),
        *[f"--option={k}={v}" for k, v in s3_store.options.items()],
        "--cache-dir",
        str(tmp_path / "caches"),
        "-q",
    ]
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    for i in range(50):
        (source / "d" / f"f{i}").write_bytes(os.urandom(100 + i))
    assert main(["repo", "init", *common]) == 0
    assert main(["backup", str(source), *common]) == 0
    capsys.readouterr()
    assert main(["repo", "info", *common, "--json"]) == 0
    repository = json.loads(capsys.readouterr().out.splitlines()[-1])["repository"]

    doc = _cache(capsys, "--cache-dir", str(tmp_path / "caches"))
    [listed] = doc["caches"]  # type: ignore[misc]
    assert listed["repository"] == repository
    assert listed["size"] == _bytes_under(tmp_path / "caches" / repository) > 0
    assert doc["removed"] == []
    capsys.readouterr()
    assert main(["cache", "--cache-dir", str(tmp_path / "caches")]) == 0
    text = capsys.readouterr().out
    assert repository[:12] in text
    assert "1 cache(s) in" in text


def test_cleanup_deletes_only_the_caches_unused_for_max_age_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "caches"
    old = _fake_cache(root, "1" * 64, 5000, age_days=45)
    recent = _fake_cache(root, "2" * 64, 700, age_days=3)
    stranger = root / "not-a-repository"  # not named like a repository id: not ours
    stranger.mkdir()
    os.utime(stranger, (0, 0))

    listed = _cache(capsys, "--cache-dir", str(root))
    assert [c["repository"] for c in listed["caches"]] == ["2" * 64, "1" * 64]  # type: ignore[union-attr]
    assert old.exists()  # listing deletes nothing
    assert main(["cache", "--cache-dir", str(root), "--no-color"]) == 0
    text = capsys.readouterr().out
    assert "45 days ago (old)" in text  # the next command that opens a cache deletes it
    assert "3 days ago " in text
    assert "not-a-repository" not in text

    doc = _cache(capsys, "--cache-dir", str(root), "--cleanup")
    assert doc["removed"] == ["1" * 64]
    assert doc["freed"] == 5000
    assert not old.exists()
    assert recent.exists()
    assert stranger.exists()

    doc = _cache(capsys, "--cache-dir", str(root), "--cleanup", "--max-age", "2")
    assert doc["removed"] == ["2" * 64]
    assert doc["caches"] == []
    assert stranger.exists()


def test_the_cache_directory_comes_from_the_environment_as_for_other_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SAFEHOLD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _fake_cache(tmp_path / "xdg" / "safehold" / "repositories", "3" * 64, 10, age_days=0)
    doc = _cache(capsys)
    assert doc["cache_dir"] == str(tmp_path / "xdg" / "safehold" / "repositories")
    assert [c["repository"] for c in doc["caches"]] == ["3" * 64]  # type: ignore[union-attr]
    monkeypatch.setenv("SAFEHOLD_CACHE_DIR", str(tmp_path / "elsewhere"))
    doc = _cache(capsys)
    assert (doc["cache_dir"], doc["caches"]) == (str(tmp_path / "elsewhere"), [])


def test_max_age_without_cleanup_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "--cache-dir", str(tmp_path), "--max-age", "3"]) == 2
    assert "--max-age goes with --cleanup" in capsys.readouterr().err


def test_global_options_before_the_command_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/cli.md: global options are accepted before or after the command. The commands
    that repeat some of them (cache, validate) must not reset one given before them."""
    _fake_cache(tmp_path, "3" * 64, 100, age_days=1)
    capsys.readouterr()
    assert main(["--cache-dir", str(tmp_path), "--json", "cache"]) == 0
    doc = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert doc["cache_dir"] == str(tmp_path)
    assert len(doc["caches"]) == 1  # type: ignore[arg-type]
    assert main(["cache", "--cache-dir", str(tmp_path)]) == 0
    assert "1 cache(s) in" in capsys.readouterr().out
    assert main(["-q", "cache", "--cache-dir", str(tmp_path)]) == 0
    assert "1 cache(s) in" not in capsys.readouterr().out  # quiet: the listing, no summary

    manifest = tmp_path / "run.yaml"
    manifest.write_text(
        "apiVersion: safehold.io/v1alpha1\nkind: BackupRun\nmetadata: {name: r}\n"
        "spec: {policyRef: {name: p}}\n"
    )
    assert main(["--json", "validate", str(manifest)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["valid"] == 1
