"""Packs are assembled in a temporary file; where none can be made, in memory, and the
command says so once (repo/staging.py)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from safehold.repo import staging


def test_a_missing_tmpdir_falls_back_to_memory_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(staging, "_said", False)
    monkeypatch.setenv("SAFEHOLD_TMPDIR", str(tmp_path / "absent"))
    with caplog.at_level(logging.WARNING, logger="safehold.repo.staging"):
        files = [staging.staging_file() for _ in range(3)]
    assert all(isinstance(f, io.BytesIO) for f in files)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1
    assert f"no temporary file can be made in {tmp_path / 'absent'}" in said[0]

    monkeypatch.setenv("SAFEHOLD_TMPDIR", str(tmp_path))
    with staging.staging_file() as f:  # a writable directory: a real file
        assert not isinstance(f, io.BytesIO)
        assert f.fileno() >= 0
