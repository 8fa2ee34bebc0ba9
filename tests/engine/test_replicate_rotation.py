"""A data key rotation at the primary reaches its recovery sites through `safehold replicate`
(format section 14): the site's key is replaced by one holding the new version, under the
site's own password, before anything sealed with it arrives, so the site reads, verifies and
restores everything. Real file repositories and the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safehold.repo import Repository, RepositoryError
from safehold.storage import open_storage

PASSWORD = "primary rotation password"
SITE_PASSWORD = "the site's own password"


def _cli(primary: Path, *args: str, password: str = PASSWORD, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    done = subprocess.run(
        [sys.executable, "-m", "safehold", *args, "--json"],
        env={
            **clean,
            "SAFEHOLD_REPOSITORY": primary.as_uri(),
            "SAFEHOLD_PASSWORD": password,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


@pytest.mark.parametrize("site_password", [PASSWORD, SITE_PASSWORD], ids=["same", "own"])
def test_a_rotation_at_the_primary_reaches_the_site_with_the_next_replication(
    tmp_path: Path, site_password: str
) -> None:
    primary, site, src = tmp_path / "primary", tmp_path / "site", tmp_path / "src"
    src.mkdir()
    (src / "before.bin").write_bytes(os.urandom(200_000))
    to = {"SAFEHOLD_TO_PASSWORD": site_password}
    _cli(primary, "repo", "init")
    _cli(primary, "backup", str(src))
    _cli(primary, "replicate", "--to", site.as_uri())  # a new site: the primary's keys
    if site_password != PASSWORD:  # the site's own password, the primary's removed there
        first = _cli(site, "repo", "key", "list")["keys"]
        _cli(site, "repo", "key", "add", SAFEHOLD_NEW_PASSWORD=site_password)
        _cli(site, "repo", "key", "remove", first[0]["id"], password=site_password)

    _cli(primary, "repo", "key", "rotate")
    (src / "after.bin").write_bytes(os.urandom(200_000))
    _cli(primary, "backup", str(src))
    copied = _cli(primary, "replicate", "--to", site.as_uri(), **to)
    assert copied["ok"] is True

    info = _cli(site, "repo", "info", password=site_password)
    assert info["data_key_version"] == 2
    assert info["keys"] == 1  # the site key was replaced, not joined by a second one
    assert _cli(site, "verify", "--read-data", password=site_password)["ok"] is True
    out = tmp_path / "out"
    _cli(site, "restore", "latest", str(out), password=site_password)
    for name in ("before.bin", "after.bin"):
        assert (out / "src" / name).read_bytes() == (src / name).read_bytes()
    again = _cli(primary, "replicate", "--to", site.as_uri(), **to)  # nothing more to do
    assert _cli(site, "repo", "info", password=site_password)["keys"] == 1
    assert again["ok"] is True


def test_the_keys_of_another_repository_are_never_adopted(tmp_path: Path) -> None:
    one = Repository.init(open_storage((tmp_path / "one").as_uri()), PASSWORD)
    other = Repository.init(open_storage((tmp_path / "two").as_uri()), PASSWORD)
    with pytest.raises(RepositoryError, match="not a replica"):
        one.adopt_rotation(PASSWORD, other.keys.rotated())
    assert one.adopt_rotation(PASSWORD, one.keys) is None  # nothing newer: nothing written
