"""The constraint model against a brute-force enumeration and the engine's ``validate``.

Small worlds (1-3 courses, 1-2 linacs, a few days, a 30-minute grid) are enumerated
exhaustively here, with the objective written out again from its documented definition; the
model's optimum must cost exactly as much, and every schedule it returns must pass
``validate`` and the physicist cover on its own and together with the others.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from itertools import product

import pytest

from scheduler import search
from scheduler.optimiser.model import (
    INFEASIBLE,
    LINAC_CHANGE_POINTS,
    OPTIMAL,
    OVERALL_DAY_POINTS,
    WINDOW_MISS_POINTS,
    CourseToPlace,
    Problem,
    greedy,
    objective_weights,
    solve,
)
from scheduler.rules import opening_window, validate
from scheduler.timeutil import local_date, to_local
from scheduler.types import (
    Calendar,
    Interval,
    LinacSpec,
    OpeningHours,
    PhysicistCover,
    PlannedFraction,
    Rules,
    Schedule,
    ScheduleRequest,
    SearchContext,
)

MONDAY = date(2027, 3, 1)
# First days of the random worlds: a plain week, and Fridays before New York's clocks spring
# forward (Sunday 14 March 2027) and fall back (Sunday 7 November 2027).
BASE_DAYS = (MONDAY, MONDAY, date(2027, 3, 12), date(2027, 11, 5))
SBRT = frozenset({"sbrt", "cbct"})
STEP = 30
DAYS = range(7)


def at(day: date, hh: int, mm: int = 0, tz: str = "UTC") -> datetime:
    from scheduler.timeutil import local_window

    return local_window(day, time(hh, mm), time(hh, mm), tz)[0]


def iv(day: date, start: tuple[int, int], end: tuple[int, int], tz: str = "UTC") -> Interval:
    return Interval(at(day, *start, tz=tz), at(day, *end, tz=tz))


# -- brute force ----------------------------------------------------------------------------


def _grid_starts(problem: Problem, linac: LinacSpec, day: date, minutes: int) -> list[datetime]:
    window = opening_window(linac, problem.calendar, day)
    if window is None:
        return []
    out, t = [], window[0]
    while t + timedelta(minutes=minutes) <= window[1]:
        out.append(t)
        t += timedelta(minutes=problem.step_minutes)
    return out


def _course_options(problem: Problem, course: CourseToPlace, days: list[date]) -> list[Schedule]:
    """Every schedule of ``course`` on the grid that passes validate in the world alone."""
    ctx = SearchContext(
        problem.calendar, problem.linacs, problem.linac_busy, tuple(course.patient_busy)
    )
    per_fraction = []
    last_first = course.earliest + timedelta(days=course.horizon_days - 1)
    # The engine's horizon: how far past the last first day the rest of a course may run.
    _, last_day = search.search_dates(
        ScheduleRequest(course.rules, course.earliest, horizon_days=course.horizon_days)
    )
    days = [day for day in days if day <= last_day]
    for number in range(1, course.rules.fractions + 1):
        minutes = course.rules.minutes_for(number)
        places = []
        for linac in problem.linacs:
            for day in days:
                if number == 1 and not course.earliest <= day <= last_first:
                    continue
                for start in _grid_starts(problem, linac, day, minutes):
                    places.append(
                        PlannedFraction(number, linac.id, start, start + timedelta(minutes=minutes))
                    )
        per_fraction.append(places)
    options = []
    for fractions in product(*per_fraction):
        schedule = Schedule(tuple(fractions))
        if validate(schedule, course.rules, ctx, not_before=course.not_before):
            continue
        if _cover_breached(problem, [(course, schedule)]):
            continue
        options.append(schedule)
    return options


def _supervised(problem: Problem, chosen) -> list[Interval]:
    cover = problem.physicists
    return [
        f.interval
        for course, schedule in chosen
        for f in schedule.fractions
        if cover.supervises(course.rules, f.number)
    ]


def _cover_breached(problem: Problem, chosen) -> bool:
    """Minute by minute: more supervised sessions than physicists present, anywhere."""
    cover = problem.physicists
    if cover is None:
        return False
    tz = problem.calendar.timezone
    mine = _supervised(problem, chosen)
    everything = [*cover.supervised, *mine]
    for session in mine:
        t = session.start
        while t < session.end:
            local = to_local(t, tz)
            present = sum(
                count
                for start, end, count in cover.blocks_on(local.date())
                if start <= local.time() < end
            )
            running = sum(1 for other in everything if other.start <= t < other.end)
            if running > present:
                return True
            t += timedelta(minutes=1)
    return False


def _points(problem: Problem, course: CourseToPlace, schedule: Schedule) -> tuple[int, int]:
    """Weighted wait and disturbance, written out from the model's documentation."""
    tz = problem.calendar.timezone
    days = [local_date(f.start, tz) for f in schedule.fractions]
    wait = (6 - course.priority) * (days[0] - course.earliest).days
    misses = 0
    if course.preferred_window is not None:
        lo, hi = course.preferred_window
        for f in schedule.fractions:
            start, end = to_local(f.start, tz), to_local(f.end, tz)
            if start.time() < lo or end.time() > hi or end.date() != start.date():
                misses += 1
    changes = sum(
        a.linac_id != b.linac_id
        for a, b in zip(schedule.fractions, schedule.fractions[1:], strict=False)
    )
    disturbance = (
        WINDOW_MISS_POINTS * misses
        + OVERALL_DAY_POINTS * ((days[-1] - days[0]).days + 1)
        + LINAC_CHANGE_POINTS * changes
    )
    return wait, disturbance


