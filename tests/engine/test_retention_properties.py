"""Property tests: the retention decision equals an independent brute-force reference.

The reference below shares no code with ``safehold.engine.retention`` and is written
the slow, obvious way: periods are numbered arithmetically (day ordinals, Monday-based
week numbers, month and hour counters) instead of labelled, and each rule is checked
per snapshot by counting, over all other snapshots, the periods that are newer. If
both agree on random histories in random IANA zones, the clever single pass in the
module is right. The invariants a user relies on (the newest snapshot survives,
adding a rule never forgets more, sources never interact, input order does not
matter) are checked on the module directly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safehold.engine.retention import Duration, RetentionPolicy, apply_policy


@dataclass(frozen=True)
class Snap:
    id: str
    time: datetime
    source: str
    tags: frozenset[str]


# ------------------------------------------------------------------ the reference


def _order(s: Snap) -> tuple[float, str]:
    # Seconds since the epoch as an exact-enough number, then id: newest = largest.
    return (s.time.timestamp(), s.id)


def _local(s: Snap, zone: ZoneInfo) -> datetime:
    return s.time.astimezone(zone)


def _hour_number(s: Snap, zone: ZoneInfo) -> Hashable:
    offset = _local(s, zone).utcoffset()
    assert offset is not None
    wall_seconds = (s.time - datetime(1970, 1, 1, tzinfo=UTC) + offset).total_seconds()
    return (int(wall_seconds // 3600), offset)


def _day_number(s: Snap, zone: ZoneInfo) -> Hashable:
    return _local(s, zone).date().toordinal()


def _week_number(s: Snap, zone: ZoneInfo) -> Hashable:
    # 0001-01-01 is a Monday with ordinal 1, so these are the ISO weeks, Monday to Sunday.
    return (_local(s, zone).date().toordinal() - 1) // 7


def _month_number(s: Snap, zone: ZoneInfo) -> Hashable:
    local = _local(s, zone)
    return local.year * 12 + local.month


def _year_number(s: Snap, zone: ZoneInfo) -> Hashable:
    return _local(s, zone).year


PERIODS: dict[str, tuple[str, Callable[[Snap, ZoneInfo], Hashable]]] = {
    "hourly": ("keep_hourly", _hour_number),
    "daily": ("keep_daily", _day_number),
    "weekly": ("keep_weekly", _week_number),
    "monthly": ("keep_monthly", _month_number),
    "yearly": ("keep_yearly", _year_number),
}


def _reference_cutoff(newest: Snap, duration: Duration, zone: ZoneInfo) -> datetime | None:
    """The oldest time keep_within keeps, stepping the calendar back one month at a time."""
    wall = newest.time.astimezone(zone).replace(tzinfo=None)
    year, month = wall.year, wall.month
    for _ in range(duration.years * 12 + duration.months):
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    if year < 1:
        return None
    first_of_next = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    day = min(wall.day, (first_of_next - timedelta(days=1)).day)
    ordinal = date(year, month, day).toordinal() - 7 * duration.weeks - duration.days
    if ordinal < 1:
        return None
    back = datetime.combine(date.fromordinal(ordinal), wall.time()).replace(tzinfo=zone)
    return datetime.fromtimestamp(back.timestamp() - 3600 * duration.hours, UTC)


def reference(policy: RetentionPolicy, snaps: list[Snap]) -> dict[str, set[str]]:
    """Snapshot id -> names of the rules keeping it; forgotten snapshots are absent."""
    zone = ZoneInfo(policy.time_zone)
    kept: dict[str, set[str]] = {}
    for source in {s.source for s in snaps}:
        group = [s for s in snaps if s.source == source]
        if policy.is_empty:
            kept.update({s.id: {"empty"} for s in group})
            continue
        rules: dict[str, set[str]] = {s.id: set() for s in group}
        for s in group:
            newer = [t for t in group if _order(t) > _order(s)]
            if len(newer) < policy.keep_last:
                rules[s.id].add("last")
            for name, (field, number) in PERIODS.items():
                count = getattr(policy, field)
                mine = number(s, zone)
                if not count or any(number(t, zone) == mine for t in newer):
                    continue
                if len({number(t, zone) for t in newer}) < count:
                    rules[s.id].add(name)
            if policy.keep_within is not None:
                newest = max(group, key=_order)
                cutoff = _reference_cutoff(newest, Duration.parse(policy.keep_within), zone)
                if cutoff is None or s.time >= cutoff:
                    rules[s.id].add("within")
            if s.tags & policy.keep_tags:
                rules[s.id].add("tag")
        newest_id = max(group, key=_order).id
        if not rules[newest_id]:
            rules[newest_id].add("newest")
        kept.update({i: names for i, names in rules.items() if names})
    return kept


def rule_names(reasons: tuple[str, ...]) -> set[str]:
    """The rule each reason string of the module names, in the reference's vocabulary."""
    names = set()
    for reason in reasons:
        word = reason.split(":")[0].split(" ")[0]
        names.add({"tag": "tag", "newest": "newest", "empty": "empty"}.get(word, word))
    return names


