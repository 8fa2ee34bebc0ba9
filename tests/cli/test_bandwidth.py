"""``--limit-upload`` / ``--limit-download`` (KiB/s, like restic): the options and their
environment forms, and the limit measured on a real object store.

The measured test is a correctness test of the limiter (issue #17 asks that a limited
backup stay within 10 % of its limit): a limited backup to SeaweedFS and a limited restore
from it, each timed around the command (``main``, in this process, so that an
interpreter's start does not blur the figures). The bytes moved over the command's whole
time must not exceed the limit by more than 10 %; and the waits the limiter imposed must
add up to no more than the bytes' time at the limit: it holds back no more than it must.
docs/performance.md quotes the figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from argparse import Namespace
from pathlib import Path

import pytest

from safehold.cli.context import bandwidth
from safehold.cli.main import build_parser, main
from safehold.storage import open_storage
from safehold.storage.wrappers import ThrottledStorage, TokenBucket
from testground.objectstores import RunningStore

PASSWORD = "bandwidth test password"
KIB = 1024


def parse(*args: str) -> Namespace:
    return build_parser().parse_args(args)


# ---------------------------------------------------------------- the options


@pytest.mark.parametrize("command", [["snapshots"], ["backup", "/data"], ["restore", "a", "b"]])
def test_every_repository_command_takes_both_limits(command: list[str]) -> None:
    got = parse(*command, "--limit-upload", "512", "--limit-download", "2048")
    assert (got.limit_upload, got.limit_download) == (512, 2048)
    before = parse("--limit-upload", "64", *command)  # a global option: also before
    assert before.limit_upload == 64


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "fast", ""])
def test_a_limit_is_a_whole_number_of_kib_per_second(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["snapshots", "--limit-upload", value]) == 2
    assert "KiB/s of at least 1" in capsys.readouterr().err


def test_help_says_the_unit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backup", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--limit-upload KIB upload (write to storage) at most KIB KiB/s" in text
    assert "--limit-download KIB download (read from storage) at most KIB KiB/s" in text


def test_limits_become_the_process_buckets_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEHOLD_LIMIT_UPLOAD", raising=False)
    monkeypatch.delenv("SAFEHOLD_LIMIT_DOWNLOAD", raising=False)
    assert bandwidth(parse("snapshots")) is None
    limits = bandwidth(parse("snapshots", "--limit-upload", "100"))
    assert limits is not None
    assert limits.upload is not None
    assert (limits.upload.rate, limits.download) == (100 * KIB, None)
    assert limits.exempt == ("locks/",)  # lock refreshes never wait behind packs
    monkeypatch.setenv("SAFEHOLD_LIMIT_DOWNLOAD", "300")
    both = bandwidth(parse("snapshots", "--limit-upload", "100"))
    assert both is not None
    assert both.download is not None
    assert both.download.rate == 300 * KIB
    assert both.upload is limits.upload  # one bucket per direction for the whole process


def test_the_option_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEHOLD_LIMIT_UPLOAD", "10")
    limits = bandwidth(parse("snapshots", "--limit-upload", "20"))
    assert limits is not None
    assert limits.upload is not None
    assert limits.upload.rate == 20 * KIB


def test_a_wrong_environment_value_is_a_usage_error(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(),
        "SAFEHOLD_LIMIT_DOWNLOAD": "lots",
    }
    done = subprocess.run(
        [sys.executable, "-m", "safehold", "snapshots"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "SAFEHOLD_LIMIT_DOWNLOAD: 'lots' is not a whole number of KiB/s" in done.stderr


def test_the_command_opens_its_repository_throttled(tmp_path: Path) -> None:
    from safehold.cli.context import open_repo_storage

    args = parse("-r", str(tmp_path), "snapshots", "--limit-download", "5")
    storage = open_repo_storage(args)
    assert isinstance(storage, ThrottledStorage)
    assert storage.bandwidth.download is not None
    assert storage.bandwidth.download.rate == 5 * KIB


# ---------------------------------------------------------------- measured


LIMIT_KIB = 1024
DATA_BYTES = 4 * 1024 * 1024


class Repo:
    """A repository on the S3 server and the command run against it, in this process
    (``main``): what is timed is the command, not an interpreter starting."""

    def __init__(self, store: RunningStore, bucket: str, prefix: str) -> None:
        self.url = store.url(bucket, prefix)
        self.options = dict(store.options)

    def run(self, *args: str) -> float:
        """Run ``safehold ARGS`` to success; the seconds it took, measured around it."""
        opts = [f"--option={k}={v}" for k, v in self.options.items()]
        start = time.monotonic()
        code = main([*args, "--repo", self.url, *opts, "--json", "-q"])
        seconds = time.monotonic() - start
        assert code == 0
        return seconds

    def stored(self) -> int:
        """Bytes of every object but locks: what a backup wrote, what a restore reads."""
        with open_storage(self.url, self.options) as storage:
            return sum(i.size for i in storage.list("") if not i.name.startswith("locks/"))


def held_for(waits: list[tuple[float, float]]) -> float:
    """The seconds during which at least one call was held back: the union of the waits.

    Packs are uploaded by several threads at once (one per worker on a machine with more
    cores), and their waits overlap; summed, two concurrent waits would count twice."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(waits):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def test_waits_held_at_once_count_once() -> None:
    assert held_for([]) == 0
    assert held_for([(0, 1), (2, 3)]) == 2  # one after the other: summed
    assert held_for([(0, 1), (0, 3)]) == 3  # at once: the longer one
    assert held_for([(0, 2), (1, 3), (5, 5)]) == 3  # overlapping, and a wait of nothing