def _conflict(problem: Problem, chosen, course: CourseToPlace, schedule: Schedule) -> bool:
    for other_course, other in chosen:
        same_patient = course.patient is not None and course.patient == other_course.patient
        for a in schedule.fractions:
            for b in other.fractions:
                if a.interval.overlaps(b.interval) and (a.linac_id == b.linac_id or same_patient):
                    return True
    return _cover_breached(problem, [*chosen, (course, schedule)])


def brute_force(problem: Problem, days: list[date]) -> int:
    """The least combined objective over every joint placement (a course may stay out)."""
    weights = objective_weights(problem)
    options = []
    for course in problem.courses:
        priced = []
        for schedule in _course_options(problem, course, days):
            wait, disturbance = _points(problem, course, schedule)
            priced.append((weights.wait * wait + weights.disturbance * disturbance, schedule))
        priced.sort(key=lambda p: p[0])
        priced.append((weights.unplaced, None))
        options.append(priced)
    cheapest = [min(cost for cost, _ in priced) for priced in options]
    best = sum(weights.unplaced for _ in problem.courses)

    def walk(i: int, chosen: list, cost: int) -> None:
        nonlocal best
        if cost + sum(cheapest[i:]) >= best:
            return
        if i == len(options):
            best = cost
            return
        course = problem.courses[i]
        for price, schedule in options[i]:
            if cost + price + sum(cheapest[i + 1 :]) >= best:
                break  # options are sorted by price
            if schedule is None:
                walk(i + 1, chosen, cost + price)
            elif not _conflict(problem, chosen, course, schedule):
                walk(i + 1, [*chosen, (course, schedule)], cost + price)

    walk(0, [], 0)
    return best


# -- random small worlds --------------------------------------------------------------------


