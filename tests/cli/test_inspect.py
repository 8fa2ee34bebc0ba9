"""``safehold ls``, ``find``, ``diff`` and ``cat``: looking inside snapshots through the real
command, on a file repository filled by real backups (docs/cli.md, "Inspection")."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from safehold.engine.inspect import diff_trees, iter_entries
from safehold.repo.tree import TreeNode

PASSWORD = "inspection test password"
Run = Callable[..., subprocess.CompletedProcess[bytes]]


def _env(repo: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": repo.as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
        "TZ": "UTC",
    }


def _runner(repo: Path, cwd: Path) -> Run:
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env=_env(repo),
            cwd=cwd,
            capture_output=True,
            timeout=300,
            check=False,
        )
        if check:
            assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()[-2000:]
        return done

    return run


def _lines(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    return done.stdout.decode().splitlines()


def _json_lines(done: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _lines(done)]


class Repo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.run = _runner(root / "repo", root)
        self.snaps: list[str] = []

    def backup(self) -> str:
        done = self.run("--json", "backup", "data")
        snap: str = json.loads(_lines(done)[-1])["snapshot"]
        self.snaps.append(snap)
        return snap


BIG = os.urandom(3 * 1024 * 1024 + 17)  # several chunks


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = tmp_path_factory.mktemp("inspect")
    data = root / "data"
    (data / "docs").mkdir(parents=True)
    (data / "logs" / "old").mkdir(parents=True)
    (data / "docs" / "hello.txt").write_text("hello\n")
    (data / "docs" / "readme.md").write_text("read me\n")
    (data / "logs" / "app.log").write_text("one\n")
    (data / "logs" / "old" / "app.log.1").write_text("zero\n")
    (data / "gone.txt").write_text("soon gone\n")
    (data / "big.bin").write_bytes(BIG)
    (data / "script.sh").write_text("#!/bin/sh\n")
    (data / "script.sh").chmod(0o755)
    os.symlink("docs/hello.txt", data / "link")
    os.utime(data / "docs" / "hello.txt", ns=(1_700_000_000_123_456_789,) * 2)
    r = Repo(root)
    r.run("repo", "init")
    r.backup()
    # the second snapshot: one added, one removed, one changed, one metadata only
    (data / "gone.txt").unlink()
    (data / "docs" / "new.txt").write_text("new\n")
    (data / "logs" / "app.log").write_text("one\ntwo\n")
    (data / "script.sh").chmod(0o700)
    r.backup()
    return r


# ------------------------------------------------------------------ ls
def test_ls_the_root_shows_the_backed_up_path(repo: Repo) -> None:
    assert _lines(repo.run("ls", "latest")) == ["/data"]


def test_ls_a_directory_one_level_absolute_or_relative(repo: Repo) -> None:
    expected = [
        "/data/big.bin",
        "/data/docs",
        "/data/link",
        "/data/logs",
        "/data/script.sh",
    ]
    assert _lines(repo.run("ls", "latest", "/data")) == expected
    assert _lines(repo.run("ls", "latest", "data/")) == expected
    assert _lines(repo.run("ls", repo.snaps[0][:8], "/data/logs")) == [
        "/data/logs/app.log",
        "/data/logs/old",
    ]


def test_ls_recursive(repo: Repo) -> None:
    lines = _lines(repo.run("ls", "latest", "/data/logs", "-R"))
    assert lines == ["/data/logs/app.log", "/data/logs/old", "/data/logs/old/app.log.1"]
    everything = _lines(repo.run("ls", "--recursive", "latest"))
    assert "/data/docs/new.txt" in everything
    assert len(everything) == 12


def test_ls_long(repo: Repo) -> None:
    lines = _lines(repo.run("ls", "-l", "latest", "/data"))
    by_path = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in lines}
    assert by_path["/data/script.sh"].startswith("-rwx------ ")
    assert by_path["/data/docs"].startswith("drwx")
    assert " UTC " in by_path["/data/big.bin"]  # local time (TZ=UTC here), the zone named
    assert f" {len(BIG)} " in by_path["/data/big.bin"]
    assert by_path["/data/link"].startswith("lrwx")
    assert by_path["/data/link"].endswith("/data/link -> docs/hello.txt")


def test_ls_json(repo: Repo) -> None:
    docs = _json_lines(repo.run("--json", "ls", "latest", "/data/docs"))
    *entries, summary = docs
    assert summary["ok"] is True
    assert summary["count"] == 3
    assert summary["path"] == "/data/docs"
    hello = next(e for e in entries if e["path"] == "/data/docs/hello.txt")
    assert hello["type"] == "file"
    assert hello["size"] == 6
    assert hello["mtime"] == "2023-11-14T22:13:20.123456Z"
    assert hello["mode"] == 0o644
    assert hello["uid"] == os.getuid()
    link = _json_lines(repo.run("--json", "ls", "latest", "/data/link"))[0]
    assert link["type"] == "symlink"
    assert link["target"] == "docs/hello.txt"


def test_ls_a_missing_path_names_the_nearest(repo: Repo) -> None:
    done = repo.run("ls", "latest", "/data/doc", check=False)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "/data/doc: no such path" in err
    assert "/data/docs" in err
    done = repo.run("--json", "ls", "latest", "/data/docs/helo.txt", check=False)
    assert done.returncode == 1
    assert "/data/docs/hello.txt" in json.loads(_lines(done)[-1])["error"]
    done = repo.run("ls", "latest", "/data/big.bin/x", check=False)
    assert done.returncode == 1
    assert "not a directory" in done.stderr.decode()


# ------------------------------------------------------------------ find
def test_find_across_snapshots_newest_first(repo: Repo) -> None:
    lines = _lines(repo.run("find", "*.txt"))
    first, second = repo.snaps[1][:12], repo.snaps[0][:12]
    found = [(line.split()[0], line.split()[4]) for line in lines]
    assert found == [
        (first, "/data/docs/hello.txt"),
        (first, "/data/docs/new.txt"),
        (second, "/data/docs/hello.txt"),
        (second, "/data/gone.txt"),
    ]
    anchored = _lines(repo.run("find", "data/logs/**"))
    assert len(anchored) == 6  # app.log, old, old/app.log.1 in each
    one = _json_lines(repo.run("--json", "find", "app.log*", "--snapshot", repo.snaps[0][:10]))
    *matches, summary = one
    assert [m["path"] for m in matches] == ["/data/logs/app.log", "/data/logs/old/app.log.1"]
    assert {m["snapshot"] for m in matches} == {repo.snaps[0]}
    assert matches[0]["size"] == 4
    assert summary["matches"] == 2
    assert summary["snapshots"] == 1


def test_find_a_bad_pattern_is_a_usage_error(repo: Repo) -> None:
    assert repo.run("find", "a//b", check=False).returncode == 2


# ------------------------------------------------------------------ diff
def test_diff_added_removed_changed_and_metadata(repo: Repo) -> None:
    lines = _lines(repo.run("diff", *repo.snaps))
    assert lines[:-1] == [
        "+    /data/docs/new.txt",
        "-    /data/gone.txt",
        "M    /data/logs/app.log",
        "U    /data/script.sh",
    ]
    assert lines[-1].startswith("1 added, 1 removed, 1 changed, 1 metadata only, 0 type changed")
    *changes, summary = _json_lines(repo.run("--json", "diff", *repo.snaps))
    assert [(c["change"], c["path"]) for c in changes] == [
        ("added", "/data/docs/new.txt"),
        ("removed", "/data/gone.txt"),
        ("changed", "/data/logs/app.log"),
        ("metadata", "/data/script.sh"),
    ]
    assert summary["added"] == summary["removed"] == summary["changed"] == 1
    assert summary["metadata"] == 1
    assert _lines(repo.run("diff", "latest~1", "latest")) == lines
    too_far = repo.run("diff", "latest~2", "latest", check=False)
    assert too_far.returncode == 1
    assert b"only 2 snapshot(s)" in too_far.stderr
    same = _lines(repo.run("diff", repo.snaps[0], repo.snaps[0]))
    assert same == [
        "0 added, 0 removed, 0 changed, 0 metadata only, 0 type changed; 0 B added, 0 B removed"
    ]


def test_diff_and_ls_of_a_tree_600_levels_deep(tmp_path: Path) -> None:
    data = tmp_path / "data"
    deep = data.joinpath(*["d"] * 600)
    deep.mkdir(parents=True)
    (deep / "f").write_text("one\n")
    r = Repo(tmp_path)
    r.run("repo", "init")
    r.backup()
    (deep / "f").write_text("two\n")
    r.backup()
    path = "/data/" + "/".join(["d"] * 600) + "/f"
    assert _lines(r.run("diff", *r.snaps))[:-1] == [f"M    {path}"]
    *_, summary = _json_lines(r.run("--json", "diff", *r.snaps))
    assert summary["trees_read"] == 2 * 602  # only the changed path, both sides
    listed = _lines(r.run("ls", "-R", "latest"))
    assert len(listed) == 602
    assert listed[-1] == path
    assert r.run("cat", "latest", path).stdout == b"two\n"


def _tree(depth: int) -> tuple[dict[str, list[TreeNode]], dict[str, list[TreeNode]]]:
    """Two chains of ``depth`` directories whose innermost files differ (as a tree loader
    sees them), with distinct ids all the way down."""
    old: dict[str, list[TreeNode]] = {}
    new: dict[str, list[TreeNode]] = {}
    for side, content in ((old, "a" * 64), (new, "b" * 64)):
        prefix = content[0]
        side[f"{prefix}{depth}"] = [
            {"name": "f", "type": "file", "size": 1, "content": [content], "mode": 0o644}
        ]
        for level in range(depth - 1, -1, -1):
            side[f"{prefix}{level}"] = [
                {"name": "d", "type": "dir", "subtree": f"{prefix}{level + 1}", "mode": 0o755}
            ]
    return old, new


def test_the_walks_do_not_recurse() -> None:
    old, new = _tree(3000)
    trees = {**old, **new}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        changes = list(diff_trees(trees.__getitem__, "a0", "b0"))
        listed = list(
            iter_entries(trees.__getitem__, "/", {"type": "dir", "subtree": "a0"}, recursive=True)
        )
    finally:
        sys.setrecursionlimit(limit)
    assert [(c.kind, c.path.count("/")) for c in changes] == [("changed", 3001)]
    assert len(listed) == 3001


# ------------------------------------------------------------------ cat
def test_cat_a_file_is_byte_identical(repo: Repo, tmp_path: Path) -> None:
    assert repo.run("cat", "latest", "/data/big.bin").stdout == BIG
    assert repo.run("cat", repo.snaps[0], "data/logs/app.log").stdout == b"one\n"
    out = tmp_path / "copy.bin"
    done = repo.run("--json", "cat", "latest", "/data/big.bin", "--output", str(out))
    assert out.read_bytes() == BIG
    assert json.loads(_lines(done)[-1])["bytes"] == len(BIG)
    assert not (tmp_path / "copy.bin.partial").exists()


def test_cat_a_directory_is_a_tar_of_it(repo: Repo, tmp_path: Path) -> None:
    done = repo.run("cat", "latest", "/data")
    with tarfile.open(fileobj=io.BytesIO(done.stdout), mode="r|") as tar:
        tar.extractall(tmp_path / "out", filter="fully_trusted")  # noqa: S202 - our own stream
    source, copy = repo.root / "data", tmp_path / "out" / "data"
    for dirpath, dirnames, filenames in os.walk(source):
        for name in dirnames + filenames:
            src = Path(dirpath, name)
            dst = copy / src.relative_to(source)
            s, d = src.lstat(), dst.lstat()
            assert s.st_mode == d.st_mode, src
            if src.is_symlink():  # (tarfile does not set a symlink's own mtime)
                assert os.readlink(dst) == os.readlink(src)
                continue
            assert int(s.st_mtime) == int(d.st_mtime), src
            if src.is_file():
                assert dst.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in copy.rglob("*")) == sorted(p.name for p in source.rglob("*"))
    hello = copy / "docs" / "hello.txt"
    assert hello.stat().st_mtime_ns // 1000 == 1_700_000_000_123_456
    # a subdirectory: named from its own name
    done = repo.run("cat", "latest", "/data/logs")
    with tarfile.open(fileobj=io.BytesIO(done.stdout), mode="r|") as tar:
        names = tar.getnames()
    assert names == ["logs", "logs/app.log", "logs/old", "logs/old/app.log.1"]


def test_cat_a_symlink_or_a_missing_path(repo: Repo) -> None:
    done = repo.run("cat", "latest", "/data/link", check=False)
    assert done.returncode == 2
    assert b"symlink to docs/hello.txt" in done.stderr
    assert repo.run("cat", "latest", "/data/nope", check=False).returncode == 1


def test_odd_names_hard_links_pipes_and_terminals(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    odd = os.fsencode(data) + b"/caf\xe9 new\nline"  # not UTF-8, with a newline
    with open(odd, "wb") as f:
        f.write(b"odd\n")
    (data / "first").write_bytes(b"linked\n")
    os.link(data / "first", data / "second")
    for i in range(2000):
        (data / f"many-{i:04d}").write_text("x")
    r = Repo(tmp_path)
    r.run("repo", "init")
    r.backup()
    listed = r.run("ls", "latest", "/data").stdout.split(b"\n")
    assert b"/data/caf\xe9 new\\x0aline" in listed  # its bytes, one line
    assert r.run("cat", "latest", "/data/caf\udce9 new\nline").stdout == b"odd\n"
    # a hard link stays one inside the tar
    with tarfile.open(fileobj=io.BytesIO(r.run("cat", "latest", "/data").stdout), mode="r|") as tar:
        members = {m.name: m for m in tar}
    assert members["data/second"].islnk()
    assert members["data/second"].linkname == "data/first"
    assert members["data/first"].isreg()
    # a reader that goes away is no error
    piped = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m safehold ls -lR latest | head -1'],
        env=_env(tmp_path / "repo"),
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert piped.stdout.startswith(b"drwx")  # (the listing is far longer than a pipe holds)
    assert piped.stdout.endswith(b" /data\n")
    assert b"error" not in piped.stderr.lower()
    # a tar stream is not written to a terminal unless --force
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "safehold", "cat", "latest", "/data"],
            env=_env(tmp_path / "repo"),
            stdout=secondary,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert done.returncode == 2
    assert b"not written to a terminal" in done.stderr


def test_diff_type_changes_and_whole_directories() -> None:
    """A file that became a directory is ``T`` and what the directory holds is added; a
    removed directory lists all it held; a directory whose mtime alone changed is ``U``."""
    f = "f" * 64

    def node(name: str, kind: str, **more: Any) -> TreeNode:
        base: dict[str, Any] = {"name": name, "type": kind, "mode": 0o644, "mtime_ns": 1}
        base.update(more)
        return base  # type: ignore[return-value]

    trees: dict[str, list[TreeNode]] = {
        "old": [
            node("x", "file", size=1, content=[f]),
            node("gone", "dir", subtree="gone"),
            node("same", "dir", subtree="same"),
        ],
        "gone": [node("a", "file", size=2, content=[f]), node("b", "dir", subtree="b")],
        "b": [node("c", "symlink", target="a")],
        "same": [node("s", "file", size=1, content=[f])],
        "new": [
            node("x", "dir", subtree="x"),
            node("same", "dir", subtree="same", mtime_ns=2),
        ],
        "x": [node("y", "file", size=3, content=[f])],
    }
    changes = [(c.prefix, c.path) for c in diff_trees(trees.__getitem__, "old", "new")]
    assert changes == [
        ("-", "/gone"),
        ("-", "/gone/a"),
        ("-", "/gone/b"),
        ("-", "/gone/b/c"),
        ("U", "/same"),
        ("T", "/x"),
        ("+", "/x/y"),
    ]
