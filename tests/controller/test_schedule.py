"""Schedule math: slots in a time zone, merged types, and CronJob's missed-slot rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from safehold.api.backuppolicy import Schedule
from safehold.controller.schedule import (
    concurrency_action,
    decide,
    expected_interval,
    next_slot,
    slots_between,
)


def _schedule(tz: str, *slots: tuple[str, str]) -> Schedule:
    return Schedule.model_validate(
        {"timeZone": tz, "slots": [{"cron": c, "type": t} for c, t in slots]}
    )


def test_slots_are_read_in_the_time_zone() -> None:
    daily = _schedule("Europe/Berlin", ("0 2 * * *", "incremental"))
    # 02:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer
    winter = next_slot(daily, datetime(2026, 1, 10, 12, tzinfo=UTC))
    summer = next_slot(daily, datetime(2026, 7, 10, 12, tzinfo=UTC))
    assert winter == datetime(2026, 1, 11, 1, tzinfo=UTC)
    assert summer == datetime(2026, 7, 11, 0, tzinfo=UTC)


def test_a_slot_skipped_by_the_dst_change_does_not_fire_twice() -> None:
    # 2026-03-29: Berlin jumps from 02:00 to 03:00; a 02:30 slot cannot happen that day
    s = _schedule("Europe/Berlin", ("30 2 * * *", "incremental"))
    slots = slots_between(s, datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
    days = [when.date() for when, _ in slots]
    assert len(days) == len(set(days))


def test_slots_in_the_same_minute_merge_to_the_strongest_type() -> None:
    s = _schedule("UTC", ("0 3 * * *", "incremental"), ("0 3 * * 0", "full"))
    # 2026-11-29 is a Sunday
    slots = slots_between(s, datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC))
    assert slots == [
        (datetime(2026, 11, 27, 3, tzinfo=UTC), "incremental"),
        (datetime(2026, 11, 28, 3, tzinfo=UTC), "incremental"),
        (datetime(2026, 11, 29, 3, tzinfo=UTC), "full"),
    ]


def test_a_due_slot_starts_once() -> None:
    s = _schedule("UTC", ("*/15 * * * *", "incremental"))
    created = datetime(2026, 11, 26, 6, 1, tzinfo=UTC)
    now = datetime(2026, 11, 26, 6, 15, 20, tzinfo=UTC)
    d = decide(s, last_slot=None, created=created, now=now, starting_deadline_seconds=None)
    assert d.slot == datetime(2026, 11, 26, 6, 15, tzinfo=UTC)
    assert d.type == "incremental"
    assert d.skipped == 0
    assert d.next_time == datetime(2026, 11, 26, 6, 30, tzinfo=UTC)
    again = decide(s, last_slot=d.slot, created=created, now=now, starting_deadline_seconds=None)
    assert again.slot is None


def test_missed_slots_only_the_latest_runs() -> None:
    s = _schedule("UTC", ("0 * * * *", "incremental"))
    last = datetime(2026, 11, 26, 1, tzinfo=UTC)
    now = datetime(2026, 11, 26, 5, 10, tzinfo=UTC)  # 02:00..05:00 were missed
    d = decide(s, last_slot=last, created=last, now=now, starting_deadline_seconds=None)
    assert d.slot == datetime(2026, 11, 26, 5, tzinfo=UTC)
    assert d.skipped == 3


def test_missed_slot_past_the_starting_deadline_is_skipped() -> None:
    s = _schedule("UTC", ("0 * * * *", "incremental"))
    last = datetime(2026, 11, 26, 1, tzinfo=UTC)
    now = datetime(2026, 11, 26, 5, 10, tzinfo=UTC)
    late = decide(s, last_slot=last, created=last, now=now, starting_deadline_seconds=300)
    assert late.slot is None
    assert late.skipped == 4
    in_time = decide(s, last_slot=last, created=last, now=now, starting_deadline_seconds=900)
    assert in_time.slot == datetime(2026, 11, 26, 5, tzinfo=UTC)


def test_next_time_over_several_slots() -> None:
    s = _schedule("America/New_York", ("0 23 * * *", "incremental"), ("0 1 * * 1", "full"))
    after = datetime(2026, 11, 29, 12, tzinfo=UTC)  # Sunday noon UTC
    nxt = next_slot(s, after)
    assert nxt is not None
    assert nxt - after < timedelta(hours=24)
    assert nxt == datetime(2026, 11, 30, 4, tzinfo=UTC)  # 23:00 EST Sunday


def test_concurrency_policy() -> None:
    assert concurrency_action("Forbid", 0) == "start"
    assert concurrency_action("Forbid", 1) == "hold"
    assert concurrency_action("Allow", 2) == "start"
    assert concurrency_action("Replace", 1) == "replace"
    assert concurrency_action("Replace", 0) == "start"


def test_a_held_back_slot_starts_later_unless_its_deadline_passed() -> None:
    # Forbid does not record the slot, so the next pass sees it as missed
    s = _schedule("UTC", ("0 * * * *", "incremental"))
    last = datetime(2026, 11, 26, 4, tzinfo=UTC)
    after_run = datetime(2026, 11, 26, 5, 20, tzinfo=UTC)  # the 05:00 run was held back
    free = decide(s, last_slot=last, created=last, now=after_run, starting_deadline_seconds=None)
    assert free.slot == datetime(2026, 11, 26, 5, tzinfo=UTC)
    late = decide(s, last_slot=last, created=last, now=after_run, starting_deadline_seconds=600)
    assert late.slot is None
    assert late.skipped == 1


def test_the_expected_interval_is_the_longest_gap_of_the_schedule() -> None:
    after = datetime(2026, 11, 25, 12, tzinfo=UTC)  # a Wednesday
    hourly = _schedule("UTC", ("0 * * * *", "incremental"))
    weekdays = _schedule("UTC", ("0 2 * * 1-5", "incremental"))
    assert expected_interval(hourly, after) == 3600
    assert expected_interval(weekdays, after) == 3 * 86400  # Friday 02:00 to Monday 02:00
