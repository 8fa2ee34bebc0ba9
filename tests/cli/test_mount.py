"""``safehold mount``: the real command mounts a real repository with FUSE, the files are
read through the kernel byte for byte, and it unmounts (docs/cli.md, "mount").

CI installs FUSE (e2e/install-deps: fuse3; the ``mount`` extra), so these tests fail, not
skip, where it is missing.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testground.objectstores import RunningStore

PASSWORD = "mount test password"
BIG = os.urandom(5 * 1024 * 1024 + 321)  # several chunks


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    return {**env, "SAFEHOLD_PASSWORD": PASSWORD, "TZ": "UTC", "HOME": str(tmp)}


class Repo:
    def __init__(self, tmp: Path, location: list[str]) -> None:
        self.tmp = tmp
        self.location = location  # -r URL and -o KEY=VALUE options

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "safehold", *self.location, *args],
            env=_env(self.tmp),
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr + done.stdout[-2000:]
        return done

    def backup(self) -> str:
        done = self.run("--json", "backup", "--source", "web/data", "data")
        snap: str = json.loads(done.stdout.splitlines()[-1])["snapshot"]
        return snap

    def mount(self, mountpoint: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "safehold", *self.location, "--json", "mount", str(mountpoint)],
            # SIGABRT then prints every thread's stack (see _ended): where a hang waits.
            env={**_env(self.tmp), "PYTHONFAULTHANDLER": "1"},
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def _tree(data: Path) -> None:
    (data / "docs").mkdir(parents=True)
    (data / "docs" / "hello.txt").write_text("hello\n")
    (data / "docs" / "private.txt").write_text("secret\n")
    (data / "docs" / "private.txt").chmod(0o600)
    (data / "empty").write_bytes(b"")
    (data / "big.bin").write_bytes(BIG)
    (data / "run.sh").write_text("#!/bin/sh\n")
    (data / "run.sh").chmod(0o755)
    os.symlink("docs/hello.txt", data / "link")
    os.link(data / "docs" / "hello.txt", data / "hard")


def _files(data: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every entry below ``data``: relative path -> (st_mode, bytes or symlink target)."""
    found: dict[str, tuple[int, bytes | str]] = {}
    for path in sorted(data.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(data))
        if path.is_symlink():
            found[rel] = (st.st_mode, os.readlink(path))
        elif path.is_file():
            found[rel] = (st.st_mode, path.read_bytes())
        else:
            found[rel] = (st.st_mode, b"")
    return found


