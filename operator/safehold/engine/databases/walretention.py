"""Retention of a WAL archive: its snapshots follow the base backups, not the rules.

A drain of the archive is useless without a base backup it can follow, and a base backup
restores to no later time without the drains after it. So retention rules (keepLast,
keepDaily, ...) decide the base backups only; the drains are then decided by them
(:func:`follow_bases`): under one prefix and one server (``pg.system``), a drain is kept
while it holds WAL from the oldest kept base backup's start on, and forgotten once every
kept base backup begins after its end. With no base backup of its server left, a drain
is kept: nothing says which WAL a restore would need.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from safehold.engine.databases.physical import BASE_KIND, WAL_KIND, parse_lsn
from safehold.repo.snapshot import Snapshot

__all__ = ["WalDecision", "follow_bases", "is_wal"]


def is_wal(snap: Snapshot) -> bool:
    """Whether ``snap`` is a drain of a WAL archive."""
    return snap.meta.get("source.kind") == WAL_KIND


@dataclass(frozen=True)
class WalDecision:
    keep: bool
    reason: str


def _prefix(snap: Snapshot) -> str:
    return snap.source.rsplit("/pg/", 1)[0]


def follow_bases(
    drains: Iterable[Snapshot], kept_bases: Iterable[Snapshot]
) -> dict[str, WalDecision]:
    """For each drain (by id): kept or forgotten, and why, given the base backups that
    stay in the repository."""
    oldest: dict[tuple[str, str], Snapshot] = {}
    for base in kept_bases:
        if base.meta.get("source.kind") != BASE_KIND or "pg.start_lsn" not in base.meta:
            continue
        key = (_prefix(base), base.meta.get("pg.system", ""))
        old = oldest.get(key)
        if old is None or parse_lsn(base.meta["pg.start_lsn"]) < parse_lsn(
            old.meta["pg.start_lsn"]
        ):
            oldest[key] = base
    decisions: dict[str, WalDecision] = {}
    for drain in drains:
        first = oldest.get((_prefix(drain), drain.meta.get("pg.system", "")))
        if first is None:
            decisions[drain.id] = WalDecision(True, "WAL of a server with no base backup left")
        elif parse_lsn(drain.meta["pg.end_lsn"]) > parse_lsn(first.meta["pg.start_lsn"]):
            decisions[drain.id] = WalDecision(
                True, f"WAL after the start of base backup {first.id[:12]}, the oldest kept"
            )
        else:
            decisions[drain.id] = WalDecision(
                False, f"WAL older than the oldest kept base backup {first.id[:12]}"
            )
    return decisions
