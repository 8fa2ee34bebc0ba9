"""The options every command accepts (``--repo``, ``--password-file``, ...), in a module that
loads nothing else of Safehold's: the entry point (cli/start.py) reads them before the
commands' modules load, and every command's parser has them as a parent (cli/main.py)."""

from __future__ import annotations

import argparse

from safehold.cli.context import kib_per_second

__all__ = ["common_options"]


def common_options(json_output: bool = True) -> argparse.ArgumentParser:
    """Options every command accepts, before or after the command name."""
    p = argparse.ArgumentParser(add_help=False)
    S = argparse.SUPPRESS
    p.add_argument(
        "-r",
        "--repo",
        default=S,
        metavar="URL",
        help="repository location (default: $SAFEHOLD_REPOSITORY)",
    )
    p.add_argument(
        "-o",
        "--option",
        action="append",
        default=S,
        metavar="KEY=VALUE",
        help="storage option, repeatable (endpoint, region, ...)",
    )
    p.add_argument(
        "--options-dir",
        default=S,
        metavar="DIR",
        help="read storage options from files in DIR, one per option, named by the option "
        "(default: $SAFEHOLD_OPTIONS_DIR); -o wins over a file",
    )
    p.add_argument(
        "--termination-log",
        default=S,
        metavar="PATH",
        help="also write the JSON summary to PATH (a pod's terminationMessagePath)",
    )
    p.add_argument(
        "--password-file",
        default=S,
        metavar="PATH",
        help="read the password from this file (default: $SAFEHOLD_PASSWORD_FILE, else the "
        "password itself in $SAFEHOLD_PASSWORD)",
    )
    p.add_argument(
        "--limit-upload",
        type=kib_per_second,
        default=S,
        metavar="KIB",
        help="upload (write to storage) at most KIB KiB/s, 1 KiB = 1024 bytes "
        "(default: $SAFEHOLD_LIMIT_UPLOAD, else unlimited)",
    )
    p.add_argument(
        "--limit-download",
        type=kib_per_second,
        default=S,
        metavar="KIB",
        help="download (read from storage) at most KIB KiB/s, 1 KiB = 1024 bytes "
        "(default: $SAFEHOLD_LIMIT_DOWNLOAD, else unlimited)",
    )
    p.add_argument(
        "--cache-dir",
        default=S,
        metavar="DIR",
        help="keep the local cache of index, snapshots and trees of repositories on object "
        "storage in DIR (default: $SAFEHOLD_CACHE_DIR, else $XDG_CACHE_HOME/safehold/"
        "repositories, else ~/.cache/safehold/repositories)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        default=S,
        help="use no local cache: read everything from the repository, write nothing locally",
    )
    if json_output:
        p.add_argument(
            "--json",
            action="store_true",
            default=S,
            help="print one JSON summary as the last line of stdout; "
            "progress as JSON lines on stderr",
        )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=S,
        help="print only errors, warnings and what the command is for (a listing): no "
        "progress, no summary lines; the exit code and --json output stay the same",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=S,
        help="more detail: each new or changed file a backup reads, each file a restore "
        "writes; -vv also the unchanged and skipped ones",
    )
    p.add_argument(
        "--no-color",
        action="store_true",
        default=S,
        help="plain text: no colours or other escape sequences (also when $NO_COLOR is set)",
    )
    return p
