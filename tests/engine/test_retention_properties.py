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

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safehold.engine.retention import Duration, RetentionPolicy, apply_policy


@dataclass(frozen=True)
class Snap:
    id: str
    time: datetime
    source: str
    tags: frozenset[str]
    host: str | None = None


# ------------------------------------------------------------------ the reference


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _order(s: Snap) -> tuple[int, str]:
    # Microseconds since the epoch, exactly, then id: the newest is the largest.
    return ((s.time - EPOCH) // timedelta(microseconds=1), s.id)


def _local(s: Snap, zone: ZoneInfo) -> datetime:
    return s.time.astimezone(zone)


def _hour_number(s: Snap, zone: ZoneInfo) -> Hashable:
    offset = _local(s, zone).utcoffset()
    assert offset is not None
    return ((s.time - EPOCH + offset) // timedelta(hours=1), offset)


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
    """The oldest time keep_within keeps, stepping the calendar back one month at a time.

    Calendar units move the wall clock, and the wall time reached is read at its first
    occurrence (fold 0); hours and minutes are then elapsed time. With no calendar unit the
    wall clock is not involved at all.
    """
    hours = timedelta(microseconds=60 * 10**6 * (60 * duration.hours + duration.minutes))
    if duration.years == duration.months == duration.weeks == duration.days == 0:
        return EPOCH + ((newest.time - EPOCH) - hours)
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
    clock = wall.time().replace(fold=0)
    back = datetime.combine(date.fromordinal(ordinal), clock).replace(tzinfo=zone)
    return EPOCH + ((back - EPOCH) - hours)


def reference(policy: RetentionPolicy, snaps: list[Snap]) -> dict[str, set[str]]:
    """Snapshot id -> names of the rules keeping it; forgotten snapshots are absent."""
    zone = ZoneInfo(policy.time_zone)
    kept: dict[str, set[str]] = {}
    for source in {s.source for s in snaps}:
        group = [s for s in snaps if s.source == source]
        counts = [getattr(policy, field) for field, _ in PERIODS.values()] + [policy.keep_last]
        if not any(counts) and policy.keep_within is None and not policy.keep_tags:
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
    # "daily 2026-11-25" -> daily, "tag:audit" -> tag, "tags: has none of x" -> tags
    return {reason.split(":")[0].split(" ")[0] for reason in reasons}


def active_rules(policy: RetentionPolicy) -> set[str]:
    names = {name for name, (field, _) in PERIODS.items() if getattr(policy, field)}
    names |= {"last"} if policy.keep_last else set()
    names |= {"within"} if policy.keep_within else set()
    return names | ({"tags"} if policy.keep_tags else set())


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


def seconds(low: float, high: float) -> st.SearchStrategy[timedelta]:
    return st.floats(low, high).map(lambda n: timedelta(seconds=n))


HOUR, DAY = 3600.0, 86400.0
TIES = st.just(timedelta(0))
EXACT = st.sampled_from([timedelta(hours=1), timedelta(days=1), timedelta(weeks=1)])


@dataclass(frozen=True)
class Scenario:
    """A kind of history and the rules that are easy to get wrong on it.

    Drawing the zone, the newest time, the spacing of backups and the rules together
    makes the rare coincidences (a backup in the hour a DST change repeats while an
    hourly rule is on; keep_within counting back from 31 March) common.
    """

    rules: tuple[str, ...]
    gaps: st.SearchStrategy[timedelta]
    durations: st.SearchStrategy[Duration]


SCENARIOS = {
    # Anywhere in 80 years, any rules, gaps from seconds to years.
    "anywhere": Scenario(
        ("last", "hourly", "daily", "weekly", "monthly", "yearly", "within", "tags"),
        st.one_of(
            TIES,
            EXACT,
            seconds(1, HOUR),
            seconds(1, 3 * DAY),
            seconds(1, 90 * DAY),
            st.integers(1, 3).map(lambda n: timedelta(days=365 * n)),
        ),
        st.builds(
            Duration,
            years=st.integers(0, 2),
            months=st.integers(0, 14),
            weeks=st.integers(0, 3),
            days=st.integers(0, 40),
            hours=st.integers(0, 72),
            minutes=st.integers(0, 90),
        ),
    ),
    # Newest backup within hours of an offset change, or a day after one; backups minutes
    # apart: repeated and skipped hours, 23/25-hour days, keep_within over the change.
    "offset change": Scenario(
        ("last", "hourly", "hourly", "daily", "within", "within", "within"),
        st.one_of(TIES, seconds(1, 20 * 60), seconds(1, 20 * 60), seconds(1, 3 * HOUR)),
        st.one_of(
            st.builds(Duration, hours=st.integers(1, 30)),
            st.builds(Duration, minutes=st.integers(1, 180)),
            st.just(Duration(days=1)),
            st.builds(Duration, days=st.integers(1, 2), hours=st.integers(0, 3)),
        ),
    ),
    # Newest backup around a new year: ISO weeks spanning it, week-years, years.
    "new year": Scenario(
        ("last", "daily", "weekly", "monthly", "yearly"),
        st.one_of(TIES, seconds(1, 12 * HOUR), seconds(1, 3 * DAY)),
        st.just(Duration(days=1)),
    ),
    # Newest backup on the 28th to 31st: keep_within in months clamps to shorter months.
    "month end": Scenario(
        ("monthly", "daily", "within"),
        st.one_of(TIES, EXACT, seconds(1, DAY), seconds(1, 10 * DAY)),
        st.builds(
            Duration,
            years=st.integers(0, 1),
            months=st.integers(1, 13),
            hours=st.sampled_from([0, 0, 1, 5]),
        ),
    ),
}


@st.composite
def newest_time(draw: st.DrawFn, kind: str, zone: ZoneInfo) -> datetime:
    year = draw(st.integers(1975, 2050))
    hours = timedelta(hours=draw(st.floats(-4, 4)))
    if kind == "offset change":
        later = draw(st.sampled_from([timedelta(0), timedelta(days=1)]))
        for year_tried in (year, *range(2000, 2030)):  # most zones change in some year
            changes = transitions(zone, year_tried)
            if changes:
                return draw(st.sampled_from(changes)) + later + hours
    if kind == "new year":
        return datetime(year + 1, 1, 1, tzinfo=zone).astimezone(UTC) + 24 * hours
    if kind == "month end":
        month = draw(st.integers(2, 12))
        return datetime(year, month, 1, tzinfo=zone).astimezone(UTC) - 18 * abs(hours)
    return draw(st.datetimes(datetime(1975, 1, 1), datetime(2055, 1, 1), timezones=st.just(UTC)))


# Each snapshot's time is given in some representation: the rules must not care.
representations = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), ZoneInfo("America/Los_Angeles")]
)


