"""``safehold run-hooks``: the hooks container of a backup Job.

It runs the pre hooks, waits for the backup container (``safehold backup --hooks-handover``,
:mod:`safehold.cli.backup_hooks`) to be done or to stop beating, and runs the post hooks,
handing each phase's results over through the shared directory. It has none of the Job's
Secrets. The handover is described in :mod:`safehold.cli.hooks`.
"""

from __future__ import annotations

import argparse
import time
from argparse import Namespace
from pathlib import Path

from safehold.cli import exitcodes, hooks
from safehold.cli.context import UsageError
from safehold.cli.hooks import HookResult, failure, read_handover, run_phase, write_handover
from safehold.cli.output import Output

__all__ = ["register", "run_hooks_command"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``safehold run-hooks``: the hooks container of a backup Job."""
    parser = sub.add_parser(
        "run-hooks",
        help="run a backup's hooks for a 'safehold backup --hooks-handover DIR' "
        "(the hooks container of a backup Job)",
    )
    hooks.add_hook_options(parser)
    parser.add_argument(
        "--handover",
        required=True,
        metavar="DIR",
        help="the directory shared with the backup (its --hooks-handover)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,  # also given before the command (a global option)
        help="print the results as one JSON line at the end",
    )
    parser.set_defaults(func=run_hooks_command)


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
        pre = run_phase("pre", args)
        write_handover(directory, hooks.PRE_FILE, {"hooks": [h.to_dict() for h in pre]})
        for h in pre:
            out.print(f"pre hook {h.name}: {'ok' if h.ok else failure(h)}")
        note = _await_backup(directory, out)
    except KeyboardInterrupt:
        # The pod is being stopped (its deadline, the Job deleted): still undo what the
        # pre hooks did, within the grace period, as a single command would.
        note = "stopped: running the post hooks before leaving"
        out.warn(note)
        code = exitcodes.INTERRUPTED
    post = run_phase("post", args)
    write_handover(directory, hooks.POST_FILE, {"hooks": [h.to_dict() for h in post]})
    for h in post:
        out.print(f"post hook {h.name}: {'ok' if h.ok else failure(h)}")
    out.summary({"ok": True, "hooks": [h.to_dict() for h in pre + post], "note": note})
    return code


def _await_backup(directory: Path, out: Output) -> str:
    """Wait until the backup container is done, or has stopped beating; why it ended."""
    started = time.time()
    while read_handover(directory, hooks.DONE_FILE) is None:
        alive = read_handover(directory, hooks.ALIVE_FILE) or {}
        at = alive.get("at")
        last = max(float(at), started) if isinstance(at, int | float) else started
        grace = hooks.STALE_SECONDS if isinstance(at, int | float) else hooks.START_GRACE_SECONDS
        if time.time() - last > grace:
            note = "the backup container stopped (no sign of life): running the post hooks"
            out.warn(note)
            return note
        time.sleep(hooks.POLL_SECONDS)
    return "the backup is done"
