"""``safehold snapshots --source-prefix/--before/--latest``: which snapshot of each source a
restore into a fresh cluster uses, and a termination message that still says so.

The repository holds 10 sources of one policy (and one of another) with three snapshots
each and long metadata, so the JSON summary is far over the 4 KiB a pod's termination
message keeps: stdout stays complete, and the termination copy keeps whole items.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from safehold.cli.output import MAX_SUMMARY
from safehold.engine import BackupOptions, backup_paths
from safehold.repo import Repository
from safehold.storage import open_storage

PASSWORD = "selection password"
DAYS = ("2026-11-01T06:00:00Z", "2026-11-02T06:00:00Z", "2026-11-03T06:00:00Z")
SOURCES = [f"shop/nightly/vol-{i:02d}" for i in range(10)]

Run = Callable[..., subprocess.CompletedProcess[str]]


def _meta(source: str, day: int) -> dict[str, str]:
    labels = {f"label-{k}": f"{source}-value-{k}" for k in range(8)}
    return {
        "source.kind": "volume",
        "claim.size": f"{day + 1}Gi",
        "claim.storageClassName": "standard-with-a-rather-long-name",
        "claim.accessModes": "ReadWriteOnce",
        "claim.labels": json.dumps(labels),
    }


@pytest.fixture(scope="module")
def repo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("selection")
    data = root / "data"
    data.mkdir()
    (data / "f.txt").write_text("same bytes\n")
    url = (root / "repo").as_uri()
    repo = Repository.init(open_storage(url), PASSWORD)
    for source in [*SOURCES, "other/policy/vol"]:
        for day, when in enumerate(DAYS):
            options = BackupOptions(
                source=source,
                tags=[f"day={day}"],
                time=datetime.fromisoformat(when.replace("Z", "+00:00")),
                meta=_meta(source, day),
            )
            backup_paths(repo, [str(data)], options)
    return url


@pytest.fixture
def run(repo_url: str) -> Run:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": repo_url,
        "SAFEHOLD_PASSWORD": PASSWORD,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    doc: dict[str, Any] = json.loads(lines[0])
    return doc


def test_latest_per_source_under_a_prefix(run: Run) -> None:
    doc = _summary(run("snapshots", "--source-prefix", "shop/nightly/", "--latest", "--json"))
    assert doc["count"] == 10
    assert [s["source"] for s in doc["snapshots"]] == SOURCES  # by source name
    for item in doc["snapshots"]:
        assert item["time"].startswith("2026-11-03T06:00:00")
        assert item["tags"] == ["day=2"]
        assert item["meta"] == _meta(item["source"], 2)


def test_before_picks_the_newest_at_or_before_a_time(run: Run) -> None:
    exact = _summary(
        run("snapshots", "--source-prefix", "shop/", "--before", DAYS[1], "--latest", "--json")
    )
    assert {s["time"][:19] for s in exact["snapshots"]} == {"2026-11-02T06:00:00"}
    assert {s["meta"]["claim.size"] for s in exact["snapshots"]} == {"2Gi"}
    # no zone means UTC; a second before the first snapshot selects nothing
    none = _summary(run("snapshots", "--before", "2026-11-01T05:59:59", "--json"))
    assert none["count"] == 0
    everything = _summary(run("snapshots", "--before", "2026-11-01T07:00:00+01:00", "--json"))
    assert everything["count"] == 11  # 06:00 UTC is 07:00 at +01:00: at, not after


def test_source_and_prefix_are_ored_and_tags_still_filter(run: Run) -> None:
    doc = _summary(
        run(
            "snapshots",
            "--source",
            "other/policy/vol",
            "--source-prefix",
            "shop/nightly/vol-0",
            "--tag",
            "day=0",
            "--json",
        )
    )
    assert sorted(s["source"] for s in doc["snapshots"]) == sorted([*SOURCES, "other/policy/vol"])
    assert {s["tags"][0] for s in doc["snapshots"]} == {"day=0"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--before", "yesterday"], "--before 'yesterday' is not ISO 8601"),
        (["--source-prefix", ""], "--source-prefix '': an empty prefix selects every source"),
    ],
)
def test_bad_selection_is_a_usage_error(run: Run, args: list[str], message: str) -> None:
    done = run("snapshots", *args, "--json")
    assert done.returncode == 2
    assert message in done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["exit_code"] == 2


def test_termination_copy_keeps_whole_items_and_stdout_stays_complete(
    run: Run, tmp_path: Path
) -> None:
    log = tmp_path / "termination-log"
    done = run("snapshots", "--latest", "--json", "--termination-log", str(log))
    full = _summary(done)
    assert len(json.dumps(full)) > 2 * MAX_SUMMARY  # the case this test is about
    assert full["count"] == 11
    assert len(full["snapshots"]) == 11
    raw = log.read_bytes()
    assert len(raw) <= MAX_SUMMARY + 1  # and its newline
    copy = json.loads(raw)
    kept = copy["snapshots"]
    assert copy["snapshots_truncated"] == 11
    assert copy["count"] == 11
    assert 3 < len(kept) < 11  # more than the old cut at 3, as many as fit
    assert kept == full["snapshots"][: len(kept)]  # whole items, newest id/time/tags/meta each
    one_more = {**copy, "snapshots": full["snapshots"][: len(kept) + 1]}
    assert len(json.dumps(one_more, sort_keys=True)) > MAX_SUMMARY  # nothing more would fit


def test_a_short_summary_is_not_cut(run: Run, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    done = run(
        "snapshots",
        "--source",
        "shop/nightly/vol-03",
        "--latest",
        "--json",
        "--termination-log",
        str(log),
    )
    assert json.loads(log.read_text()) == _summary(done)
    assert "snapshots_truncated" not in _summary(done)


def test_the_wal_archives_drains_fold_into_one_line_a_source(tmp_path: Path) -> None:
    """A point-in-time source drains its WAL every few minutes: the table lists the base
    backups and other snapshots, and one line per archive saying how many drains, from
    when to when; ``--source`` of the archive and the JSON summary list every drain."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "000000010000000000000001").write_bytes(b"wal" * 1000)
    url = (tmp_path / "repo").as_uri()
    repo = Repository.init(open_storage(url), PASSWORD)
    made = [("prod/db/pg/base", "postgresql-base", "2026-11-01T06:00:00Z")]
    made += [
        ("prod/db/pg/wal", "postgresql-wal", f"2026-11-01T06:{m:02d}:00Z") for m in range(5, 30, 5)
    ]
    made += [("prod/files/vol", "volume", "2026-11-01T07:00:00Z")]
    for source, kind, when in made:
        options = BackupOptions(
            source=source,
            time=datetime.fromisoformat(when.replace("Z", "+00:00")),
            meta={"source.kind": kind},
        )
        backup_paths(repo, [str(data)], options)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": url,
        "SAFEHOLD_PASSWORD": PASSWORD,
        "TZ": "UTC",
    }

    def run(*args: str) -> str:
        command = [sys.executable, "-m", "safehold", "snapshots", *args]
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, check=True
        )
        return done.stdout

    table = run()
    assert "prod/db/pg/base" in table
    assert "prod/files/vol" in table
    assert table.count("prod/db/pg/wal") == 2  # not a row: the line, and its --source hint
    assert (
        "and 5 WAL drain(s) of prod/db/pg/wal, 2026-11-01 06:05:00 UTC to 2026-11-01 06:25:00 UTC"
        in " ".join(table.split())
    )
    assert "(each one: --source prod/db/pg/wal)" in " ".join(table.split())
    assert run("--source", "prod/db/pg/wal").count("prod/db/pg/wal") == 5
    assert json.loads(run("--json").splitlines()[-1])["count"] == 7