def random_problem(seed: int, *, courses: int | None = None, days: int = 4) -> Problem:
    rng = random.Random(seed)
    base = rng.choice(BASE_DAYS)
    tz = rng.choice(["UTC", "America/New_York"])
    hours = OpeningHours({d: (time(8), time(rng.choice([9, 10]), 30)) for d in range(7)})
    linac_count = rng.choice([1, 2])
    linacs = tuple(
        LinacSpec(
            i + 1,
            f"L{i + 1}",
            SBRT if i == 0 or rng.random() < 0.7 else frozenset({"imrt"}),
            hours=(OpeningHours({d: (time(8, 30), time(10)) for d in range(7)}) if i else None),
        )
        for i in range(linac_count)
    )
    span = [base + timedelta(days=k) for k in range(days)]
    closed = frozenset(d for d in span if rng.random() < 0.15)
    calendar = Calendar(tz, hours, closed, {d: "closure" for d in closed})
    busy: dict[int, list[Interval]] = {}
    for linac in linacs:
        for day in span:
            if rng.random() < 0.4:
                start = rng.choice([(8, 0), (8, 30), (9, 0)])
                length = rng.choice([30, 45, 60])
                begins = at(day, *start, tz=tz)
                busy.setdefault(linac.id, []).append(
                    Interval(begins, begins + timedelta(minutes=length))
                )
    physicists = None
    if rng.random() < 0.5:
        physicists = PhysicistCover(
            by_weekday={d: ((time(8), time(9, 30), 1), (time(9), time(10, 30), 1)) for d in DAYS},
            exceptions={span[1]: ((time(8, 30), time(9, 30), 1),)},
            every_fraction=rng.random() < 0.5,
            supervised=(iv(span[0], (8, 0), (8, 30), tz),) if rng.random() < 0.5 else (),
        )
    batch = []
    for k in range(courses if courses is not None else rng.choice([1, 2, 3])):
        fractions = rng.choice([1, 2, 2])
        rules = Rules(
            fractions=fractions,
            min_hours_between=rng.choice([0, 20]),
            min_interval_days=rng.choice([0, 1]) if fractions > 1 else 1,
            max_interval_days=rng.choice([None, 2]),
            max_overall_days=rng.choice([None, 3]),
            weekdays=frozenset(d for d in range(7) if d != rng.choice([2, 5])),
            start_weekdays=rng.choice([None, frozenset({0, 1})]),
            first_session_minutes=rng.choice([30, 60]),
            session_minutes=30,
            capabilities=frozenset({"sbrt"}),
        )
        earliest = base + timedelta(days=rng.choice([0, 0, 1]))
        patient = rng.choice([1, 2, 3, 4])
        patient_busy = (iv(earliest, (9, 0), (9, 30), tz),) if rng.random() < 0.3 else ()
        batch.append(
            CourseToPlace(
                key=k,
                rules=rules,
                earliest=earliest,
                not_before=at(base, 8, 30, tz) if rng.random() < 0.3 else None,
                priority=rng.randint(1, 5),
                preferred_window=rng.choice([None, (time(8), time(9)), (time(9), time(11))]),
                patient_busy=patient_busy,
                patient=patient,
                horizon_days=days - (earliest - base).days - 1,
            )
        )
    return Problem(
        calendar=calendar,
        linacs=linacs,
        courses=tuple(batch),
        linac_busy=busy,
        physicists=physicists,
        step_minutes=STEP,
    )


def assert_valid(problem: Problem, solution) -> None:
    """Each schedule passes validate; together they share no linac, patient or physicist."""
    chosen = []
    for course in problem.courses:
        schedule = solution.schedules.get(course.key)
        if schedule is None:
            continue
        ctx = SearchContext(
            problem.calendar, problem.linacs, problem.linac_busy, tuple(course.patient_busy)
        )
        assert validate(schedule, course.rules, ctx, not_before=course.not_before) == []
        assert not _conflict(problem, chosen, course, schedule)
        chosen.append((course, schedule))


def _days_of(problem: Problem, extra: int = 6) -> list[date]:
    base = min(c.earliest for c in problem.courses)
    return [base + timedelta(days=k) for k in range(-1, extra)]


@pytest.mark.parametrize("seed", range(60))
def test_the_optimum_costs_what_brute_force_finds(seed):
    problem = random_problem(seed)
    solution = solve(problem, time_limit_seconds=10)
    assert solution.status in (OPTIMAL, INFEASIBLE)
    assert_valid(problem, solution)
    assert solution.objective == brute_force(problem, _days_of(problem))


