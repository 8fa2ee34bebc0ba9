"""The benchmark harness end to end on a tiny data set, with the real restic, borg and Safehold.

What a user relies on: every tool runs every step, the figures are plausible, the report says
which targets could not be measured, and a wrong restore fails the run loudly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import run
import tools
from measure import Command


def _args(tmp_path: Path, tool_names: str) -> list[str]:
    return [
        "--scale=0.002",
        f"--tools={tool_names}",
        "--only=engine",
        "--no-drop-caches",
        f"--workdir={tmp_path / 'work'}",
        f"--results-dir={tmp_path / 'results'}",
    ]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEHOLD_CACHE", str(tmp_path / "cache"))


def test_every_tool_is_measured_and_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run.main(_args(tmp_path, "restic,borg,safehold")) == 0
    results = json.loads((tmp_path / "results/latest.json").read_text())
    assert [t["name"] for t in results["tools"]] == ["restic", "borg", "safehold"]
    for tool in results["tools"]:
        assert tool["restore_verified"], tool["name"]
        assert list(tool["steps"]) == ["init", "full", "incremental", "restore"]
        for name, step in tool["steps"].items():
            assert step["seconds"] > 0, (tool["name"], name)
            assert step["peak_rss_bytes"] > 1_000_000, (tool["name"], name)
        full, incremental = tool["steps"]["full"], tool["steps"]["incremental"]
        assert full["repo_bytes"] > 0
        assert incremental["repo_bytes"] >= full["repo_bytes"]
        # The duplicate and compression must show: the repository is smaller than the data.
        assert full["repo_bytes"] < results["dataset"]["v1_bytes"]
    # The parent was used: an incremental, not a re-read of everything.
    for tool in (results["tools"][0], results["tools"][2]):
        assert tool["steps"]["incremental"]["summary"]["files_unmodified"] > 0, tool["name"]
    assert [t["status"] in ("MET", "NOT MET") for t in results["targets"]] == [True] * 5
    printed = capsys.readouterr().out
    assert "| restic | full |" in printed
    assert "| borg | restore |" in printed
    assert "| restore speed | " in printed  # the ratios of Safehold against the others
    assert not (tmp_path / "work").exists()  # cleaned up without --keep


class _WrongRestore(tools.Tool):
    """Restores the *full* backup instead of the incremental one: the check must notice."""

    name = "wrong"
    settings = "restores v1 instead of v2"

    def version(self) -> str:
        return "wrong 1.0"

    def init(self) -> Command:
        return Command(["mkdir", "-p", str(self.repo)])

    def full(self, source: Path) -> Command:
        return Command(["cp", "-a", str(source), str(self.repo / "v1")])

    def incremental(self, source: Path) -> Command:
        return Command(["cp", "-a", str(source), str(self.repo / "v2")])

    def restore(self, target: Path) -> Command:
        return Command(["cp", "-a", str(self.repo / "v1"), str(target / "source")])


def test_a_wrong_restore_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(tools.TOOLS, "wrong", _WrongRestore)
    assert run.main(_args(tmp_path, "wrong")) == 1
    err = capsys.readouterr().err
    assert "FAILED: wrong: restore in" in err
    assert "missing: small/" in err or "content differs: big/" in err
    results = json.loads((tmp_path / "results/latest.json").read_text())
    assert not results["tools"][0]["restore_verified"]
    assert any("RESTORE MISMATCH" in note for note in results["notes"])


def test_a_failing_command_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken(_WrongRestore):
        name = "broken"

        def full(self, source: Path) -> Command:
            return Command(["sh", "-c", "echo disk on fire >&2; exit 3"])

    monkeypatch.setitem(tools.TOOLS, "broken", Broken)
    assert run.main(_args(tmp_path, "broken")) == 1
    err = capsys.readouterr().err
    assert "broken full FAILED" in err
    assert "exit 3" in err
    assert "disk on fire" in err


def test_unknown_tool_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(_args(tmp_path, "restic,rsync")) == 2
    assert "unknown tool(s) rsync" in capsys.readouterr().err


def test_a_foreign_workdir_is_never_wiped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "work" / "thesis.tex"
    precious.parent.mkdir()
    precious.write_text("irreplaceable")
    assert run.main(_args(tmp_path, "restic")) == 2
    assert precious.read_text() == "irreplaceable"
    assert "is not empty and not a benchmark's" in capsys.readouterr().err


def test_rounds_repeat_every_timed_step_and_report_the_median(tmp_path: Path) -> None:
    """Each tool runs each timed step once per round; the reported step is the median
    round, every round is kept, and each round's restore is verified on its own."""
    assert run.main([*_args(tmp_path, "restic,safehold"), "--rounds=3"]) == 0
    results = json.loads((tmp_path / "results/latest.json").read_text())
    for tool in results["tools"]:
        assert tool["restore_verified"], tool["name"]
        for step in ("full", "incremental", "restore"):
            rounds = tool["rounds"][step]
            assert len(rounds) == 3, (tool["name"], step)
            times = sorted(r["seconds"] for r in rounds)
            assert tool["steps"][step]["seconds"] == times[1], (tool["name"], step)
    # Every incremental started from the state after the full backup, so each stored the
    # changed data again (one that started after an earlier round's incremental would add
    # only its trees, which differ by the files' access times: about 0.1 % of it).
    restic, safehold = results["tools"]
    for added in (
        [r["summary"]["data_added"] for r in restic["rounds"]["incremental"]],
        [r["summary"]["bytes_new"] for r in safehold["rounds"]["incremental"]],
    ):
        assert min(added) > max(added) / 2 > 0, added
    for r in safehold["rounds"]["incremental"]:
        assert r["summary"]["files_unmodified"] > 0
        assert r["summary"]["type"] == "incremental"
    assert "| rounds (s) |" in (tmp_path / "results/latest.md").read_text()


