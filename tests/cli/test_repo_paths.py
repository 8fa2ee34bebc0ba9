"""``--repo`` (and ``SAFEHOLD_REPOSITORY``, ``replicate --to``) take a local directory as
typed, as restic's ``-r`` does: ``./repo``, ``/srv/repo``, a path with spaces, ``~/repo``.
A restic-style ``s3:host/bucket`` is refused, never taken for a directory of that name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PASSWORD = "repo paths password"


def _run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    return subprocess.run(
        [sys.executable, "-m", "safehold", *args],
        env={**clean, "SAFEHOLD_PASSWORD": PASSWORD, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ok(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    doc: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def test_a_relative_path_is_a_repository_under_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.txt").write_text("hello\n")
    _ok(_run(tmp_path, "-r", "./repo", "repo", "init", "--json"))
    assert (tmp_path / "repo" / "config").is_file()
    _ok(_run(tmp_path, "-r", "repo", "backup", "data", "--json"))
    listed = _ok(_run(tmp_path, "snapshots", "--json", SAFEHOLD_REPOSITORY="./repo"))
    assert len(listed["snapshots"]) == 1  # type: ignore[arg-type]
    _ok(_run(tmp_path, "-r", (tmp_path / "repo").as_uri(), "snapshots", "--json"))  # same one


def test_an_absolute_path_with_spaces_and_a_site_path(tmp_path: Path) -> None:
    where = tmp_path / "my backups"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.txt").write_text("hello\n")
    _ok(_run(tmp_path, "-r", str(where), "repo", "init", "--json"))
    assert (where / "config").is_file()
    _ok(_run(tmp_path, "-r", str(where), "backup", "data", "--json"))
    _ok(_run(tmp_path, "-r", str(where), "replicate", "--to", "./site", "--json"))
    assert (tmp_path / "site" / "config").is_file()
    restored = tmp_path / "out"
    _ok(_run(tmp_path, "-r", "site", "restore", "latest", str(restored), "--json"))
    assert (restored / "data" / "f.txt").read_text() == "hello\n"


def test_a_url_without_slashes_is_refused_not_made_a_directory(tmp_path: Path) -> None:
    done = _run(tmp_path, "-r", "s3:s3.amazonaws.com/bucket", "repo", "init")
    assert done.returncode == 2
    assert "s3://BUCKET/PREFIX" in done.stderr
    assert not any(tmp_path.iterdir())
