"""``safehold backup``: its options, and its pre and post hooks around the backup.

Run by a person, the command runs its hooks itself; in a backup Job (``--hooks-handover
DIR``) this is the backup container's side of the handover: it waits for the hooks
container's pre hook results (:mod:`safehold.cli.hook_container`), beats while it lives,
says when the backup is done, and waits for the post hook results. The sequence and the
handover files are described in :mod:`safehold.cli.hooks`; the backup itself is
:func:`safehold.cli.commands.backup`.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from argparse import ArgumentParser, Namespace
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from safehold import engine
from safehold.cli import commands, exitcodes, hooks
from safehold.cli.audit import audited
from safehold.cli.context import UsageError, secret_file_values
from safehold.cli.hooks import (
    HookResult,
    failure,
    read_handover,
    redact,
    run_phase,
    write_handover,
)
from safehold.cli.hosts import add_host_option
from safehold.cli.meta import add_meta_option
from safehold.cli.output import Output
from safehold.repo.errors import RepositoryError
from safehold.storage import StorageError

__all__ = ["add_hook_arguments", "backup_with_hooks", "register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``safehold backup``."""
    backup = sub.add_parser("backup", parents=[common], help="back up paths or stdin")
    backup.add_argument("paths", nargs="*", metavar="PATH")
    backup.add_argument(
        "--stdin-name", metavar="NAME", help="read the data from stdin and store it as file NAME"
    )
    backup.add_argument(
        "--type",
        choices=("full", "incremental", "differential"),
        help="default: incremental when the source has a snapshot, else full",
    )
    backup.add_argument(
        "--source", metavar="NAME", help="the source's name (default: the absolute paths, or NAME)"
    )
    backup.add_argument("--tag", action="append", default=[], metavar="TAG")
    add_host_option(backup)
    backup.add_argument("--time", metavar="ISO8601", help="the snapshot's time (default: now)")
    backup.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="store only the paths under each PATH that match (repeatable; see docs/cli.md)",
    )
    backup.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out the paths that match, e.g. 'cache/**' or '*.tmp' (repeatable)",
    )
    backup.add_argument(
        "--exclude-file",
        action="append",
        default=[],
        metavar="FILE",
        help="read exclude patterns from FILE, one a line ('#' comments, blank lines skipped)",
    )
    backup.add_argument(
        "--verify",
        action="store_true",
        help="then check the new snapshot's structure (index, trees, every chunk indexed in "
        "an existing pack); exit code 4 when it is damaged",
    )
    add_meta_option(backup)
    add_hook_arguments(backup)
    backup.set_defaults(func=audited("backup", _backup))


def _backup(args: Namespace, out: Output) -> int:
    """``safehold backup``: its patterns checked before any hook runs."""
    commands.read_patterns(args)
    return backup_with_hooks(args, out)


def add_hook_arguments(parser: ArgumentParser) -> None:
    """The hook options of ``safehold backup``."""
    hooks.add_hook_options(parser)
    parser.add_argument(
        "--hooks-handover",
        default=None,
        metavar="DIR",
        help="do not run the hooks here: a 'safehold run-hooks --handover DIR' with the same "
        "hook options runs them (in a backup Job: a container without the Secrets) and "
        "hands their results over through DIR",
    )


class _HookedOutput(Output):
    """The caller's output, with the hook results added to the summary."""

    def __init__(self, out: Output) -> None:
        super().__init__(
            json_mode=out.json,
            level=out.level,
            stdout=out.stdout,
            termination_log=out.termination_log,
            color=out.color,
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
            full["error"] = f"{first.phase} hook {first.name} failed: {failure(first)}"
            full["exit_code"] = full.get("exit_code") or exitcodes.ERROR
        super().summary(full)


def _record(out: _HookedOutput, results: list[HookResult]) -> bool:
    """Add ``results`` to the summary; False when one failed with on-error fail."""
    ok = True
    for result in results:
        out.hooks.append(result)
        if not result.ok:
            out.warn(
                f"{result.phase} hook {result.name} failed ({failure(result)}): {result.output}"
            )
            if result.on_error == "fail":
                ok = False
    return ok


def _phase_seconds(count: int, timeout: float) -> float:
    """The longest ``count`` hooks of ``timeout`` seconds can take, with their kills."""
    return count * (timeout + hooks.KILL_GRACE_SECONDS + 1.0)


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
        """Say that this container is alive, every ``hooks.HEARTBEAT_SECONDS``, until the end."""

        def beat() -> None:
            while True:
                with contextlib.suppress(OSError):
                    write_handover(self.dir, hooks.ALIVE_FILE, {"at": time.time()})
                if self._stop.wait(hooks.HEARTBEAT_SECONDS):
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
            doc = read_handover(self.dir, name)
            if doc is not None:
                return _received(doc, phase, self.args)
            if time.monotonic() >= deadline:
                why = (
                    f"the hooks container reported no {phase} hook results within {limit:g} s "
                    "(it crashed, was killed or could not start)"
                )
                self.silent = True
                return [_missing(phase, self.args, why)]
            time.sleep(hooks.POLL_SECONDS)

    def pre(self, out: _HookedOutput) -> bool:
        args = self.args
        limit = hooks.START_GRACE_SECONDS + _phase_seconds(len(args.pre_hook), args.hook_timeout)
        results = self._await(hooks.PRE_FILE, "pre", limit) if args.pre_hook else []
        if args.pre_hook and read_handover(self.dir, hooks.POST_FILE) is not None:
            # The hooks container gave up on this container and has already undone what
            # the pre hooks did: backing up now would read an unprepared source.
            why = "the hooks container ran the post hooks before the backup started"
            late = replace(_missing("pre", args, why), name=f"pre-{len(results)}", on_error="fail")
            results = [*results, late]
        return _record(out, results)

    def post(self, out: _HookedOutput) -> bool:
        args = self.args
        with contextlib.suppress(OSError):
            write_handover(self.dir, hooks.DONE_FILE, {"at": time.time()})
        if not args.post_hook:
            return True
        limit = hooks.POST_GRACE_SECONDS + _phase_seconds(len(args.post_hook), args.hook_timeout)
        if self.silent:
            limit = min(limit, 2.0)
        return _record(out, self._await(hooks.POST_FILE, "post", limit))


def backup_with_hooks(args: Namespace, out: Output) -> int:
    """``safehold backup`` with its pre and post hooks around it: run here, or (with
    ``--hooks-handover``) by the hooks container of the Job.

    In a Job (``--termination-log``) a backup that made its snapshot but could not read
    some files exits 0, its summary still saying ``exit_code`` 3 and which files: the pod
    succeeds, for a retry of the Job would read the same files again into a second
    snapshot."""
    code = _hooked(args, out)
    if code == exitcodes.PARTIAL and out.termination_log:
        return exitcodes.OK
    return code


def _hooked(args: Namespace, out: Output) -> int:
    if not args.pre_hook and not args.post_hook:
        if getattr(args, "hooks_handover", None):
            # the other side (run-hooks) would wait for a backup that never says it is done
            raise UsageError("--hooks-handover goes with --pre-hook/--post-hook: there is none")
        return commands.backup(args, out)
    if getattr(args, "hooks_handover", None):
        handover = _Handover(Path(args.hooks_handover), args)
        with handover.heartbeat():
            return _around(args, out, handover.pre, handover.post)

    def here(phase: Literal["pre", "post"]) -> Callable[[_HookedOutput], bool]:
        return lambda hooked: _record(hooked, run_phase(phase, args))

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
