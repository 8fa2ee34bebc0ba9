"""``safehold restore``: its options; the command is :func:`safehold.cli.commands.restore`."""

from __future__ import annotations

import argparse

from safehold.cli import commands
from safehold.cli.audit import audited
from safehold.cli.hosts import add_host_filter

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    restore = sub.add_parser("restore", parents=[common], help="restore a snapshot")
    restore.add_argument("snapshot", metavar="SNAPSHOT", help="an id (prefix) or 'latest'")
    restore.add_argument("target", metavar="TARGET", help="directory to restore into")
    restore.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="restore only the paths of the snapshot this matches, as 'safehold ls' shows "
        "them (/data/dir/file) or relative (data/dir); globs and ** as in backup; a "
        "directory with all it holds (repeatable)",
    )
    restore.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out the paths this matches, even when included (repeatable)",
    )
    restore.add_argument(
        "--verify",
        action="store_true",
        help="then read every restored file back and check it against the snapshot (size, "
        "content, and that every selected entry is there with its type); exit code 4 when "
        "anything differs",
    )
    restore.add_argument("--source", metavar="NAME", help="with 'latest': of this source")
    restore.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="with 'latest': having this tag"
    )
    add_host_filter(restore)
    restore.set_defaults(func=audited("restore", commands.restore))
