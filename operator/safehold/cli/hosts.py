"""``--host``: the host a snapshot belongs to (format section 9, docs/cli.md).

A command that writes snapshots takes ``--host NAME`` (default: this machine's host name,
as restic): the new snapshot's host, whose newest snapshot of the same source is its
parent. A command that picks snapshots takes ``--host NAME`` as a filter: ``latest`` is
the newest of that host, a listing shows only its snapshots. Either way a snapshot
written before hosts existed has none and belongs to every host
(``Snapshot.of_host``, the one place of that rule).
"""

from __future__ import annotations

import argparse

__all__ = ["add_host_filter", "add_host_option"]


def _name(value: str) -> str:
    if not value or "\x00" in value or len(value) > 4096:
        raise argparse.ArgumentTypeError("a host is a non-empty name, e.g. web-1")
    return value


def add_host_option(p: argparse.ArgumentParser) -> None:
    """The host a new snapshot is written with."""
    p.add_argument(
        "--host",
        type=_name,
        metavar="NAME",
        help="the snapshot's host (default: this machine's host name): its parent is the "
        "newest snapshot of the same source and host, and retention keeps each host's own",
    )


def add_host_filter(p: argparse.ArgumentParser, what: str = "with 'latest': of this host") -> None:
    """``--host`` selecting snapshots (those without a host are of every host)."""
    p.add_argument("--host", type=_name, metavar="NAME", help=what)
