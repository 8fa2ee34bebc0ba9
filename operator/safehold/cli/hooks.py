"""Job-side backup hooks: ``safehold backup --pre-hook CMD --post-hook CMD``.

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
import threading
import time
from argparse import ArgumentParser, Namespace
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
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
    "add_run_hooks_parser",
    "backup_with_hooks",
    "redact",
    "run_hook",
    "run_hooks_command",
]

#: The characters of a hook's output kept in the summary (its tail: errors come last).
OUTPUT_LIMIT = 512
#: After the timeout, SIGTERM, then SIGKILL after this many seconds.
_KILL_GRACE = 2.0
_SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL")

# The handover between a backup Job's backup container and its hooks container.
_PRE = "pre.json"
_POST = "post.json"
_DONE = "backup-done.json"
_ALIVE = "backup-alive.json"
#: How often the backup container says it is alive, and how long the hooks container
#: waits after the last beat before it runs the post hooks anyway.
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 30.0
#: What a container may take to start and reach its first step (both run the same image,
#: already on the node once one of them runs).
START_GRACE_SECONDS = 120.0
#: What the hooks container may take to notice that the backup is done.
POST_GRACE_SECONDS = 30.0
_POLL_SECONDS = 0.2
_MAX_HANDOVER_BYTES = 256 * 1024

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


def _hook_options(parser: ArgumentParser) -> None:
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


def add_hook_arguments(parser: ArgumentParser) -> None:
    """The hook options of ``safehold backup``."""
    _hook_options(parser)
    parser.add_argument(
        "--hooks-handover",
        default=None,
        metavar="DIR",
        help="do not run the hooks here: a 'safehold run-hooks --handover DIR' with the same "
        "hook options runs them (in a backup Job: a container without the Secrets) and "
        "hands their results over through DIR",
    )


def add_run_hooks_parser(sub: Any) -> None:
    """``safehold run-hooks``: the hooks container of a backup Job."""
    parser = sub.add_parser(
        "run-hooks",
        help="run a backup's hooks for a 'safehold backup --hooks-handover DIR' "
        "(the hooks container of a backup Job)",
    )
    _hook_options(parser)
    parser.add_argument(
        "--handover",
        required=True,
        metavar="DIR",
        help="the directory shared with the backup (its --hooks-handover)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the results as one JSON line at the end"
    )
    parser.set_defaults(func=run_hooks_command)


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


def _run_phase(phase: Literal["pre", "post"], args: Namespace) -> list[HookResult]:
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


def _record(out: _HookedOutput, results: list[HookResult]) -> bool:
    """Add ``results`` to the summary; False when one failed with on-error fail."""
    ok = True
    for result in results:
        out.hooks.append(result)
        if not result.ok:
            out.warn(f"{result.phase} hook {result.name} failed ({_why(result)}): {result.output}")
            if result.on_error == "fail":
                ok = False
    return ok


# ------------------------------------------------------------------ the handover files
def _write_json(directory: Path, name: str, doc: dict[str, Any]) -> None:
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


def _read_json(directory: Path, name: str) -> dict[str, Any] | None:
    """``directory/name`` as a JSON object; None while it is absent, and also when it is
    not a regular file, too large or not a JSON object (nothing of it is echoed)."""
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, _MAX_HANDOVER_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > _MAX_HANDOVER_BYTES:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _phase_seconds(count: int, timeout: float) -> float:
    """The longest ``count`` hooks of ``timeout`` seconds can take, with their kills."""
    return count * (timeout + _KILL_GRACE + 1.0)


def _missing(phase: Literal["pre", "post"], args: Namespace, why: str) -> HookResult:
    """The result of a phase whose results never came: its first hook, as timed out."""
    return HookResult(
        name=f"{phase}-0",
        phase=phase,
        exit_code=None,
        duration_seconds=0.0,
        timed_out=True,
        output=why,
        on_error=args.hook_on_error,
    )


def _received(
    doc: dict[str, Any], phase: Literal["pre", "post"], args: Namespace
) -> list[HookResult]:
    """The results in a handover document, checked field by field: names, phase and
    on-error are this command's own; the output is scrubbed again of its secrets."""
    commands_ = args.pre_hook if phase == "pre" else args.post_hook
    raw = doc.get("hooks")
    items = raw if isinstance(raw, list) else []
    secrets = secret_file_values(args)
    out: list[HookResult] = []
    for i, item in enumerate(items[: len(commands_)]):
        if not isinstance(item, dict):
            break
        code = item.get("exit_code")
        duration = item.get("duration_seconds")
        out.append(
            HookResult(
                name=f"{phase}-{i}",
                phase=phase,
                exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
                duration_seconds=round(max(0.0, float(duration)), 3)
                if isinstance(duration, int | float) and not isinstance(duration, bool)
                else 0.0,
                timed_out=item.get("timed_out") is True,
                output=redact(str(item.get("output") or ""), secrets=secrets),
                on_error=args.hook_on_error,
            )
        )
    if commands_ and not out:
        out.append(_missing(phase, args, "the hooks container reported no result"))
    return out


