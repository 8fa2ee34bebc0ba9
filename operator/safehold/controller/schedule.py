"""Schedule math: which slot is due now, in the schedule's time zone, with CronJob's
rule for missed slots. Pure functions of (schedule, last slot, now), unit-tested.

Missed slots (the operator was down, or ``Forbid`` held a slot back): only the latest
missed slot can start, once; with ``startingDeadlineSeconds`` set it starts only if it is
at most that old, otherwise it is skipped and the count of skipped slots is reported.
Slots that fire in the same minute become one run with the strongest type (full, then
differential, then incremental).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Protocol
from zoneinfo import ZoneInfo

from croniter import croniter

from safehold.api.backuppolicy import Schedule
from safehold.api.enums import BackupType

__all__ = [
    "Decision",
    "SlotState",
    "concurrency_action",
    "decide",
    "due_check",
    "expected_interval",
    "next_slot",
    "slots_between",
]

_STRENGTH = {"full": 3, "differential": 2, "incremental": 1}
_MAX_SLOTS = 10_000  # a year of minutes would be too many to count one by one


@dataclass(frozen=True)
class Decision:
    """What to do now: start a run for ``slot`` (or not), and what was skipped."""

    slot: datetime | None  # the slot to start a run for now, in UTC
    type: BackupType | None
    skipped: int  # missed slots that will not run
    next_time: datetime | None  # the next slot after now, in UTC


def _iter(cron: str, start: datetime, tz: ZoneInfo) -> croniter:
    return croniter(cron, start.astimezone(tz))


def next_slot(schedule: Schedule, after: datetime) -> datetime | None:
    """The first slot strictly after ``after`` over all slots, in UTC."""
    tz = ZoneInfo(schedule.time_zone)
    times = [_iter(s.cron, after, tz).get_next(datetime).astimezone(UTC) for s in schedule.slots]
    return min(times) if times else None


def expected_interval(schedule: Schedule, after: datetime, slots: int = 16) -> float | None:
    """The longest gap in seconds between the next ``slots`` slots after ``after``: how old
    the newest successful run may be when every slot runs (weekday-only schedules give the
    weekend's gap)."""
    times = [after]
    for _ in range(slots):
        following = next_slot(schedule, times[-1])
        if following is None:
            return None
        times.append(following)
    return max((b - a).total_seconds() for a, b in pairwise(times[1:]))


def slots_between(
    schedule: Schedule, start: datetime, end: datetime
) -> list[tuple[datetime, BackupType]]:
    """Slots in (start, end], merged per minute to the strongest type, oldest first."""
    tz = ZoneInfo(schedule.time_zone)
    merged: dict[datetime, BackupType] = {}
    for slot in schedule.slots:
        it = _iter(slot.cron, start, tz)
        for _ in range(_MAX_SLOTS):
            when = it.get_next(datetime).astimezone(UTC)
            if when > end:
                break
            key = when.replace(second=0, microsecond=0)
            old = merged.get(key)
            if old is None or _STRENGTH[slot.type] > _STRENGTH[old]:
                merged[key] = slot.type
    return sorted(merged.items())


def decide(
    schedule: Schedule,
    *,
    last_slot: datetime | None,
    created: datetime,
    now: datetime,
    starting_deadline_seconds: int | None,
) -> Decision:
    """Whether a slot is due at ``now``, given the last slot that was started (or the
    policy's creation time when none was)."""
    since = last_slot or created
    due = slots_between(schedule, since, now)
    upcoming = next_slot(schedule, now)
    if not due:
        return Decision(None, None, 0, upcoming)
    slot, kind = due[-1]
    skipped = len(due) - 1
    if starting_deadline_seconds is not None and now - slot > timedelta(
        seconds=starting_deadline_seconds
    ):
        return Decision(None, None, skipped + 1, upcoming)
    return Decision(slot, kind, skipped, upcoming)


class SlotState(Protocol):
    """The status of a periodic check (a verification, a test restore)."""

    last_schedule_time: datetime | None
    next_schedule_time: datetime | None


def due_check(
    schedule: Schedule, state: SlotState, *, created: datetime, now: datetime, suspended: bool
) -> datetime | None:
    """The slot of a periodic check due at ``now`` (only the latest missed one, however
    late), or None. Sets ``state.next_schedule_time``; a slot due while ``suspended``
    passes (it becomes ``state.last_schedule_time``). The caller records a slot it uses."""
    decision = decide(
        schedule,
        last_slot=state.last_schedule_time,
        created=created,
        now=now,
        starting_deadline_seconds=None,
    )
    state.next_schedule_time = decision.next_time
    if decision.slot is not None and suspended:
        state.last_schedule_time = decision.slot
        return None
    return decision.slot


def concurrency_action(policy: str, active_runs: int) -> str:
    """What a due slot does given ``concurrencyPolicy`` and the number of active runs:
    ``start`` a run, ``hold`` the slot back (Forbid: it starts when the active run ends,
    unless its starting deadline passes first), or ``replace`` (delete the active runs,
    then start)."""
    if active_runs == 0 or policy == "Allow":
        return "start"
    return "hold" if policy == "Forbid" else "replace"
