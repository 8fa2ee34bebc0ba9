"""``safehold forget`` and ``safehold prune``: the repository's maintenance commands.

Registered into the main parser by :func:`register` (listed in ``main.COMMANDS``), so the
commands live here, next to nothing else. ``forget`` applies retention rules and deletes
snapshot objects only; ``prune`` (or ``forget --prune``) then removes the data no
snapshot uses. See docs/retention.md and docs/prune.md.
"""

from __future__ import annotations

import argparse
import json
import time
from argparse import Namespace
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

from safehold.cli import exitcodes
from safehold.cli.audit import audited
from safehold.cli.context import UsageError, open_repo
from safehold.cli.output import Output, human_size
from safehold.engine.prune import (
    DEFAULT_GRACE,
    DEFAULT_MAX_UNUSED,
    PruneOptions,
    PruneReport,
    prune_repository,
)
from safehold.storage import LOCK_MODES

if TYPE_CHECKING:
    # Retention rules are pydantic models: importing them costs every other command about
    # 0.4 s and 17 MB, so forget imports them when it runs.
    from pydantic import ValidationError

    from safehold.engine.forget import ForgetItem, ForgetReport
    from safehold.engine.retention import RetentionPolicy

__all__ = ["add_init_options", "forget", "init_lock_settings", "load_policy", "prune", "register"]

T = TypeVar("T")
#: Seconds between two tries for the repository lock under ``--lock-wait``.
LOCK_RETRY_EVERY = 5.0


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from exc
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be 0 or more")
    return number


def _percent(value: str) -> float:
    try:
        number = float(value.strip().rstrip("%"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a percentage (e.g. 20)") from exc
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError(f"{value!r} must be between 0 and 100")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from exc
    if not 0 <= number <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"{value!r} must be between 0 and 604800 seconds")
    return number


def _minutes(value: str) -> timedelta:
    try:
        number = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of minutes") from exc
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be 0 or more minutes")
    return timedelta(minutes=number)


def _lock_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lock-wait",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="when another process holds a repository lock, try again for up to SECONDS "
        "before failing with exit code 11 (default 0: fail at once)",
    )


def _prune_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-unused",
        "--repack-threshold",
        dest="max_unused",
        type=_percent,
        default=None,  # DEFAULT_MAX_UNUSED; None tells forget it was not given
        metavar="PERCENT",
        help=f"repack packs with more than PERCENT unused bytes (default {DEFAULT_MAX_UNUSED:g})",
    )
    p.add_argument(
        "--grace",
        type=_minutes,
        default=None,  # DEFAULT_GRACE
        metavar="MINUTES",
        help="never delete or repack packs younger than this, which a backup may still be "
        f"writing (default {int(DEFAULT_GRACE.total_seconds() // 60)})",
    )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``forget`` and ``prune`` to the main parser's subcommands."""
    f = sub.add_parser(
        "forget", parents=[common], help="remove snapshots by retention rules (see --dry-run)"
    )
    for period in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        f.add_argument(
            f"--keep-{period}",
            type=_count,
            default=0,
            metavar="N",
            help="keep the N newest snapshots"
            if period == "last"
            else f"keep the newest snapshot of each of the N latest {period} periods",
        )
    f.add_argument(
        "--keep-within",
        metavar="DURATION",
        help="keep snapshots younger than DURATION before the source's newest: units y, mo"
        " (months), w, d, h, min (minutes), e.g. 2y5mo7d3h; a bare m is refused as ambiguous",
    )
    f.add_argument(
        "--keep-tag", action="append", default=[], metavar="TAG", help="keep snapshots with TAG"
    )
    f.add_argument(
        "--time-zone",
        metavar="ZONE",
        help="IANA zone of the --keep-* flags' periods (default UTC; a --policy file names "
        "its own timeZone)",
    )
    f.add_argument(
        "--policy",
        metavar="FILE",
        help="a retention mapping as in a BackupPolicy (YAML or JSON: keepLast, keepDaily, "
        "..., timeZone) instead of the --keep-* flags",
    )
    f.add_argument(
        "--policies",
        metavar="FILE",
        help="YAML or JSON mapping a source to its own retention mapping; sources not in "
        "it use --policy or the --keep-* flags",
    )
    f.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME",
        help="only consider snapshots of this source (repeatable)",
    )
    f.add_argument(
        "--source-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="only consider snapshots whose source begins with PREFIX, e.g. 'ns/policy/' "
        "(repeatable; each source still has its own counts)",
    )
    f.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="only snapshots with this tag"
    )
    f.add_argument(
        "--dry-run", action="store_true", help="show what would be kept and why; change nothing"
    )
    f.add_argument("--prune", action="store_true", help="run prune afterwards")
    f.add_argument("--report", metavar="PATH", help="write every decision as a JSON list to PATH")
    _prune_options(f)
    _lock_options(f)
    f.set_defaults(func=audited("forget", forget))

    p = sub.add_parser("prune", parents=[common], help="remove data no snapshot uses")
    p.add_argument(
        "--dry-run", action="store_true", help="report what would be removed; change nothing"
    )
    _prune_options(p)
    _lock_options(p)
    p.set_defaults(func=audited("prune", prune))


