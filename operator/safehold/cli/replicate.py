"""``safehold replicate --to URL``: bring a recovery site up to date with the repository.

The site's location takes its own storage options (``-O/--to-option``, ``--to-options-dir``)
because it is usually another provider or account than the primary, and optionally its own
password (``--to-password-file`` / ``SAFEHOLD_TO_PASSWORD``): a new site gets the
primary's keys, so the primary's password opens it until someone changes the keys there.
See docs/replication.md.
"""

from __future__ import annotations

import argparse
import os
from argparse import Namespace
from typing import TYPE_CHECKING

from safehold.cli import exitcodes
from safehold.cli.audit import audited
from safehold.cli.context import (
    UsageError,
    _option_pairs,
    bandwidth,
    location_url,
    open_repo,
    read_password,
)
from safehold.cli.output import Output, human_size
from safehold.storage import Storage, open_storage

if TYPE_CHECKING:
    from safehold.engine.replicate import ReplicateResult

__all__ = ["register", "replicate_command"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Register ``replicate`` on the main parser's subcommands."""
    p = sub.add_parser(
        "replicate",
        parents=[common],
        help="copy snapshots to a recovery site",
        description="Copy the snapshots the site lacks, and exactly the objects they need, "
        "verifying each object's hash on arrival. See docs/replication.md.",
    )
    p.add_argument("--to", required=True, metavar="URL", help="the recovery site's location")
    p.add_argument(
        "-O",
        "--to-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="storage option of the site, repeatable (endpoint, credentials, ...)",
    )
    p.add_argument(
        "--to-options-dir",
        metavar="DIR",
        help="read the site's storage options from files in DIR (default: "
        "$SAFEHOLD_TO_OPTIONS_DIR); -O wins over a file",
    )
    p.add_argument(
        "--to-password-file",
        metavar="PATH",
        help="the site's password (default: $SAFEHOLD_TO_PASSWORD, else the repository's)",
    )
    p.add_argument("--source", action="append", default=[], metavar="NAME", help="only this source")
    p.add_argument(
        "--source-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="only sources whose name begins with PREFIX, e.g. 'ns/policy/' (repeatable; "
        "ORed with --source)",
    )
    p.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="only snapshots with this tag"
    )
    p.add_argument(
        "--newest", type=int, metavar="N", help="only the newest N snapshots of each source"
    )
    p.add_argument(
        "--only-newer",
        action="store_true",
        help="skip snapshots older than the site's newest of the same source and host (keeps "
        "what the site's own retention removed from coming back)",
    )
    p.add_argument(
        "--jobs", type=int, default=4, metavar="N", help="parallel transfers (default 4)"
    )
    p.add_argument(
        "--no-server-side",
        action="store_true",
        help="always stream objects through this process, even between buckets of one provider",
    )
    p.add_argument(
        "--read-back",
        action="store_true",
        help="also read every streamed object back from the site and check its hash",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="report what would be copied; write nothing"
    )
    p.set_defaults(func=audited("replicate", replicate_command))


def _open_site(args: Namespace) -> Storage:
    options: dict[str, str] = {}
    directory = args.to_options_dir or os.environ.get("SAFEHOLD_TO_OPTIONS_DIR")
    if directory:
        # Imported here: the options-dir reader is shared with --options-dir (context.py).
        from safehold.cli.context import read_options_dir

        options.update(read_options_dir(directory))
    options.update(_option_pairs(args.to_option))
    # The standard wrappers, as for the primary: a site's outage is ridden out within
    # retry_seconds too (server-side copies, Storage.copy_from, go through them as well).
    # Within the command's bandwidth limits too: the same buckets as the repository's.
    return open_storage(location_url(args.to), options, wrap=True, bandwidth=bandwidth(args))


def _print_table(out: Output, result: ReplicateResult) -> None:
    """What was copied, object kind by kind, and the total."""
    from safehold.engine.replicate import KINDS

    verb = "would copy" if result.dry_run else "copied"
    table = out.new_table("objects", verb, "bytes", "server-side", "skipped", "bytes skipped")
    for kind in KINDS:
        c = result.counts[kind]
        table.add_row(
            kind,
            str(c.copied),
            human_size(c.copied_bytes),
            str(c.server_side),
            str(c.skipped),
            human_size(c.skipped_bytes),
        )
    total = result.total()
    table.add_row(
        "total",
        str(total.copied),
        human_size(total.copied_bytes),
        str(total.server_side),
        str(total.skipped),
        human_size(total.skipped_bytes),
    )
    if not out.quiet:
        out.table(table)


def replicate_command(args: Namespace, out: Output) -> int:
    # Imported here, when the command runs: every command builds this parser.
    from safehold.engine.replicate import ReplicateOptions, replicate
    from safehold.repo import RepositoryLock

    if args.newest is not None and args.newest < 1:
        raise UsageError("--newest takes a number of snapshots, at least 1")
    if not 1 <= args.jobs <= 64:
        raise UsageError("--jobs is between 1 and 64")
    if any(not p for p in args.source_prefix):
        raise UsageError("--source-prefix '': an empty prefix selects every source")
    repo = open_repo(args)
    site_storage = _open_site(args)
    if site_storage.object_lock is not None:  # -O object_lock_*: the site's bucket must lock
        site_storage.check_object_lock()
    if site_storage.location.rstrip("/") == repo.location.rstrip("/"):
        raise UsageError(f"--to {args.to}: that is the repository itself; give the site's URL")
    has_own = args.to_password_file or os.environ.get("SAFEHOLD_TO_PASSWORD_FILE")
    if has_own or os.environ.get("SAFEHOLD_TO_PASSWORD"):
        password = read_password(
            args,
            env="SAFEHOLD_TO_PASSWORD",
            file_attr="to_password_file",
            file_env="SAFEHOLD_TO_PASSWORD_FILE",
            what="site password",
        )
    else:
        password = read_password(args)
    options = ReplicateOptions(
        sources=args.source,
        source_prefixes=args.source_prefix,
        tags=args.tag,
        newest=args.newest,
        only_newer=args.only_newer,
        jobs=args.jobs,
        server_side=not args.no_server_side,
        read_back=args.read_back,
        dry_run=args.dry_run,
    )
    with (
        RepositoryLock(repo, exclusive=False, operation="replicate"),
        out.progress("replicate") as bar,
    ):
        result = replicate(
            repo,
            site_storage,
            password,
            options,
            progress=bar.callback(),
            lock=lambda site: RepositoryLock(site, exclusive=False, operation="replicate"),
        )
    _print_table(out, result)
    verb = "would copy" if result.dry_run else "copied"
    total = result.total()
    created = " (new site)" if result.site_created else ""
    out.print(
        f"{result.target}{created}: {verb} {len(result.snapshots_copied)} of "
        f"{result.selected} selected snapshot(s), {len(result.snapshots_present)} already "
        f"there, {len(result.snapshots_older)} older than the site's newest; "
        f"{human_size(total.copied_bytes)} in {result.duration_s:.1f} s"
    )
    for snap_id, message in result.snapshots_failed.items():
        out.warn(f"snapshot {snap_id[:12]} not copied: {message}")
    code = exitcodes.OK if result.ok else exitcodes.PARTIAL
    out.summary({**result.summary(), "exit_code": code})
    return code