def test_a_limited_backup_and_restore_stay_within_ten_percent_of_the_limit(
    s3_store: RunningStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith("SAFEHOLD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    held: list[tuple[float, float]] = []  # every wait the buckets imposed: (start, end)
    reserve = TokenBucket.reserve

    def recording(self: TokenBucket, size: int) -> float:
        wait = reserve(self, size)
        now = time.monotonic()
        held.append((now, now + wait))
        return wait

    monkeypatch.setattr(TokenBucket, "reserve", recording)
    bucket = f"bandwidth-{uuid.uuid4().hex[:12]}"
    s3_store.make_bucket(bucket)
    data = tmp_path / "data"
    data.mkdir()
    (data / "random.bin").write_bytes(os.urandom(DATA_BYTES))  # incompressible
    limited = Repo(s3_store, bucket, "limited")
    limited.run("repo", "init")
    initialised = limited.stored()
    limit = LIMIT_KIB * KIB

    held.clear()
    backup = limited.run("backup", str(data), "--limit-upload", str(LIMIT_KIB))
    backup_held = held_for(held)
    uploaded = limited.stored() - initialised
    held.clear()
    restore = limited.run(
        "restore", "latest", str(tmp_path / "limited"), "--limit-download", str(LIMIT_KIB)
    )
    restore_held = held_for(held)
    downloaded = limited.stored()  # config, keys, index, snapshot, pack: each read once
    [restored] = (tmp_path / "limited").rglob("random.bin")
    assert restored.read_bytes() == (data / "random.bin").read_bytes()

    figures = {
        "upload": (uploaded, backup, backup_held),
        "download": (downloaded, restore, restore_held),
    }
    for direction, (moved, seconds, waited) in figures.items():
        whole = moved / seconds
        at_limit = moved / limit  # the seconds the bytes take at exactly the limit
        print(
            f"{direction}: limit {LIMIT_KIB} KiB/s, {moved / KIB:.0f} KiB in {seconds:.2f} s: "
            f"{whole / KIB:.0f} KiB/s over the command; the limiter held it {waited:.2f} s "
            f"of the {at_limit:.2f} s the bytes take at the limit"
        )
        # The limit holds: over the whole command, at most 10 % above it (what the issue
        # asks; the command's own work only lowers this rate).
        assert whole <= 1.10 * limit, direction
        # And it holds back no more than it must: its waits add up to no more than the
        # bytes' time at the limit (less by its starting credit and by the time the
        # command's own work earned), and to most of it (that work takes well under half).
        # The waits are the bucket's arithmetic, so a loaded machine does not move them;
        # waits held at once (packs uploaded in parallel) count once.
        assert 0.5 * at_limit <= waited <= 1.01 * at_limit, direction