@pytest.fixture
def unmount_after() -> Iterator[list[tuple[Path, subprocess.Popen[str]]]]:
    mounts: list[tuple[Path, subprocess.Popen[str]]] = []
    yield mounts
    for mountpoint, proc in mounts:
        if os.path.ismount(mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ended(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """The output of a mount that ended within ``timeout``; else the test fails with the
    stack of every thread of it (SIGABRT through faulthandler)."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"safehold mount had not ended {timeout:.0f} s after the unmount:\n{err}{out}")


def _wait_mounted(mountpoint: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not os.path.ismount(mountpoint):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"safehold mount exited {proc.returncode}: {err}{out}")
        assert time.monotonic() < deadline, "not mounted after 60 s"
        time.sleep(0.1)


def _check_snapshot(root: Path, expected: dict[str, tuple[int, bytes | str]]) -> None:
    assert _files(root) == expected  # names, types, modes, bytes, symlink targets
    for rel, (_mode, content) in expected.items():
        if isinstance(content, bytes) and stat.S_ISREG(_mode):
            assert (root / rel).stat().st_size == len(content), rel
    assert (root / "empty").stat().st_size == 0
    hard, hello = (root / "hard").stat(), (root / "docs" / "hello.txt").stat()
    assert (hard.st_ino, hard.st_nlink) == (hello.st_ino, 2)
    assert (root / "big.bin").stat().st_ino != hello.st_ino
    with open(root / "big.bin", "rb") as f:  # a read in the middle, across a chunk boundary
        f.seek(3_000_000)
        assert f.read(2_000_000) == BIG[3_000_000:5_000_000]


def _mount_and_check(
    repo: Repo, tmp: Path, mounts: list[tuple[Path, subprocess.Popen[str]]], unmount: str
) -> None:
    data = tmp / "data"
    _tree(data)
    repo.run("repo", "init")
    first = repo.backup()
    expected_first = _files(data)
    (data / "docs" / "hello.txt").write_text("hello again\n")  # the hard link's too
    (data / "run.sh").chmod(0o700)
    second = repo.backup()
    expected_second = _files(data)
    assert expected_first != expected_second

    mountpoint = tmp / "mnt"
    mountpoint.mkdir()
    proc = repo.mount(mountpoint)
    mounts.append((mountpoint, proc))
    _wait_mounted(mountpoint, proc)

    assert sorted(os.listdir(mountpoint)) == ["ids", "snapshots"]
    assert sorted(os.listdir(mountpoint / "ids")) == sorted([first[:12], second[:12]])
    _check_snapshot(mountpoint / "ids" / first[:12] / "data", expected_first)
    _check_snapshot(mountpoint / "ids" / second[:12] / "data", expected_second)
    source = mountpoint / "snapshots" / "web%2Fdata"
    assert os.listdir(mountpoint / "snapshots") == ["web%2Fdata"]
    times = sorted(os.listdir(source))
    assert len(times) == 3, times
    assert times[-1] == "latest"
    assert os.readlink(source / "latest") == times[1]
    _check_snapshot(source / "latest" / "data", expected_second)
    _check_snapshot(source / times[0] / "data", expected_first)

    # read-only: writes fail with EROFS
    for write in (
        lambda: (source / "latest" / "data" / "docs" / "hello.txt").open("w"),
        lambda: (source / "latest" / "data" / "new").write_text("x"),
        lambda: (mountpoint / "snapshots" / "x").mkdir(),
    ):
        with pytest.raises(OSError, match="Read-only file system") as caught:
            write()
        assert caught.value.errno == errno.EROFS

    # a snapshot taken while mounted appears when the list is read again
    third = repo.backup()
    deadline = time.monotonic() + 30
    while third[:12] not in os.listdir(mountpoint / "ids"):
        assert time.monotonic() < deadline, "the new snapshot did not appear"
        time.sleep(0.5)
    _check_snapshot(mountpoint / "ids" / third[:12] / "data", expected_second)

    if unmount == "signal":
        proc.send_signal(signal.SIGINT)
    else:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)
    out, err = _ended(proc, timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary.pop("cpu_seconds") >= 0  # what the command cost, as every summary says
    assert summary.pop("peak_memory_bytes") > 0
    assert summary == {"ok": True, "mountpoint": str(mountpoint), "snapshots": 3}
    assert not os.path.ismount(mountpoint)


def test_mount_a_file_repository_and_unmount_with_ctrl_c(
    tmp_path: Path, unmount_after: list[tuple[Path, subprocess.Popen[str]]]
) -> None:
    repo = Repo(tmp_path, ["-r", str(tmp_path / "repo")])
    _mount_and_check(repo, tmp_path, unmount_after, "signal")


def test_mount_an_s3_repository_and_unmount_with_fusermount3(
    s3_store: RunningStore,
    tmp_path: Path,
    unmount_after: list[tuple[Path, subprocess.Popen[str]]],
) -> None:
    bucket = f"mount-{uuid.uuid4().hex[:12]}"
    s3_store.make_bucket(bucket)
    options = [a for k, v in s3_store.options.items() for a in ("-o", f"{k}={v}")]
    repo = Repo(tmp_path, ["-r", s3_store.url(bucket, "repo"), *options])
    _mount_and_check(repo, tmp_path, unmount_after, "fusermount3")


def _mounted_file_repo(
    tmp: Path, mounts: list[tuple[Path, subprocess.Popen[str]]]
) -> tuple[Path, subprocess.Popen[str]]:
    """A file repository with one snapshot of ``_tree``, mounted at ``tmp/mnt``."""
    _tree(tmp / "data")
    repo = Repo(tmp, ["-r", str(tmp / "repo")])
    repo.run("repo", "init")
    repo.backup()
    mountpoint = tmp / "mnt"
    mountpoint.mkdir()
    proc = repo.mount(mountpoint)
    mounts.append((mountpoint, proc))
    _wait_mounted(mountpoint, proc)
    return mountpoint, proc


def _assert_ended_cleanly(proc: subprocess.Popen[str], mountpoint: Path) -> None:
    out, err = _ended(proc, timeout=60)
    assert proc.returncode == 0, err
    assert "failed to unmount" not in err  # libfuse's own unmount, after ours, stays quiet
    summary = json.loads(out.splitlines()[-1])
    assert (summary["ok"], summary["mountpoint"]) == (True, str(mountpoint))
    assert not os.path.ismount(mountpoint)


def _in_own_mount_namespace(pid: int, command: str) -> bool:
    """Whether process ``pid`` runs ``command`` in a mount namespace other than this one's."""
    proc = Path(f"/proc/{pid}")
    return (proc / "comm").read_text().strip() == command and os.readlink(
        proc / "ns" / "mnt"
    ) != os.readlink("/proc/self/ns/mnt")


def test_an_unmount_ends_the_command_while_another_mount_namespace_holds_a_copy(
    tmp_path: Path, unmount_after: list[tuple[Path, subprocess.Popen[str]]]
) -> None:
    """A process that made its own mount namespace while the file system was mounted (here
    ``unshare --mount``; a container runtime does the same) holds a copy of the mount, which
    keeps the kernel's connection open after ``fusermount3 -u``: the command must end anyway,
    and the copy then answers ENOTCONN instead of serving a repository nobody watches."""
    mountpoint, proc = _mounted_file_repo(tmp_path, unmount_after)
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "300"])
    try:
        copy = Path(f"/proc/{holder.pid}/root") / str(mountpoint).lstrip("/")
        # Until unshare has made its namespace the holder shares ours, mount included; only once
        # it runs ``sleep`` are its copies made and private (an unmount no longer reaches them).
        deadline = time.monotonic() + 30
        while not _in_own_mount_namespace(holder.pid, "sleep"):
            assert time.monotonic() < deadline, "unshare did not make its namespace"
            time.sleep(0.05)
        assert b"fuse.safehold" in Path(f"/proc/{holder.pid}/mountinfo").read_bytes()
        assert sorted(os.listdir(copy)) == ["ids", "snapshots"]  # the copy serves, for now

        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)
        _assert_ended_cleanly(proc, mountpoint)
        with pytest.raises(OSError, match="Transport endpoint is not connected") as caught:
            os.listdir(copy)
        assert caught.value.errno == errno.ENOTCONN
    finally:
        holder.kill()
        holder.wait()


