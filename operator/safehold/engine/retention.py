"""Which snapshots a retention policy keeps: the pure decision behind ``safehold forget``.

Forgetting is where backup tools lose data, so this module does nothing but decide.
It reads no repository and no clock: given a policy and the descriptions of some
snapshots it returns, for every snapshot, whether it is kept and *every* rule that
keeps it, or, when it goes, why each rule passed it over. The caller (the forget
command, its ``--dry-run``) shows those reasons to a person and removes only what
this module says goes. ``docs/retention.md`` states the rules with examples that
the test suite runs; in short:

* Snapshots are grouped by ``source`` and ``host`` (restic's grouping); groups never
  affect each other. A snapshot without a host (written before hosts existed) belongs to
  every host's group of its source, and is kept when any of them keeps it: the snapshots
  of a source that one operator or machine kept writing stay one series, as before.
* Within a source, snapshots are ordered by time, ties broken by id, so the result
  does not depend on the order they were listed in.
* ``keep_last N`` keeps the N newest snapshots.
* ``keep_hourly/daily/weekly/monthly/yearly N`` keep the newest snapshot of each of
  the N most recent periods *that have a snapshot* (restic's semantics: a day
  without a backup does not use up a daily slot). Periods are calendar periods in
  the policy's IANA time zone: days of 23 or 25 hours at DST changes, ISO weeks
  (Monday to Sunday, the week-year of ISO 8601), and an hour that a DST change
  repeats counts as two hours, as two really elapsed.
* ``keep_within D`` keeps every snapshot no older than D before the *newest*
  snapshot of the source, not before "now": when backups stop (a broken job, a
  decommissioned volume), the last good backups then stay forever instead of
  expiring one by one, and the decision stays a pure function of its inputs.
* ``keep_tags`` keeps every snapshot carrying any of the tags.

and two safety rules a production tool needs:

* A policy with no rule keeps everything: an empty or mistyped policy must never
  mean "forget all".
* The newest snapshot of every source is always kept, whatever the rules say
  (a ``keep_tags``-only policy would otherwise wipe a source whose latest backup
  is untagged).

Adding a rule, or raising a count, therefore never forgets a snapshot that was
kept before; the property tests check that, and check the whole decision against
an independent brute-force implementation.
"""

from __future__ import annotations

import calendar
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from safehold.repo.snapshot import belongs_to

__all__ = [
    "EMPTY_POLICY_REASON",
    "NEWEST_REASON",
    "NO_POLICY_REASON",
    "Decision",
    "Duration",
    "RetentionInputError",
    "RetentionPolicy",
    "SnapshotFacts",
    "SnapshotInfo",
    "apply_policies",
    "apply_policy",
]


class SnapshotInfo(Protocol):
    """What retention needs to know about a snapshot; any object with these attributes.

    ``time`` must be timezone-aware: a naive time is ambiguous by up to a day, which
    is enough to forget the wrong daily backup.
    """

    @property
    def id(self) -> str: ...

    @property
    def time(self) -> datetime: ...

    @property
    def source(self) -> str: ...

    @property
    def tags(self) -> Set[str]: ...

    @property
    def host(self) -> str | None:
        """The host of the snapshot; None: of every host (written before hosts existed)."""
        ...


S = TypeVar("S", bound=SnapshotInfo)


@dataclass(frozen=True)
class SnapshotFacts:
    """A ready-made ``SnapshotInfo``, for callers whose snapshot objects differ.

    The repository's ``Snapshot`` keeps its time as text and its tags as a list;
    ``SnapshotFacts(s.id, s.datetime, s.source, frozenset(s.tags), s.host)`` adapts one.
    """

    id: str
    time: datetime
    source: str
    tags: frozenset[str] = frozenset()
    host: str | None = None


class RetentionInputError(ValueError):
    """The snapshots given cannot be decided on safely (naive time, repeated id)."""


