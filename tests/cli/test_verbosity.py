"""``-q`` and ``-v``/``-vv`` through the real command: ``-q`` prints errors and warnings
only and keeps the exit code, ``-v`` lists the files a backup reads and a restore writes,
and ``--json`` output is the same at every level."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PASSWORD = "verbosity test password"


class Cli:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
            "SAFEHOLD_REPOSITORY": str(tmp / "repo"),
            "SAFEHOLD_PASSWORD": PASSWORD,
        }

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == code, (args, done.stdout, done.stderr)
        return done


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    cli("repo", "init")
    data = tmp_path / "data"
    (data / "dir").mkdir(parents=True)
    (data / "a.txt").write_text("a\n")
    (data / "dir" / "b.txt").write_text("b\n")
    return cli


def test_quiet_prints_no_progress_or_summary_and_keeps_the_exit_code(cli: Cli) -> None:
    data = str(cli.tmp / "data")
    done = cli("backup", "-q", data)
    assert (done.stdout, done.stderr) == ("", "")
    done = cli("restore", "latest", str(cli.tmp / "out"), "--quiet")
    assert (done.stdout, done.stderr) == ("", "")
    assert (cli.tmp / "out" / "data" / "dir" / "b.txt").read_text() == "b\n"
    # errors are still printed, with the same exit code as without -q
    failed = cli("restore", "ffff", str(cli.tmp / "x"), "-q", code=1)
    assert failed.stdout == ""
    assert "error:" in failed.stderr
    # what a command is for is still printed: a listing
    assert "data" in cli("snapshots", "-q").stdout
    # a backup with unreadable files: exit code 3, the warnings still say which
    partial = cli("backup", "-q", data, "/proc/self/mem", code=3)
    assert partial.stdout == ""
    assert "warning:" in partial.stderr
    assert "mem" in partial.stderr


def test_json_is_the_same_with_quiet_and_verbose(cli: Cli) -> None:
    data = str(cli.tmp / "data")
    docs = []
    for level in ("-q", "-v", "-vv"):
        done = cli("backup", data, "--json", level)
        assert len(done.stdout.splitlines()) == 1  # only the summary on stdout
        docs.append(json.loads(done.stdout))
        if level == "-q":
            assert done.stderr == ""  # no progress lines either
    assert len({frozenset(d) for d in docs}) == 1
    assert all(d["ok"] for d in docs)


def test_verbose_lists_new_and_changed_files_and_restored_ones(cli: Cli) -> None:
    data = cli.tmp / "data"
    first = cli("backup", str(data), "-v").stdout.splitlines()
    assert f"new       {data}/a.txt" in first
    assert f"new       {data}/dir/b.txt" in first
    assert first[-1].startswith("snapshot ")  # the summary line still ends it

    (data / "a.txt").write_text("a, changed\n")
    (data / "c.txt").write_text("c\n")
    second = cli("backup", str(data), "--verbose").stdout.splitlines()
    files = [line for line in second if not line.startswith("snapshot ")]
    assert sorted(files) == sorted([f"changed   {data}/a.txt", f"new       {data}/c.txt"])

    third = cli("backup", str(data), "-vv").stdout.splitlines()  # -vv: unchanged ones too
    assert f"unchanged {data}/dir/b.txt" in third

    out = cli.tmp / "out"
    restored = cli("restore", "latest", str(out), "-v").stdout.splitlines()
    names = sorted(line for line in restored if line.startswith("restored  "))
    assert names == [f"restored  {out}/data/{name}" for name in ("a.txt", "c.txt", "dir/b.txt")]
    assert restored[-1].startswith("restored snapshot ")
    again = cli("restore", "latest", str(out), "-vv").stdout.splitlines()
    assert f"skipped   {out}/data/a.txt" in again  # complete from the run before


def test_quiet_and_verbose_together_are_a_usage_error(cli: Cli) -> None:
    done = cli("snapshots", "-q", "-v", code=2)
    assert "-q/--quiet" in done.stderr
