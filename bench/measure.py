"""Runs one tool command and measures it: wall time, CPU time and peak RSS of that command only.

Peak RSS comes from GNU time (``/usr/bin/time -f``), which forks the tool from its own tiny
process and reports the kernel's rusage of exactly that child. Taking ``os.wait4``'s rusage of a
child spawned straight from this harness would be wrong: Linux carries a process's peak RSS
across ``exec``, and Python spawns children with vfork, so the child's "peak" would start at the
harness's own high-water mark (measured: ``true`` reported as 310 MB after the harness had
touched 300 MB). Through GNU time the floor is about 1 MB.

A tool may run several processes (Safehold restores into a new directory with one per CPU):
GNU time's figure is then the largest *single* process's peak, which would understate what the
tool needs. So the tool's process tree is also sampled every 50 ms, and the reported peak is the
larger of GNU time's and the highest sum of the tree's PSS (proportional set size: a page that
several of the processes share counts once in the sum, as it does in a container's memory
limit). For one process PSS <= RSS, so single-process tools keep GNU time's exact figure.

Because the machine may be shared, every measurement also records how much CPU *other* processes
used meanwhile (from /proc/stat, minus the command's own CPU time): a busy neighbour shows up in
the results instead of silently slowing a tool down.
"""

from __future__ import annotations

import contextlib
import os
import signal
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
GNU_TIME = "/usr/bin/time"  # Debian package `time`, installed by e2e/install-deps


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
    peak_rss_bytes: int  # the larger of GNU time's peak and the tree's peak summed PSS
    processes: int  # the most processes of the tool running at once (sampled)
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


class _TreeSampler(threading.Thread):
    """Samples the summed PSS of the descendants of ``root`` (GNU time's pid) until stopped."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(name="tree-sampler", daemon=True)
        self.root = root
        self.interval = interval
        self.peak_pss_bytes = 0
        self.peak_processes = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            pids = _descendants(self.root)
            total = sum(_pss_bytes(pid) for pid in pids)
            self.peak_pss_bytes = max(self.peak_pss_bytes, total)
            self.peak_processes = max(self.peak_processes, len(pids))

    def stop(self) -> None:
        self._done.set()
        self.join()


def _descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (from /proc/PID/task/TID/children)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                found.append(child)
                todo.append(child)
    return found


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


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
    if not os.access(GNU_TIME, os.X_OK):
        raise CommandFailed(f"{GNU_TIME} is missing: install the Debian package `time`")
    log_prefix.parent.mkdir(parents=True, exist_ok=True)
    out_path = log_prefix.with_name(log_prefix.name + ".out")
    err_path = log_prefix.with_name(log_prefix.name + ".err")
    rusage_path = log_prefix.with_name(log_prefix.name + ".rusage")
    argv = [GNU_TIME, "-f", "%U %S %M", "-o", str(rusage_path), "--", *command.argv]
    env = {**os.environ, **command.env}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        busy_before = _busy_cpu_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=command.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # so a timeout kills the tool, not just GNU time
        )
        timer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
        timer.start()
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        try:
            proc.wait()
        except BaseException:  # Ctrl-C or SIGTERM of the harness: the tool must not outlive it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            timer.cancel()
            sampler.stop()
        seconds = time.perf_counter() - start
        busy_after = _busy_cpu_seconds()
    name = " ".join(command.argv[:2])
    if proc.returncode != 0:
        reason = "timed out" if seconds >= timeout else "failed"
        tail = err_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise CommandFailed(
            f"{name} {reason} (exit {proc.returncode}); see {out_path} and {err_path}:\n  "
            + "\n  ".join(tail)
        )
    try:  # GNU time may prefix notes (e.g. "Command exited with ..."); the figures come last
        user, system, max_kib = rusage_path.read_text().split()[-3:]
    except (OSError, ValueError) as e:
        raise CommandFailed(f"{name}: no resource usage from {GNU_TIME} in {rusage_path}") from e
    own_cpu = float(user) + float(system)
    others = 0.0
    if busy_before is not None and busy_after is not None:
        others = max(busy_after - busy_before - own_cpu, 0.0)
    return Measurement(
        seconds=seconds,
        user_seconds=float(user),
        system_seconds=float(system),
        peak_rss_bytes=max(int(max_kib) * 1024, sampler.peak_pss_bytes),
        processes=max(1, sampler.peak_processes),
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
