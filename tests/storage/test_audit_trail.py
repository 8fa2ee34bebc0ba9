"""The audit trail on each object store, through the real command: records are written
once, prune keeps them, and a deleted record is reported by verify (format section 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.storage.conftest import Target, fresh_prefix

PASSWORD = "audit store password"


def test_records_survive_prune_and_a_deleted_one_is_reported(
    backend: Target, tmp_path: Path
) -> None:
    prefix = fresh_prefix()
    options = [f"--option={k}={v}" for k, v in backend.options().items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    env["SAFEHOLD_PASSWORD"] = PASSWORD

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "safehold", *args, "--repo", backend.url(prefix), *options],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("a\n")
    assert run("repo", "init").returncode == 0
    for args in (("backup", str(tmp_path / "src")),) * 2 + (("forget", "--keep-last", "1"),):
        done = run(*args)
        assert done.returncode == 0, done.stderr
    assert run("prune").returncode == 0
    listed = run("audit", "--json")
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout.strip().splitlines()[-1])["records"]
    assert [r["operation"] for r in records] == ["backup", "backup", "forget", "prune"]
    assert run("verify").returncode == 0
    backend.open(prefix).delete(f"audit/{records[1]['id']}")
    done = run("verify")
    assert done.returncode != 0
    assert "missing (deleted?)" in done.stderr
