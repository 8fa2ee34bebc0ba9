"""Unit tests of each retention rule, the time-zone and ISO-week edges, and the safety rules.

Each test builds a small history by hand and asserts what a person reading a
``forget --dry-run`` would check: which snapshots stay, and the reasons shown.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from safehold.engine.retention import (
    EMPTY_POLICY_REASON,
    NEWEST_REASON,
    NO_POLICY_REASON,
    Decision,
    Duration,
    RetentionInputError,
    RetentionPolicy,
    SnapshotFacts,
    apply_policies,
    apply_policy,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


@dataclass(frozen=True)
class Snap:
    id: str
    time: datetime
    source: str = "db"
    tags: frozenset[str] = frozenset()
    host: str | None = None


def snaps_at(*times: str, source: str = "db") -> list[Snap]:
    """Snapshots named s0, s1, ... at the given ISO times (which carry their offset)."""
    return [Snap(f"s{i}", datetime.fromisoformat(t), source) for i, t in enumerate(times)]


def kept(policy: RetentionPolicy, snaps: list[Snap]) -> dict[str, tuple[str, ...]]:
    """Id -> reasons, for the snapshots the policy keeps."""
    return {d.snapshot.id: d.reasons for d in apply_policy(policy, snaps) if d.keep}


def decision(policy: RetentionPolicy, snaps: list[Snap], snap_id: str) -> Decision[Snap]:
    return next(d for d in apply_policy(policy, snaps) if d.snapshot.id == snap_id)


# ------------------------------------------------------------------ keep_last


def test_keep_last_keeps_the_newest_n() -> None:
    snaps = snaps_at("2026-11-20T10:00Z", "2026-11-22T10:00Z", "2026-11-21T10:00Z")
    assert kept(RetentionPolicy(keep_last=2), snaps) == {
        "s1": ("last 2",),
        "s2": ("last 2",),
    }
    gone = decision(RetentionPolicy(keep_last=2), snaps, "s0")
    assert not gone.keep
    assert gone.reasons == ("last 2: not among the 2 newest",)


def test_ties_in_time_are_broken_by_id_whatever_the_input_order() -> None:
    moment = datetime(2026, 11, 25, 12, tzinfo=UTC)
    snaps = [Snap("b", moment), Snap("c", moment), Snap("a", moment)]
    policy = RetentionPolicy(keep_last=1)
    assert kept(policy, snaps) == {"c": ("last 1",)}
    assert kept(policy, list(reversed(snaps))) == {"c": ("last 1",)}
    # The same tie within a day: the greater id stands for the day.
    assert kept(RetentionPolicy(keep_daily=1), snaps) == {"c": ("daily 2026-11-25",)}


def test_decisions_come_in_input_order_one_per_snapshot() -> None:
    snaps = snaps_at("2026-11-22T10:00Z", "2026-11-20T10:00Z", "2026-11-21T10:00Z")
    decisions = apply_policy(RetentionPolicy(keep_last=1), snaps)
    assert [d.snapshot for d in decisions] == snaps
    assert [d.keep for d in decisions] == [True, False, False]


# ------------------------------------------------------------------ periods


def test_keep_daily_keeps_the_newest_of_each_day_and_skips_days_without_backups() -> None:
    snaps = snaps_at(
        "2026-11-25T22:00Z",
        "2026-11-25T08:00Z",
        # 2026-11-24 and 2026-11-23 have no backup: they use up no slot.
        "2026-11-22T18:00Z",
        "2026-11-22T06:00Z",
        "2026-11-21T12:00Z",
    )
    assert kept(RetentionPolicy(keep_daily=2), snaps) == {
        "s0": ("daily 2026-11-25",),
        "s2": ("daily 2026-11-22",),
    }
    policy = RetentionPolicy(keep_daily=2)
    assert decision(policy, snaps, "s1").reasons == (
        "daily 2026-11-25: the newer s0 stands for it",
    )
    assert decision(policy, snaps, "s4").reasons == (
        "daily 2026-11-21: older than the 2 newest days with a snapshot",
    )


def test_days_are_counted_in_the_policy_time_zone() -> None:
    # 23:30 UTC on the 24th is already the 25th in Berlin, and still the 24th in New York.
    snaps = snaps_at("2026-11-24T23:30Z", "2026-11-24T20:00Z")
    assert kept(RetentionPolicy(keep_daily=2, time_zone="Europe/Berlin"), snaps) == {
        "s0": ("daily 2026-11-25",),
        "s1": ("daily 2026-11-24",),
    }
    assert kept(RetentionPolicy(keep_daily=2, time_zone="America/New_York"), snaps) == {
        "s0": ("daily 2026-11-24",),
    }


def test_a_dst_day_of_23_or_25_hours_is_one_day() -> None:
    # Berlin springs forward on 2026-03-29 (23 h) and falls back on 2026-10-25 (25 h).
    for day in (datetime(2026, 3, 29, tzinfo=BERLIN), datetime(2026, 10, 25, tzinfo=BERLIN)):
        start = day.astimezone(UTC)
        end = (day + timedelta(days=1)).astimezone(UTC)
        hours = int((end - start) / timedelta(hours=1))
        assert hours in (23, 25)
        snaps = [Snap(f"h{n:02d}", start + timedelta(hours=n)) for n in range(hours)]
        snaps.append(Snap("next", end))
        snaps.append(Snap("prev", start - timedelta(seconds=1)))
        result = kept(RetentionPolicy(keep_daily=3, time_zone="Europe/Berlin"), snaps)
        assert set(result) == {"next", f"h{hours - 1:02d}", "prev"}, day


def test_an_hour_repeated_by_dst_is_two_hourly_periods() -> None:
    # New York falls back on 2026-11-01: 01:00-01:59 happens at -04:00, then at -05:00.
    snaps = [
        Snap("edt-0105", datetime(2026, 11, 1, 1, 5, tzinfo=NEW_YORK, fold=0)),
        Snap("edt-0150", datetime(2026, 11, 1, 1, 50, tzinfo=NEW_YORK, fold=0)),
        Snap("est-0110", datetime(2026, 11, 1, 1, 10, tzinfo=NEW_YORK, fold=1)),
        Snap("est-0140", datetime(2026, 11, 1, 1, 40, tzinfo=NEW_YORK, fold=1)),
        Snap("est-0210", datetime(2026, 11, 1, 2, 10, tzinfo=NEW_YORK)),
    ]
    assert kept(RetentionPolicy(keep_hourly=10, time_zone="America/New_York"), snaps) == {
        "est-0210": ("hourly 2026-11-01T02:00-05:00",),
        "est-0140": ("hourly 2026-11-01T01:00-05:00",),
        "edt-0150": ("hourly 2026-11-01T01:00-04:00",),
    }


def test_an_offset_change_in_the_middle_of_an_hour_splits_only_that_hour() -> None:
    # Lord Howe Island falls back half an hour on 2026-04-05: 02:00 (+11:00) becomes
    # 01:30 (+10:30), so 01:30-01:59 happens twice. 01:50 the second time is in the hour
    # 01:00+10:30, not in 01:00+11:00 (which a re-lookup of the offset of 01:00 gives).
    howe = ZoneInfo("Australia/Lord_Howe")
    snaps = [
        Snap("first-0140", datetime(2026, 4, 5, 1, 40, tzinfo=howe, fold=0)),
        Snap("second-0150", datetime(2026, 4, 5, 1, 50, tzinfo=howe, fold=1)),
    ]
    assert snaps[1].time.astimezone(UTC) - snaps[0].time.astimezone(UTC) == timedelta(minutes=40)
    assert kept(RetentionPolicy(keep_hourly=2, time_zone="Australia/Lord_Howe"), snaps) == {
        "second-0150": ("hourly 2026-04-05T01:00+10:30",),
        "first-0140": ("hourly 2026-04-05T01:00+11:00",),
    }


def test_an_hour_skipped_by_dst_uses_no_slot() -> None:
    # New York springs forward on 2026-03-08: 01:59:59 EST is followed by 03:00 EDT.
    snaps = [
        Snap("0130", datetime(2026, 3, 8, 1, 30, tzinfo=NEW_YORK)),
        Snap("0330", datetime(2026, 3, 8, 3, 30, tzinfo=NEW_YORK)),
        Snap("0430", datetime(2026, 3, 8, 4, 30, tzinfo=NEW_YORK)),
    ]
    assert kept(RetentionPolicy(keep_hourly=2, time_zone="America/New_York"), snaps) == {
        "0430": ("hourly 2026-03-08T04:00-04:00",),
        "0330": ("hourly 2026-03-08T03:00-04:00",),
    }


def test_half_hour_offsets_shift_the_hours() -> None:
    # In Kolkata (+05:30) 10:20 and 10:40 UTC are 15:50 and 16:10: two hours, not one.
    snaps = snaps_at("2026-11-25T10:20Z", "2026-11-25T10:40Z")
    assert set(kept(RetentionPolicy(keep_hourly=5, time_zone="Asia/Kolkata"), snaps)) == {
        "s0",
        "s1",
    }
    assert set(kept(RetentionPolicy(keep_hourly=5), snaps)) == {"s1"}


def test_iso_weeks_span_the_new_year() -> None:
    # 2026-12-28 (Monday) to 2027-01-03 (Sunday) is ISO week 2026-W53.
    snaps = snaps_at(
        "2027-01-04T09:00+00:00",  # Monday: 2027-W01
        "2027-01-03T09:00+00:00",  # Sunday: 2026-W53
        "2026-12-29T09:00+00:00",  # Tuesday: 2026-W53
        "2026-12-27T09:00+00:00",  # Sunday: 2026-W52
    )
    assert kept(RetentionPolicy(keep_weekly=3), snaps) == {
        "s0": ("weekly 2027-W01",),
        "s1": ("weekly 2026-W53",),
        "s3": ("weekly 2026-W52",),
    }
    # 2024-12-30 is a Monday that already belongs to 2025-W01.
    assert kept(RetentionPolicy(keep_weekly=1), snaps_at("2024-12-30T12:00Z")) == {
        "s0": ("weekly 2025-W01",),
    }


def test_weeks_turn_on_monday_midnight_in_the_policy_zone() -> None:
    # Sunday 23:30 in New York is Monday 04:30 UTC: a different ISO week in each zone.
    snaps = snaps_at("2026-11-30T04:30Z", "2026-11-29T12:00Z")
    assert set(kept(RetentionPolicy(keep_weekly=2), snaps)) == {"s0", "s1"}
    assert kept(RetentionPolicy(keep_weekly=2, time_zone="America/New_York"), snaps) == {
        "s0": ("weekly 2026-W48",),
    }


def test_keep_monthly_and_yearly() -> None:
    snaps = snaps_at(
        "2026-11-25T12:00Z",
        "2026-11-01T12:00Z",
        "2026-09-30T12:00Z",
        "2025-12-31T12:00Z",
        "2025-06-01T12:00Z",
        "2023-02-01T12:00Z",
    )
    assert kept(RetentionPolicy(keep_monthly=3), snaps) == {
        "s0": ("monthly 2026-11",),
        "s2": ("monthly 2026-09",),
        "s3": ("monthly 2025-12",),
    }
    assert kept(RetentionPolicy(keep_yearly=5), snaps) == {
        "s0": ("yearly 2026",),
        "s3": ("yearly 2025",),
        "s5": ("yearly 2023",),
    }


def test_every_rule_that_keeps_a_snapshot_is_named() -> None:
    snaps = [
        Snap("a", datetime(2026, 11, 25, 23, tzinfo=UTC), tags=frozenset({"audit", "x"})),
        Snap("b", datetime(2026, 11, 25, 8, tzinfo=UTC)),
    ]
    policy = RetentionPolicy(
        keep_last=1,
        keep_hourly=1,
        keep_daily=1,
        keep_weekly=1,
        keep_monthly=1,
        keep_yearly=1,
        keep_within="1h",
        keep_tags=frozenset({"audit", "other"}),
    )
    assert kept(policy, snaps) == {
        "a": (
            "last 1",
            "hourly 2026-11-25T23:00+00:00",
            "daily 2026-11-25",
            "weekly 2026-W48",
            "monthly 2026-11",
            "yearly 2026",
            "within 1h",
            "tag:audit",
        )
    }


# ------------------------------------------------------------------ keep_within


def test_keep_within_counts_back_from_the_newest_snapshot_not_from_now() -> None:
    # Backups stopped in 2020: "within 30d" still keeps the last month of them.
    snaps = snaps_at("2020-05-31T12:00Z", "2020-05-01T12:00Z", "2020-05-01T11:59:59Z")
    assert kept(RetentionPolicy(keep_within="30d"), snaps) == {
        "s0": ("within 30d",),
        "s1": ("within 30d",),  # exactly 30 days older: the boundary is kept
    }
    assert decision(RetentionPolicy(keep_within="30d"), snaps, "s2").reasons == (
        "within 30d: older than 2020-05-01T12:00:00+00:00",
    )


def test_keep_within_months_clamp_to_the_end_of_a_shorter_month() -> None:
    snaps = snaps_at("2026-03-31T12:00Z", "2026-02-28T12:00Z", "2026-02-28T11:00Z")
    assert set(kept(RetentionPolicy(keep_within="1mo"), snaps)) == {"s0", "s1"}
    # 1y6m back from 2026-03-31 is 2024-09-30.
    snaps = snaps_at("2026-03-31T12:00Z", "2024-09-30T12:00Z", "2024-09-30T11:00Z")
    assert set(kept(RetentionPolicy(keep_within="1y6mo"), snaps)) == {"s0", "s1"}


def test_keep_within_days_follow_the_wall_clock_across_dst_and_hours_do_not() -> None:
    # From 12:00 on 2026-03-29 in Berlin (after spring forward), 1d back is 12:00 on the
    # 28th, which is 23 real hours earlier; 24h back is 11:00 on the 28th.
    newest = Snap("new", datetime(2026, 3, 29, 12, tzinfo=BERLIN))
    at_1130 = Snap("old", datetime(2026, 3, 28, 11, 30, tzinfo=BERLIN))
    berlin = "Europe/Berlin"
    assert set(kept(RetentionPolicy(keep_within="1d", time_zone=berlin), [newest, at_1130])) == {
        "new"
    }
    assert set(kept(RetentionPolicy(keep_within="24h", time_zone=berlin), [newest, at_1130])) == {
        "new",
        "old",
    }


def test_keep_within_resolves_a_repeated_wall_time_to_its_first_occurrence() -> None:
    # 1d before 01:30 EST on 2026-11-02... is 01:30 on 11-01, which happens twice: the
    # earlier (EDT) instant is the cutoff, so both 01:30s of that night are kept.
    newest = Snap("new", datetime(2026, 11, 2, 1, 30, tzinfo=NEW_YORK))
    first = Snap("edt", datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=0))
    second = Snap("est", datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=1))
    before = Snap("before", datetime(2026, 11, 1, 1, 29, tzinfo=NEW_YORK, fold=0))
    policy = RetentionPolicy(keep_within="1d", time_zone="America/New_York")
    assert set(kept(policy, [newest, first, second, before])) == {"new", "edt", "est"}


def test_a_keep_within_longer_than_history_keeps_everything() -> None:
    snaps = snaps_at("0002-01-01T00:00Z", "2026-11-25T00:00Z")
    assert set(kept(RetentionPolicy(keep_within="3000y"), snaps)) == {"s0", "s1"}
    assert set(kept(RetentionPolicy(keep_within="999999d"), snaps)) == {"s0", "s1"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", Duration(days=30)),
        ("2w", Duration(weeks=2)),
        ("1y6mo", Duration(years=1, months=6)),
        ("12h", Duration(hours=12)),
        ("90min", Duration(minutes=90)),
        ("1y2mo3w4d5h6min", Duration(1, 2, 3, 4, 5, 6)),
        (" 7d ", Duration(days=7)),
    ],
)
def test_durations_parse_and_print_back(text: str, expected: Duration) -> None:
    assert Duration.parse(text) == expected
    assert Duration.parse(str(expected)) == expected


@pytest.mark.parametrize(
    "text",
    ["", "30", "d", "1mo1y", "3d3d", "30x", "-1d", "1.5d", "0d", "1d 2h", "1min2h", "1000000d"],
)
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=r"'30d'|positive duration") as caught:
        Duration.parse(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(("text", "number"), [("6m", "6"), ("1y6m", "6"), ("90m", "90")])
def test_a_bare_m_is_refused_as_ambiguous(text: str, number: str) -> None:
    """restic reads ``6m`` as months, Kubernetes as minutes: either reading of the other's
    forgets backups, so a span says ``mo`` or ``min``."""
    with pytest.raises(ValueError, match="ambiguous") as caught:
        Duration.parse(text)
    assert f"'{number}mo' for months or '{number}min' for minutes" in str(caught.value)


# ------------------------------------------------------------------ keep_tags


def test_keep_tags_keeps_snapshots_with_any_listed_tag() -> None:
    snaps = [
        Snap("new", datetime(2026, 11, 25, tzinfo=UTC), tags=frozenset({"audit"})),
        Snap("both", datetime(2026, 11, 24, tzinfo=UTC), tags=frozenset({"audit", "legal"})),
        Snap("other", datetime(2026, 11, 23, tzinfo=UTC), tags=frozenset({"manual"})),
        Snap("none", datetime(2026, 11, 22, tzinfo=UTC)),
    ]
    policy = RetentionPolicy(keep_tags=frozenset({"legal", "audit"}))
    assert kept(policy, snaps) == {
        "new": ("tag:audit",),
        "both": ("tag:audit", "tag:legal"),
    }
    assert decision(policy, snaps, "other").reasons == ("tags: has none of audit, legal",)


# ------------------------------------------------------------------ safety and sources


def test_an_empty_policy_keeps_everything() -> None:
    snaps = snaps_at("2026-11-25T00:00Z", "2000-01-01T00:00Z")
    for policy in (RetentionPolicy(), RetentionPolicy(keep_last=0, keep_daily=0)):
        assert policy.is_empty
        assert kept(policy, snaps) == {"s0": (EMPTY_POLICY_REASON,), "s1": (EMPTY_POLICY_REASON,)}


def test_the_newest_snapshot_survives_a_policy_that_keeps_none_of_it() -> None:
    snaps = [
        Snap("untagged-newest", datetime(2026, 11, 25, tzinfo=UTC)),
        Snap("tagged", datetime(2026, 11, 1, tzinfo=UTC), tags=frozenset({"audit"})),
        Snap("plain", datetime(2026, 10, 1, tzinfo=UTC)),
    ]
    assert kept(RetentionPolicy(keep_tags=frozenset({"audit"})), snaps) == {
        "untagged-newest": (NEWEST_REASON,),
        "tagged": ("tag:audit",),
    }
    # No snapshot has the tag: the source still keeps its newest backup.
    assert kept(RetentionPolicy(keep_tags=frozenset({"nothing"})), snaps) == {
        "untagged-newest": (NEWEST_REASON,),
    }


def test_sources_never_affect_each_other() -> None:
    db = snaps_at("2026-11-25T10:00Z", "2026-11-24T10:00Z", source="db")
    web = [
        Snap("w0", datetime(2026, 11, 20, 10, tzinfo=UTC), "web"),
        Snap("w1", datetime(2026, 11, 19, 10, tzinfo=UTC), "web"),
    ]
    policy = RetentionPolicy(keep_last=1, keep_within="2d")
    # web's backups are older than db's, yet web keeps its own newest and its own 2 days.
    assert kept(policy, db + web) == {
        "s0": ("last 1", "within 2d"),
        "s1": ("within 2d",),
        "w0": ("last 1", "within 2d"),
        "w1": ("within 2d",),
    }


def test_each_source_can_have_its_own_policy() -> None:
    db = snaps_at("2026-11-25T10:00Z", "2026-11-24T10:00Z", "2026-11-23T10:00Z", source="db")
    web = [Snap(f"w{i}", s.time, "web") for i, s in enumerate(db)]
    logs = [Snap(f"l{i}", s.time, "logs") for i, s in enumerate(db)]
    mixed = db + web + logs
    policies = {"db": RetentionPolicy(keep_last=1), "web": RetentionPolicy(keep_daily=2)}
    decisions = apply_policies(policies, mixed)
    assert {d.snapshot.id: d.reasons for d in decisions if d.keep} == {
        "s0": ("last 1",),
        "w0": ("daily 2026-11-25",),
        "w1": ("daily 2026-11-24",),
        # logs has no policy and there is no default: everything stays.
        "l0": (NO_POLICY_REASON,),
        "l1": (NO_POLICY_REASON,),
        "l2": (NO_POLICY_REASON,),
    }
    with_default = apply_policies(policies, mixed, default=RetentionPolicy(keep_within="1d"))
    assert {d.snapshot.id for d in with_default if d.keep} == {"s0", "w0", "w1", "l0", "l1"}


def test_times_in_any_offset_are_compared_as_instants() -> None:
    snaps = [
        Snap("utc", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        Snap("later", datetime(2026, 11, 25, 16, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
    ]
    # 16:00+05:30 is 10:30 UTC: the newer one.
    assert kept(RetentionPolicy(keep_last=1), snaps) == {"later": ("last 1",)}


def test_a_naive_time_is_refused_naming_the_snapshot() -> None:
    snaps = [Snap("abc123", datetime(2026, 11, 25, 10))]
    with pytest.raises(RetentionInputError, match=r"snapshot abc123: .*no time zone"):
        apply_policy(RetentionPolicy(keep_last=1), snaps)


def test_a_time_the_zone_cannot_show_is_refused() -> None:
    snaps = snaps_at("0001-01-01T02:00Z", "2026-11-25T00:00Z")
    with pytest.raises(RetentionInputError, match=r"snapshot s0: .*out of the calendar's range"):
        apply_policy(RetentionPolicy(keep_daily=1, time_zone="America/New_York"), snaps)
    # In UTC the same time is fine, and so are the last hours of year 9999.
    snaps.append(Snap("end", datetime(9999, 12, 31, 23, tzinfo=UTC)))
    assert set(kept(RetentionPolicy(keep_daily=3, keep_within="1h"), snaps)) == {"s0", "s1", "end"}


def test_a_forgotten_snapshot_shows_the_cutoff_on_the_policy_clock() -> None:
    snaps = snaps_at("2026-11-25T12:00Z", "2026-11-20T00:00Z")
    policy = RetentionPolicy(keep_within="2d", time_zone="Europe/Berlin")
    assert decision(policy, snaps, "s1").reasons == (
        "within 2d: older than 2026-11-23T13:00:00+01:00",
    )


def test_a_repeated_id_is_refused() -> None:
    moment = datetime(2026, 11, 25, tzinfo=UTC)
    with pytest.raises(RetentionInputError, match="snapshot x1 is listed twice"):
        apply_policy(RetentionPolicy(keep_last=1), [Snap("x1", moment), Snap("x1", moment)])


def test_snapshot_facts_adapt_other_snapshot_objects() -> None:
    # The repository's snapshots keep time as text and tags as a list.
    facts = SnapshotFacts("9f1c", datetime.fromisoformat("2026-11-25T10:00:00+00:00"), "db")
    assert apply_policy(RetentionPolicy(keep_daily=1), [facts]) == [
        Decision(facts, True, ("daily 2026-11-25",))
    ]


def test_a_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        Duration(days=-1)


def test_no_snapshots_no_decisions() -> None:
    assert apply_policy(RetentionPolicy(keep_last=1), []) == []


# ------------------------------------------------------------------ the policy itself


def test_policy_reads_the_camel_case_of_the_custom_resources() -> None:
    policy = RetentionPolicy.model_validate(
        {
            "keepLast": 3,
            "keepDaily": 7,
            "keepWithin": "2w",
            "keepTags": ["audit"],
            "timeZone": "Europe/Berlin",
        }
    )
    assert policy == RetentionPolicy(
        keep_last=3,
        keep_daily=7,
        keep_within="2w",
        keep_tags=frozenset({"audit"}),
        time_zone="Europe/Berlin",
    )
    assert policy.zone == BERLIN
    assert policy.within == Duration(weeks=2)


@pytest.mark.parametrize(
    ("spec", "field", "hint"),
    [
        ({"keepDialy": 7}, "keepDialy", "Extra inputs are not permitted"),
        ({"keepLast": -1}, "keepLast", "greater than or equal to 0"),
        ({"keepWithin": "30 days"}, "keepWithin", "e.g. '30d'"),
        ({"timeZone": "Europe/Berln"}, "timeZone", "IANA name such as 'Europe/Berlin'"),
        ({"timeZone": "../etc/passwd"}, "timeZone", "IANA name"),
        ({"keepTags": [" "]}, "keepTags", "a tag is empty"),
    ],
)
def test_bad_policies_name_the_field_and_the_fix(
    spec: dict[str, object], field: str, hint: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        RetentionPolicy.model_validate(spec)
    message = str(caught.value)
    assert field in message
    assert hint in message


def test_keep_within_is_normalised() -> None:
    assert RetentionPolicy(keep_within=" 1y6mo ").keep_within == "1y6mo"


@pytest.mark.parametrize("seed", range(20))
def test_each_host_is_decided_as_if_alone_with_the_snapshots_without_a_host(seed: int) -> None:
    """Hosts never affect each other: a host's snapshot is decided as in the series of that
    host's snapshots and those without a host (which are of every host), and one without a
    host is kept when any host's series keeps it."""
    import random

    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    snaps = [
        Snap(f"s{i:02d}", start + timedelta(hours=rng.randrange(24 * 60)), "db",
             host=rng.choice(["a", "b", "c", None]))
        for i in range(rng.randrange(1, 25))
    ]  # fmt: skip
    policy = RetentionPolicy(keep_last=rng.randrange(1, 4), keep_daily=rng.randrange(0, 5))
    decided = {d.snapshot.id: d.keep for d in apply_policy(policy, snaps)}
    hosts = {s.host for s in snaps} - {None}
    alone = {
        host: {
            d.snapshot.id: d.keep
            for d in apply_policy(policy, [s for s in snaps if s.host in (host, None)])
        }
        for host in hosts
    }
    for snap in snaps:
        if snap.host is not None:
            assert decided[snap.id] == alone[snap.host][snap.id]
        elif hosts:
            assert decided[snap.id] == any(alone[h][snap.id] for h in hosts)
    if not hosts:  # no host anywhere: one series, as if all were of one host
        one = [replace(s, host="x") for s in snaps]
        assert decided == {d.snapshot.id: d.keep for d in apply_policy(policy, one)}