def add_init_options(init: argparse.ArgumentParser) -> None:
    """``repo init --object-lock-mode MODE --object-lock-days N`` (docs/immutability.md)."""
    init.add_argument(
        "--object-lock-mode",
        choices=LOCK_MODES,
        help="lock every object written (S3 Object Lock, GCS retention, Azure immutability)",
    )
    init.add_argument(
        "--object-lock-days",
        type=_count,
        default=0,
        metavar="N",
        help="days each object stays locked",
    )


def init_lock_settings(args: Namespace) -> dict[str, Any]:
    """The ``Config.new`` arguments for the object-lock flags (checked together)."""
    mode = getattr(args, "object_lock_mode", None)
    days = int(getattr(args, "object_lock_days", 0) or 0)
    if bool(mode) != bool(days):
        raise UsageError(
            "--object-lock-mode (governance or compliance) and --object-lock-days N (>= 1) "
            "go together: give both, or neither"
        )
    return {"object_lock_mode": mode, "object_lock_days": days} if mode else {}


def _load(path_text: str, flag: str) -> Any:
    import yaml  # only the commands that read a rules file need it

    path = Path(path_text)
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{flag} {path}: cannot read YAML or JSON ({exc})") from exc


def _policy(body: Any, where: str) -> RetentionPolicy:
    from pydantic import ValidationError

    from safehold.engine.retention import RetentionPolicy

    if not isinstance(body, dict):
        raise UsageError(f"{where}: expected a mapping of rules (keepLast, keepDaily, ...)")
    try:
        return RetentionPolicy.model_validate(body)
    except ValidationError as exc:
        raise UsageError(f"{where}: {_validation(exc)}") from exc


def load_policy(path: str, flag: str) -> RetentionPolicy:
    """A retention policy file (YAML or JSON, as a BackupPolicy's ``retention``)."""
    return _policy(_load(path, flag), f"{flag} {path}")