@pytest.mark.parametrize(
    ("seed", "courses", "slack_days"),
    [(seed, 6, None) for seed in range(100, 112)]
    # Beyond SEARCH_ONLY_NEIGHBOURHOODS_FROM courses: improved from the one-by-one start only.
    + [(seed, 16, slack) for seed in range(200, 204) for slack in (None, 2)],
)
def test_every_solution_of_larger_worlds_is_valid(seed, courses, slack_days):
    problem = random_problem(seed, courses=courses, days=8)
    solution = solve(problem, time_limit_seconds=2, slack_days=slack_days)
    assert_valid(problem, solution)
    assert set(solution.schedules) | set(solution.unplaced) == {c.key for c in problem.courses}
    # Never worse than placing the courses one by one with the engine's proposals.
    weights = objective_weights(problem)
    one_by_one = greedy(problem)
    cost = 0
    for course in problem.courses:
        if course.key in one_by_one:
            wait, disturbance = _points(problem, course, one_by_one[course.key])
            cost += weights.wait * wait + disturbance
        else:
            cost += weights.unplaced
    assert solution.objective <= cost


# -- the world's limits, one at a time --------------------------------------------------------


def _world(**overrides) -> Problem:
    values = dict(
        calendar=Calendar("UTC", OpeningHours({d: (time(8), time(10)) for d in range(5)})),
        linacs=(LinacSpec(1, "L1", SBRT),),
        courses=(),
        step_minutes=STEP,
    )
    return Problem(**(values | overrides))


def _course(key, fractions=1, **overrides) -> CourseToPlace:
    rules = Rules(fractions=fractions, first_session_minutes=60, session_minutes=60)
    values = dict(key=key, rules=rules, earliest=MONDAY, horizon_days=10, patient=key)
    return CourseToPlace(**(values | overrides))


def _first_day(solution, key) -> date:
    return solution.schedules[key].fractions[0].start.date()


def test_a_closure_is_skipped_and_costs_wait():
    calendar = Calendar(
        "UTC",
        OpeningHours({d: (time(8), time(10)) for d in range(5)}),
        frozenset({MONDAY}),
        {MONDAY: "closure"},
    )
    problem = _world(calendar=calendar, courses=(_course("a", priority=1),))
    solution = solve(problem)
    assert _first_day(solution, "a") == MONDAY + timedelta(days=1)
    assert solution.weighted_wait == 5
    assert_valid(problem, solution)


def test_downtime_and_bookings_take_the_linac():
    busy = {
        1: [
            iv(MONDAY, (8, 0), (9, 30)),  # a booking
            Interval(at(MONDAY, 9, 30), at(MONDAY + timedelta(days=1), 23)),  # downtime
        ]
    }
    problem = _world(linac_busy=busy, courses=(_course("a"),))
    solution = solve(problem)
    assert _first_day(solution, "a") == MONDAY + timedelta(days=2)
    assert_valid(problem, solution)


def test_one_linac_one_slot_a_day_goes_to_the_urgent_course_first():
    problem = _world(
        calendar=Calendar("UTC", OpeningHours({d: (time(8), time(9)) for d in range(5)})),
        courses=(_course("routine", priority=5), _course("urgent", priority=1)),
    )
    solution = solve(problem)
    assert _first_day(solution, "urgent") == MONDAY
    assert _first_day(solution, "routine") == MONDAY + timedelta(days=1)
    assert solution.weighted_wait == 1


def test_two_courses_of_one_patient_never_overlap():
    linacs = (LinacSpec(1, "L1", SBRT), LinacSpec(2, "L2", SBRT))
    problem = _world(
        calendar=Calendar("UTC", OpeningHours({d: (time(8), time(9)) for d in range(5)})),
        linacs=linacs,
        courses=(_course("a", patient=7), _course("b", patient=7)),
    )
    solution = solve(problem)
    assert {_first_day(solution, "a"), _first_day(solution, "b")} == {
        MONDAY,
        MONDAY + timedelta(days=1),
    }
    assert_valid(problem, solution)


def test_the_patients_other_appointments_are_kept_free():
    problem = _world(courses=(_course("a", patient_busy=(iv(MONDAY, (8, 30), (10, 0)),)),))
    solution = solve(problem)
    assert _first_day(solution, "a") == MONDAY + timedelta(days=1)


def test_supervised_sessions_wait_for_a_free_physicist():
    linacs = (LinacSpec(1, "L1", SBRT), LinacSpec(2, "L2", SBRT))
    cover = PhysicistCover(
        by_weekday={d: ((time(8), time(10), 1),) for d in range(5)},
        exceptions={MONDAY: ((time(8), time(9), 1),)},  # Monday: one hour of cover only
        supervised=(iv(MONDAY + timedelta(days=1), (8, 0), (9, 0)),),
    )
    problem = _world(
        linacs=linacs,
        physicists=cover,
        courses=tuple(_course(k, priority=1) for k in "abc"),
    )
    solution = solve(problem)
    starts = sorted(s.fractions[0].start for s in solution.schedules.values())
    # Monday 08:00 (the only covered hour), Tuesday 09:00 (08:00 is taken), Wednesday 08:00.
    assert starts == [
        at(MONDAY, 8),
        at(MONDAY + timedelta(days=1), 9),
        at(MONDAY + timedelta(days=2), 8),
    ]
    assert_valid(problem, solution)


def test_without_a_roster_the_same_courses_run_side_by_side():
    linacs = (LinacSpec(1, "L1", SBRT), LinacSpec(2, "L2", SBRT))
    problem = _world(linacs=linacs, courses=tuple(_course(k, priority=1) for k in "abc"))
    solution = solve(problem)
    assert {_first_day(solution, k) for k in "abc"} == {MONDAY}
    assert solution.weighted_wait == 0


def test_later_unsupervised_fractions_need_no_physicist():
    cover = PhysicistCover(by_weekday={0: ((time(8), time(10), 1),)})  # Mondays only
    problem = _world(physicists=cover, courses=(_course("a", fractions=3),))
    solution = solve(problem)
    days = [f.start.date() for f in solution.schedules["a"].fractions]
    assert days == [MONDAY + timedelta(days=k) for k in range(3)]


def test_an_impossible_course_is_left_out_and_the_rest_placed():
    impossible = _course("x", rules=Rules(fractions=1, capabilities=frozenset({"proton"})))
    problem = _world(courses=(impossible, _course("a")))
    solution = solve(problem)
    assert set(solution.schedules) == {"a"}
    assert solution.unplaced == ("x",)


def test_nothing_placeable_is_infeasible():
    problem = _world(
        courses=(_course("x", rules=Rules(fractions=1, capabilities=frozenset({"proton"}))),)
    )
    solution = solve(problem)
    assert solution.status == INFEASIBLE
    assert solution.schedules == {}


def test_a_preferred_window_is_kept_when_it_costs_no_wait():
    problem = _world(courses=(_course("a", preferred_window=(time(9), time(10))),))
    solution = solve(problem)
    start = solution.schedules["a"].fractions[0].start
    assert (start.date(), start.time()) == (MONDAY, time(9))
    assert solution.disturbance == OVERALL_DAY_POINTS


def test_a_batch_solved_to_optimality_gives_the_same_plan_every_time():
    problem = random_problem(7, courses=6, days=8)
    first, second = solve(problem, time_limit_seconds=2), solve(problem, time_limit_seconds=2)
    assert first.status == second.status == OPTIMAL
    assert first.schedules == second.schedules
    assert first.objective == second.objective


def test_start_times_are_on_the_grid_in_utc_minutes():
    problem = random_problem(3, courses=3, days=6)
    solution = solve(problem)
    for schedule in solution.schedules.values():
        for f in schedule.fractions:
            assert f.start.tzinfo is not None and f.start.utcoffset() == timedelta(0)
            assert f.start.astimezone(UTC).second == 0
