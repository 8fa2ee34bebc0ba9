"""``safehold report`` through the real command on a repository filled by real backups
(docs/cli.md, "Report"): the figures a person checks against what they backed up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.engine.inspect.report import report_sources
from safehold.repo.snapshot import Snapshot

PASSWORD = "report test password"
MiB = 1024 * 1024


def _run(root: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": str(root / "repo"),
        "SAFEHOLD_PASSWORD": PASSWORD,
        "TZ": "UTC",
    }
    done = subprocess.run(
        [sys.executable, "-m", "safehold", *args],
        env=env,
        cwd=root,
        input=stdin,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()[-2000:]
    return done


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    data.mkdir()
    (data / "random.bin").write_bytes(os.urandom(2 * MiB))
    (data / "text.txt").write_bytes(b"the same line, again and again!\n" * 65536)  # 2 MiB
    _run(root, "repo", "init")
    _run(root, "backup", "--source", "files", "data")
    (data / "new.bin").write_bytes(os.urandom(MiB // 2))
    _run(root, "backup", "--source", "files", "data")
    _run(root, "backup", "--source", "db", "--stdin-name", "dump.sql", stdin=os.urandom(MiB))
    return root


def _sources(root: Path, *args: str) -> dict[str, dict[str, Any]]:
    doc = json.loads(_run(root, "--json", "report", *args).stdout.decode().splitlines()[-1])
    assert doc["ok"] is True
    assert doc["snapshots"] == 3
    assert doc["pack_bytes"] > 0
    return {s["source"]: s for s in doc["sources"]}


def test_report_per_source_figures(root: Path) -> None:
    files = _sources(root)["files"]
    assert files["snapshots"] == 2
    assert files["logical_bytes"] == 4 * MiB + MiB // 2  # the newest snapshot's data
    # two snapshots of ~4 MiB hold ~8.5 MiB of data, of which ~4.5 MiB were new
    assert 1.7 < files["dedup_ratio"] < 2.0
    # text compresses, random does not: stored well below new, not below the random part
    assert 2.5 * MiB < files["stored_bytes"] < 4.5 * MiB
    assert files["compression_ratio"] > 1.1
    assert files["first"] <= files["last"]
    db = _sources(root)["db"]
    assert db["snapshots"] == 1
    assert db["logical_bytes"] == MiB
    assert db["dedup_ratio"] == 1.0


def test_report_counts_what_a_retention_policy_keeps(root: Path) -> None:
    (root / "policy.yaml").write_text("keepLast: 1\n")
    sources = _sources(root, "--policy", "policy.yaml")
    assert (sources["files"]["keep"], sources["files"]["forget"]) == (1, 1)
    assert (sources["db"]["keep"], sources["db"]["forget"]) == (1, 0)


def test_report_as_text_and_markdown(root: Path) -> None:
    text = _run(root, "report").stdout.decode()
    assert "files" in text
    assert "db" in text
    assert "3 snapshot(s) of 2 source(s)" in text
    markdown = _run(root, "report", "--markdown", "--source-prefix", "fi").stdout.decode()
    lines = markdown.splitlines()
    assert lines[0].startswith("| source | snapshots | first | last | size | stored")
    assert lines[1].startswith("|---|")
    assert lines[2].startswith("| files | 2 | ")
    assert not any(line.startswith("| db ") for line in lines)


def test_growth_per_week_counts_the_last_four_weeks() -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC)

    def snap(days_ago: int, stored: int) -> Snapshot:
        when = (now - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")
        return Snapshot(
            time=when, source="s", type="full", tree="0" * 64, paths=["/d"], hostname="h",
            summary={"bytes_stored": stored, "bytes_new": stored, "total_bytes": stored},
            id=f"{days_ago:064d}",
        )  # fmt: skip

    # 100 days of history: only what the last 28 days added counts, over 4 weeks
    (one,) = report_sources([snap(100, 10**9), snap(20, 400), snap(1, 400)], now=now)
    assert one.growth_bytes_per_week == 200
    # a source younger than a week: what it added, per (at least) one week
    (young,) = report_sources([snap(2, 700)], now=now)
    assert young.growth_bytes_per_week == 700
