"""Placing several courses together with a constraint model (OR-Tools CP-SAT).

The product books one course at a time: the first-ranked proposal at arrival. This module
places a batch of courses at once, so that a day's ready courses (or every arrival of a
period known in advance) share the linacs in the way that serves them best together.

What is minimised, in strict order (each level outweighs everything below it):

1. courses left unplaced (none can be placed within its horizon, or they cannot all fit);
2. the weighted wait: for each placed course, the local days from its earliest date to its
   first fraction, times ``6 - priority`` (priority 1, urgent, weighs 5 per day; 5 weighs 1);
3. the disturbance: ``WINDOW_MISS_POINTS`` per fraction starting or ending outside the
   course's preferred window, ``OVERALL_DAY_POINTS`` per local day from first to last fraction
   (inclusive), ``LINAC_CHANGE_POINTS`` per fraction on another linac than the one before.

The model is time-indexed by candidates, like the engine's search: a fraction may start only
on a grid of ``step_minutes`` aligned to its linac's opening time, inside the linac's free
time (opening hours minus bookings and downtime), outside the patient's other appointments,
not before ``not_before`` and, when supervised, inside rostered physicist time. Per fraction
there is one start variable (UTC minutes) and one literal per (linac, local day) it may use,
with its own start over that place's candidates; the literal's optional interval takes part
in a no-overlap per linac and day, in a no-overlap per patient when several courses share
one, and in a cumulative per day over the physicists present. The protocol's day rules are
linear constraints over each fraction's day index.

How it is searched: the courses are first placed one by one with the engine's proposals
(:func:`greedy`). That placement is the solver's starting point, the answer whenever the
solver finds nothing better in time, and, when it places every course, a bound on each
course's wait in any better placement (which keeps the model small). Batches of more than
``SEARCH_ONLY_NEIGHBOURHOODS_FROM`` courses are improved by large neighbourhood search only.

Pure: standard library, OR-Tools and the engine only.
"""

from __future__ import annotations

import math
import time as wallclock
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta

from ortools.sat.python import cp_model

from scheduler import search
from scheduler.rules import BusyIndex, Validator, capable, closed_reason
from scheduler.timeutil import local_date, local_minutes, local_window
from scheduler.types import (
    Calendar,
    Interval,
    LinacSpec,
    PhysicistCover,
    PlannedFraction,
    Rules,
    Schedule,
    ScheduleRequest,
    SearchContext,
)

WINDOW_MISS_POINTS = 5
OVERALL_DAY_POINTS = 1
LINAC_CHANGE_POINTS = 10

# Solver work units per second of limit: what this kind of shared two-core machine does in a
# second on batches of tens of courses (measured with bench/optimiser.py).
WORK_PER_SECOND = 0.05

# Batches larger than this are only improved, never proven optimal.
SEARCH_ONLY_NEIGHBOURHOODS_FROM = 12

OPTIMAL, FEASIBLE, INFEASIBLE, UNKNOWN = "OPTIMAL", "FEASIBLE", "INFEASIBLE", "UNKNOWN"


@dataclass(frozen=True)
class CourseToPlace:
    """One course of a batch: its rules, when it may start and what it prefers."""

    key: Hashable
    rules: Rules
    earliest: date  # local date of the earliest allowed first fraction
    not_before: datetime | None = None  # UTC instant no fraction may start before
    priority: int = 3  # 1 (urgent) .. 5
    preferred_window: tuple[time, time] | None = None  # local time of day
    # The patient's other active bookings; courses with the same ``patient`` (not None) must
    # also not overlap each other.
    patient_busy: Sequence[Interval] = ()
    patient: Hashable | None = None
    horizon_days: int = 42  # the first fraction falls within this many days of ``earliest``

    @property
    def weight(self) -> int:
        """Points per day of wait: 5 for priority 1 down to 1 for priority 5."""
        return 6 - min(5, max(1, self.priority))


