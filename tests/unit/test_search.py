"""propose() and explain(): hand-made scenarios plus property-based checks on random worlds."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scheduler.rules import validate
from scheduler.search import (
    DISTINCT_START_MINUTES,
    explain,
    propose,
    propose_ranked,
    search_dates,
)
from scheduler.timeutil import local_date, local_to_utc, localize, to_local
from scheduler.types import (
    ALL_WEEKDAYS,
    Calendar,
    Interval,
    LinacSpec,
    OpeningHours,
    PlannedFraction,
    Rules,
    Schedule,
    ScheduleRequest,
    SearchContext,
)

NY = "America/New_York"
THANKSGIVING = date(2026, 11, 26)
MONDAY = date(2026, 3, 2)


def hours(opens: int, closes: int, days: range = range(5)) -> OpeningHours:
    return OpeningHours({d: (time(opens), time(closes)) for d in days})


CALENDAR = Calendar(NY, hours(7, 19), frozenset({THANKSGIVING}), {THANKSGIVING: "Thanksgiving"})
LINACS = (
    LinacSpec(1, "TrueBeam 1", frozenset({"sbrt", "imrt"}), "A"),
    LinacSpec(2, "TrueBeam 2", frozenset({"sbrt", "imrt"}), "A"),
    LinacSpec(3, "Halcyon", frozenset({"sbrt"}), "B"),
    LinacSpec(4, "Clinac", frozenset({"imrt"})),
)
EMPTY = SearchContext(CALENDAR, LINACS)

LIVER = Rules(5, min_interval_days=1, max_interval_days=3, min_overall_days=5, max_overall_days=15)
LUNG_PERIPHERAL = Rules(
    3, min_hours_between=48, min_interval_days=2, min_overall_days=8, max_overall_days=14
)
EVERY_OTHER_DAY_5 = Rules(5, min_interval_days=2, max_interval_days=2, max_overall_days=14)
SINGLE = Rules(1, first_session_minutes=90)
SPINE_3 = Rules(3, min_interval_days=2, max_interval_days=2, max_overall_days=7)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return localize(datetime.combine(day, time(hour, minute)), NY)


def local(dt: datetime) -> datetime:
    return to_local(dt, NY)


def whole_days(start: date, days: int) -> Interval:
    """A downtime covering every opening hour of ``days`` local days from ``start``."""
    return Interval(at(start, 0), at(start + timedelta(days=days), 0))


def first_free(schedule: Schedule, request: ScheduleRequest) -> PlannedFraction:
    return next(f for f in schedule.fractions if f.number not in request.fixed)


def assert_proposals_sound(
    proposals: list[Schedule], request: ScheduleRequest, ctx: SearchContext
) -> None:
    """Every property a proposal list must have, whatever the world looks like."""
    rules = request.rules
    tz = ctx.calendar.timezone
    assert len(proposals) <= request.count
    last_start = request.earliest + timedelta(days=request.horizon_days - 1)
    first_day, last_day = search_dates(request)
    assert first_day == request.earliest
    for schedule in proposals:
        assert (
            validate(
                schedule, rules, ctx, not_before=request.not_before, fixed=request.fixed.keys()
            )
            == []
        )
        assert [f.number for f in schedule.fractions] == list(range(1, rules.fractions + 1))
        for number, fixed in request.fixed.items():
            assert schedule.fractions[number - 1] == fixed
        for f in schedule.fractions:
            for busy in ctx.linac_busy.get(f.linac_id, ()):
                assert not f.interval.overlaps(busy)
            for busy in ctx.patient_busy:
                assert not f.interval.overlaps(busy)
            if f.number not in request.fixed:
                assert request.earliest <= local_date(f.start, tz) <= last_day
                if f.number == min(set(range(1, rules.fractions + 1)) - set(request.fixed)):
                    assert local_date(f.start, tz) <= last_start
                if request.not_before is not None:
                    assert f.start >= request.not_before
    for schedule in proposals:
        assert schedule.score is not None
        assert schedule.score.total == sum(part.points for part in schedule.score.parts)
        assert all(part.points >= 0 for part in schedule.score.parts)
        days = local_days_in(schedule, tz)
        assert schedule.score.overall_days == (days[-1] - days[0]).days + 1
        assert list(schedule.score.gap_days) == [
            (b - a).days for a, b in zip(days, days[1:], strict=False)
        ]
    if len(request.fixed) >= rules.fractions:
        return
    firsts = [first_free(s, request) for s in proposals]
    if request.fixed:
        # Re-planning: the earliest first free fraction ranks first.
        days = [local_date(f.start, tz) for f in firsts]
        assert days == sorted(days)
        for i, a in enumerate(firsts):
            for b in firsts[i + 1 :]:
                assert (
                    local_date(a.start, tz) != local_date(b.start, tz)
                    or a.linac_id != b.linac_id
                    or abs(a.start - b.start) >= timedelta(minutes=DISTINCT_START_MINUTES)
                )
        return
    # Whole courses: best score first, and no two alike in start day and machines.
    totals = [s.score.total for s in proposals if s.score is not None]
    assert totals == sorted(totals)
    signatures = [
        (local_date(s.first_start, tz), frozenset(f.linac_id for f in s.fractions))
        for s in proposals
    ]
    assert len(set(signatures)) == len(signatures)


def local_days_in(schedule: Schedule, tz: str) -> list[date]:
    return [local_date(f.start, tz) for f in schedule.fractions]


def local_days(schedule: Schedule) -> list[date]:
    return local_days_in(schedule, NY)


def local_times(schedule: Schedule) -> list[str]:
    return [f"{local(f.start):%H:%M}" for f in schedule.fractions]


# -- whole courses ----------------------------------------------------------------------


def test_liver_course_in_an_empty_department() -> None:
    request = ScheduleRequest(LIVER, MONDAY)
    proposals = propose(request, EMPTY)
    assert_proposals_sound(proposals, request, EMPTY)
    assert len(proposals) == 3
    best = proposals[0]
    assert local_days(best) == [MONDAY + timedelta(days=i) for i in range(5)]
    assert local_times(best) == ["07:00"] * 5
    assert {f.linac_id for f in best.fractions} == {1}
    assert [f.end - f.start for f in best.fractions] == [timedelta(minutes=60)] + [
        timedelta(minutes=45)
    ] * 4
    # Alternatives: other SBRT machines at the same time (linac 4 lacks SBRT).
    assert [p.fractions[0].linac_id for p in proposals] == [1, 2, 3]


def test_single_fraction_course_skips_the_weekend() -> None:
    saturday = MONDAY + timedelta(days=5)
    request = ScheduleRequest(SINGLE, saturday, count=2)
    proposals = propose(request, EMPTY)
    assert_proposals_sound(proposals, request, EMPTY)
    [fraction] = proposals[0].fractions
    assert local(fraction.start).date() == MONDAY + timedelta(days=7)
    assert fraction.end - fraction.start == timedelta(minutes=90)


def test_five_fractions_every_other_day_needs_the_weekend_gap() -> None:
    # Exactly 2 days apart, 5 times, always lands one fraction on a weekend day: a Mon-Fri
    # department can never keep that rule, and explain says so.
    request = ScheduleRequest(EVERY_OTHER_DAY_5, MONDAY)
    assert propose(request, EMPTY) == []
    explanation = explain(request, EMPTY)
    assert explanation.code == "not_enough_days" and explanation.earliest_feasible is None
    # Allowing Friday -> Monday (3 days) makes it Mon, Wed, Fri, Mon, Wed.
    relaxed = replace(EVERY_OTHER_DAY_5, max_interval_days=3)
    [best] = propose(replace(request, rules=relaxed, count=1), EMPTY)
    assert local_days(best) == [MONDAY + timedelta(days=d) for d in (0, 2, 4, 7, 9)]


def test_weekends_are_skipped() -> None:
    thursday = MONDAY + timedelta(days=3)
    request = ScheduleRequest(LIVER, thursday, count=1)
    [best] = propose(request, EMPTY)
    assert local_days(best) == [
        thursday,
        thursday + timedelta(days=1),
        thursday + timedelta(days=4),
        thursday + timedelta(days=5),
        thursday + timedelta(days=6),
    ]


def test_thanksgiving_is_skipped() -> None:
    monday = date(2026, 11, 23)
    request = ScheduleRequest(LIVER, monday, count=1)
    [best] = propose(request, EMPTY)
    days = local_days(best)
    assert THANKSGIVING not in days
    assert days == [
        monday,
        monday + timedelta(days=1),
        monday + timedelta(days=2),
        monday + timedelta(days=4),
        monday + timedelta(days=7),
    ]


def test_spring_forward_keeps_local_time() -> None:
    ctx = SearchContext(Calendar(NY, hours(9, 17)), LINACS)
    wednesday = date(2026, 3, 4)  # clocks change on Sunday 8 March
    [best] = propose(ScheduleRequest(LIVER, wednesday, count=1), ctx)
    assert local_days(best)[3] == date(2026, 3, 9)
    assert local_times(best) == ["09:00"] * 5
    assert [f.start.astimezone(UTC).hour for f in best.fractions] == [14, 14, 14, 13, 13]


def test_fall_back_keeps_local_time() -> None:
    ctx = SearchContext(Calendar(NY, hours(9, 17)), LINACS)
    wednesday = date(2026, 10, 28)  # clocks change on Sunday 1 November
    [best] = propose(ScheduleRequest(LIVER, wednesday, count=1), ctx)
    assert local_days(best)[3] == date(2026, 11, 2)
    assert local_times(best) == ["09:00"] * 5
    assert [f.start.astimezone(UTC).hour for f in best.fractions] == [13, 13, 13, 14, 14]


def test_min_hours_between_is_real_hours_across_spring_forward() -> None:
    # A department treating every day; Saturday 09:00 EST to Monday 09:00 EDT is only 47 h.
    ctx = SearchContext(Calendar(NY, hours(9, 17, range(7))), LINACS)
    rules = Rules(
        3,
        min_hours_between=48,
        min_interval_days=2,
        max_interval_days=2,
        weekdays=ALL_WEEKDAYS,
        start_weekdays=frozenset({5}),
    )
    [best] = propose(ScheduleRequest(rules, date(2026, 3, 7), count=1), ctx)
    first, second, third = best.fractions
    assert local_days(best) == [date(2026, 3, 7), date(2026, 3, 9), date(2026, 3, 11)]
    assert second.start - first.start >= timedelta(hours=48)
    assert local_times(best) == ["09:00", "10:00", "10:00"]


def test_min_hours_between_across_fall_back_allows_same_local_time() -> None:
    ctx = SearchContext(Calendar(NY, hours(9, 17, range(7))), LINACS)
    rules = Rules(
        3,
        min_hours_between=48,
        min_interval_days=2,
        max_interval_days=2,
        weekdays=ALL_WEEKDAYS,
        start_weekdays=frozenset({5}),
    )
    [best] = propose(ScheduleRequest(rules, date(2026, 10, 31), count=1), ctx)
    assert local_times(best) == ["09:00"] * 3  # 49 real hours over the change


def test_not_before_is_respected() -> None:
    now = at(MONDAY, 11, 5)
    request = ScheduleRequest(LIVER, MONDAY, not_before=now)
    proposals = propose(request, EMPTY)
    assert_proposals_sound(proposals, request, EMPTY)
    assert local_times(proposals[0])[0] == "11:15"  # next grid point after now


def test_same_linac_beats_same_time_and_group_beats_other_groups() -> None:
    # No machine is free all week: linac 1 is down Wed-Fri, linac 2 on Monday, linac 3 Tue-Thu.
    ctx = replace(
        EMPTY,
        linac_busy={
            1: [whole_days(MONDAY + timedelta(days=2), 3)],
            2: [whole_days(MONDAY, 1)],
            3: [whole_days(MONDAY + timedelta(days=1), 3)],
        },
    )
    request = ScheduleRequest(LIVER, MONDAY)
    proposals = propose(request, ctx)
    assert_proposals_sound(proposals, request, ctx)
    best = proposals[0]
    assert {f.linac_id for f in best.fractions} == {1, 2}  # beam group A
    assert local_times(best) == ["07:00"] * 5


def test_preferred_window_and_linacs() -> None:
    request = ScheduleRequest(
        LIVER, MONDAY, preferred_window=(time(13), time(15)), preferred_linacs=(3,)
    )
    proposals = propose(request, EMPTY)
    assert_proposals_sound(proposals, request, EMPTY)
    assert local_times(proposals[0]) == ["13:00"] * 5
    assert {f.linac_id for f in proposals[0].fractions} == {3}


def test_alternatives_are_other_days_not_the_same_course_shifted_by_minutes() -> None:
    # Only one SBRT machine: the same days an hour later is no alternative; other days are.
    ctx = replace(EMPTY, linacs=LINACS[:1])
    request = ScheduleRequest(LIVER, MONDAY, count=3)
    proposals = propose(request, ctx)
    assert_proposals_sound(proposals, request, ctx)
    assert [local_days(p)[0] for p in proposals] == [MONDAY + timedelta(days=d) for d in (0, 1, 2)]
    assert [local_times(p)[0] for p in proposals] == ["07:00"] * 3


def test_replanning_keeps_fixed_fractions_and_the_course_time() -> None:
    # Fractions 1-2 were delivered on linac 1 at 09:00; linac 1 goes down from Wednesday.
    tuesday = MONDAY + timedelta(days=1)
    fixed = {
        1: PlannedFraction(1, 1, at(MONDAY, 9), at(MONDAY, 10)),
        2: PlannedFraction(2, 1, at(tuesday, 9), at(tuesday, 9, 45)),
    }
    ctx = replace(EMPTY, linac_busy={1: [whole_days(tuesday + timedelta(days=1), 7)]})
    request = ScheduleRequest(
        LIVER, tuesday, not_before=at(tuesday, 12), fixed=fixed, preferred_linacs=(1,)
    )
    proposals = propose(request, ctx)
    assert_proposals_sound(proposals, request, ctx)
    best = proposals[0]
    assert best.fractions[:2] == (fixed[1], fixed[2])
    assert {f.linac_id for f in best.fractions[2:]} == {2}  # beam-matched to linac 1
    assert local_times(best) == ["09:00"] * 5


def test_replanning_a_middle_fraction() -> None:
    course = propose(ScheduleRequest(LIVER, MONDAY, count=1), EMPTY)[0]
    fixed = {f.number: f for f in course.fractions if f.number != 3}
    wednesday = MONDAY + timedelta(days=2)
    ctx = replace(EMPTY, linac_busy={1: [Interval(at(wednesday, 7), at(wednesday, 12))]})
    request = ScheduleRequest(LIVER, MONDAY, fixed=fixed)
    proposals = propose(request, ctx)
    assert_proposals_sound(proposals, request, ctx)
    moved = proposals[0].fractions[2]
    assert local(moved.start).date() == wednesday
    # Same linac outranks same time: linac 1 once its morning downtime is over.
    assert moved.linac_id == 1 and local_times(proposals[0])[2] == "12:00"


def test_everything_fixed_returns_the_fixed_schedule() -> None:
    course = propose(ScheduleRequest(SPINE_3, MONDAY, count=1), EMPTY)[0]
    request = ScheduleRequest(SPINE_3, MONDAY, fixed={f.number: f for f in course.fractions})
    assert propose(request, EMPTY) == [course]


def test_horizon_bounds_the_first_fraction_only() -> None:
    thursday = MONDAY + timedelta(days=3)
    request = ScheduleRequest(LIVER, thursday, horizon_days=1)
    assert search_dates(request) == (thursday, thursday + timedelta(days=14))
    proposals = propose(request, EMPTY)
    assert_proposals_sound(proposals, request, EMPTY)
    assert {local_days(p)[0] for p in proposals} == {thursday}
    assert local_days(proposals[0])[-1] == thursday + timedelta(days=6)  # next Wednesday


def test_alternatives_move_to_other_days_when_the_time_cannot_change() -> None:
    # One SBRT machine with a single free hour a day (09:00-10:00).
    busy = []
    for offset in range(30):
        day = MONDAY + timedelta(days=offset)
        busy += [Interval(at(day, 7), at(day, 9)), Interval(at(day, 10), at(day, 19))]
    ctx = SearchContext(CALENDAR, LINACS[:1], {1: busy})
    request = ScheduleRequest(Rules(1), MONDAY, count=3)
    proposals = propose(request, ctx)
    assert_proposals_sound(proposals, request, ctx)
    # The first fraction can only start 09:00, so alternatives differ by day.
    assert [local_days(p)[0] for p in proposals] == [MONDAY + timedelta(days=d) for d in (0, 1, 2)]


# -- ranking by score ---------------------------------------------------------------------

SCORE_PARTS = ["wait", "overall", "linacs", "time_of_day", "window", "spacing", "day_load"]


def points(schedule: Schedule) -> dict[str, int]:
    assert schedule.score is not None
    return {part.name: part.points for part in schedule.score.parts}


def free_only(linac_hours: dict[int, tuple[time, time]], days: int = 21) -> dict[int, list]:
    """Linac busy time leaving each one free only within its given local hours, every day."""
    busy: dict[int, list[Interval]] = {}
    for lid, (free_from, free_until) in linac_hours.items():
        intervals = []
        for offset in range(days):
            day = MONDAY + timedelta(days=offset)
            opens, closes = at(day, 7), at(day, 19)
            start = localize(datetime.combine(day, free_from), NY)
            end = localize(datetime.combine(day, free_until), NY)
            if opens < start:
                intervals.append(Interval(opens, start))
            if end < closes:
                intervals.append(Interval(end, closes))
        busy[lid] = intervals
    return busy


def test_a_perfect_course_scores_zero_and_every_part_is_reported() -> None:
    request = ScheduleRequest(LIVER, MONDAY)
    best = propose(request, EMPTY)[0]
    assert best.score is not None
    assert [part.name for part in best.score.parts] == SCORE_PARTS
    assert best.score.total == 0
    assert best.score.overall_days == 5 and best.score.gap_days == (1, 1, 1, 1)
    summaries = {part.name: part.summary for part in best.score.parts}
    assert summaries["linacs"] == "one linac"
    assert summaries["overall"] == "5 days overall, the shortest the protocol allows"


def test_a_shorter_course_ranks_above_a_longer_one_when_waits_are_equal() -> None:
    # Every other day, 3 fractions. TrueBeam 1 is down on the first Wednesday, so its course
    # runs Mon, Thu, Mon (8 days); the Halcyon gives Mon, Wed, Fri (5 days).
    rules = Rules(3, min_interval_days=2, max_interval_days=4, max_overall_days=14)
    ctx = SearchContext(
        CALENDAR,
        (LINACS[0], LINACS[2]),
        {1: [whole_days(MONDAY + timedelta(days=2), 1)]},
    )
    request = ScheduleRequest(rules, MONDAY, count=2)
    proposals = propose(request, ctx)
    assert_proposals_sound(proposals, request, ctx)
    shorter, longer = proposals
    assert {f.linac_id for f in shorter.fractions} == {3}
    assert local_days(shorter) == [MONDAY + timedelta(days=d) for d in (0, 2, 4)]
    assert {f.linac_id for f in longer.fractions} == {1}
    assert local_days(longer)[0] == MONDAY and local_days(longer)[-1] > local_days(shorter)[-1]
    assert points(shorter)["wait"] == points(longer)["wait"] == 0
    assert points(shorter)["overall"] < points(longer)["overall"]
    assert shorter.score is not None and shorter.score.gap_days == (2, 2)


def test_an_option_that_fragments_free_time_loses_to_an_equal_one_that_does_not() -> None:
    # TrueBeam 1 is free 07:40-18:10 (off the quarter-hour grid): wherever a session goes, it
    # splits that time or strands a sliver. The Halcyon is free from 08:00 to closing.
    ctx = SearchContext(
        CALENDAR,
        (LINACS[0], LINACS[2]),
        free_only({1: (time(7, 40), time(18, 10)), 3: (time(8), time(19))}),
    )
    request = ScheduleRequest(LIVER, MONDAY, count=2)
    proposals = propose(request, ctx)
    assert_proposals_sound(proposals, request, ctx)
    compact, fragmenting = proposals
    assert {f.linac_id for f in compact.fractions} == {3}
    assert local_times(compact) == ["08:00"] * 5
    assert points(compact)["day_load"] == 0
    assert {f.linac_id for f in fragmenting.fractions} == {1}
    assert points(fragmenting)["day_load"] > 0
    for part in ("wait", "overall", "linacs", "time_of_day", "window", "spacing"):
        assert points(compact)[part] == points(fragmenting)[part] == 0


def test_an_option_in_the_preferred_window_wins_over_one_outside_it() -> None:
    # TrueBeam 1 offers 07:00 every day, outside the window; the Halcyon offers 12:00, and
    # 12:45 on Friday: inside the window, though not quite the same time every day.
    busy = free_only({1: (time(7), time(8)), 3: (time(12), time(13))})
    friday = MONDAY + timedelta(days=4)
    busy[3] = [iv for iv in busy[3] if local_date(iv.start, NY) != friday] + [
        Interval(at(friday, 7), at(friday, 12, 45)),
        Interval(at(friday, 13, 45), at(friday, 19)),
    ]
    busy[3].sort(key=lambda iv: iv.start)
    ctx = SearchContext(CALENDAR, (LINACS[0], LINACS[2]), busy)
    request = ScheduleRequest(LIVER, MONDAY, count=2, preferred_window=(time(12), time(16)))
    proposals = propose(request, ctx)
    assert_proposals_sound(proposals, request, ctx)
    inside, outside = proposals
    assert {f.linac_id for f in inside.fractions} == {3}
    assert local_times(inside) == ["12:00"] * 4 + ["12:45"]
    assert points(inside)["window"] == 0 and points(inside)["time_of_day"] > 0
    assert {f.linac_id for f in outside.fractions} == {1}
    assert points(outside)["window"] == 5 * 5


def test_options_are_other_machines_or_days_never_minute_shifts() -> None:
    request = ScheduleRequest(LIVER, MONDAY, count=4)
    proposals = propose(request, EMPTY)
    assert_proposals_sound(proposals, request, EMPTY)
    # Three SBRT machines on Monday, then the best course starting Tuesday.
    assert [({f.linac_id for f in p.fractions}, local_days(p)[0]) for p in proposals] == [
        ({1}, MONDAY),
        ({2}, MONDAY),
        ({3}, MONDAY),
        ({1}, MONDAY + timedelta(days=1)),
    ]


def test_a_later_start_outranks_an_earlier_one_only_by_a_better_score() -> None:
    # On Monday only TrueBeam 1 is free, and it is down from Tuesday: a Monday start must
    # continue on a machine of another beam group. The Halcyon is free from Tuesday.
    ctx = replace(
        EMPTY,
        linac_busy={
            1: [whole_days(MONDAY + timedelta(days=1), 20)],
            2: [whole_days(MONDAY, 21)],
            3: [whole_days(MONDAY, 1)],
        },
    )
    request = ScheduleRequest(LIVER, MONDAY, count=3)
    proposals = propose(request, ctx)
    assert_proposals_sound(proposals, request, ctx)
    tuesday, monday, wednesday = proposals
    assert [local_days(p)[0] for p in proposals] == [MONDAY + timedelta(days=d) for d in (1, 0, 2)]
    # A day's wait (20) plus the weekend inside the course (10 + 4) cost less than a second
    # treatment plan (40); two days' wait do not.
    assert points(tuesday) == points(tuesday) | {"wait": 20, "overall": 10, "spacing": 4}
    assert points(tuesday)["linacs"] == 0 and {f.linac_id for f in tuesday.fractions} == {3}
    assert points(monday)["linacs"] == 40 and points(monday)["wait"] == 0
    assert points(wednesday)["wait"] == 40
    totals = [p.score.total for p in proposals if p.score is not None]
    assert totals == [34, 40, 54]


def test_ranking_does_not_depend_on_the_order_of_the_linacs() -> None:
    ctx = busy_department(7)
    request = ScheduleRequest(LIVER, MONDAY, count=3)
    shuffled = replace(ctx, linacs=tuple(reversed(ctx.linacs)))
    first, second = propose(request, ctx), propose(request, shuffled)
    assert first == second
    assert [p.score for p in first] == [p.score for p in second]


# -- explain ----------------------------------------------------------------------------


def test_explain_no_capable_linac() -> None:
    rules = replace(LIVER, capabilities=frozenset({"gamma"}))
    request = ScheduleRequest(rules, MONDAY)
    assert propose(request, EMPTY) == []
    explanation = explain(request, EMPTY)
    assert explanation.code == "no_capable_linac" and "GAMMA" in explanation.message


def test_explain_rules_that_can_never_fit() -> None:
    rules = replace(EVERY_OTHER_DAY_5, max_overall_days=8)
    request = ScheduleRequest(rules, MONDAY)
    assert propose(request, EMPTY) == []
    explanation = explain(request, EMPTY)
    assert explanation.code == "not_enough_days"
    assert explanation.earliest_feasible is None
    assert "9 days" in explanation.message and "no possible start" in explanation.message


def test_explain_calendar_blocks_the_requested_window() -> None:
    # Every-other-day x3 within 7 days cannot start on Thursday or Friday (weekend in the way).
    thursday = MONDAY + timedelta(days=3)
    request = ScheduleRequest(SPINE_3, thursday, horizon_days=2)
    assert propose(request, EMPTY) == []
    explanation = explain(request, EMPTY)
    assert explanation.code == "not_enough_days"
    assert explanation.earliest_feasible == MONDAY + timedelta(days=7)
    assert "earliest possible start 9 March" in explanation.message


def test_explain_capacity_with_earliest_start() -> None:
    busy = {lid: [whole_days(MONDAY, 14)] for lid in (1, 2, 3)}
    ctx = replace(EMPTY, linac_busy=busy)
    request = ScheduleRequest(LIVER, MONDAY, horizon_days=14)
    assert propose(request, ctx) == []
    explanation = explain(request, ctx)
    assert explanation.code == "capacity"
    assert explanation.earliest_feasible == date(2026, 3, 16)
    assert explanation.message == (
        "no SBRT-capable linac free for 5 fractions within 15 days from 2 March; "
        "earliest possible start 16 March"
    )


def test_explain_capacity_none_in_horizon() -> None:
    busy = {lid: [whole_days(MONDAY, 120)] for lid in (1, 2, 3)}
    ctx = replace(EMPTY, linac_busy=busy)
    explanation = explain(ScheduleRequest(LIVER, MONDAY), ctx)
    assert explanation.code == "capacity" and explanation.earliest_feasible is None
    assert "no possible start within 56 days of 2 March" in explanation.message


def test_explain_patient_busy() -> None:
    ctx = replace(EMPTY, patient_busy=[whole_days(MONDAY, 12)])
    request = ScheduleRequest(LIVER, MONDAY, horizon_days=12)
    assert propose(request, ctx) == []
    explanation = explain(request, ctx)
    assert explanation.code == "patient_busy"
    assert explanation.earliest_feasible == date(2026, 3, 16)


def test_explain_fixed_conflict_and_opening_hours() -> None:
    bad = PlannedFraction(1, 4, at(MONDAY, 9), at(MONDAY, 10))  # linac 4 lacks SBRT
    request = ScheduleRequest(LIVER, MONDAY, fixed={1: bad})
    assert propose(request, EMPTY) == []
    assert explain(request, EMPTY).code == "fixed_conflict"

    short_day = SearchContext(Calendar(NY, hours(9, 10)), LINACS)
    request = ScheduleRequest(SINGLE, MONDAY)
    assert propose(request, short_day) == []
    assert explain(request, short_day).code == "opening_hours"


def test_explain_invalid_rules_and_no_treatment_weekday() -> None:
    broken = replace(LIVER, min_interval_days=4)  # above max_interval_days=3
    assert explain(ScheduleRequest(broken, MONDAY), EMPTY).code == "invalid_rules"
    weekend_only = replace(LIVER, weekdays=frozenset({5, 6}))
    explanation = explain(ScheduleRequest(weekend_only, MONDAY), EMPTY)
    assert explanation.code == "not_enough_days"
    assert "opens on any weekday the protocol allows" in explanation.message


def test_explain_when_feasible() -> None:
    explanation = explain(ScheduleRequest(LIVER, MONDAY), EMPTY)
    assert explanation.code == "feasible" and explanation.earliest_feasible == MONDAY


# -- a busy department --------------------------------------------------------------------


def busy_department(seed: int, start: date = MONDAY, days: int = 60) -> SearchContext:
    """6 linacs (4 SBRT-capable, two beam groups) booked to roughly 85%."""
    rnd = random.Random(seed)
    linacs = tuple(
        LinacSpec(
            i,
            f"L{i}",
            frozenset({"sbrt", "imrt"} if i <= 4 else {"imrt"}),
            "A" if i <= 2 else "B" if i <= 4 else None,
        )
        for i in range(1, 7)
    )
    busy: dict[int, list[Interval]] = {}
    for linac in linacs:
        intervals = []
        for offset in range(days):
            day = start + timedelta(days=offset)
            if day.weekday() >= 5:
                continue
            cursor, closes = at(day, 7), at(day, 19)
            while cursor < closes:
                length = timedelta(minutes=rnd.choice((30, 45, 60, 75, 90)))
                if rnd.random() < 0.85:
                    intervals.append(Interval(cursor, min(cursor + length, closes)))
                cursor += length
        busy[linac.id] = intervals
    return SearchContext(CALENDAR, linacs, busy)


@pytest.mark.parametrize("seed", range(4))
def test_busy_department_liver_is_sound(seed: int) -> None:
    # Speed is measured in bench/, not asserted here.
    ctx = busy_department(seed)
    request = ScheduleRequest(LIVER, MONDAY + timedelta(days=seed), count=3)
    proposals = propose(request, ctx)
    assert len(proposals) == 3
    assert_proposals_sound(proposals, request, ctx)


# -- property-based -----------------------------------------------------------------------

BASE = date(2026, 3, 2)  # spans the spring-forward change within the horizons used below
DAYS = 28


@st.composite
def worlds(draw: st.DrawFn) -> tuple[SearchContext, Rules]:
    """A random department, linacs, bookings and a protocol within the product's limits."""
    weekdays_or_any = st.one_of(
        st.just(frozenset(range(5))),
        st.just(frozenset(range(5))),
        st.sets(st.integers(0, 6), min_size=1).map(frozenset),
    )
    open_days = sorted(draw(weekdays_or_any))
    by_weekday = {}
    for day in open_days:
        opens = draw(st.integers(6, 10))
        closes = draw(st.integers(opens + 3, 20))
        by_weekday[day] = (time(opens), time(closes))
    closed = draw(st.sets(st.integers(0, DAYS - 1), max_size=3))
    calendar = Calendar(
        NY, OpeningHours(by_weekday), frozenset(BASE + timedelta(days=d) for d in closed)
    )
    n_linacs = draw(st.integers(1, 4))
    linacs = []
    for lid in range(1, n_linacs + 1):
        caps = draw(st.sets(st.sampled_from(("sbrt", "imrt", "srs")), max_size=3))
        if lid == 1 and draw(st.integers(0, 3)):  # mostly keep one machine that can do all
            caps = {"sbrt", "imrt", "srs"}
        group = draw(st.sampled_from((None, "A", "B")))
        own = None
        if draw(st.booleans()) and by_weekday:
            own = OpeningHours({d: (time(o.hour + 1), c) for d, (o, c) in by_weekday.items()})
        linacs.append(LinacSpec(lid, f"L{lid}", frozenset(caps), group, own))

    def intervals(max_size: int) -> list[Interval]:
        out = []
        for _ in range(draw(st.integers(0, max_size))):
            start = datetime(2026, 3, 2, 11, tzinfo=UTC) + timedelta(
                minutes=15 * draw(st.integers(0, DAYS * 96))
            )
            out.append(Interval(start, start + timedelta(minutes=draw(st.integers(15, 600)))))
        return sorted(out, key=lambda iv: iv.start)

    load = draw(st.sampled_from((5, 25, 80)))
    busy = {linac.id: intervals(load) for linac in linacs}
    ctx = SearchContext(calendar, tuple(linacs), busy, intervals(6))

    fractions = draw(st.integers(1, 5))
    min_interval = draw(st.integers(1, 3))
    max_interval = draw(st.one_of(st.none(), st.integers(min_interval, min_interval + 3)))
    min_overall = draw(st.one_of(st.none(), st.integers(1, 10)))
    max_overall = draw(
        st.one_of(st.none(), st.integers(max(min_overall or 1, 1), (min_overall or 1) + 16))
    )
    weekdays = draw(st.one_of(st.just(frozenset(range(5))), st.sets(st.integers(0, 6), min_size=1)))
    rules = Rules(
        fractions=fractions,
        min_hours_between=draw(st.sampled_from((0.0, 20.0, 24.0, 48.0))),
        min_interval_days=min_interval,
        max_interval_days=max_interval,
        min_overall_days=min_overall,
        max_overall_days=max_overall,
        weekdays=frozenset(weekdays),
        start_weekdays=draw(
            st.one_of(st.none(), st.none(), st.sets(st.integers(0, 6), min_size=1).map(frozenset))
        ),
        first_session_minutes=draw(st.integers(30, 120)),
        session_minutes=draw(st.integers(30, 120)),
        capabilities=frozenset(draw(st.sets(st.sampled_from(("sbrt", "srs")), max_size=1))),
    )
    return ctx, rules


@st.composite
def requests(draw: st.DrawFn, rules: Rules) -> ScheduleRequest:
    earliest = BASE + timedelta(days=draw(st.integers(0, 6)))
    not_before = None
    if draw(st.booleans()):
        clock_time = time(draw(st.integers(0, 23)), draw(st.sampled_from((0, 7, 30))))
        not_before = local_to_utc(datetime.combine(earliest, clock_time), NY)
    window = None
    if draw(st.booleans()):
        start = draw(st.integers(6, 16))
        window = (time(start), time(draw(st.integers(start + 1, 20))))
    return ScheduleRequest(
        rules,
        earliest,
        not_before=not_before,
        count=draw(st.integers(1, 3)),
        horizon_days=draw(st.integers(5, 21)),
        preferred_window=window,
        preferred_linacs=tuple(draw(st.permutations(range(1, 5)))[: draw(st.integers(0, 2))]),
        step_minutes=draw(st.sampled_from((15, 30))),
    )


EXPLAIN_CODES = {
    "invalid_rules",
    "no_capable_linac",
    "fixed_conflict",
    "opening_hours",
    "not_enough_days",
    "closure",
    "capacity",
    "patient_busy",
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_proposals_are_valid(data: st.DataObject) -> None:
    ctx, rules = data.draw(worlds())
    request = data.draw(requests(rules))
    proposals = propose(request, ctx)
    assert_proposals_sound(proposals, request, ctx)
    if not proposals:
        assert explain(request, ctx, horizon_days=21).code in EXPLAIN_CODES


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_replanning_keeps_fixed_and_finds_a_schedule(data: st.DataObject) -> None:
    ctx, rules = data.draw(worlds())
    request = data.draw(requests(rules))
    original = propose(replace(request, count=1), ctx)
    assume(original)
    keep = data.draw(st.sets(st.sampled_from(range(1, rules.fractions + 1))))
    fixed = {f.number: f for f in original[0].fractions if f.number in keep}
    # Preferences only rank: without them the search still finds a course.
    plain = propose(replace(request, count=1, preferred_window=None, preferred_linacs=()), ctx)
    assert plain
    # The horizon bounds the first *free* fraction: widen it to where the original course ends.
    last = local_date(original[0].fractions[-1].start, NY)
    horizon = max(request.horizon_days, (last - request.earliest).days + 1)
    replan = replace(request, fixed=fixed, horizon_days=horizon)
    proposals = propose(replan, ctx)
    # The original completes the fixed fractions, so the (complete) search must find one.
    assert proposals
    assert_proposals_sound(proposals, replan, ctx)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_a_settled_ranking_is_the_one_a_longer_horizon_gives(data: st.DataObject) -> None:
    # What lets the service read a few weeks of bookings instead of the whole horizon.
    ctx, rules = data.draw(worlds())
    request = replace(data.draw(requests(rules)), preferred_linacs=())
    found = propose_ranked(request, ctx)
    assume(found.settled)
    longer = replace(request, horizon_days=request.horizon_days + data.draw(st.integers(1, 14)))
    assert propose(longer, ctx) == found.schedules


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_proposals_do_not_depend_on_input_order(data: st.DataObject) -> None:
    ctx, rules = data.draw(worlds())
    request = data.draw(requests(rules))
    shuffled = replace(ctx, linacs=tuple(data.draw(st.permutations(ctx.linacs))))
    proposals = propose(request, ctx)
    again = propose(request, shuffled)
    assert again == proposals
    assert [p.score for p in again] == [p.score for p in proposals]