@dataclass(frozen=True)
class Duration:
    """A retention span (``keepWithin``, ``--keep-within``) such as ``30d``, ``2w``,
    ``1y6mo`` or ``12h``: one grammar wherever a span is written (the custom resources,
    ``forget --keep-within``, ``forget --policy``; its pattern is ``RETENTION_SPAN_PATTERN``
    in ``safehold.api.types``).

    Units, largest first, each at most once: ``y`` years, ``mo`` months, ``w`` weeks,
    ``d`` days, ``h`` hours, ``min`` minutes. A bare ``m`` is refused: it means minutes in
    Kubernetes durations and months in restic's ``--keep-within``, and either reading of
    the other's ``6m`` forgets backups the user meant to keep.

    Years, months, weeks and days are calendar units, counted back on the wall
    clock of the policy's time zone (one month before 31 March is 28 or 29
    February, the last day that exists); hours and minutes are exact elapsed time.
    That way ``1d`` means "since this time yesterday" even across a DST change.
    """

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0

    _UNITS = ("y", "mo", "w", "d", "h", "min")

    def __post_init__(self) -> None:
        parts = (self.years, self.months, self.weeks, self.days, self.hours, self.minutes)
        if min(parts) < 0:
            raise ValueError(f"{self!r}: a duration counts back, its parts must not be negative")

    _PATTERN = re.compile(r"([0-9]{1,6})(y|mo|min|m|w|d|h)")

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse ``<n><unit>...`` with units y, mo, w, d, h, min in that order, each once,
        each number of at most six digits (as the custom resources' schema says)."""
        compact = text.strip()
        parts = cls._PATTERN.findall(compact)
        units = [unit for _, unit in parts]
        if "m" in units:
            number = next(n for n, u in parts if u == "m")
            raise ValueError(
                f"{text!r} is ambiguous: 'm' means minutes in Kubernetes durations and months"
                f" in restic's --keep-within; write '{number}mo' for months or '{number}min'"
                " for minutes"
            )
        ok = (
            bool(parts)
            and "".join(f"{n}{u}" for n, u in parts) == compact
            and units == sorted(set(units), key=cls._UNITS.index)
        )
        if not ok:
            raise ValueError(
                f"{text!r} is not a duration: write numbers with units y (years), mo (months),"
                " w (weeks), d (days), h (hours), min (minutes), largest first, each once,"
                " e.g. '30d', '2w', '1y6mo' or '12h'"
            )
        values = {unit: int(number) for number, unit in parts}
        duration = cls(
            years=values.get("y", 0),
            months=values.get("mo", 0),
            weeks=values.get("w", 0),
            days=values.get("d", 0),
            hours=values.get("h", 0),
            minutes=values.get("min", 0),
        )
        if duration == cls():
            raise ValueError(f"{text!r} is zero: keep_within needs a positive duration")
        return duration

    def __str__(self) -> str:
        values = (self.years, self.months, self.weeks, self.days, self.hours, self.minutes)
        return "".join(f"{n}{u}" for n, u in zip(values, self._UNITS, strict=True) if n)

    def before(self, moment: datetime, zone: tzinfo) -> datetime:
        """The instant this duration before ``moment``, calendar units on ``zone``'s clock.

        Calendar units move the wall clock; the wall time reached is read at its first
        occurrence when DST repeats it (fold 0), and with the offset before the change
        when DST skips it. Hours and minutes are then taken off as elapsed time, in UTC: Python
        subtracts a timedelta from a zoned datetime on the wall clock. A span reaching
        back before the year 1 gives the earliest instant, so it keeps everything.
        """
        try:
            if self.years or self.months or self.weeks or self.days:
                wall = moment.astimezone(zone).replace(tzinfo=None, fold=0)
                months = wall.year * 12 + (wall.month - 1) - (self.years * 12 + self.months)
                year, month0 = divmod(months, 12)
                last_day = calendar.monthrange(year, month0 + 1)[1]
                wall = wall.replace(year=year, month=month0 + 1, day=min(wall.day, last_day))
                wall -= timedelta(weeks=self.weeks, days=self.days)
                moment = wall.replace(tzinfo=zone)
            return moment.astimezone(UTC) - timedelta(hours=self.hours, minutes=self.minutes)
        except (ValueError, OverflowError):
            return datetime.min.replace(tzinfo=UTC)


class RetentionPolicy(BaseModel):
    """The rules of one source's retention; every count 0 (or unset) means "rule off".

    Field names are accepted in snake_case or in the camelCase of the custom
    resources (``keepLast``, ``keepWithin``, ``timeZone``), so a policy can be built
    straight from a ``BackupPolicy``'s ``retention`` mapping; an unknown key is an
    error, since a misspelt ``keepDialy`` silently ignored would forget backups.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )

    keep_last: int = Field(default=0, ge=0)
    keep_hourly: int = Field(default=0, ge=0)
    keep_daily: int = Field(default=0, ge=0)
    keep_weekly: int = Field(default=0, ge=0)
    keep_monthly: int = Field(default=0, ge=0)
    keep_yearly: int = Field(default=0, ge=0)
    keep_within: str | None = None
    keep_tags: frozenset[str] = frozenset()
    time_zone: str = "UTC"

    @field_validator("keep_within")
    @classmethod
    def _check_within(cls, value: str | None) -> str | None:
        return None if value is None else str(Duration.parse(value))

    @field_validator("keep_tags")
    @classmethod
    def _check_tags(cls, value: frozenset[str]) -> frozenset[str]:
        if any(not tag.strip() for tag in value):
            raise ValueError("a tag is empty: list tag names such as 'monthly-audit'")
        return value

    @field_validator("time_zone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as 'Europe/Berlin',"
                " 'America/New_York' or 'UTC'"
            ) from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The policy's time zone, in which periods and calendar durations are counted."""
        return ZoneInfo(self.time_zone)

    @property
    def within(self) -> Duration | None:
        """``keep_within`` parsed, or None when the rule is off."""
        return None if self.keep_within is None else Duration.parse(self.keep_within)

    @property
    def is_empty(self) -> bool:
        """True when no rule is set: such a policy keeps every snapshot."""
        counts = (
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        )
        return not any(counts) and self.keep_within is None and not self.keep_tags


@dataclass(frozen=True)
class Decision(Generic[S]):
    """What happens to one snapshot.

    When ``keep`` is true, ``reasons`` lists every rule that keeps it, such as
    ``"last 3"``, ``"daily 2026-11-25"``, ``"within 30d"`` or
    ``"tag:monthly-audit"``; when false, it says for each rule why it passed the
    snapshot over. Keeping every reason, not the first, lets a person see what
    would still hold a snapshot after changing one rule.
    """

    snapshot: S
    keep: bool
    reasons: tuple[str, ...]


def _hour(moment: datetime) -> str:
    # The offset is part of the label: a repeated hour at a DST change is two periods.
    # It is the moment's own offset, fixed first: replacing the minutes of a zoned time
    # would look the offset up again for the new wall time, and where an offset change
    # falls mid-hour (Lord Howe, Chatham) that is the other one.
    fixed = moment.replace(tzinfo=timezone(moment.utcoffset() or timedelta(0)))
    return fixed.replace(minute=0, second=0, microsecond=0).isoformat(timespec="minutes")


def _week(moment: datetime) -> str:
    iso = moment.isocalendar()
    return f"{iso.year:04d}-W{iso.week:02d}"


# (rule name, policy field, unit in messages, label of the period of a local time)
_PERIOD_RULES: tuple[tuple[str, str, str, Callable[[datetime], str]], ...] = (
    ("hourly", "keep_hourly", "hours", _hour),
    ("daily", "keep_daily", "days", lambda t: t.date().isoformat()),
    ("weekly", "keep_weekly", "ISO weeks", _week),
    ("monthly", "keep_monthly", "months", lambda t: f"{t.year:04d}-{t.month:02d}"),
    ("yearly", "keep_yearly", "years", lambda t: f"{t.year:04d}"),
)

EMPTY_POLICY_REASON = "empty policy: no rule is set, so nothing is forgotten"
NEWEST_REASON = "newest of its source: always kept"
NO_POLICY_REASON = "no policy for this source, so nothing is forgotten"


def apply_policy(policy: RetentionPolicy, snapshots: Iterable[S]) -> list[Decision[S]]:
    """Decide, for each snapshot, keep or forget; one decision per snapshot, in input order.

    The policy applies to each source separately. Raises ``RetentionInputError`` for
    a naive ``time``, a time at the very ends of the calendar that the policy's zone
    cannot show (year 1, year 9999), or an id listed twice, naming the snapshot:
    deciding on such input could forget the wrong backups.
    """
    return apply_policies({}, snapshots, default=policy)


def apply_policies(
    policies: Mapping[str, RetentionPolicy],
    snapshots: Iterable[S],
    *,
    default: RetentionPolicy | None = None,
) -> list[Decision[S]]:
    """Like ``apply_policy``, with each source's own policy: ``policies[source]``.

    A source with no policy there uses ``default``; with no default either, its
    snapshots are all kept (reason ``NO_POLICY_REASON``): a source someone forgot to
    configure is not a source to empty.
    """
    listed = list(snapshots)
    seen: set[str] = set()
    for snap in listed:
        _check(snap, policies.get(snap.source, default), seen)

    by_source: dict[str, list[S]] = defaultdict(list)
    for snap in listed:
        by_source[snap.source].append(snap)
    decided: dict[str, Decision[S]] = {}
    for source, group in by_source.items():
        policy = policies.get(source, default)
        if policy is None:
            decisions = [Decision(snap, True, (NO_POLICY_REASON,)) for snap in group]
        else:
            decisions = _decide_hosts(policy, group)
        decided.update((decision.snapshot.id, decision) for decision in decisions)
    return [decided[snap.id] for snap in listed]


def _decide_hosts(policy: RetentionPolicy, group: list[S]) -> list[Decision[S]]:
    """The decisions for one source's snapshots, each host's series decided on its own.

    A snapshot without a host is in every host's series (and, when no snapshot has a
    host, they are one series as before hosts existed): it is kept when any series keeps
    it. With more than one host, a reason names its host: ``last 3 (host web-1)``.
    """
    hosts = sorted({snap.host for snap in group if snap.host is not None})
    if len(hosts) <= 1:
        return _decide_source(policy, group)
    decisions: dict[str, list[tuple[str, Decision[S]]]] = defaultdict(list)
    for host in hosts:
        series = [snap for snap in group if belongs_to(snap.host, host)]
        for decision in _decide_source(policy, series):
            decisions[decision.snapshot.id].append((host, decision))
    merged: list[Decision[S]] = []
    for snap in group:
        per_host = decisions[snap.id]
        keep = any(d.keep for _, d in per_host)
        reasons = tuple(
            f"{reason} (host {host})"
            for host, d in per_host
            if d.keep == keep
            for reason in d.reasons
        )
        merged.append(Decision(snap, keep, reasons))
    return merged


def _check(snap: SnapshotInfo, policy: RetentionPolicy | None, seen: set[str]) -> None:
    """Refuse a snapshot that cannot be decided on safely, naming it."""
    if snap.time.utcoffset() is None:
        raise RetentionInputError(
            f"snapshot {snap.id}: time {snap.time.isoformat()} has no time zone;"
            " give an aware datetime (e.g. with tzinfo=UTC)"
        )
    if policy is not None:
        try:
            snap.time.astimezone(policy.zone)
        except OverflowError:
            raise RetentionInputError(
                f"snapshot {snap.id}: time {snap.time.isoformat()} is out of the calendar's"
                f" range in {policy.time_zone}; correct the snapshot's time"
            ) from None
    if snap.id in seen:
        raise RetentionInputError(f"snapshot {snap.id} is listed twice; ids must be unique")
    seen.add(snap.id)


def _instant(snap: SnapshotInfo) -> datetime:
    """The snapshot's time in UTC, for ordering.

    Comparing the given datetimes directly is not enough: by PEP 495, two equal
    instants in different zones compare unequal when one falls in a repeated hour,
    which would break ties by id inconsistently.
    """
    return snap.time.astimezone(UTC)


def _show(moment: datetime, zone: tzinfo) -> str:
    """``moment`` on the policy's clock, for messages (in UTC at the very ends of time)."""
    try:
        return moment.astimezone(zone).isoformat(timespec="seconds")
    except OverflowError:
        return moment.isoformat(timespec="seconds")


def _decide_source(policy: RetentionPolicy, group: list[S]) -> list[Decision[S]]:
    """The decisions for the snapshots of one source."""
    if policy.is_empty:
        return [Decision(snap, True, (EMPTY_POLICY_REASON,)) for snap in group]

    newest_first = sorted(group, key=lambda s: (_instant(s), s.id), reverse=True)
    keeps: dict[str, list[str]] = {snap.id: [] for snap in group}
    misses: dict[str, list[str]] = {snap.id: [] for snap in group}

    if policy.keep_last:
        kept_by = f"last {policy.keep_last}"
        missed_by = f"{kept_by}: not among the {policy.keep_last} newest"
        for position, snap in enumerate(newest_first):
            if position < policy.keep_last:
                keeps[snap.id].append(kept_by)
            else:
                misses[snap.id].append(missed_by)

    zone = policy.zone
    local = {snap.id: snap.time.astimezone(zone) for snap in group}
    for name, field, unit, label_of in _PERIOD_RULES:
        count: int = getattr(policy, field)
        if not count:
            continue
        newest_of: dict[str, str] = {}  # period label -> id of its newest snapshot
        for snap in newest_first:
            label = label_of(local[snap.id])
            if label in newest_of:
                misses[snap.id].append(
                    f"{name} {label}: the newer {newest_of[label]} stands for it"
                )
                continue
            newest_of[label] = snap.id
            if len(newest_of) <= count:
                keeps[snap.id].append(f"{name} {label}")
            else:
                misses[snap.id].append(
                    f"{name} {label}: older than the {count} newest {unit} with a snapshot"
                )

    within = policy.within
    if within is not None:
        cutoff = within.before(_instant(newest_first[0]), zone)
        kept_by = f"within {within}"
        missed_by = f"{kept_by}: older than {_show(cutoff, zone)}"
        for snap in newest_first:
            if _instant(snap) >= cutoff:
                keeps[snap.id].append(kept_by)
            else:
                misses[snap.id].append(missed_by)

    if policy.keep_tags:
        wanted = ", ".join(sorted(policy.keep_tags))
        for snap in newest_first:
            matched = sorted(policy.keep_tags & snap.tags)
            if matched:
                keeps[snap.id].extend(f"tag:{tag}" for tag in matched)
            else:
                misses[snap.id].append(f"tags: has none of {wanted}")

    newest = newest_first[0].id
    if not keeps[newest]:
        keeps[newest].append(NEWEST_REASON)

    return [
        Decision(snap, True, tuple(keeps[snap.id]))
        if keeps[snap.id]
        else Decision(snap, False, tuple(misses[snap.id]))
        for snap in group
    ]
