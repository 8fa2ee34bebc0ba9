"""The CLI edits the operator relies on: --options-dir, --termination-log, --if-absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safehold.cli.context import read_options_dir
from safehold.cli.main import main


def test_options_dir_reads_files_maps_aliases_and_skips_secret_links(tmp_path: Path) -> None:
    d = tmp_path / "opts"
    d.mkdir()
    (d / "AWS_ACCESS_KEY_ID").write_text("AKIA123\n")
    (d / "secret_access_key").write_text("s3cr3t")
    (d / "service-account.json").write_text("{}")
    (d / "..data").mkdir()  # what a mounted Secret volume also holds
    (d / "..2026_11_26").write_text("x")
    assert read_options_dir(str(d)) == {
        "access_key_id": "AKIA123",
        "secret_access_key": "s3cr3t",
        "credentials_file": str(d / "service-account.json"),
    }


def test_repo_init_if_absent_and_termination_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    term = tmp_path / "termination-log"
    argv = [
        "repo", "init", "--if-absent", "--repo", f"file://{repo}", "--password-file", str(pw),
        "--json", "--termination-log", str(term),
    ]  # fmt: skip
    assert main(argv) == 0
    first = json.loads(term.read_text())
    assert first["initialized"] is True
    assert first["snapshots"] == 0
    assert main(argv) == 0  # exists: opened and reported, not refused
    second = json.loads(term.read_text())
    assert second["initialized"] is False
    assert second["repository"] == first["repository"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == second
    pw.write_text("wrong\n")
    assert main(argv) == 12
    assert "the password opens none" in json.loads(term.read_text())["error"]
    assert "correct horse" not in term.read_text()