def test_the_s3_part_counts_requests_and_bytes_per_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """restic and Safehold back up to one local SeaweedFS; the server's counters give each
    command's requests and bytes, and the targets include requests per backup."""
    args = [a for a in _args(tmp_path, "restic,borg,safehold") if not a.startswith("--only")]
    assert run.main([*args, "--only=s3", "--rounds=1"]) == 0
    results = json.loads((tmp_path / "results/latest-s3.json").read_text())
    assert results["part"] == "s3"
    assert [t["name"] for t in results["tools"]] == ["restic", "safehold"]
    assert "borg" in results["skipped"]  # no object-store backend
    for tool in results["tools"]:
        assert tool["restore_verified"], tool["name"]
        full, restore = tool["steps"]["full"]["traffic"], tool["steps"]["restore"]["traffic"]
        assert full["requests"]["PUT"] > 0, tool["name"]
        assert full["bytes_up"] > tool["steps"]["full"]["repo_bytes"] / 2, tool["name"]
        assert restore["bytes_down"] > 0, tool["name"]
        assert tool["steps"]["full"]["repo_bytes"] > 0  # sized from the bucket's listing
    names = [t["name"] for t in results["targets"]]
    assert "object-store requests per backup" in names
    assert results["filesystem"]["kind"] in ("ext4 image", "directory")
    printed = capsys.readouterr().out
    assert "| restic | full | " in printed
    assert "requests per backup" in printed


def test_the_small_files_parts_run_an_unchanged_rerun_locally_and_on_s3(tmp_path: Path) -> None:
    args = [a for a in _args(tmp_path, "restic,safehold") if not a.startswith("--only")]
    assert run.main([*args, "--only=smallfiles", "--rounds=1"]) == 0
    for part in ("smallfiles-local", "smallfiles-s3"):
        results = json.loads((tmp_path / f"results/latest-{part}.json").read_text())
        assert results["second_backup"] == "unchanged re-run"
        assert results["dataset"]["v1_files"] == 200  # 100,000 x 0.002
        for tool in results["tools"]:
            assert tool["restore_verified"], (part, tool["name"])
        safehold = results["tools"][1]["steps"]["incremental"]["summary"]
        assert safehold["files_unmodified"] == 200
    markdown = (tmp_path / "results/latest.md").read_text()
    assert "## Many small files, a local repository" in markdown
    assert "## Many small files, S3" in markdown
    assert "| Many small files, S3 | unchanged re-run speed |" in markdown
