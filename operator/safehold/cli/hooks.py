"""Job-side backup hooks: ``safehold backup --pre-hook CMD --post-hook CMD``.

The backup Job runs one command, so that command runs the whole sequence: pre hooks,
the backup, post hooks, in that order. A post hook runs also after a failed backup or a
failed pre hook (it typically undoes what the pre hook did, e.g. ends a checkpoint
mode). Each hook's result (exit code, duration, the tail of its output with secrets
removed) goes into the JSON summary under ``hooks``, which the operator copies into the
BackupRun status.

A hook is a shell command line (run with ``sh -c``) in its own process group, so a
timeout kills the whole group, not only the shell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from argparse import ArgumentParser, Namespace
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from safehold import engine
from safehold.cli import commands, exitcodes
from safehold.cli.context import UsageError, secret_file_values
from safehold.cli.output import Output
from safehold.repo.errors import RepositoryError
from safehold.storage import StorageError

__all__ = [
    "OUTPUT_LIMIT",
    "HookResult",
    "add_hook_arguments",
    "backup_with_hooks",
    "redact",
    "run_hook",
]

#: The characters of a hook's output kept in the summary (its tail: errors come last).
OUTPUT_LIMIT = 512
#: After the timeout, SIGTERM, then SIGKILL after this many seconds.
_KILL_GRACE = 2.0
_SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL")

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
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE), (signal.SIGKILL, None)):
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


def add_hook_arguments(parser: ArgumentParser) -> None:
    """The hook options of ``safehold backup``."""
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
        type=float,
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


class _HookedOutput(Output):
    """The caller's output, with the hook results added to the summary."""

    def __init__(self, out: Output) -> None:
        super().__init__(
            json_mode=out.json,
            quiet=out.quiet,
            stdout=out.stdout,
            termination_log=out.termination_log,
        )
        self.hooks: list[HookResult] = []
        self.doc: dict[str, Any] | None = None

    def summary(self, doc: dict[str, Any]) -> None:
        self.doc = doc  # written once, with the post hooks, by backup_with_hooks

    def write(self, doc: dict[str, Any]) -> None:
        failed = [h for h in self.hooks if not h.ok and h.on_error == "fail"]
        full = {**doc, "hooks": [h.to_dict() for h in self.hooks]}
        if failed and "error" not in full:
            first = failed[0]
            full["ok"] = False
            full["error"] = f"{first.phase} hook {first.name} failed: {_why(first)}"
            full["exit_code"] = full.get("exit_code") or exitcodes.ERROR
        super().summary(full)


def _why(h: HookResult) -> str:
    return "timed out" if h.timed_out else f"exit code {h.exit_code}"


def _run_all(out: _HookedOutput, phase: Literal["pre", "post"], args: Namespace) -> bool:
    """Run the hooks of ``phase``; False when one failed with on-error fail (the rest of
    the phase's hooks are then not run)."""
    commands_ = args.pre_hook if phase == "pre" else args.post_hook
    secrets = secret_file_values(args)
    for i, command in enumerate(commands_):
        result = run_hook(
            f"{phase}-{i}", phase, command, args.hook_timeout, args.hook_on_error, secrets
        )
        out.hooks.append(result)
        if not result.ok:
            out.warn(f"{phase} hook {result.name} failed ({_why(result)}): {result.output}")
            if result.on_error == "fail":
                return False
    return True


def backup_with_hooks(args: Namespace, out: Output) -> int:
    """``safehold backup`` with its pre and post hooks around it."""
    if not args.pre_hook and not args.post_hook:
        return commands.backup(args, out)
    hooked = _HookedOutput(out)
    code = exitcodes.OK
    if not _run_all(hooked, "pre", args):
        code = exitcodes.ERROR
        hooked.doc = {"ok": False, "exit_code": code}
    else:
        try:
            code = commands.backup(args, hooked)
        except (UsageError, engine.BackupError, RepositoryError, StorageError, OSError) as exc:
            # Reported here, not by main, so that the summary carries the post hooks too.
            from safehold.cli.main import _exit_code  # main imports this module

            message = str(exc)
            out.error(message)
            code = _exit_code(exc)
            hooked.doc = {"ok": False, "error": message, "exit_code": code}
        except BaseException:
            _run_all(hooked, "post", args)  # interrupted: still undo what the pre hooks did
            raise
    post_ok = _run_all(hooked, "post", args)
    if not post_ok and code == exitcodes.OK:
        code = exitcodes.ERROR
    doc = hooked.doc or {"ok": code == exitcodes.OK, "exit_code": code}
    if code != exitcodes.OK:
        doc = {**doc, "exit_code": code}
    hooked.write(doc)
    return code
