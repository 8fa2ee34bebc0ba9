"""Who restored files belong to: their owners from the snapshot when the process may give
files away (root with CAP_CHOWN), else the restoring user, with no error either way. The
commands run under ``setpriv`` with the capability sets a Job container gets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from safehold.controller.jobs import ROOT_CAPABILITIES
from safehold.engine.restore.safe_fs import may_chown

PASSWORD = "owners test password"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="giving files to uid 999 and dropping capabilities need root and setpriv (CI is root)",
)


def test_may_chown_reads_the_effective_capabilities(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t0000000000000001\n")
    assert may_chown(str(status)) is True
    status.write_text("Name:\tpython\nCapEff:\t00000000a80425fa\n")  # CHOWN (bit 0) clear
    assert may_chown(str(status)) is False
    assert may_chown(str(tmp_path / "absent")) is (os.geteuid() == 0)


def _safehold(
    env: dict[str, str], *args: str, caps: tuple[str, ...] | None = None
) -> dict[str, object]:
    """``safehold ARGS --json`` as root with only ``caps`` (None: all of them)."""
    prefix: list[str] = []
    if caps is not None:
        keep = "".join(f",+{c.lower()}" for c in caps)
        prefix = [
            "setpriv",
            "--no-new-privs",
            "--inh-caps=-all",
            f"--bounding-set=-all{keep}",
            "--",
        ]
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "safehold", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


@needs_root
def test_a_restore_gives_files_their_owners_only_with_the_capabilities_to(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
    }
    data = tmp_path / "data"
    (data / "private").mkdir(parents=True, mode=0o700)
    key = data / "private" / "key.pem"
    key.write_text("only the owner reads this\n")
    key.chmod(0o640)
    os.chown(key, 999, 998)
    os.chown(data / "private", 999, 998)
    _safehold(env, "repo", "init")
    # a backup Job's capabilities are enough to read what only uid 999 may
    backup = _safehold(env, "backup", str(data), caps=ROOT_CAPABILITIES["read"])
    assert backup["errors"] == 0
    assert backup["files_new"] == 1

    owned = tmp_path / "owned"
    done = _safehold(env, "restore", "latest", str(owned), caps=ROOT_CAPABILITIES["write"])
    assert done["errors"] == 0
    restored = owned / "data" / "private"
    for path, mode in ((restored, 0o700), (restored / "key.pem", 0o640)):
        info = path.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (999, 998, mode)
    assert (restored / "key.pem").read_text() == "only the owner reads this\n"

    # root without CHOWN (a container that dropped ALL): the files are its own, no errors
    plain = tmp_path / "plain"
    done = _safehold(env, "restore", "latest", str(plain), caps=())
    assert done["errors"] == 0, done
    restored = plain / "data" / "private"
    info = (restored / "key.pem").stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, 0, 0o640)
    assert (restored / "key.pem").read_text() == "only the owner reads this\n"
