"""Job-side backup hooks: running a hook, and the handover files between a Job's containers.

Used by ``safehold backup --pre-hook CMD --post-hook CMD`` (:mod:`safehold.cli.backup_hooks`)
and by ``safehold run-hooks``, the hooks container of a backup Job
(:mod:`safehold.cli.hook_container`).

The backup Job runs one command, so that command runs the whole sequence: pre hooks,
the backup, post hooks, in that order. A post hook runs also after a failed backup or a
failed pre hook (it typically undoes what the pre hook did, e.g. ends a checkpoint
mode). Each hook's result (exit code, duration, the tail of its output with secrets
removed) goes into the JSON summary under ``hooks``, which the operator copies into the
BackupRun status.

A hook is a shell command line (run with ``sh -c``) in its own process group, so a
timeout kills the whole group, not only the shell.

Run by a person, ``safehold backup --pre-hook ...`` runs its hooks itself. In a backup Job the
operator keeps the hooks out of reach of the repository password and the storage
credentials: the hooks run in a second container of the pod (``safehold run-hooks``), which
has none of the Secret volumes, and the two containers hand over through a small shared
directory (``--hooks-handover DIR``; docs/hooks.md):

1. the hooks container runs the pre hooks and writes their results to ``pre.json``;
2. the backup container waits for them (bounded: the hooks' timeouts plus a start-up
   grace), skips the backup after a failed ``fail`` pre hook, backs up, and writes
   ``backup-done.json``; while it lives it rewrites ``backup-alive.json`` every few seconds;
3. the hooks container runs the post hooks when the backup is done, or when the backup
   container stopped beating (it crashed or was killed), and writes ``post.json``;
4. the backup container waits for those (bounded) and puts every result into its summary,
   as when it ran the hooks itself.

A result that does not come within its bound is reported as a hook that timed out, so
neither container can wait forever for the other (and the Job's deadline bounds both). The
files are written atomically (a temporary file renamed into place) and read without
following links, size-bounded, and checked field by field: the hooks' commands can write
to the directory too, so nothing read from it is trusted beyond "what the hooks reported".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import tempfile
import time
from argparse import ArgumentParser, ArgumentTypeError, Namespace
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from safehold.cli.context import secret_file_values

__all__ = [
    "ALIVE_FILE",
    "DONE_FILE",
    "OUTPUT_LIMIT",
    "POST_FILE",
    "PRE_FILE",
    "HookResult",
    "add_hook_options",
    "failure",
    "read_handover",
    "redact",
    "run_hook",
    "run_phase",
    "write_handover",
]

#: The characters of a hook's output kept in the summary (its tail: errors come last).
OUTPUT_LIMIT = 512
#: After the timeout, SIGTERM, then SIGKILL after this many seconds.
KILL_GRACE_SECONDS = 2.0
_SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL")

# The handover between a backup Job's backup container and its hooks container.
PRE_FILE = "pre.json"
POST_FILE = "post.json"
DONE_FILE = "backup-done.json"
ALIVE_FILE = "backup-alive.json"
#: How often the backup container says it is alive, and how long the hooks container
#: waits after the last beat before it runs the post hooks anyway.
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 30.0
#: What a container may take to start and reach its first step (both run the same image,
#: already on the node once one of them runs).
START_GRACE_SECONDS = 120.0
#: What the hooks container may take to notice that the backup is done.
POST_GRACE_SECONDS = 30.0
POLL_SECONDS = 0.2
MAX_HANDOVER_BYTES = 256 * 1024

OnError = Literal["fail", "continue"]


@dataclass
class HookResult:
    """What one hook did, as it appears in the summary and the BackupRun status."""

    name: str
    phase: Literal["pre", "post"]
    exit_code: int | None
    duration_seconds: float
    timed_out: bool
    output: str
    on_error: OnError

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _secret_values(env: dict[str, str]) -> list[str]:
    values = [
        v for k, v in env.items() if any(w in k.upper() for w in _SECRET_WORDS) and len(v) >= 4
    ]
    return sorted(values, key=len, reverse=True)


def redact(text: str, env: dict[str, str] | None = None, secrets: Sequence[str] = ()) -> str:
    """``text`` with the values of secret-looking environment variables (``*PASSWORD*``,
    ``*TOKEN*``, ...) and ``secrets`` (the contents of the command's secret files) replaced
    by ``***``, cut to its last :data:`OUTPUT_LIMIT` characters."""
    values = _secret_values(dict(os.environ) if env is None else env) + list(secrets)
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "***")
    if len(text) > OUTPUT_LIMIT:
        text = "..." + text[-OUTPUT_LIMIT:]
    return text


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_hook(
    name: str,
    phase: Literal["pre", "post"],
    command: str,
    timeout: float,
    on_error: OnError,
    secrets: Sequence[str] = (),
) -> HookResult:
    """Run ``command`` with ``sh -c``; kill its process group after ``timeout`` seconds.
    Its output is kept scrubbed of ``secrets`` and of secret-looking environment values."""
    start = time.monotonic()
    proc = subprocess.Popen(
        ["sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    timed_out = False
    try:
        raw, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        raw, _ = proc.communicate()
    output = redact(raw.decode("utf-8", "replace"), secrets=secrets)
    if timed_out:
        output = f"killed after the timeout of {timeout:g} s\n{output}".strip()
    return HookResult(
        name=name,
        phase=phase,
        exit_code=None if timed_out else proc.returncode,
        duration_seconds=round(time.monotonic() - start, 3),
        timed_out=timed_out,
        output=output,
        on_error=on_error,
    )


def add_hook_options(parser: ArgumentParser) -> None:
    """The hook options of ``safehold backup`` and ``safehold run-hooks``."""
    parser.add_argument(
        "--pre-hook",
        action="append",
        default=[],
        metavar="CMD",
        help="a shell command run before the source is read (repeatable)",
    )
    parser.add_argument(
        "--post-hook",
        action="append",
        default=[],
        metavar="CMD",
        help="a shell command run after the backup, also when it failed (repeatable)",
    )
    parser.add_argument(
        "--hook-timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="seconds each hook may take before it is killed (default 60)",
    )
    parser.add_argument(
        "--hook-on-error",
        choices=("fail", "continue"),
        default="fail",
        help="fail: a failed pre hook stops the backup, a failed hook fails the command; "
        "continue: record the failure and go on (default fail)",
    )


def failure(h: HookResult) -> str:
    """How a hook failed: timed out, or its exit code."""
    return "timed out" if h.timed_out else f"exit code {h.exit_code}"


def run_phase(phase: Literal["pre", "post"], args: Namespace) -> list[HookResult]:
    """Run the hooks of ``phase`` here, in order, up to the first that fails with on-error
    fail (the rest of the phase's hooks are then not run)."""
    commands_ = args.pre_hook if phase == "pre" else args.post_hook
    secrets = secret_file_values(args)
    results: list[HookResult] = []
    for i, command in enumerate(commands_):
        result = run_hook(
            f"{phase}-{i}", phase, command, args.hook_timeout, args.hook_on_error, secrets
        )
        results.append(result)
        if not result.ok and result.on_error == "fail":
            break
    return results


# ------------------------------------------------------------------ the handover files
def write_handover(directory: Path, name: str, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``directory/name`` atomically: a new file renamed over the old
    (a rename replaces a link the hooks may have put there rather than following it)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_handover(directory: Path, name: str) -> dict[str, Any] | None:
    """``directory/name`` as a JSON object; None while it is absent, and also when it is
    not a regular file, too large or not a JSON object (nothing of it is echoed)."""
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_HANDOVER_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_HANDOVER_BYTES:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _seconds(value: str) -> float:
    """``--hook-timeout``: a number of seconds above 0 (a hook is killed after it)."""
    try:
        number = float(value)
    except ValueError as exc:
        raise ArgumentTypeError(f"{value!r} is not a number of seconds") from exc
    if not 0 < number < float("inf"):  # also refuses nan
        raise ArgumentTypeError(f"{value!r}: give seconds above 0, e.g. 60")
    return number
