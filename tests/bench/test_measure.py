"""Per-command measurement: the peak RSS must be the tool's own, whatever the harness uses."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from measure import Command, CommandFailed, run_measured


def test_peak_rss_is_the_commands_not_the_harnesss(tmp_path: Path) -> None:
    ballast = b"x" * (200 << 20)  # the harness now has 200 MB resident
    small = run_measured(Command(["true"]), tmp_path / "true", timeout=60)
    assert small.peak_rss_bytes < 20e6
    allocate = "import sys; b = b'y' * (100 << 20); sys.stdout.write('ok')"
    big = run_measured(Command([sys.executable, "-c", allocate]), tmp_path / "big", timeout=60)
    assert 100e6 < big.peak_rss_bytes < 200e6
    assert big.stdout == "ok"
    assert big.user_seconds + big.system_seconds >= 0
    assert big.seconds > 0
    del ballast


def test_a_tool_of_several_processes_is_measured_by_their_summed_memory(tmp_path: Path) -> None:
    """Three processes of 80 MB each: GNU time alone would report 80 MB. All three hold
    their 80 MB together for a second, however late a loaded machine runs the children."""
    script = (
        "import os, time\n"
        "ready_r, ready_w = os.pipe()\n"
        "go_r, go_w = os.pipe()\n"
        "kids = []\n"
        "for _ in range(2):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os.close(go_w)\n"
        "        ballast = os.urandom(80 << 20)\n"
        "        os.write(ready_w, b'k')\n"
        "        os.read(go_r, 1)\n"  # until the parent closes go_w
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "ballast = os.urandom(80 << 20)\n"
        "got = b''\n"
        "while len(got) < 2:\n"
        "    got += os.read(ready_r, 2)\n"
        "time.sleep(1)\n"
        "os.close(go_w)\n"
        "for pid in kids:\n"
        "    os.waitpid(pid, 0)\n"
    )
    three = run_measured(Command([sys.executable, "-c", script]), tmp_path / "three", timeout=60)
    assert three.peak_rss_bytes > 3 * 80e6
    assert three.processes == 3


def test_failure_names_the_command_exit_code_and_log(tmp_path: Path) -> None:
    script = "echo 'repository locked' >&2; exit 4"
    with pytest.raises(CommandFailed) as caught:
        run_measured(Command(["sh", "-c", script]), tmp_path / "step", timeout=60)
    message = str(caught.value)
    assert "sh -c failed (exit 4)" in message
    assert "repository locked" in message
    assert str(tmp_path / "step.err") in message


def test_timeout_kills_the_command(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out"):
        run_measured(Command(["sleep", "60"]), tmp_path / "sleep", timeout=0.5)
    assert time.monotonic() - start < 10
