"""``safehold cache``: the local caches of repositories on this machine (docs/cli.md,
"Local cache"): which repositories have one, how large, when a command last used it; and
``--cleanup`` to delete those unused for ``--max-age`` days. It opens no repository."""

from __future__ import annotations

import argparse
import time
from argparse import Namespace
from datetime import UTC, datetime

from safehold.cli import exitcodes
from safehold.cli.context import UsageError, cache_root
from safehold.cli.output import Output, human_size

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``safehold cache`` (it opens no repository: not ``common``'s options)."""
    p = sub.add_parser(
        "cache",
        help="list the local caches of repositories, or delete the unused ones (--cleanup)",
    )
    # SUPPRESS: given before the command, the global option must not be overwritten by
    # this parser's default (argparse sets a subparser's defaults after the main parser's)
    S = argparse.SUPPRESS
    p.add_argument(
        "--cache-dir",
        default=S,
        metavar="DIR",
        help="the caches' directory (default: $SAFEHOLD_CACHE_DIR, else "
        "$XDG_CACHE_HOME/safehold/repositories, else ~/.cache/safehold/repositories)",
    )
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="delete the caches no command has used for --max-age days",
    )
    p.add_argument(
        "--max-age",
        type=float,
        metavar="DAYS",
        help="with --cleanup: unused for this many days (default 30, as every command "
        "cleans up by itself; 0 deletes every cache)",
    )
    p.add_argument(
        "--json", action="store_true", default=S, help="print one JSON summary line on stdout"
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", default=S, help="print only errors and warnings"
    )
    p.add_argument(
        "--no-color", action="store_true", default=S, help="plain text: no colours or lines"
    )
    p.set_defaults(func=cache)


def cache(args: Namespace, out: Output) -> int:
    from safehold.repo.local_cache import UNUSED_DAYS, cached_repositories, remove_unused

    if args.max_age is not None and not args.cleanup:
        raise UsageError("--max-age goes with --cleanup")
    max_age = UNUSED_DAYS if args.max_age is None else args.max_age
    if max_age < 0:
        raise UsageError("--max-age: a number of days, 0 or more")
    root = cache_root(args)
    removed = remove_unused(root, max_age) if args.cleanup else []
    caches = cached_repositories(root)
    now = time.time()
    table = out.new_table("repository", "last used", "size")
    for c in caches:
        old = now - c.last_used > UNUSED_DAYS * 86400  # the next command deletes it
        ago = _ago(now - c.last_used) + (" (old)" if old else "")
        table.add_row(c.id[:12], ago, human_size(c.size))
    if caches:
        out.table(table)
    freed = sum(c.size for c in removed)
    if args.cleanup:
        out.print(
            f"removed {len(removed)} cache(s) unused for {max_age:g} days: {human_size(freed)}"
        )
    total = sum(c.size for c in caches)
    out.print(f"{len(caches)} cache(s) in {root}: {human_size(total)}")
    out.summary(
        {
            "ok": True,
            "cache_dir": str(root),
            "caches": [
                {
                    "repository": c.id,
                    "last_used": datetime.fromtimestamp(c.last_used, UTC).isoformat(),
                    "size": c.size,
                }
                for c in caches
            ],
            "removed": [c.id for c in removed],
            "freed": freed,
        }
    )
    return exitcodes.OK


def _ago(seconds: float) -> str:
    days = int(seconds // 86400)
    if days:
        return f"{days} day{'s' if days > 1 else ''} ago"
    hours = int(seconds // 3600)
    return f"{hours} hour{'s' if hours > 1 else ''} ago" if hours else "now"
