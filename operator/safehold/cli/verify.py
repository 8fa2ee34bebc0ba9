"""``safehold verify``: its options; the command is :func:`safehold.cli.commands.verify`."""

from __future__ import annotations

import argparse

from safehold.cli import commands

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    verify = sub.add_parser("verify", parents=[common], help="check the repository")
    data = verify.add_mutually_exclusive_group()  # how much data to read: one answer
    data.add_argument(
        "--read-data",
        nargs="?",
        const=100.0,
        type=_percent,
        default=None,
        metavar="PERCENT",
        help="also read back all data, or PERCENT of the packs at random",
    )
    data.add_argument(
        "--read-data-subset",
        type=_subset,
        default=None,
        metavar="K/N",
        help="also read back part K of N of the packs (by pack id, the same part every "
        "time): checks 1/N to N/N together read every pack once",
    )
    verify.set_defaults(func=commands.verify)


def _percent(value: str) -> float:
    text = value.strip().rstrip("%")
    try:
        number = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a percentage (e.g. 10 or 10%)") from exc
    if not 0 < number <= 100:
        raise argparse.ArgumentTypeError(f"{value!r} must be above 0 and at most 100")
    return number


def _subset(value: str) -> tuple[int, int]:
    """``K/N`` of ``verify --read-data-subset``: part K (1 to N) of N."""
    part, _, parts = value.partition("/")
    try:
        k, n = int(part), int(parts)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not K/N (e.g. 3/10)") from exc
    if not 1 <= k <= n <= 10_000:
        raise argparse.ArgumentTypeError(f"{value!r}: K/N needs 1 <= K <= N <= 10000")
    return k, n
