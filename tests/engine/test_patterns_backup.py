"""Include and exclude patterns in a real backup: what is restored is exactly what the
patterns keep, byte for byte, and a left-out directory is never read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safehold.engine import BackupError, BackupOptions, backup_paths, restore_snapshot
from safehold.engine.backup import backup_stream
from safehold.engine.patterns import PathFilter
from safehold.repo import Repository

FILES = {
    "app.conf": b"conf\n",
    "a.tmp": b"tmp at the top\n",
    "cache/blob.bin": os.urandom(400_000),  # a big file: read by its own threads
    "cache/sub/x": b"x\n",
    "data/db.sqlite": os.urandom(300_000),
    "data/db.sqlite.tmp": b"half written\n",
    "data/logs/today.log": b"log\n" * 100,
    "data/logs/old.log.gz": b"gz",
    "src/main.py": b"print('hi')\n",
    "src/pkg/mod.py": b"x = 1\n",
    "src/pkg/mod.pyc": b"\0\0",
    "src/gen/out.py": b"generated\n",
    "node_modules/lib/index.js": b"js\n",
    "web/node_modules/lib/index.js": b"js\n",
    "web/index.html": b"<html>\n",
}


def _tree(root: Path) -> Path:
    for rel, data in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty").mkdir()
    os.symlink("app.conf", root / "link.conf")
    return root


def _restored(repo: Repository, snapshot_id: str, target: Path) -> dict[str, bytes]:
    snap = repo.find_snapshot(snapshot_id)
    restore_snapshot(repo, snap, str(target))
    out: dict[str, bytes] = {}
    for dirpath, _, filenames in os.walk(target):
        for name in filenames:
            full = Path(dirpath, name)
            rel = str(full.relative_to(target))
            out[rel] = os.readlink(full).encode() if full.is_symlink() else full.read_bytes()
    return out


def _dirs(target: Path) -> set[str]:
    return {str(Path(d, n).relative_to(target)) for d, names, _ in os.walk(target) for n in names}


def _expected(include: list[str], exclude: list[str]) -> dict[str, bytes]:
    f = PathFilter(include, exclude)
    files = {**FILES, "link.conf": b"app.conf"}
    return {f"data/{rel}": data for rel, data in files.items() if f.keeps(rel)}


CASES = [
    ([], ["cache/**", "*.tmp", "node_modules"]),
    ([], ["data", "src/pkg/*.pyc", "/link.conf"]),
    (["src/**/*.py", "*.conf"], []),
    (["src/**", "data/logs"], ["src/gen/**", "*.pyc", "*.gz"]),
    (["web"], ["node_modules"]),
    (["nothing-matches"], []),
]


@pytest.mark.parametrize(("include", "exclude"), CASES)
def test_restored_tree_holds_exactly_what_the_patterns_keep(
    repo: Repository, tmp_path: Path, include: list[str], exclude: list[str]
) -> None:
    src = _tree(tmp_path / "data")
    result = backup_paths(repo, [str(src)], BackupOptions(include=include, exclude=exclude))
    assert result.errors == []
    expected = _expected(include, exclude)
    restored = _restored(repo, result.snapshot.id, tmp_path / "out")
    assert restored == expected
    s = result.snapshot.summary
    regular = [k for k in expected if not k.endswith("link.conf")]
    assert s["total_files"] == len(regular)
    assert s["total_bytes"] == sum(len(expected[k]) for k in regular)
    # directories: the root and those that hold something kept (or are kept empty)
    assert s["dirs"] == len(_dirs(tmp_path / "out")), sorted(_dirs(tmp_path / "out"))


def test_excludes_keep_the_directory_of_a_trailing_double_star_and_empty_dirs(
    repo: Repository, tmp_path: Path
) -> None:
    src = _tree(tmp_path / "data")
    result = backup_paths(repo, [str(src)], BackupOptions(exclude=["cache/**"]))
    _restored(repo, result.snapshot.id, tmp_path / "out")
    assert (tmp_path / "out/data/cache").is_dir()
    assert list((tmp_path / "out/data/cache").iterdir()) == []
    assert (tmp_path / "out/data/empty").is_dir()


def test_include_leaves_out_directories_that_lead_to_nothing(
    repo: Repository, tmp_path: Path
) -> None:
    src = _tree(tmp_path / "data")
    result = backup_paths(repo, [str(src)], BackupOptions(include=["*.py"]))
    _restored(repo, result.snapshot.id, tmp_path / "out")
    assert _dirs(tmp_path / "out") == {"data", "data/src", "data/src/pkg", "data/src/gen"}


def test_an_excluded_directory_is_never_listed(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root every directory is readable: a directory that cannot be listed is made by
    failing ``os.scandir`` for it, and every listing is recorded (the ETA scan's too)."""
    src = _tree(tmp_path / "data")
    (src / "private" / "inner").mkdir(parents=True)
    (src / "private" / "inner" / "secret").write_text("no")
    forbidden = {str(src / "private"), str(src / "private" / "inner"), str(src / "cache")}
    listed: list[str] = []
    real = os.scandir

    def scandir(path: str) -> object:
        listed.append(os.fspath(path))
        if os.fspath(path) in forbidden:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    for include, exclude in [
        ([], ["private", "cache/**"]),
        ([], ["/private/**", "cache"]),
        (["src/*.py", "data/**"], []),
        (["**/*.py"], ["private", "cache"]),
    ]:
        listed.clear()
        result = backup_paths(
            repo,
            [str(src)],
            BackupOptions(include=include, exclude=exclude, type="full"),
            progress=lambda event: None,
        )
        assert result.errors == [], (include, exclude)
        assert not forbidden & set(listed), (include, exclude)
    result = backup_paths(repo, [str(src)], BackupOptions(type="full"))
    assert {e["path"] for e in result.errors} == {str(src / "private"), str(src / "cache")}


