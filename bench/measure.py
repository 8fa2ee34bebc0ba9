"""Runs one tool command and measures it: wall time, CPU time and peak RSS of that child only.

Peak RSS comes from ``os.wait4``: the kernel's rusage of exactly the child we started (and any
processes it waited for), not of the benchmark harness or of whatever else runs on the machine.
The same numbers ``/usr/bin/time -v`` prints, without parsing its output.

Because the machine may be shared, every measurement also records how much CPU *other* processes
used meanwhile (from /proc/stat, minus the child's own CPU time): a busy neighbour shows up in
the results instead of silently slowing a tool down.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Command",
    "CommandFailed",
    "Measurement",
    "disk_usage",
    "drop_caches",
    "run_measured",
]

_DROP_CACHES = Path("/proc/sys/vm/drop_caches")


@dataclass(frozen=True)
class Command:
    """A command line with the environment variables it needs on top of the harness's own."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True)
class Measurement:
    seconds: float
    user_seconds: float
    system_seconds: float
    peak_rss_bytes: int
    others_cpu_seconds: float  # CPU used by every other process on the machine meanwhile
    stdout: str


class CommandFailed(RuntimeError):
    """A measured command exited non-zero or ran out of time; the message points at its log."""


def _busy_cpu_seconds() -> float | None:
    """Busy CPU time of the whole machine since boot, or None where /proc/stat is missing."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def drop_caches() -> bool:
    """Empty the page cache so each timed step reads from disk; False where not permitted."""
    os.sync()
    try:
        _DROP_CACHES.write_text("3\n")
    except OSError:
        return False
    return True


def run_measured(command: Command, log_prefix: Path, timeout: float) -> Measurement:
    """Run ``command`` to completion, stdout and stderr into ``<log_prefix>.out``/``.err``.

    Raises CommandFailed (naming the log files) when it fails, so a broken tool can never
    produce a timing.
    """
    log_prefix.parent.mkdir(parents=True, exist_ok=True)
    out_path = log_prefix.with_name(log_prefix.name + ".out")
    err_path = log_prefix.with_name(log_prefix.name + ".err")
    env = {**os.environ, **command.env}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        busy_before = _busy_cpu_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(
            command.argv,
            cwd=command.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        busy_after = _busy_cpu_seconds()
        proc.returncode = os.waitstatus_to_exitcode(status)
    own_cpu = usage.ru_utime + usage.ru_stime
    others = 0.0
    if busy_before is not None and busy_after is not None:
        others = max(busy_after - busy_before - own_cpu, 0.0)
    if proc.returncode != 0:
        reason = "timed out" if proc.returncode < 0 and seconds >= timeout else "failed"
        tail = err_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise CommandFailed(
            f"{' '.join(command.argv[:2])} {reason} (exit {proc.returncode}); "
            f"see {out_path} and {err_path}:\n  " + "\n  ".join(tail)
        )
    return Measurement(
        seconds=seconds,
        user_seconds=usage.ru_utime,
        system_seconds=usage.ru_stime,
        peak_rss_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
        others_cpu_seconds=others,
        stdout=out_path.read_text(errors="replace"),
    )


def disk_usage(root: Path) -> tuple[int, int]:
    """(sum of file sizes, bytes of allocated disk blocks) under ``root``.

    The first is what object storage would bill for; the second is what ``du`` shows.
    """
    apparent = allocated = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated
