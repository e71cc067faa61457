"""Explanations name the cause of a late or impossible start: downtime, closures, bookings."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time, timedelta

from scheduler.search import EXPLANATION_CODES, explain, explain_late_start, propose
from scheduler.timeutil import local_date, localize
from scheduler.types import (
    Calendar,
    DowntimeSpan,
    Interval,
    LinacSpec,
    OpeningHours,
    Rules,
    ScheduleRequest,
    SearchContext,
)

NY = "America/New_York"
MONDAY = date(2026, 3, 2)
HOURS = OpeningHours({d: (time(7), time(19)) for d in range(5)})
LINACS = (
    LinacSpec(1, "TrueBeam 1", frozenset({"sbrt"}), "A"),
    LinacSpec(2, "TrueBeam 2", frozenset({"sbrt"}), "A"),
    LinacSpec(3, "Halcyon", frozenset({"sbrt"}), "B"),
    LinacSpec(4, "Clinac", frozenset({"imrt"})),
)
EMPTY = SearchContext(Calendar(NY, HOURS), LINACS)
LIVER = Rules(5, min_interval_days=1, max_interval_days=3, min_overall_days=5, max_overall_days=15)
SBRT = (1, 2, 3)


def midnight(day: date) -> datetime:
    return localize(datetime.combine(day, time()), NY)


def down(linac_ids, first: date, days: int, reason: str = "upgrade") -> list[DowntimeSpan]:  # noqa: ANN001
    start, end = midnight(first), midnight(first + timedelta(days=days))
    return [DowntimeSpan(i, start, end, reason) for i in linac_ids]


def with_downtime(ctx: SearchContext, spans: list[DowntimeSpan]) -> SearchContext:
    busy = {i: list(ctx.linac_busy.get(i, ())) for i in {s.linac_id for s in spans}}
    for s in spans:
        busy[s.linac_id].append(Interval(s.start, s.end))
    return replace(ctx, linac_busy={**ctx.linac_busy, **busy})


def first_day(request: ScheduleRequest, ctx: SearchContext) -> date:
    found = propose(request, ctx)
    assert found, "the request should have proposals"
    return min(local_date(s.first_start, NY) for s in found)


def test_every_sbrt_linac_down_for_three_weeks_names_the_downtime() -> None:
    spans = down(SBRT, MONDAY, 21)
    ctx = with_downtime(EMPTY, spans)
    request = ScheduleRequest(LIVER, MONDAY)
    start = first_day(request, ctx)
    assert start == date(2026, 3, 23)

    explanation = explain_late_start(request, ctx, start, downtimes=spans)

    assert explanation is not None
    assert explanation.code == "linac_downtime"
    assert explanation.earliest_feasible == start
    assert explanation.message == (
        "TrueBeam 1, TrueBeam 2 and Halcyon down 2–22 March (upgrade); "
        "earliest possible start 23 March"
    )


def test_a_twelve_week_downtime_is_named_not_called_capacity() -> None:
    spans = down(SBRT, MONDAY, 84, reason="bunker rebuild")
    ctx = with_downtime(EMPTY, spans)
    request = ScheduleRequest(LIVER, MONDAY)
    assert propose(request, ctx) == []

    explanation = explain(request, ctx, horizon_days=112, downtimes=spans)

    assert explanation.code == "linac_downtime"
    assert explanation.earliest_feasible == date(2026, 5, 25)
    assert "TrueBeam 1, TrueBeam 2 and Halcyon down 2 March–24 May (bunker rebuild)" in (
        explanation.message
    )
    assert explanation.message.endswith("earliest possible start 25 May")
    # Without knowing it is downtime, the same busy time is capacity.
    assert explain(request, ctx, horizon_days=112).code == "capacity"


def test_downtime_of_a_linac_the_protocol_cannot_use_is_not_named() -> None:
    spans = down(SBRT, MONDAY, 21) + down((4,), MONDAY, 30, reason="service")
    ctx = with_downtime(EMPTY, spans)
    request = ScheduleRequest(LIVER, MONDAY)
    explanation = explain_late_start(request, ctx, first_day(request, ctx), downtimes=spans)
    assert explanation is not None and "Clinac" not in explanation.message


def test_a_closure_that_binds_is_named() -> None:
    closed = {MONDAY + timedelta(days=i): "refurbishment" for i in range(5)}
    ctx = replace(EMPTY, calendar=Calendar(NY, HOURS, frozenset(closed), closed))
    request = ScheduleRequest(LIVER, MONDAY)
    start = first_day(request, ctx)
    assert start == date(2026, 3, 9)

    explanation = explain_late_start(request, ctx, start)

    assert explanation is not None and explanation.code == "closure"
    assert explanation.message == (
        "the department is closed on 2–6 March (refurbishment); earliest possible start 9 March"
    )


def test_a_closure_that_leaves_no_schedule_in_the_horizon_is_named() -> None:
    closed = {MONDAY + timedelta(days=i): "refurbishment" for i in range(12)}
    ctx = replace(EMPTY, calendar=Calendar(NY, HOURS, frozenset(closed), closed))
    request = ScheduleRequest(LIVER, MONDAY, horizon_days=10)
    assert propose(request, ctx) == []
    explanation = explain(request, ctx)
    assert explanation.code == "closure"
    assert "closed on 2–13 March (refurbishment)" in explanation.message
    assert explanation.earliest_feasible == date(2026, 3, 16)


def test_full_bookings_stay_capacity() -> None:
    # Bookings, not downtime, fill every SBRT linac for two weeks.
    booked = {i: [Interval(midnight(MONDAY), midnight(MONDAY + timedelta(days=14)))] for i in SBRT}
    ctx = replace(EMPTY, linac_busy=booked)
    request = ScheduleRequest(LIVER, MONDAY)
    start = first_day(request, ctx)
    assert start == date(2026, 3, 16)

    explanation = explain_late_start(request, ctx, start, downtimes=down((4,), MONDAY, 14))

    assert explanation is not None and explanation.code == "capacity"
    assert explanation.message == (
        "no SBRT-capable linac (TrueBeam 1, TrueBeam 2 and Halcyon) is free for 5 fractions "
        "to start between 2 March and 16 March; earliest possible start 16 March"
    )


def test_the_patient_s_own_appointments_are_named() -> None:
    ctx = replace(EMPTY, patient_busy=[Interval(midnight(MONDAY), midnight(date(2026, 3, 7)))])
    request = ScheduleRequest(LIVER, MONDAY)
    explanation = explain_late_start(request, ctx, first_day(request, ctx))
    assert explanation is not None and explanation.code == "patient_busy"


def test_a_start_only_weekdays_delay_needs_no_explanation() -> None:
    saturday = date(2026, 3, 7)
    request = ScheduleRequest(LIVER, saturday)
    start = first_day(request, EMPTY)
    assert start == date(2026, 3, 9)
    assert explain_late_start(request, EMPTY, start) is None
    assert explain_late_start(request, EMPTY, saturday) is None


def test_every_code_is_listed() -> None:
    assert {"linac_downtime", "closure", "capacity", "patient_busy"} <= EXPLANATION_CODES
