"""``safehold restore --include/--exclude``: the backup's pattern language matched against the
path inside the snapshot (absolute as ``ls`` shows it, or relative), a directory with all it
holds and its parents with their metadata, in one process and split over several; and a
selection that matches nothing fails (exit 1) naming the closest paths, writing nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PASSWORD = "cli restore select password"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
    }


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safehold", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _files(root: Path) -> set[str]:
    return {
        str(Path(d, n).relative_to(root))
        for d, dirs, names in os.walk(root)
        for n in names + [x for x in dirs if not os.listdir(Path(d, x))]
    }


FILES = {
    "data/notes.txt": b"notes",
    "data/docs/a.txt": b"a",
    "data/docs/b.md": b"b",
    "data/docs/deep/c.txt": b"c",
    "data/docs/deep/d.log": b"d",
    "data/docs/skip/e.txt": b"e",
    "data/img/p.png": b"p" * 200_000,
    "data/img/sub/q.png": b"q",
}


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str, Path]:
    tmp = tmp_path_factory.mktemp("select")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": (tmp / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
    }
    for rel, data in FILES.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    os.chmod(tmp / "data/docs", 0o750)  # noqa: S103 - a mode to see restored
    os.utime(tmp / "data/docs", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    os.chmod(tmp / "data/img/sub", 0o700)
    os.utime(tmp / "data/img/sub", ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    assert _run(env, "repo", "init").returncode == 0
    done = _run(env, "backup", str(tmp / "data"), "--json")
    assert done.returncode == 0, done.stderr
    return env, _summary(done)["snapshot"], tmp


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--include", "**/*.txt"], {"notes.txt", "docs/a.txt", "docs/deep/c.txt", "docs/skip/e.txt"}),  # noqa: E501
        (["--include", "/data/docs/deep/c.txt"], {"docs/deep/c.txt"}),
        (["--include", "data/docs/b.md", "--include", "./data/img/sub"], {"docs/b.md", "img/sub/q.png"}),  # noqa: E501
        (["--include", "*.png"], {"img/p.png", "img/sub/q.png"}),
        (
            ["--include", "/data/docs", "--exclude", "data/docs/skip", "--exclude", "*.log"],
            {"docs/a.txt", "docs/b.md", "docs/deep/c.txt"},
        ),
        (["--exclude", "docs", "--exclude", "/data/img/*.png"], {"notes.txt", "img/sub/q.png"}),
    ],
)  # fmt: skip
def test_patterns_restore_exactly_the_matching_files(
    snapshot: tuple[dict[str, str], str, Path],
    tmp_path: Path,
    args: list[str],
    expected: set[str],
    processes: str,
) -> None:
    env, snap, _ = snapshot
    target = tmp_path / "out"
    if processes == "1":  # a target that holds something is restored by one process
        (target / "other").mkdir(parents=True)
    done = _run(env, "restore", snap, str(target), "--json", *args)
    assert done.returncode == 0, done.stderr
    assert _files(target / "data") == expected
    for rel in expected:
        assert (target / "data" / rel).read_bytes() == FILES[f"data/{rel}"]
    doc = _summary(done)
    assert doc["files"] == len(expected)
    many = min(len(os.sched_getaffinity(0)), 4)
    assert doc["processes"] == (1 if processes == "1" else many)
    assert doc["unmatched_includes"] == []


def test_a_directory_comes_back_whole_with_its_parents_metadata(
    snapshot: tuple[dict[str, str], str, Path], tmp_path: Path
) -> None:
    env, snap, src = snapshot
    target = tmp_path / "out"
    done = _run(env, "restore", snap, str(target), "--include", "data/img/sub")
    assert done.returncode == 0, done.stderr
    assert _files(target) == {"data/img/sub/q.png"}
    for rel in ("data", "data/img", "data/img/sub"):  # parents too, with their metadata
        got, want = os.stat(target / rel), os.stat(src / rel)
        assert (got.st_mode, got.st_mtime_ns) == (want.st_mode, want.st_mtime_ns), rel
    done = _run(env, "restore", snap, str(tmp_path / "docs"), "--include", "/data/docs")
    assert done.returncode == 0, done.stderr
    assert _files(tmp_path / "docs/data") == {
        "docs/a.txt", "docs/b.md", "docs/deep/c.txt", "docs/deep/d.log", "docs/skip/e.txt"
    }  # fmt: skip
    got = os.stat(tmp_path / "docs/data/docs")
    assert (got.st_mode & 0o777, got.st_mtime_ns) == (0o750, 1_600_000_000_000_000_000)


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        ("/data/dcos/a.txt", ["/data/docs/a.txt", "the pattern matches as far as /data,"]),
        ("dat/docs", ["/data/docs/", "as far as / (the snapshot's root), which holds: data/"]),
        ("**/*.txx", ["/data/notes.txt"]),
        ("note.txt", ["/data/notes.txt"]),
        ("data/[/x]", ["the pattern matches as far as /data,"]),  # printed as it is, not markup
    ],
)
def test_a_selection_of_nothing_fails_naming_the_closest_paths(
    snapshot: tuple[dict[str, str], str, Path], tmp_path: Path, pattern: str, named: list[str]
) -> None:
    env, snap, _ = snapshot
    target = tmp_path / "out"
    done = _run(env, "restore", snap, str(target), "--include", pattern)
    assert done.returncode == 1, done.stderr
    assert f"--include {pattern!r} matches nothing" in done.stderr
    for text in named:
        assert text in done.stderr, done.stderr
    assert "files written" not in done.stdout + done.stderr
    assert not target.exists()  # TARGET untouched
    (target / "kept").mkdir(parents=True)
    done = _run(env, "restore", snap, str(target), "--json", "--include", pattern)
    assert done.returncode == 1
    doc = _summary(done)
    assert doc["exit_code"] == 1
    assert [u["pattern"] for u in doc["unmatched_includes"]] == [pattern]
    assert doc["unmatched_includes"][0]["closest"] or doc["unmatched_includes"][0]["holds"]
    assert os.listdir(target) == ["kept"]


def test_excluding_all_that_is_included_fails_and_a_pattern_that_matches_nothing_warns(
    snapshot: tuple[dict[str, str], str, Path], tmp_path: Path
) -> None:
    env, snap, _ = snapshot
    done = _run(env, "restore", snap, str(tmp_path / "a"), "--include", "*.md", "--exclude", "docs")
    assert done.returncode == 1
    assert "left out by --exclude 'docs'" in done.stderr
    assert not (tmp_path / "a").exists()
    # one of two includes matches: restored, with a warning that names the other's close paths
    done = _run(
        env, "restore", snap, str(tmp_path / "b"), "--json", "--include", "*.md",
        "--include", "/data/img/sub/q.pgn",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "'/data/img/sub/q.pgn' matches nothing" in done.stderr
    assert "/data/img/sub/q.png" in done.stderr
    assert _files(tmp_path / "b/data") == {"docs/b.md"}
    [unmatched] = _summary(done)["unmatched_includes"]
    assert unmatched["pattern"] == "/data/img/sub/q.pgn"
    assert unmatched["closest"][0] == "/data/img/sub/q.png"


def test_a_bad_pattern_is_a_usage_error(
    snapshot: tuple[dict[str, str], str, Path], tmp_path: Path
) -> None:
    env, snap, _ = snapshot
    done = _run(env, "restore", snap, str(tmp_path / "out"), "--include", "data//x")
    assert done.returncode == 2
    assert "include pattern 'data//x'" in done.stderr
    assert not (tmp_path / "out").exists()