def _policies(args: Namespace) -> tuple[RetentionPolicy | None, dict[str, RetentionPolicy]]:
    from pydantic import ValidationError

    from safehold.engine.retention import RetentionPolicy

    flags = {
        "keep_last": args.keep_last,
        "keep_hourly": args.keep_hourly,
        "keep_daily": args.keep_daily,
        "keep_weekly": args.keep_weekly,
        "keep_monthly": args.keep_monthly,
        "keep_yearly": args.keep_yearly,
        "keep_within": args.keep_within,
        "keep_tags": frozenset(args.keep_tag),
    }
    given = {k: v for k, v in flags.items() if v}
    if args.time_zone is not None and not given:
        raise UsageError(
            "--time-zone sets the zone of the --keep-* flags' periods: give them, or "
            "timeZone in the --policy/--policies file"
        )
    if args.policy:
        if given:
            raise UsageError("give --policy FILE or --keep-* flags, not both")
        body = _load(args.policy, "--policy")
        default = _policy(body, f"--policy {args.policy}")
    else:
        try:
            default = RetentionPolicy(**given, time_zone=args.time_zone or "UTC")
        except ValidationError as exc:
            raise UsageError(f"forget: {_validation(exc)}") from exc
    per_source: dict[str, RetentionPolicy] = {}
    if args.policies:
        doc = _load(args.policies, "--policies")
        if not isinstance(doc, dict):
            raise UsageError(f"--policies {args.policies}: expected a mapping source -> policy")
        for source, body in doc.items():
            per_source[str(source)] = _policy(body, f"--policies {args.policies}: {source}")
    if default.is_empty and not per_source:
        raise UsageError(
            "forget needs a rule: --keep-last, --keep-daily, ..., --keep-within, --keep-tag, "
            "--policy FILE or --policies FILE (a policy without rules keeps everything)"
        )
    return (None if default.is_empty else default), per_source


def _validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "policy"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _print_forget(
    out: Output,
    report: ForgetReport,
    default: RetentionPolicy | None,
    per_source: dict[str, RetentionPolicy],
) -> None:
    """Per source, newest first: action, id, time in the policy's zone, reasons."""
    by_source: dict[str, list[ForgetItem]] = {}
    for item in report.items:
        by_source.setdefault(item.snapshot.source, []).append(item)
    for source in sorted(by_source):
        policy = per_source.get(source, default)
        zone = policy.zone if policy else ZoneInfo("UTC")
        out.print(f"source {source}")
        items = sorted(by_source[source], key=lambda i: (i.snapshot.datetime, i.snapshot.id))
        for item in reversed(items):
            if item.keep:
                action = "keep"
            elif item.locked_until:
                action = "locked"
            else:
                action = "forget" if report.dry_run else "removed"
            when = item.snapshot.datetime.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
            # (a source with two or more hosts: each reason names its host)
            why = _short_ids((", " if item.keep else "; ").join(item.reasons))
            out.print(f"  {action:<7} {item.snapshot.id[:8]}  {when}  {why}")
        kept = sum(1 for i in items if i.keep)
        verb = "to forget" if report.dry_run else "forgotten"
        out.print(f"{source}: {kept} kept, {len(items) - kept} {verb}")
    n = len(report.forgotten)
    if report.dry_run:
        out.print(f"dry run: would remove {n} of {len(report.items)} snapshot(s); nothing changed")
        return
    out.print(
        f"removed {len(report.removed)} snapshot object(s) of {len(report.items)}; only "
        "snapshot objects were removed: run 'safehold prune' (or forget --prune) to free "
        "the data they used"
    )
    for item in report.locked:
        out.warn(
            f"snapshot {item.snapshot.id[:12]} is under an object lock until "
            f"{item.locked_until}: kept; forget it again after that"
        )


def _short_ids(text: str) -> str:
    """Snapshot ids in a reason as the listing shows them: their first 8 characters (the
    JSON report keeps them whole)."""
    import re

    return re.sub(r"\b([0-9a-f]{8})[0-9a-f]{56}\b", r"\1", text)


def _print_prune(out: Output, r: PruneReport) -> None:
    verb = "would" if r.dry_run else "did"
    out.print(
        f"{r.snapshots} snapshot(s) use {r.blobs_used} blobs in {r.packs} indexed packs "
        f"({human_size(r.pack_bytes)})"
    )
    out.print(
        f"{verb} delete {r.packs_deleted} unused pack(s) and {r.unindexed_deleted} pack(s) "
        f"no index names, repack {r.packs_repacked} pack(s) into "
        f"{'new ones' if r.dry_run else f'{r.packs_written} new one(s)'}: "
        f"{human_size(r.bytes_freed)} freed"
    )
    if r.kept_recent:
        out.print(
            f"kept {r.kept_recent} pack(s) younger than the grace period, which a backup may "
            "still be writing: a prune after that frees them (--grace MINUTES sets it; 0 "
            "only when no backup can be running)"
        )
    for name, until in sorted(r.locked.items())[:20]:
        out.warn(f"{name} is under an object lock until {until}: kept")
    if r.locked:
        out.print(f"{len(r.locked)} object(s) kept by their object lock; prune again later")
    if r.deferred:
        out.warn(r.deferred)