@dataclass(frozen=True)
class Problem:
    """The world (as a SearchContext describes it) and the courses to place in it."""

    calendar: Calendar
    linacs: tuple[LinacSpec, ...]
    courses: tuple[CourseToPlace, ...]
    # Per linac id: existing active bookings and downtime.
    linac_busy: Mapping[int, Sequence[Interval]] = field(default_factory=dict)
    physicists: PhysicistCover | None = None
    step_minutes: int = 15

    def context_for(self, course: CourseToPlace) -> SearchContext:
        """The SearchContext one course sees alone (what :func:`validate` checks it against)."""
        return SearchContext(
            calendar=self.calendar,
            linacs=self.linacs,
            linac_busy=self.linac_busy,
            patient_busy=tuple(course.patient_busy),
            physicists=self.physicists,
        )


@dataclass(frozen=True)
class Solution:
    status: str  # OPTIMAL, FEASIBLE (time limit reached), INFEASIBLE (nothing placeable)
    schedules: Mapping[Hashable, Schedule]  # placed courses only
    unplaced: tuple[Hashable, ...]
    weighted_wait: int
    disturbance: int
    objective: int  # the combined objective (see ``objective_weights``)
    wall_seconds: float


@dataclass(frozen=True)
class ObjectiveWeights:
    """Multipliers that make the combined objective lexicographic for one problem."""

    unplaced: int
    wait: int
    disturbance: int = 1


def objective_weights(problem: Problem) -> ObjectiveWeights:
    """Weights large enough that one unplaced course outweighs any wait and disturbance, and
    one point of wait any disturbance (bounded by each course's horizon)."""
    max_disturbance = 0
    max_wait = 0
    for course in problem.courses:
        n = course.rules.fractions
        first, last = _day_range(course)
        max_disturbance += (
            WINDOW_MISS_POINTS * n
            + OVERALL_DAY_POINTS * ((last - first).days + 1)
            + LINAC_CHANGE_POINTS * (n - 1)
        )
        max_wait += course.weight * course.horizon_days
    wait = max_disturbance + 1
    return ObjectiveWeights(unplaced=wait * (max_wait + 1), wait=wait)