@st.composite
def histories(draw: st.DrawFn, newest: datetime, gaps: st.SearchStrategy[timedelta]) -> list[Snap]:
    """Snapshots back in time from ``newest``, some tagged, of mostly one source."""
    times = [newest]
    for step in draw(st.lists(gaps, min_size=3, max_size=40)):
        times.append(times[-1] - step)
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


@st.composite
def policies(
    draw: st.DrawFn, zone: str, scenario: Scenario, forced: str | None = None
) -> RetentionPolicy:
    """A policy with one to three of the scenario's rules on (now and then none)."""
    size = draw(st.sampled_from([0, 1, 1, 1, 2, 3]))
    on = draw(st.sets(st.sampled_from(scenario.rules), min_size=size, max_size=size))
    on |= {forced} if forced else set()
    counts = {
        f"keep_{rule}": draw(st.sampled_from([1, 1, 2, 3, 5]))
        for rule in on
        if rule not in ("within", "tags")
    }
    tags = draw(st.sets(st.sampled_from(["x", "q"]), min_size=1)) if "tags" in on else set()
    return RetentionPolicy(
        **counts,
        keep_within=str(draw(scenario.durations.filter(lambda d: d != Duration())))
        if "within" in on
        else None,
        keep_tags=frozenset(tags),
        time_zone=zone,
    )


@st.composite
def cases(
    draw: st.DrawFn, kind: str | None = None, forced: str | None = None
) -> tuple[RetentionPolicy, list[Snap]]:
    """A policy and a history drawn for a scenario (any, or ``kind``), ``forced`` rule on."""
    kind = kind or draw(st.sampled_from(sorted(SCENARIOS)))
    scenario = SCENARIOS[kind]
    zone = draw(st.sampled_from(TRICKY_ZONES[1:]) if kind == "offset change" else zones)
    newest = draw(newest_time(kind, ZoneInfo(zone)))
    return draw(policies(zone, scenario, forced)), draw(histories(newest, scenario.gaps))


# The comparison with the reference gets the most examples; the invariants, fewer.
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INVARIANT = settings(SETTINGS, max_examples=150)


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
    active = active_rules(policy)
    for decision in decisions:
        if not decision.keep:  # a forgotten snapshot says why, for each rule of the policy
            assert rule_names(decision.reasons) == active, decision


@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        ("offset change", "hourly"),
        ("offset change", "within"),
        ("offset change", "daily"),
        ("new year", "weekly"),
        ("month end", "within"),
    ],
)
@settings(SETTINGS, max_examples=120)
@given(data=st.data())
def test_the_tricky_cases_equal_the_reference(kind: str, rule: str, data: st.DataObject) -> None:
    """The same comparison, each time with the rule that the scenario is hard for."""
    policy, snaps = data.draw(cases(kind, rule))
    got = {d.snapshot.id: rule_names(d.reasons) for d in apply_policy(policy, snaps) if d.keep}
    assert got == reference(policy, snaps)


@INVARIANT
@given(cases())
def test_newest_of_every_source_is_kept(case: tuple[RetentionPolicy, list[Snap]]) -> None:
    policy, snaps = case
    kept = kept_ids(policy, snaps)
    for source in {s.source for s in snaps}:
        newest = max((s for s in snaps if s.source == source), key=_order)
        assert newest.id in kept


@INVARIANT
@given(cases(), policies("UTC", SCENARIOS["anywhere"]))
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


@INVARIANT
@given(cases())
def test_forgetting_twice_forgets_nothing_more(case: tuple[RetentionPolicy, list[Snap]]) -> None:
    """A second run (a retried job, another site holding the same snapshots) keeps all."""
    policy, snaps = case
    kept = [d.snapshot for d in apply_policy(policy, snaps) if d.keep]
    assert all(d.keep for d in apply_policy(policy, kept))


@INVARIANT
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