class _Handover:
    """The backup container's side of the handover (the hooks run in the other container)."""

    def __init__(self, directory: Path, args: Namespace) -> None:
        self.dir = directory
        self.args = args
        self._stop = threading.Event()
        self.silent = False  # the hooks container never reported: do not wait for it again

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Say that this container is alive, every :data:`HEARTBEAT_SECONDS`, until the end."""

        def beat() -> None:
            while True:
                with contextlib.suppress(OSError):
                    _write_json(self.dir, _ALIVE, {"at": time.time()})
                if self._stop.wait(HEARTBEAT_SECONDS):
                    return

        thread = threading.Thread(target=beat, name="hooks-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join(timeout=5)

    def _await(self, name: str, phase: Literal["pre", "post"], limit: float) -> list[HookResult]:
        deadline = time.monotonic() + limit
        while True:
            doc = _read_json(self.dir, name)
            if doc is not None:
                return _received(doc, phase, self.args)
            if time.monotonic() >= deadline:
                why = (
                    f"the hooks container reported no {phase} hook results within {limit:g} s "
                    "(it crashed, was killed or could not start)"
                )
                self.silent = True
                return [_missing(phase, self.args, why)]
            time.sleep(_POLL_SECONDS)

    def pre(self, out: _HookedOutput) -> bool:
        args = self.args
        limit = START_GRACE_SECONDS + _phase_seconds(len(args.pre_hook), args.hook_timeout)
        results = self._await(_PRE, "pre", limit) if args.pre_hook else []
        if args.pre_hook and _read_json(self.dir, _POST) is not None:
            # The hooks container gave up on this container and has already undone what
            # the pre hooks did: backing up now would read an unprepared source.
            why = "the hooks container ran the post hooks before the backup started"
            late = replace(_missing("pre", args, why), name=f"pre-{len(results)}", on_error="fail")
            results = [*results, late]
        return _record(out, results)

    def post(self, out: _HookedOutput) -> bool:
        args = self.args
        with contextlib.suppress(OSError):
            _write_json(self.dir, _DONE, {"at": time.time()})
        if not args.post_hook:
            return True
        limit = POST_GRACE_SECONDS + _phase_seconds(len(args.post_hook), args.hook_timeout)
        if self.silent:
            limit = min(limit, 2.0)
        return _record(out, self._await(_POST, "post", limit))


def run_hooks_command(args: Namespace, out: Output) -> int:
    """``safehold run-hooks``: the pre hooks, the wait for the backup, the post hooks; each
    phase's results into the handover directory. Exit code 0 once the post hooks' results
    are handed over, whatever the hooks did: the backup container reports them."""
    directory = Path(args.handover)
    if not directory.is_dir():
        raise UsageError(f"--handover {directory}: not a directory")
    pre: list[HookResult] = []
    code = exitcodes.OK
    try:
        pre = _run_phase("pre", args)
        _write_json(directory, _PRE, {"hooks": [h.to_dict() for h in pre]})
        for h in pre:
            out.print(f"pre hook {h.name}: {'ok' if h.ok else _why(h)}")
        note = _await_backup(directory, out)
    except KeyboardInterrupt:
        # The pod is being stopped (its deadline, the Job deleted): still undo what the
        # pre hooks did, within the grace period, as a single command would.
        note = "stopped: running the post hooks before leaving"
        out.warn(note)
        code = exitcodes.INTERRUPTED
    post = _run_phase("post", args)
    _write_json(directory, _POST, {"hooks": [h.to_dict() for h in post]})
    for h in post:
        out.print(f"post hook {h.name}: {'ok' if h.ok else _why(h)}")
    out.summary({"ok": True, "hooks": [h.to_dict() for h in pre + post], "note": note})
    return code


def _await_backup(directory: Path, out: Output) -> str:
    """Wait until the backup container is done, or has stopped beating; why it ended."""
    started = time.time()
    while _read_json(directory, _DONE) is None:
        alive = _read_json(directory, _ALIVE) or {}
        at = alive.get("at")
        last = max(float(at), started) if isinstance(at, int | float) else started
        grace = STALE_SECONDS if isinstance(at, int | float) else START_GRACE_SECONDS
        if time.time() - last > grace:
            note = "the backup container stopped (no sign of life): running the post hooks"
            out.warn(note)
            return note
        time.sleep(_POLL_SECONDS)
    return "the backup is done"


def backup_with_hooks(args: Namespace, out: Output) -> int:
    """``safehold backup`` with its pre and post hooks around it: run here, or (with
    ``--hooks-handover``) by the hooks container of the Job."""
    if not args.pre_hook and not args.post_hook:
        return commands.backup(args, out)
    if getattr(args, "hooks_handover", None):
        handover = _Handover(Path(args.hooks_handover), args)
        with handover.heartbeat():
            return _around(args, out, handover.pre, handover.post)

    def here(phase: Literal["pre", "post"]) -> Callable[[_HookedOutput], bool]:
        return lambda hooked: _record(hooked, _run_phase(phase, args))

    return _around(args, out, here("pre"), here("post"))


def _around(
    args: Namespace,
    out: Output,
    pre: Callable[[_HookedOutput], bool],
    post: Callable[[_HookedOutput], bool],
) -> int:
    """Pre hooks, the backup unless a pre hook failed, post hooks always; one summary."""
    hooked = _HookedOutput(out)
    code = exitcodes.OK
    if not pre(hooked):
        code = exitcodes.ERROR
        hooked.doc = {"ok": False, "exit_code": code}
    else:
        try:
            code = commands.backup(args, hooked)
        except (UsageError, engine.BackupError, RepositoryError, StorageError, OSError) as exc:
            # Reported here, not by main, so that the summary carries the post hooks too.
            message = str(exc)
            out.error(message)
            code = exitcodes.for_error(exc)
            hooked.doc = {"ok": False, "error": message, "exit_code": code}
        except BaseException:
            post(hooked)  # interrupted: still undo what the pre hooks did
            raise
    post_ok = post(hooked)
    if not post_ok and code == exitcodes.OK:
        code = exitcodes.ERROR
    doc = hooked.doc or {"ok": code == exitcodes.OK, "exit_code": code}
    if code != exitcodes.OK:
        doc = {**doc, "exit_code": code}
    hooked.write(doc)
    return code
