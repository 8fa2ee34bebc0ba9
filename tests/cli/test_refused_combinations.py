"""Options that would do nothing where they are given are refused (exit code 2) with a
message that says why, not accepted and ignored: a user must not believe they acted."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.cli import exitcodes
from safehold.cli.main import main

PASSWORD = "refused combinations test password"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    url = (tmp_path / "repo").as_uri()
    assert main(["repo", "init", "-r", url, "-q"]) == 0
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    assert main(["backup", str(data), "-r", url, "-q"]) == 0
    return url


@pytest.mark.parametrize(
    ("args", "says"),
    [
        # a policy file names its own timeZone
        (["forget", "--policy", "{policy}", "--time-zone", "Europe/Paris"], "--time-zone"),
        # prune's settings without --prune
        (["forget", "--keep-last", "1", "--grace", "5"], "add --prune"),
        (["forget", "--keep-last", "1", "--max-unused", "5"], "add --prune"),
        # two answers to how much data to read
        (["verify", "--read-data", "--read-data-subset", "1/2"], "not allowed with"),
        (["report", "--source-prefix", ""], "an empty prefix"),
        (["report", "--markdown", "--json"], "one output at a time"),
        # checked also when the repository exists (--if-absent)
        (["repo", "init", "--if-absent", "--pack-size", "1000"], "between 1 and 512"),
        # a hook killed at once, or never
        (["backup", "{policy}", "--pre-hook", "true", "--hook-timeout", "-5"], "above 0"),
        (["backup", "{policy}", "--pre-hook", "true", "--hook-timeout", "nan"], "above 0"),
        # a handover with nothing to hand over: run-hooks would wait for it in vain
        (["backup", "{policy}", "--hooks-handover", "{policy}"], "--hooks-handover goes with"),
        # a directory takes no cloud option
        (["snapshots", "-o", "endpoint=http://x"], "unknown option(s) endpoint for file://"),
    ],
)
def test_refused_with_the_reason(
    repo: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    says: str,
) -> None:
    policy = tmp_path / "retention.yaml"
    policy.write_text("keepDaily: 5\n")
    argv = [a.replace("{policy}", str(policy)) for a in args]
    capsys.readouterr()
    assert main([*argv, "-r", repo]) == exitcodes.USAGE
    assert says in capsys.readouterr().err
    assert main(["snapshots", "-r", repo, "-q"]) == 0  # nothing was forgotten or changed


def test_init_if_absent_says_which_settings_the_repository_keeps(
    repo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pack size and compression level are set when a repository is created: asked of an
    existing one, they are a warning, not silently dropped."""
    capsys.readouterr()
    argv = ["repo", "init", "--if-absent", "--pack-size", "8", "--compression-level", "3"]
    assert main([*argv, "-r", repo]) == 0
    err = capsys.readouterr().err
    assert "pack size of 16 MiB; --pack-size 8 applies only when a repository is created" in err
    assert "compresses at level 1; --compression-level 3 applies only" in err
    assert main(["repo", "init", "--if-absent", "-r", repo]) == 0
    assert "warning" not in capsys.readouterr().err