def test_incremental_with_patterns_restores_the_same(repo: Repository, tmp_path: Path) -> None:
    src = _tree(tmp_path / "data")
    opts = BackupOptions(include=["src/**", "data/**"], exclude=["*.tmp", "*.pyc"])
    backup_paths(repo, [str(src)], opts)
    (src / "src" / "new.py").write_bytes(b"new\n")
    (src / "data" / "new.tmp").write_bytes(b"tmp\n")
    second = backup_paths(repo, [str(src)], opts)
    assert second.snapshot.type == "incremental"
    FILES["src/new.py"] = b"new\n"
    try:
        expected = _expected(opts.include, opts.exclude)
    finally:
        del FILES["src/new.py"]
    assert _restored(repo, second.snapshot.id, tmp_path / "out") == expected
    assert second.snapshot.summary["files_new"] + second.snapshot.summary["files_changed"] == 1


def test_patterns_are_relative_to_each_backed_up_path(repo: Repository, tmp_path: Path) -> None:
    a = _tree(tmp_path / "a" / "data")
    b = tmp_path / "b" / "other"
    (b / "cache").mkdir(parents=True)
    (b / "cache" / "f").write_bytes(b"f")
    (b / "keep").write_bytes(b"k")
    result = backup_paths(repo, [str(a), str(b)], BackupOptions(exclude=["cache/**", "/src"]))
    restored = _restored(repo, result.snapshot.id, tmp_path / "out")
    assert "other/keep" in restored
    assert "other/cache/f" not in restored
    assert not any(k.startswith(("data/src/", "data/cache/")) for k in restored)
    # a file given as PATH is the root itself: patterns never leave it out
    result = backup_paths(repo, [str(a / "a.tmp")], BackupOptions(exclude=["*.tmp"]))
    assert result.snapshot.summary["total_files"] == 1


def test_bad_patterns_stop_the_backup_before_it_starts(repo: Repository, tmp_path: Path) -> None:
    src = _tree(tmp_path / "data")
    with pytest.raises(BackupError, match="exclude pattern ''"):
        backup_paths(repo, [str(src)], BackupOptions(exclude=["ok", ""]))
    with pytest.raises(BackupError, match=r"include pattern 'a/\.\./b'"):
        backup_paths(repo, [str(src)], BackupOptions(include=["a/../b"]))
    with pytest.raises(BackupError, match="not to a stream"):
        backup_stream(repo, open(os.devnull, "rb"), "x", BackupOptions(exclude=["a"]))  # noqa: SIM115
    assert repo.snapshots() == []


@pytest.mark.parametrize(
    ("include", "exclude"),
    [([], []), ([], ["cache", "**/*.tmp"]), (["src/**/*.py", "data/logs"], ["src/gen"])],
)
def test_the_pre_scan_counts_what_the_walk_stores(
    repo: Repository, tmp_path: Path, include: list[str], exclude: list[str]
) -> None:
    """The ETA's totals come from the same scope rules as the walk (engine.backup.walk)."""
    import threading

    from safehold.engine.backup.walk import scan_totals
    from safehold.engine.patterns import compile_patterns

    root = _tree(tmp_path / "src")
    totals = scan_totals([str(root)], threading.Event(), compile_patterns(include, exclude))
    options = BackupOptions(include=include, exclude=exclude)
    result = backup_paths(repo, [str(root)], options)
    summary = result.snapshot.summary
    assert totals == (summary["total_files"], summary["total_bytes"])