def _with_lock_wait(args: Namespace, out: Output, what: str, call: Callable[[], T]) -> T:
    """``call()``, tried again while another process holds a conflicting repository lock,
    for up to ``--lock-wait`` seconds; then the conflict is raised (exit code 11).

    Safe to repeat: forget and prune take their lock before they change anything."""
    from safehold.repo.errors import LockConflict

    wait = float(getattr(args, "lock_wait", 0.0) or 0.0)
    deadline = time.monotonic() + wait
    tries = 0
    while True:
        try:
            return call()
        except LockConflict as exc:
            tries += 1
            left = deadline - time.monotonic()
            if left <= 0:
                if wait:
                    raise LockConflict(
                        f"{exc} (still locked after waiting {wait:g}s, --lock-wait)"
                    ) from exc
                raise
            if tries == 1:
                out.warn(f"{what}: {exc}; trying again for up to {wait:g}s (--lock-wait)")
            time.sleep(min(LOCK_RETRY_EVERY, left))


def _run_prune(args: Namespace, out: Output, repo: Any) -> PruneReport:
    options = PruneOptions(
        max_unused=DEFAULT_MAX_UNUSED if args.max_unused is None else args.max_unused,
        grace=DEFAULT_GRACE if args.grace is None else args.grace,
        dry_run=args.dry_run,
    )
    report = _with_lock_wait(args, out, "prune", lambda: prune_repository(repo, options))
    _print_prune(out, report)
    return report


def forget(args: Namespace, out: Output) -> int:
    from safehold.engine.forget import forget_snapshots

    default, per_source = _policies(args)
    if args.prune and args.dry_run:
        raise UsageError("--prune with --dry-run: run 'safehold prune --dry-run' on its own")
    if not args.prune and (args.max_unused is not None or args.grace is not None):
        raise UsageError("--max-unused and --grace are prune's: add --prune, or leave them out")
    if any(not p for p in args.source_prefix):
        raise UsageError("--source-prefix '': an empty prefix selects every source")
    repo = open_repo(args, load_index=False)
    report = _with_lock_wait(
        args,
        out,
        "forget",
        lambda: forget_snapshots(
            repo,
            default,
            policies=per_source,
            sources=args.source,
            source_prefixes=args.source_prefix,
            tags=args.tag,
            dry_run=args.dry_run,
        ),
    )
    _print_forget(out, report, default, per_source)
    items = [i.to_dict() for i in report.items]
    if args.report:
        Path(args.report).write_text(json.dumps(items, indent=1) + "\n")
    doc: dict[str, Any] = {"ok": True, **report.summary(), "items": items}
    if args.prune:
        from safehold.repo.errors import LockConflict

        repo.load_index()
        try:
            doc["prune"] = _run_prune(args, out, repo).summary()
        except LockConflict as exc:
            # The snapshots are forgotten; only freeing their data waits for the next
            # prune. Say both, with the lock's exit code, so a scheduler retries.
            out.error(str(exc))
            doc.update(ok=False, error=f"forget done, prune not run: {exc}")
            doc["exit_code"] = exitcodes.LOCKED
            out.summary(doc)
            return exitcodes.LOCKED
    out.summary(doc)
    return exitcodes.OK


def prune(args: Namespace, out: Output) -> int:
    repo = open_repo(args, load_index=False)
    report = _run_prune(args, out, repo)
    out.summary({"ok": True, **report.summary()})
    return exitcodes.OK
