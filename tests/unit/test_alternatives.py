"""scheduler.alternatives on hand-made worlds: what a single-fraction move may offer."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time, timedelta

from scheduler.alternatives import alternatives
from scheduler.rules import validate
from scheduler.timeutil import local_date, localize, to_local
from scheduler.types import (
    Calendar,
    Interval,
    LinacSpec,
    OpeningHours,
    PlannedFraction,
    Rules,
    Schedule,
    SearchContext,
)

NY = "America/New_York"
HOURS = OpeningHours({d: (time(7), time(19)) for d in range(5)})
LINACS = (
    LinacSpec(1, "TrueBeam 1", frozenset({"sbrt"}), "A"),
    LinacSpec(2, "TrueBeam 2", frozenset({"sbrt"}), "A"),
    LinacSpec(3, "Halcyon", frozenset({"sbrt"})),
)
EMPTY = SearchContext(Calendar(NY, HOURS), LINACS)
LIVER = Rules(5, min_interval_days=1, max_interval_days=3, min_overall_days=5, max_overall_days=15)
SINGLE = Rules(1, first_session_minutes=90)
NOW = localize(datetime(2026, 3, 2, 7, 0), NY)


def fraction(rules: Rules, number: int, day: date, clock: time, linac: int = 1) -> PlannedFraction:
    start = localize(datetime.combine(day, clock), NY)
    return PlannedFraction(
        number, linac, start, start + timedelta(minutes=rules.minutes_for(number))
    )


def test_the_same_local_time_across_a_clock_change() -> None:
    # Thu 5, Fri 6, (clocks go forward Sunday 8 March) Mon 9, Wed 11, Fri 13.
    days = [date(2026, 3, d) for d in (5, 6, 9, 11, 13)]
    schedule = Schedule(tuple(fraction(LIVER, n, d, time(10)) for n, d in enumerate(days, 1)))
    found = alternatives(schedule, 4, LIVER, EMPTY, not_before=NOW, count=5, linac_order=(1, 2))
    other_days = [p for p in found if local_date(p.start, NY) != days[3]]
    assert other_days, "Tuesday 10 or Thursday 12 at the same time"
    assert all(to_local(p.start, NY).time() == time(10) for p in other_days)
    assert {p.kind for p in other_days} == {"same_time_other_day"}


def test_a_single_fraction_far_ahead_is_offered_days_before_and_after() -> None:
    day = date(2026, 6, 17)  # a Wednesday, fifteen weeks ahead
    schedule = Schedule((fraction(SINGLE, 1, day, time(9)),))
    found = alternatives(schedule, 1, SINGLE, EMPTY, not_before=NOW, count=8, linac_order=(1, 2))
    days = {local_date(p.start, NY) for p in found}
    assert any(d < day for d in days) and any(d > day for d in days)
    assert all(validate(Schedule((p,)), SINGLE, EMPTY, not_before=NOW) == [] for p in found)


def test_a_day_closed_after_booking_is_never_offered() -> None:
    days = [date(2026, 3, d) for d in (9, 10, 11, 13, 16)]
    closed = {date(2026, 3, 11): "power works"}
    ctx = SearchContext(Calendar(NY, HOURS, frozenset(closed), closed), LINACS)
    schedule = Schedule(tuple(fraction(LIVER, n, d, time(10)) for n, d in enumerate(days, 1)))
    found = alternatives(schedule, 3, LIVER, ctx, not_before=NOW, count=10, linac_order=(1, 2))
    # The fraction already on the closed day may only leave it (for Thursday).
    assert found
    assert all(local_date(p.start, NY) != date(2026, 3, 11) for p in found)


def test_nothing_before_now_and_never_the_current_placement() -> None:
    days = [date(2026, 3, d) for d in (2, 3, 4, 5, 6)]
    schedule = Schedule(tuple(fraction(LIVER, n, d, time(10)) for n, d in enumerate(days, 1)))
    now = localize(datetime(2026, 3, 2, 9, 0), NY)
    found = alternatives(schedule, 1, LIVER, EMPTY, not_before=now, count=10, linac_order=(1, 2))
    assert found and all(p.start >= now for p in found)
    assert schedule.fractions[0] not in found


def test_a_machine_outside_the_beam_matched_group_is_marked() -> None:
    day = date(2026, 3, 11)
    schedule = Schedule((fraction(SINGLE, 1, day, time(9)),))
    # Only the Halcyon is free: both TrueBeams are down.
    down = Interval(localize(datetime(2026, 3, 1), NY), localize(datetime(2026, 5, 1), NY))
    ctx = replace(EMPTY, linac_busy={1: [down], 2: [down]})
    found = alternatives(schedule, 1, SINGLE, ctx, not_before=NOW, count=3, linac_order=(1, 2))
    assert found and {(p.linac_id, p.kind) for p in found} == {(3, "other_linac")}
