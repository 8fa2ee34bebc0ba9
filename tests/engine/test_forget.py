"""``safehold forget`` as a user runs it: real repositories, real processes, and what a
user checks afterwards (which snapshots remain, that the data is untouched, what the
listing says)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from safehold.repo import Repository
from safehold.storage import open_storage

PASSWORD = "forget me not"


def _env(repo: Path) -> dict[str, str]:
    return {**os.environ, "SAFEHOLD_REPOSITORY": repo.as_uri(), "SAFEHOLD_PASSWORD": PASSWORD}


def _run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safehold", *args],
        env=_env(repo),
        capture_output=True,
        text=True,
        check=check,
    )


def _json(repo: Path, *args: str) -> dict[str, object]:
    done = _run(repo, *args, "--json")
    doc: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _backup(repo: Path, src: Path, source: str, when: str, *tags: str) -> str:
    src.mkdir(parents=True, exist_ok=True)
    (src / "data").write_bytes(os.urandom(20_000))
    args = ["backup", str(src), "--source", source, "--time", when]
    for tag in tags:
        args += ["--tag", tag]
    doc = _json(repo, *args)
    return str(doc["snapshot"])


def _listing(repo: Path, prefix: str) -> list[str]:
    return sorted(i.name for i in open_storage(repo.as_uri()).list(prefix))


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Two sources: db with five daily backups (one tagged), web with two."""
    base = tmp_path_factory.mktemp("forget-history")
    repo = base / "repo"
    _run(repo, "repo", "init", "--pack-size", "1")
    ids = {}
    for day in range(1, 6):
        tags = ("audit",) if day == 2 else ()
        ids[f"db-{day}"] = _backup(repo, base / "db", "db", f"2026-11-0{day}T02:00:00Z", *tags)
    for day in (1, 2):
        ids[f"web-{day}"] = _backup(repo, base / "web", "web", f"2026-11-0{day}T05:00:00Z")
    return repo, ids


@pytest.fixture
def history(_template: tuple[Path, dict[str, str]], tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the template repository, for one test to change."""
    repo = tmp_path / "repo"
    shutil.copytree(_template[0], repo)
    return repo, dict(_template[1])


def test_backup_time_records_the_given_time(history: tuple[Path, dict[str, str]]) -> None:
    repo, _ids = history
    snaps = _json(repo, "snapshots", "--source", "db")["snapshots"]
    assert isinstance(snaps, list)
    assert [s["time"][:19] for s in snaps] == [f"2026-11-0{d}T02:00:00" for d in range(1, 6)]


def test_dry_run_lists_every_snapshot_with_its_reason_and_changes_nothing(
    history: tuple[Path, dict[str, str]],
) -> None:
    repo, ids = history
    before = _listing(repo, "")
    done = _run(repo, "forget", "--keep-last", "2", "--keep-tag", "audit", "--dry-run")
    after = _listing(repo, "")
    assert after == before
    text = done.stdout
    for name, snap in ids.items():
        assert snap[:8] in text, f"{name} is not listed"
    assert "source db" in text
    assert "source web" in text
    line = next(x for x in text.splitlines() if ids["db-2"][:8] in x)
    assert line.split()[0] == "keep"
    assert "tag:audit" in line
    line = next(x for x in text.splitlines() if ids["db-1"][:8] in x)
    assert line.split()[0] == "forget"
    assert "last 2: not among the 2 newest" in line
    assert "db: 3 kept, 2 to forget" in text
    assert "web: 2 kept, 0 to forget" in text  # sources never affect each other
    assert "nothing changed" in text

    doc = _json(repo, "forget", "--keep-last", "2", "--keep-tag", "audit", "--dry-run")
    items = {i["id"]: i for i in doc["items"]}  # type: ignore[union-attr]
    assert doc["dry_run"] is True
    assert doc["forget"] == 2
    assert doc["removed"] == 0
    assert set(items) == set(ids.values())
    assert items[ids["db-1"]]["keep"] is False
    assert items[ids["db-5"]]["reasons"] == ["last 2"]


def test_forget_removes_only_snapshot_objects_and_says_so(
    history: tuple[Path, dict[str, str]],
) -> None:
    repo, ids = history
    data, index = _listing(repo, "data/"), _listing(repo, "index/")
    done = _run(repo, "forget", "--keep-last", "2")
    assert "removed 3 snapshot object(s)" in done.stdout
    assert "only snapshot objects were removed" in done.stdout
    assert _listing(repo, "data/") == data
    assert _listing(repo, "index/") == index
    left = {n.rsplit("/", 1)[-1] for n in _listing(repo, "snapshots/")}
    assert left == {ids["db-4"], ids["db-5"], ids["web-1"], ids["web-2"]}
    # Twice is the same as once.
    again = _json(repo, "forget", "--keep-last", "2")
    assert again["removed"] == 0


def test_source_filter_leaves_other_sources_alone(history: tuple[Path, dict[str, str]]) -> None:
    repo, ids = history
    doc = _json(repo, "forget", "--keep-last", "1", "--source", "web")
    assert doc["removed"] == 1
    left = {n.rsplit("/", 1)[-1] for n in _listing(repo, "snapshots/")}
    assert ids["web-1"] not in left
    assert all(ids[f"db-{d}"] in left for d in range(1, 6))


def test_per_source_policies_from_a_file(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo, ids = history
    policies = tmp_path / "policies.yaml"
    policies.write_text("db:\n  keepDaily: 3\n  timeZone: Europe/Berlin\n")
    doc = _json(repo, "forget", "--policies", str(policies))
    items = {i["id"]: i for i in doc["items"]}  # type: ignore[union-attr]
    assert [items[ids[f"db-{d}"]]["keep"] for d in range(1, 6)] == [False, False, True, True, True]
    assert items[ids["web-1"]]["reasons"] == ["no policy for this source, so nothing is forgotten"]


def test_errors_name_the_flag_and_what_to_write(history: tuple[Path, dict[str, str]]) -> None:
    repo, _ = history
    done = _run(repo, "forget", check=False)
    assert done.returncode == 2
    assert "forget needs a rule" in done.stderr
    done = _run(repo, "forget", "--keep-within", "3", check=False)
    assert done.returncode == 2
    assert "keep_within" in done.stderr
    assert "'30d'" in done.stderr
    done = _run(repo, "forget", "--keep-last", "1", "--time-zone", "Mars/Olympus", check=False)
    assert done.returncode == 2
    assert "Europe/Berlin" in done.stderr


def test_forget_with_prune_frees_the_data(history: tuple[Path, dict[str, str]]) -> None:
    repo, ids = history
    before = sum(i.size for i in open_storage(repo.as_uri()).list("data/"))
    doc = _json(repo, "forget", "--keep-last", "1", "--prune", "--grace", "0")
    prune = doc["prune"]
    assert isinstance(prune, dict)
    assert prune["bytes_freed"] > 0
    after = sum(i.size for i in open_storage(repo.as_uri()).list("data/"))
    assert before - after == prune["bytes_freed"]
    r = Repository.open(open_storage(repo.as_uri()), PASSWORD)
    assert sorted(s.id for s in r.snapshots()) == sorted([ids["db-5"], ids["web-2"]])


def test_report_file_holds_every_decision(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo, ids = history
    report = tmp_path / "decisions.json"
    _run(repo, "forget", "--keep-last", "1", "--dry-run", "--report", str(report))
    items = json.loads(report.read_text())
    assert {i["id"] for i in items} == set(ids.values())
    assert sum(1 for i in items if i["keep"]) == 2