# ------------------------------------------------------------------ strategies

TRICKY_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute DST shift
    "Asia/Kolkata",  # +05:30
    "Asia/Kathmandu",  # +05:45
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/St_Johns",  # -03:30 with DST
    "Pacific/Apia",  # skipped 2011-12-30 entirely
    "Australia/Sydney",  # southern-hemisphere DST
]
zones = st.one_of(st.sampled_from(TRICKY_ZONES), st.timezone_keys())


def transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    """The instants in ``year`` where ``zone``'s UTC offset changes, to the second."""
    found = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    while day.year == year:
        low, high = day, day + timedelta(days=1)
        if low.astimezone(zone).utcoffset() != high.astimezone(zone).utcoffset():
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                if middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset():
                    low = middle
                else:
                    high = middle
            found.append(high.replace(microsecond=0))
        day += timedelta(days=1)
    return found


@st.composite
def anchors(draw: st.DrawFn, zone: ZoneInfo) -> datetime:
    """Where a history starts: anywhere, or just before a place where rules are easy to get
    wrong in ``zone``: a DST change, a new year (ISO weeks), a month's end."""
    year = draw(st.integers(1975, 2050))
    kind = draw(st.sampled_from(["anywhere", "transition", "new year", "month end"]))
    before = draw(st.integers(0, 3 * 86400).map(lambda n: timedelta(seconds=n)))
    if kind == "transition":
        changes = transitions(zone, year)
        if changes:
            return draw(st.sampled_from(changes)) - before / 18  # up to 4 hours before
    if kind == "new year":
        return datetime(year + 1, 1, 1, tzinfo=zone).astimezone(UTC) - 4 * before
    if kind == "month end":
        month = draw(st.integers(2, 12))
        return datetime(year, month, 1, tzinfo=zone).astimezone(UTC) - before
    return draw(st.datetimes(datetime(1975, 1, 1), datetime(2055, 1, 1), timezones=st.just(UTC)))


gaps = st.one_of(
    st.just(timedelta(0)),  # ties
    st.sampled_from([timedelta(hours=1), timedelta(days=1), timedelta(weeks=1)]),  # exact
    st.integers(1, 3600).map(lambda n: timedelta(seconds=n)),
    st.integers(1, 72).map(lambda n: timedelta(hours=n)),
    st.integers(1, 90).map(lambda n: timedelta(days=n)),
    st.integers(1, 3).map(lambda n: timedelta(days=365 * n)),
)
# Each snapshot's time is given in some representation: the rules must not care.
representations = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), ZoneInfo("America/Los_Angeles")]
)


@st.composite
def histories(draw: st.DrawFn, zone: ZoneInfo, max_size: int = 40) -> list[Snap]:
    # Dense histories (backups minutes apart) stress hours and DST changes; mixed ones, the rest.
    dense = st.one_of(
        st.just(timedelta(0)), st.integers(1, 2400).map(lambda n: timedelta(seconds=n))
    )
    steps = draw(st.lists(draw(st.sampled_from([gaps, dense])), min_size=4, max_size=max_size))
    times = [draw(anchors(zone))]
    for step in steps:
        times.append(times[-1] + step)
    ids = draw(st.permutations([f"{n:02x}" for n in range(len(times))]))
    snaps = [
        Snap(
            id=snap_id,
            time=moment.astimezone(draw(representations)),
            source=draw(st.sampled_from(["db", "db", "db", "web"])),
            tags=frozenset(draw(st.sets(st.sampled_from(["x", "y", "z", "z", "z"]), max_size=1))),
        )
        for snap_id, moment in zip(ids, times, strict=True)
    ]
    return draw(st.permutations(snaps))


