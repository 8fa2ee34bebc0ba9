"""``safehold replicate --source-prefix``: one policy's snapshots to a recovery site, and the
site's newest snapshot per source in the summary (the operator's replication lag).

Sources are named as the operator names them: ``<namespace>/<policy>/<source>`` and, for a
database, ``<namespace>/<policy>/<source>/db/<name>``. A prefix ``shop/nightly/`` must not
select ``shop/nightly-2/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.cli.output import MAX_SUMMARY
from safehold.engine import BackupOptions, backup_paths
from safehold.repo import Repository
from safehold.storage import open_storage

PASSWORD = "correct horse battery staple"  # the ``repo`` fixture's (tests/engine/conftest.py)
T0 = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
POLICY = ["shop/nightly/web", "shop/nightly/orders/db/orders", "shop/nightly/orders/globals"]
OTHERS = ["shop/nightly-2/web", "shop/weekly/web", "other/nightly/web"]

Run = Callable[..., subprocess.CompletedProcess[str]]


def _backup(repo: Repository, src: Path, source: str, hours: int) -> str:
    (src / "f").write_bytes(os.urandom(20_000))
    options = BackupOptions(source=source, time=T0 + timedelta(hours=hours))
    return backup_paths(repo, [str(src)], options).snapshot.time


@pytest.fixture
def run(repo: Repository, tmp_path: Path) -> Run:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": repo.location,
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
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _site_sources(url: str) -> set[str]:
    return {s.source for s in Repository.open(open_storage(url), PASSWORD).snapshots()}


def test_only_the_policys_sources_go_and_the_site_newest_is_reported(
    repo: Repository, run: Run, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    times: dict[str, str] = {}
    for hours in (0, 1):
        for source in [*POLICY, *OTHERS]:
            times[source] = _backup(repo, src, source, hours)
    site = (tmp_path / "site").as_uri()

    first = _summary(run("replicate", "--to", site, "--source-prefix", "shop/nightly/", "--json"))
    assert first["snapshots_selected"] == 6
    assert first["snapshots_copied"] == 6
    assert first["total"]["copied_bytes"] > 0
    assert first["site_newest"] == {s: times[s] for s in POLICY}
    assert _site_sources(site) == set(POLICY)

    # a newer snapshot of one source: only it goes, and the site's newest moves with it
    newer = _backup(repo, src, "shop/nightly/web", 5)
    second = _summary(run("replicate", "--to", site, "--source-prefix", "shop/nightly/", "--json"))
    assert second["snapshots_copied"] == 1
    assert second["site_newest"] == {**{s: times[s] for s in POLICY}, "shop/nightly/web": newer}

    # --source and --source-prefix are ORed; the summary covers what they select
    third = _summary(
        run(
            "replicate",
            "--to",
            site,
            "--source",
            "other/nightly/web",
            "--source-prefix",
            "shop/weekly/",
            "--json",
        )
    )
    assert third["snapshots_copied"] == 4
    assert set(third["site_newest"]) == {"other/nightly/web", "shop/weekly/web"}
    assert _site_sources(site) == {*POLICY, "other/nightly/web", "shop/weekly/web"}

    # a dry run to a site that does not exist yet writes nothing and holds nothing
    dry = _summary(
        run(
            "replicate",
            "--to",
            (tmp_path / "new").as_uri(),
            "--source-prefix",
            "shop/",
            "--dry-run",
            "--json",
        )
    )
    assert dry["snapshots_copied"] == 11  # five sources, two each, one newer
    assert dry["site_newest"] == {}
    assert not (tmp_path / "new").exists()

    refused = run("replicate", "--to", site, "--source-prefix", "", "--json")
    assert refused.returncode == 2
    assert "--source-prefix '': an empty prefix selects every source" in refused.stderr


def test_the_termination_copy_keeps_whole_site_entries_and_the_byte_total(
    repo: Repository, run: Run, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sources = [f"shop/nightly/volume-with-a-long-name-{i:03d}" for i in range(60)]
    for source in sources:
        _backup(repo, src, source, 0)
    log = tmp_path / "termination-log"
    site = (tmp_path / "site").as_uri()
    done = run(
        "replicate",
        "--to",
        site,
        "--source-prefix",
        "shop/nightly/",
        "--json",
        "--termination-log",
        str(log),
    )
    full = _summary(done)
    assert len(full["site_newest"]) == 60  # stdout is complete
    raw = log.read_bytes()
    assert len(raw) <= MAX_SUMMARY + 1
    copy = json.loads(raw)
    assert copy["total"] == full["total"]  # copied_bytes is always there
    assert copy["site_newest_truncated"] == 60
    kept = copy["site_newest"]
    assert 10 < len(kept) < 60
    assert all(full["site_newest"][s] == t for s, t in kept.items())  # whole entries
