"""What a repository holds, per source: ``safehold report`` (issue 18).

Computed from the snapshots' own summaries (what each backup read, found new, and stored)
and the pack listing, so a report reads no tree and no pack: it costs one listing and one
read per snapshot, on a repository of any size.

Per source:

- ``snapshots``, ``first`` and ``last`` (times, UTC);
- ``logical_bytes``: the size of the newest snapshot's data (what a restore writes);
- ``stored_bytes``: what the source's backups added to the repository, compressed and
  encrypted (the sum of each snapshot's ``bytes_stored``; data later removed by prune is
  not subtracted, so after a prune it is an upper bound);
- ``growth_bytes_per_week``: the stored bytes its backups of the last 28 days added, per
  week (over the source's whole span when it is younger);
- ``dedup_ratio``: the logical bytes of all its snapshots over the new bytes they had to
  add: how many times deduplication stores each byte once (1.0: nothing shared);
- ``compression_ratio``: new bytes over stored bytes (zstd, after encryption overhead);
- with a retention policy: how many snapshots it keeps and forgets (as ``forget
  --dry-run`` would decide).

Snapshots written before their summaries carried a field count as zero for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from safehold.engine.retention import RetentionPolicy, SnapshotFacts, apply_policy
from safehold.repo.snapshot import Snapshot

__all__ = ["GROWTH_WINDOW", "SourceReport", "report_sources"]

#: The window over which growth per week is measured.
GROWTH_WINDOW = timedelta(days=28)


@dataclass(frozen=True)
class SourceReport:
    source: str
    snapshots: int
    first: str
    last: str
    logical_bytes: int
    stored_bytes: int
    growth_bytes_per_week: int
    dedup_ratio: float | None
    compression_ratio: float | None
    keep: int | None = None
    forget: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(summary: dict[str, Any], key: str) -> int:
    value = summary.get(key)
    return int(value) if isinstance(value, int | float) and value > 0 else 0


def _ratio(top: int, bottom: int) -> float | None:
    return round(top / bottom, 2) if bottom > 0 else None


def _growth(snaps: list[Snapshot], now: datetime) -> int:
    times = [s.datetime for s in snaps]
    since = max(min(times), now - GROWTH_WINDOW)
    added = sum(_number(s.summary, "bytes_stored") for s in snaps if s.datetime >= since)
    weeks = max((now - since) / timedelta(weeks=1), 1.0)
    return int(added / weeks)


def _one(source: str, snaps: list[Snapshot], now: datetime) -> SourceReport:
    snaps = sorted(snaps, key=lambda s: s.datetime)
    logical = sum(_number(s.summary, "total_bytes") for s in snaps)
    new = sum(_number(s.summary, "bytes_new") for s in snaps)
    stored = sum(_number(s.summary, "bytes_stored") for s in snaps)
    return SourceReport(
        source=source,
        snapshots=len(snaps),
        first=snaps[0].time,
        last=snaps[-1].time,
        logical_bytes=_number(snaps[-1].summary, "total_bytes"),
        stored_bytes=stored,
        growth_bytes_per_week=_growth(snaps, now),
        dedup_ratio=_ratio(logical, new),
        compression_ratio=_ratio(new, stored),
    )


def report_sources(
    snapshots: Iterable[Snapshot],
    *,
    retention: RetentionPolicy | None = None,
    now: datetime | None = None,
) -> list[SourceReport]:
    """One report per source, by source name."""
    moment = now or datetime.now(UTC)
    by_source: dict[str, list[Snapshot]] = defaultdict(list)
    listed = list(snapshots)
    for snap in listed:
        by_source[snap.source].append(snap)
    kept: dict[str, int] = defaultdict(int)
    forgotten: dict[str, int] = defaultdict(int)
    if retention is not None:
        facts = [SnapshotFacts(s.id, s.datetime, s.source, frozenset(s.tags)) for s in listed]
        for decision in apply_policy(retention, facts):
            counter = kept if decision.keep else forgotten
            counter[decision.snapshot.source] += 1
    out = []
    for source in sorted(by_source):
        one = _one(source, by_source[source], moment)
        if retention is not None:
            one = SourceReport(**{**asdict(one), "keep": kept[source], "forget": forgotten[source]})
        out.append(one)
    return out