# Mostly off, so that most examples forget something.
counts = st.sampled_from([0, 0, 0, 0, 1, 2, 3, 5])
durations = st.one_of(
    st.sampled_from([Duration(hours=1), Duration(days=1), Duration(weeks=1), Duration(months=1)]),
    st.builds(
        Duration,
        years=st.integers(0, 2),
        months=st.integers(0, 14),
        weeks=st.integers(0, 3),
        days=st.integers(0, 40),
        hours=st.integers(0, 72),
    ),
).filter(lambda d: d != Duration())


@st.composite
def policies(draw: st.DrawFn, zone: str) -> RetentionPolicy:
    within = draw(st.one_of(st.none(), st.none(), st.none(), durations))
    return RetentionPolicy(
        keep_last=draw(counts),
        keep_hourly=draw(counts),
        keep_daily=draw(counts),
        keep_weekly=draw(counts),
        keep_monthly=draw(counts),
        keep_yearly=draw(counts),
        keep_within=None if within is None else str(within),
        keep_tags=frozenset(draw(st.sets(st.sampled_from(["x", "q"]), max_size=1))),
        time_zone=zone,
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[RetentionPolicy, list[Snap]]:
    """A policy and a history drawn around the tricky instants of the policy's zone."""
    zone = draw(zones)
    return draw(policies(zone)), draw(histories(ZoneInfo(zone)))


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def kept_ids(policy: RetentionPolicy, snaps: list[Snap]) -> set[str]:
    return {d.snapshot.id for d in apply_policy(policy, snaps) if d.keep}


# ------------------------------------------------------------------ the properties


@SETTINGS
@given(cases())
def test_decisions_equal_the_reference(case: tuple[RetentionPolicy, list[Snap]]) -> None:
    policy, snaps = case
    decisions = apply_policy(policy, snaps)
    assert [d.snapshot for d in decisions] == snaps  # one each, in input order
    got = {d.snapshot.id: rule_names(d.reasons) for d in decisions if d.keep}
    assert got == reference(policy, snaps)
    for decision in decisions:
        assert decision.reasons, f"{decision.snapshot.id} has no reason"


@SETTINGS
@given(cases())
def test_newest_of_every_source_is_kept(case: tuple[RetentionPolicy, list[Snap]]) -> None:
    policy, snaps = case
    kept = kept_ids(policy, snaps)
    for source in {s.source for s in snaps}:
        newest = max((s for s in snaps if s.source == source), key=lambda s: (s.time, s.id))
        assert newest.id in kept


@SETTINGS
@given(cases(), policies("UTC"))
def test_adding_rules_never_forgets_more(
    case: tuple[RetentionPolicy, list[Snap]], extra: RetentionPolicy
) -> None:
    """The union of two non-empty policies (each count the larger) keeps a superset of each."""
    policy, snaps = case
    within = [Duration.parse(p.keep_within) for p in (policy, extra) if p.keep_within]
    combined = RetentionPolicy(
        keep_last=max(policy.keep_last, extra.keep_last),
        keep_hourly=max(policy.keep_hourly, extra.keep_hourly),
        keep_daily=max(policy.keep_daily, extra.keep_daily),
        keep_weekly=max(policy.keep_weekly, extra.keep_weekly),
        keep_monthly=max(policy.keep_monthly, extra.keep_monthly),
        keep_yearly=max(policy.keep_yearly, extra.keep_yearly),
        # Only when both agree or one is unset is "more" well defined for keep_within.
        keep_within=policy.keep_within or extra.keep_within,
        keep_tags=policy.keep_tags | extra.keep_tags,
        time_zone=policy.time_zone,
    )
    if policy.is_empty or (len(within) == 2 and within[0] != within[1]):
        return
    assert kept_ids(policy, snaps) <= kept_ids(combined, snaps)


@SETTINGS
@given(cases(), st.randoms(use_true_random=False))
def test_sources_are_independent_and_order_does_not_matter(
    case: tuple[RetentionPolicy, list[Snap]], rnd: random.Random
) -> None:
    policy, snaps = case
    together = {d.snapshot.id: d for d in apply_policy(policy, snaps)}
    shuffled = list(snaps)
    rnd.shuffle(shuffled)
    assert {d.snapshot.id: d for d in apply_policy(policy, shuffled)} == together
    for source in {s.source for s in snaps}:
        alone = apply_policy(policy, [s for s in snaps if s.source == source])
        assert all(together[d.snapshot.id] == d for d in alone)