def test_ctrl_c_while_a_file_is_read_lets_the_read_finish(
    tmp_path: Path, unmount_after: list[tuple[Path, subprocess.Popen[str]]]
) -> None:
    """Ctrl-C on a busy mount unmounts it lazily: an open file keeps reading, byte for byte,
    and the command ends once the file system has gone quiet."""
    mountpoint, proc = _mounted_file_repo(tmp_path, unmount_after)
    (snapshot,) = os.listdir(mountpoint / "ids")
    with open(mountpoint / "ids" / snapshot / "data" / "big.bin", "rb") as f:
        head = f.read(1024 * 1024)
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while os.path.ismount(mountpoint):
            assert time.monotonic() < deadline, "Ctrl-C did not unmount the busy mount"
            time.sleep(0.05)
        rest = b""
        while piece := f.read(256 * 1024):  # each read well within the quiet time
            rest += piece
            time.sleep(0.05)
    assert head + rest == BIG
    _assert_ended_cleanly(proc, mountpoint)


@pytest.mark.parametrize(
    ("line", "mountpoint", "expected"),
    [
        (b"67 47 0:40 / /tmp/mnt ro,relatime - fuse.safehold safehold ro", b"/tmp/mnt", True),
        (b"67 47 0:40 / /tmp/mnt ro,relatime - fuse.safehold safehold ro", b"/tmp/mn", False),
        (b"67 47 0:40 / /tmp/a\\040b ro - fuse.safehold safehold ro", b"/tmp/a b", True),
        (b"67 47 0:40 / /tmp/a\\134n ro - fuse.safehold safehold ro", b"/tmp/a\\n", True),
        (b"67 47 0:40 / /tmp/mnt ro shared:5 - fuse.other other ro", b"/tmp/mnt", False),
        (b"67 47 0:40 / /tmp/mnt ro shared:5 - fuse.safehold safehold ro", b"/tmp/mnt", True),
    ],
)
def test_the_mount_table_is_read_as_the_kernel_escapes_it(
    line: bytes, mountpoint: bytes, expected: bool
) -> None:
    from safehold.cli.fuseloop import listed

    table = b"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n" + line + b"\n"
    assert listed(table, mountpoint) is expected


def test_without_fusermount3_the_error_names_the_package(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "safehold", "mount", str(tmp_path)],
        env={**_env(tmp_path), "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "fusermount3 is not on PATH" in done.stderr
    assert "apt-get install fuse3" in done.stderr


def test_without_the_extra_the_error_names_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['mfusepy'] = None\n"
        "from safehold.cli.main import main\n"
        f"sys.exit(main(['mount', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'safehold[mount]'" in done.stderr