def course_points(course: CourseToPlace, schedule: Schedule, tz: str) -> tuple[int, int]:
    """(weighted wait, disturbance) of one placed course, as the model counts them."""
    days = [local_date(f.start, tz) for f in schedule.fractions]
    wait = course.weight * (days[0] - course.earliest).days
    misses = 0
    if course.preferred_window is not None:
        lo, hi = (t.hour * 60 + t.minute for t in course.preferred_window)
        for f in schedule.fractions:
            start = local_minutes(f.start, tz)
            length = int((f.end - f.start).total_seconds() // 60)
            if start < lo or start + length > hi:
                misses += 1
    changes = sum(
        1
        for a, b in zip(schedule.fractions, schedule.fractions[1:], strict=False)
        if a.linac_id != b.linac_id
    )
    overall = (days[-1] - days[0]).days + 1
    disturbance = (
        WINDOW_MISS_POINTS * misses + OVERALL_DAY_POINTS * overall + LINAC_CHANGE_POINTS * changes
    )
    return wait, disturbance


def _day_range(course: CourseToPlace) -> tuple[date, date]:
    """Local dates any fraction of ``course`` may fall on (the engine's search dates)."""
    request = ScheduleRequest(
        rules=course.rules, earliest=course.earliest, horizon_days=course.horizon_days
    )
    return search.search_dates(request)


# -- candidates ---------------------------------------------------------------------------


@dataclass
class _Candidates:
    """Per (linac id, local day): the grid starts (UTC minutes since the origin)."""

    by_place: dict[tuple[int, date], list[int]]


class _World:
    """Free time of the problem's world in integer minutes, memoised per linac and day."""

    def __init__(self, problem: Problem, origin: datetime) -> None:
        self.problem = problem
        self.origin = origin
        self.tz = problem.calendar.timezone
        self.validator = Validator(
            SearchContext(problem.calendar, problem.linacs, problem.linac_busy)
        )
        self.step = max(1, problem.step_minutes)
        self._free: dict[tuple[int, date], tuple[int, list[tuple[int, int]]] | None] = {}
        self._cover: dict[date, list[tuple[int, int, int]]] = {}
        self._supervised = BusyIndex(problem.physicists.supervised if problem.physicists else ())

    def minute(self, instant: datetime) -> int:
        return math.floor((instant - self.origin).total_seconds() / 60)

    def minute_up(self, instant: datetime) -> int:
        return math.ceil((instant - self.origin).total_seconds() / 60)

    def instant(self, minute: int) -> datetime:
        return self.origin + timedelta(minutes=minute)

    def free(self, linac: LinacSpec, day: date) -> tuple[int, list[tuple[int, int]]] | None:
        """The opening minute and the linac's free pieces on ``day`` (None: closed)."""
        key = (linac.id, day)
        if key not in self._free:
            found = None
            window = (
                None
                if closed_reason(self.problem.calendar, day) is not None
                else self.validator.window(linac, day)
            )
            if window is not None:
                pieces = [
                    (self.minute_up(a), self.minute(b))
                    for a, b in self.validator.linac_busy(linac.id).free(*window)
                ]
                found = (self.minute_up(window[0]), [(a, b) for a, b in pieces if a < b])
            self._free[key] = found
        return self._free[key]

    def cover(self, day: date) -> list[tuple[int, int, int]]:
        """Physicists still free on ``day``: (start, end, count) pieces in minutes, count
        being those present minus supervised sessions already booked (never below 0)."""
        if day in self._cover:
            return self._cover[day]
        cover = self.problem.physicists
        assert cover is not None
        blocks = [
            (*local_window(day, start, end, self.tz), count)
            for start, end, count in cover.blocks_on(day)
            if count > 0
        ]
        points: set[int] = set()
        spans: list[tuple[int, int, int]] = []
        for start, end, count in blocks:
            a, b = self.minute_up(start), self.minute(end)
            if a < b:
                spans.append((a, b, count))
                points.update((a, b))
        busy: list[tuple[int, int]] = []
        if spans:
            lo = min(a for a, _, _ in spans)
            hi = max(b for _, b, _ in spans)
            # Each booked supervised session takes a physicist, overlapping or not.
            busy = [
                (self.minute(iv.start), self.minute_up(iv.end))
                for iv in self._supervised.intervals
                if iv.start < self.instant(hi) and iv.end > self.instant(lo)
            ]
            for a, b in busy:
                points.update((max(a, lo), min(b, hi)))
        ordered = sorted(points)
        pieces: list[tuple[int, int, int]] = []
        for a, b in zip(ordered, ordered[1:], strict=False):
            present = sum(c for s, e, c in spans if s <= a and b <= e)
            taken = sum(1 for s, e in busy if s <= a and b <= e)
            free = max(0, present - taken)
            if pieces and pieces[-1][1] == a and pieces[-1][2] == free:
                pieces[-1] = (pieces[-1][0], b, free)
            else:
                pieces.append((a, b, free))
        self._cover[day] = pieces
        return pieces


def _cut(pieces: list[tuple[int, int]], busy: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``pieces`` minus every span of ``busy`` (both sorted, disjoint)."""
    out = []
    for a, b in pieces:
        cursor = a
        for s, e in busy:
            if e <= cursor or s >= b:
                continue
            if s > cursor:
                out.append((cursor, s))
            cursor = max(cursor, e)
        if cursor < b:
            out.append((cursor, b))
    return out


def _intersect(pieces: list[tuple[int, int]], keep: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``pieces`` inside ``keep``, adjacent parts joined (a session may run
    from one piece of physicist cover into the next)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(
        (max(a, s), min(b, e)) for a, b in pieces for s, e in keep if max(a, s) < min(b, e)
    ):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _grid(opens: int, pieces: list[tuple[int, int]], length: int, step: int) -> list[int]:
    starts = []
    for a, b in pieces:
        t = opens + -((opens - a) // step) * step  # first grid point at or after a
        while t + length <= b:
            starts.append(t)
            t += step
    return starts


def _candidates(
    world: _World, course: CourseToPlace, number: int, first: date, last: date
) -> _Candidates:
    rules = course.rules
    length = rules.minutes_for(number)
    n = rules.fractions
    lo = first + timedelta(days=(number - 1) * rules.min_interval_days)
    hi = last - timedelta(days=(n - number) * rules.min_interval_days)
    if number == 1:
        hi = min(hi, course.earliest + timedelta(days=max(1, course.horizon_days) - 1))
    patient = BusyIndex(course.patient_busy)
    cover = world.problem.physicists
    supervised = cover is not None and cover.supervises(rules, number)
    not_before = world.minute_up(course.not_before) if course.not_before is not None else None
    out: dict[tuple[int, date], list[int]] = {}
    day = lo
    while day <= hi:
        ok = day.weekday() in rules.weekdays and not (
            number == 1
            and rules.start_weekdays is not None
            and day.weekday() not in rules.start_weekdays
        )
        for linac in world.problem.linacs if ok else ():
            if not capable(linac, rules):
                continue
            free = world.free(linac, day)
            if free is None:
                continue
            opens, pieces = free
            if pieces and course.patient_busy:
                busy = patient.overlapping(
                    world.instant(pieces[0][0]), world.instant(pieces[-1][1])
                )
                pieces = _cut(pieces, [(world.minute(s), world.minute_up(e)) for s, e in busy])
            if not_before is not None:
                pieces = [(max(a, not_before), b) for a, b in pieces if b > not_before]
            if supervised:
                pieces = _intersect(pieces, [(a, b) for a, b, c in world.cover(day) if c > 0])
            starts = _grid(opens, pieces, length, world.step)
            if starts:
                out[(linac.id, day)] = starts
        day += timedelta(days=1)
    return _Candidates(out)


# -- greedy start ---------------------------------------------------------------------------


def greedy(problem: Problem) -> dict[Hashable, Schedule]:
    """Each course in turn (most urgent, then earliest, first) takes the engine's best-ranked
    proposal around those already placed: a valid starting point and a bound for the model."""
    placed: dict[Hashable, Schedule] = {}
    linac_busy = {lid: list(ivs) for lid, ivs in problem.linac_busy.items()}
    by_patient: dict[Hashable, list[Interval]] = defaultdict(list)
    supervised = list(problem.physicists.supervised) if problem.physicists else []
    order = sorted(
        range(len(problem.courses)),
        key=lambda i: (problem.courses[i].priority, problem.courses[i].earliest, i),
    )
    for i in order:
        course = problem.courses[i]
        own = by_patient[course.patient] if course.patient is not None else []
        cover = (
            replace(problem.physicists, supervised=sorted(supervised, key=lambda iv: iv.start))
            if problem.physicists is not None
            else None
        )
        ctx = SearchContext(
            calendar=problem.calendar,
            linacs=problem.linacs,
            linac_busy={
                lid: sorted(ivs, key=lambda iv: iv.start) for lid, ivs in linac_busy.items()
            },
            patient_busy=sorted([*course.patient_busy, *own], key=lambda iv: iv.start),
            physicists=cover,
        )
        request = ScheduleRequest(
            rules=course.rules,
            earliest=course.earliest,
            not_before=course.not_before,
            count=1 if problem.physicists is None else 5,
            horizon_days=course.horizon_days,
            preferred_window=course.preferred_window,
            step_minutes=problem.step_minutes,
        )
        # The best proposal the physicists can supervise (the search may not know them).
        schedule = next(
            (
                Schedule(s.fractions)
                for s in search.propose(request, ctx)
                if _supervision_fits(problem, course, Schedule(s.fractions), supervised)
            ),
            None,
        )
        if schedule is None:
            continue
        placed[course.key] = schedule
        for f in schedule.fractions:
            linac_busy.setdefault(f.linac_id, []).append(f.interval)
            if course.patient is not None:
                own.append(f.interval)
            if problem.physicists is not None and problem.physicists.supervises(
                course.rules, f.number
            ):
                supervised.append(f.interval)
    return placed


def supervision_breaches(
    cover: PhysicistCover,
    tz: str,
    sessions: Sequence[Interval],
) -> list[Interval]:
    """Supervised ``sessions`` (with ``cover.supervised``) that exceed the physicists present
    at some instant or lie outside rostered time; empty when the cover holds."""
    everything = [*cover.supervised, *sessions]
    bad = []
    for session in sessions:
        day = local_date(session.start, tz)
        blocks = [(*local_window(day, s, e, tz), c) for s, e, c in cover.blocks_on(day) if c > 0]
        # Instants where the count can change inside the session.
        points = {session.start}
        for s, e, _ in blocks:
            points.update(p for p in (s, e) if session.start < p < session.end)
        for iv in everything:
            points.update(p for p in (iv.start, iv.end) if session.start < p < session.end)
        for p in sorted(points):
            present = sum(c for s, e, c in blocks if s <= p < e)
            running = sum(1 for iv in everything if iv.start <= p < iv.end)
            if running > present:
                bad.append(session)
                break
    return bad


def _supervision_fits(
    problem: Problem, course: CourseToPlace, schedule: Schedule, supervised: list[Interval]
) -> bool:
    cover = problem.physicists
    if cover is None:
        return True
    mine = [f.interval for f in schedule.fractions if cover.supervises(course.rules, f.number)]
    return not supervision_breaches(
        replace(cover, supervised=tuple(supervised)), problem.calendar.timezone, mine
    )


# -- the model ----------------------------------------------------------------------------


def solve(
    problem: Problem,
    *,
    time_limit_seconds: float = 10.0,
    deterministic: bool = True,
    slack_days: int | None = None,
    use_greedy: bool = True,
) -> Solution:
    """The best placement of ``problem.courses`` the solver proves or finds in the time limit.

    ``deterministic``: the limit is turned into the solver's deterministic work
    (``WORK_PER_SECOND`` units per second) rather than wall time, so a load on the machine
    does not change how far the search goes; the wall clock is only capped at three times
    the limit. A batch solved to optimality (a day's courses, typically) gives the same
    answer on every run; a large batch stopped by the limit may differ between runs, since
    the two workers' neighbourhood searches share their solutions as they go.

    ``slack_days``: None keeps the search exact. A number restricts each course's first
    fraction to at most that many days after the one the one-by-one placement gives it (which
    stays a solution), and keeps large batches small enough to improve within seconds.
    """
    started = wallclock.perf_counter()
    tz = problem.calendar.timezone
    courses = problem.courses
    if not courses:
        return Solution(OPTIMAL, {}, (), 0, 0, 0, 0.0)
    origin_day = min(c.earliest for c in courses) - timedelta(days=2)
    origin = datetime.combine(origin_day, time(0), UTC)
    world = _World(problem, origin)
    weights = objective_weights(problem)
    hint = greedy(problem) if use_greedy else {}

    # A placement of every course bounds each course's wait in any better one.
    wait_cap: dict[Hashable, int] = {}
    if len(hint) == len(courses):
        total = sum(course_points(c, hint[c.key], tz)[0] for c in courses)
        wait_cap = {c.key: total // c.weight for c in courses}

    patients = Counter(c.patient for c in courses if c.patient is not None)
    model = cp_model.CpModel()
    per_linac_day: dict[tuple[int, date], list] = defaultdict(list)
    per_patient: dict[Hashable, list] = defaultdict(list)
    supervised_by_day: dict[date, list] = defaultdict(list)
    objective_terms: list = []
    decode: list[tuple[CourseToPlace, cp_model.IntVar, list]] = []
    owns: dict[tuple[int, int, int, date], cp_model.IntVar] = {}

    for index, course in enumerate(courses):
        rules = course.rules
        n = rules.fractions
        first, last = _day_range(course)
        bounded = course
        cap = wait_cap.get(course.key)
        if slack_days is not None and course.key in hint:
            # Large batches: look for the first fraction near the one-by-one placement only.
            start = local_date(hint[course.key].first_start, tz)
            near = (start - course.earliest).days + slack_days
            cap = near if cap is None else min(cap, near)
        if cap is not None:
            horizon = min(course.horizon_days, cap + 1)
            bounded = replace(course, horizon_days=horizon)
            if rules.max_overall_days is not None or rules.max_interval_days is not None:
                # The protocol bounds the course's length, so an earlier last start day
                # brings its last day in too (without such a rule the horizon does).
                last = min(last, _day_range(bounded)[1])
        placed = model.NewBoolVar(f"placed{index}")
        fractions = []
        starts_by_fraction: list[list[int]] = []
        for number in range(1, n + 1):
            cands = _candidates(world, bounded, number, first, last)
            length = rules.minutes_for(number)
            if not cands.by_place:
                model.Add(placed == 0)
            all_starts = sorted({s for starts in cands.by_place.values() for s in starts})
            start = model.NewIntVarFromDomain(
                cp_model.Domain.FromValues(all_starts or [0]), f"s{index}_{number}"
            )
            literals: dict[tuple[int, date], cp_model.IntVar] = {}
            for (linac_id, day), starts in sorted(cands.by_place.items()):
                lit = model.NewBoolVar(f"x{index}_{number}_{linac_id}_{day:%Y%m%d}")
                literals[(linac_id, day)] = lit
                # Its own start on this linac and day, equal to the fraction's when chosen:
                # the interval's domain then holds only this place's candidates.
                own = model.NewIntVarFromDomain(cp_model.Domain.FromValues(starts), "")
                model.Add(start == own).OnlyEnforceIf(lit)
                owns[(index, number, linac_id, day)] = own
                interval = model.NewOptionalFixedSizeIntervalVar(own, length, lit, "")
                per_linac_day[(linac_id, day)].append(interval)
                if course.patient is not None:
                    per_patient[course.patient].append(interval)
                if problem.physicists is not None and problem.physicists.supervises(rules, number):
                    supervised_by_day[day].append(interval)
            model.Add(sum(literals.values()) == placed)
            day_index = sum((day - origin_day).days * lit for (_, day), lit in literals.items())
            fractions.append((number, start, literals, day_index, length))
            starts_by_fraction.append(all_starts)

        # Order, no overlap within the course and minimum hours between fractions.
        gap_minutes = math.ceil(rules.min_hours_between * 60 - 1e-9)
        for (_, s_a, _, d_a, len_a), (_, s_b, _, d_b, _) in zip(
            fractions, fractions[1:], strict=False
        ):
            model.Add(s_b - s_a >= max(len_a, gap_minutes, 1)).OnlyEnforceIf(placed)
            model.Add(d_b - d_a >= rules.min_interval_days).OnlyEnforceIf(placed)
            if rules.max_interval_days is not None:
                model.Add(d_b - d_a <= rules.max_interval_days).OnlyEnforceIf(placed)
        d_first, d_last = fractions[0][3], fractions[-1][3]
        if rules.min_overall_days is not None:
            model.Add(d_last - d_first + 1 >= rules.min_overall_days).OnlyEnforceIf(placed)
        if rules.max_overall_days is not None:
            model.Add(d_last - d_first + 1 <= rules.max_overall_days).OnlyEnforceIf(placed)

        # Objective parts; every one is zero for a course left unplaced.
        span = (last - first).days + 1
        earliest_index = (course.earliest - origin_day).days
        wait = model.NewIntVar(0, max(0, course.horizon_days), f"wait{index}")
        model.Add(wait == d_first - earliest_index).OnlyEnforceIf(placed)
        model.Add(wait == 0).OnlyEnforceIf(placed.Not())
        overall = model.NewIntVar(0, span, f"overall{index}")
        model.Add(overall == d_last - d_first + 1).OnlyEnforceIf(placed)
        model.Add(overall == 0).OnlyEnforceIf(placed.Not())
        objective_terms.append(weights.unplaced * (1 - placed))
        objective_terms.append(weights.wait * course.weight * wait)
        objective_terms.append(weights.disturbance * OVERALL_DAY_POINTS * overall)
        if course.preferred_window is not None:
            lo, hi = (t.hour * 60 + t.minute for t in course.preferred_window)
            for (number, start, _, _, length), starts in zip(
                fractions, starts_by_fraction, strict=True
            ):
                inside = [
                    s
                    for s in starts
                    if lo <= local_minutes(world.instant(s), tz)
                    and local_minutes(world.instant(s), tz) + length <= hi
                ]
                in_window = model.NewBoolVar(f"w{index}_{number}")
                model.AddImplication(in_window, placed)
                if inside:
                    model.AddLinearExpressionInDomain(
                        start, cp_model.Domain.FromValues(sorted(set(inside)))
                    ).OnlyEnforceIf(in_window)
                else:
                    model.Add(in_window == 0)
                objective_terms.append(
                    weights.disturbance * WINDOW_MISS_POINTS * (placed - in_window)
                )
        for (_, _, lits_a, _, _), (_, _, lits_b, _, _) in zip(
            fractions, fractions[1:], strict=False
        ):
            change = model.NewBoolVar("")
            for linac in problem.linacs:
                on_a = sum(lit for (lid, _), lit in lits_a.items() if lid == linac.id)
                on_b = sum(lit for (lid, _), lit in lits_b.items() if lid == linac.id)
                model.Add(change >= on_b - on_a)
            objective_terms.append(weights.disturbance * LINAC_CHANGE_POINTS * change)
        decode.append((course, placed, fractions))

        # Hint the greedy placement.
        if course.key in hint:
            schedule = hint[course.key]
            model.AddHint(placed, 1)
            for f, (_, start, literals, _, _) in zip(schedule.fractions, fractions, strict=True):
                model.AddHint(start, world.minute(f.start))
                day = local_date(f.start, tz)
                for (lid, d), lit in literals.items():
                    model.AddHint(lit, 1 if (lid, d) == (f.linac_id, day) else 0)
                own = owns.get((index, f.number, f.linac_id, day))
                if own is not None:
                    model.AddHint(own, world.minute(f.start))
        else:
            model.AddHint(placed, 0)

    for intervals in per_linac_day.values():
        if len(intervals) > 1:
            model.AddNoOverlap(intervals)
    for patient, intervals in per_patient.items():
        # One course alone is kept apart by its own ordering constraints.
        if patients[patient] > 1:
            model.AddNoOverlap(intervals)
    for day, intervals in supervised_by_day.items():
        _add_physicists(model, world, day, intervals)

    model.Minimize(sum(objective_terms))
    solver = cp_model.CpSolver()
    params = solver.parameters
    # Two workers (what the machine has), interleaved: one alone does no large neighbourhood
    # search, which is what improves big batches.
    params.num_workers = 2
    params.interleave_search = True
    params.random_seed = 0
    # Probing costs minutes on batches of tens of courses and buys little here.
    params.cp_model_probing_level = 0
    if len(courses) > SEARCH_ONLY_NEIGHBOURHOODS_FROM:
        # Proving a large batch optimal is out of reach; improving its start is not, and
        # neighbourhood search alone does it several times faster than sharing its time
        # with a complete search (measured with bench/optimiser.py).
        params.use_lns_only = True
    if deterministic:
        params.max_deterministic_time = max(0.01, time_limit_seconds * WORK_PER_SECOND)
        params.max_time_in_seconds = max(0.05, 3 * time_limit_seconds)
    else:
        params.max_time_in_seconds = max(0.05, time_limit_seconds)
    status = solver.Solve(model)

    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        # No solution in time (the empty placement is always one, so only a tiny limit).
        return _from_greedy(problem, hint, weights, started)
    schedules: dict[Hashable, Schedule] = {}
    for course, placed, fractions in decode:
        if not solver.BooleanValue(placed):
            continue
        planned = []
        for number, start, literals, _, length in fractions:
            linac_id = next(lid for (lid, _), lit in literals.items() if solver.BooleanValue(lit))
            begins = world.instant(solver.Value(start))
            planned.append(
                PlannedFraction(number, linac_id, begins, begins + timedelta(minutes=length))
            )
        schedules[course.key] = Schedule(tuple(planned))
    found = _solution(
        problem,
        schedules,
        weights,
        OPTIMAL if status == cp_model.OPTIMAL else FEASIBLE,
        started,
    )
    if found.status == FEASIBLE and hint:
        # Stopped early: never return less than placing the courses one by one gives.
        one_by_one = _from_greedy(problem, hint, weights, started)
        if one_by_one.objective < found.objective:
            return one_by_one
    return found


def _add_physicists(model: cp_model.CpModel, world: _World, day: date, intervals: list) -> None:
    """At no instant of ``day`` more supervised sessions than physicists still free: the
    free count is a step function, so a cumulative of its maximum with fixed intervals
    filling the difference."""
    pieces = world.cover(day)
    capacity = max((c for _, _, c in pieces), default=0)
    if capacity <= 0:  # no candidate is supervised on such a day (see _candidates)
        return
    demands = [1] * len(intervals)
    fillers = []
    lo = min(a for a, _, _ in pieces)
    hi = max(b for _, b, _ in pieces)
    day_start, day_end = lo - 24 * 60, hi + 24 * 60
    cursor = day_start
    for a, b, c in pieces:
        if a > cursor:
            fillers.append((cursor, a, capacity))
        if c < capacity:
            fillers.append((a, b, capacity - c))
        cursor = b
    fillers.append((cursor, day_end, capacity))
    all_intervals = list(intervals)
    for a, b, demand in fillers:
        all_intervals.append(model.NewFixedSizeIntervalVar(a, b - a, ""))
        demands.append(demand)
    model.AddCumulative(all_intervals, demands, capacity)


def _solution(
    problem: Problem,
    schedules: dict[Hashable, Schedule],
    weights: ObjectiveWeights,
    status: str,
    started: float,
) -> Solution:
    tz = problem.calendar.timezone
    wait = disturbance = 0
    for course in problem.courses:
        if course.key in schedules:
            w, d = course_points(course, schedules[course.key], tz)
            wait += w
            disturbance += d
    unplaced = tuple(c.key for c in problem.courses if c.key not in schedules)
    if not schedules:
        status = INFEASIBLE
    return Solution(
        status=status,
        schedules=schedules,
        unplaced=unplaced,
        weighted_wait=wait,
        disturbance=disturbance,
        objective=weights.unplaced * len(unplaced) + weights.wait * wait + disturbance,
        wall_seconds=wallclock.perf_counter() - started,
    )


def _from_greedy(
    problem: Problem, hint: dict[Hashable, Schedule], weights: ObjectiveWeights, started: float
) -> Solution:
    solution = _solution(problem, dict(hint), weights, FEASIBLE, started)
    return solution if solution.schedules else replace(solution, status=UNKNOWN)
