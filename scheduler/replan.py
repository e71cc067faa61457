"""Re-planning the fractions a linac downtime displaces, for the whole department at once.

Every affected fraction of every course is seen together, in two passes:

1. **Own time kept.** Each fraction whose own time is free on a beam-matched partner goes
   there, for all courses, before anything else is placed. Placing course by course instead
   lets an earlier course's displaced fraction take a later course's same-time slot, and that
   one then loses its own time too.
2. **The rest**, course by course (priority, then earliest displaced start, then id). Each
   fraction goes where it disturbs the patient least: on the beam-matched group (the down
   linac outside the downtime, or a partner) before any other capable linac, which would
   need a new plan; then the smallest shift from its own time, a later time before an
   earlier one on a tie; then linac and start. When the fractions cannot move one by one,
   the course's displaced fractions are re-planned together by the search. Fractions the
   downtime does not touch never move; what cannot be placed needs a human.

Every placement keeps the course's rules against the bookings as they stand after the
placements before it (the rule book checks it), and the order is fully deterministic.

``first_come=True`` gives the plain re-plan this replaces (course by course, each fraction at
its own time on a partner if free, else the first free time after it), kept for comparison.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload, selectinload

from scheduler import rules as rulebook
from scheduler import search
from scheduler.context import (
    department_calendar,
    hold_physicist_roster,
    linac_specs,
    local_day_bounds,
    roster_cover,
    rules_from_protocol,
    supervised_sessions,
)
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    Course,
    Department,
    Downtime,
    Fraction,
    FractionStatus,
)
from scheduler.rules import BusyIndex, Validator, capable, closed_reason
from scheduler.timeutil import local_date, to_local
from scheduler.types import (
    Calendar,
    Interval,
    LinacSpec,
    PlannedFraction,
    Rules,
    Schedule,
    ScheduleRequest,
    SearchContext,
)

# A fraction moved to another time needs the patient told and able to travel.
MOVE_LEAD_TIME = timedelta(hours=2)
# How far from its own day a displaced fraction is looked for; the course's rules bound it
# much closer in practice.
DAYS_BEFORE, DAYS_AFTER = 7, 28
STEP = timedelta(minutes=15)
# A moved fraction never lands in one of these, even where it stood in one before; a
# supervised fraction always lands where a physicist is free.
_BLOCKING = frozenset({"linac_busy", "patient_busy", "physicist_cover"})
_SPACING = frozenset(
    {"order", "self_overlap", "min_hours_between", "min_interval_days", "max_interval_days"}
)
_SCHEDULED = (*ACTIVE_FRACTION_STATUSES, FractionStatus.COMPLETED)


class Outcome(enum.StrEnum):
    """What happened to one displaced fraction, as the report counts it."""

    KEPT_TIME = "kept_time"
    SAME_DAY = "same_day"
    OTHER_DAY = "other_day"
    NEEDS_HUMAN = "needs_human"


@dataclass(frozen=True)
class Move:
    fraction: Fraction
    target: PlannedFraction


@dataclass
class Replan:
    moves: list[Move] = field(default_factory=list)
    # Per course, its displaced fractions that no placement could take.
    unplaced: dict[int, list[Fraction]] = field(default_factory=dict)
    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))


def outcome(before: PlannedFraction, after: PlannedFraction, tz: str) -> Outcome:
    if after.start == before.start:
        return Outcome.KEPT_TIME
    if local_date(after.start, tz) == local_date(before.start, tz):
        return Outcome.SAME_DAY
    return Outcome.OTHER_DAY


def _planned(f: Fraction) -> PlannedFraction:
    return PlannedFraction(f.number, f.linac_id, f.starts_at, f.ends_at)


class _World:
    """The department's bookings and downtime over the re-plan's days, changed as it places."""

    def __init__(self, session: Session, department: Department, first: date, last: date) -> None:
        self.tz = department.timezone
        self.first, self.last = first, last
        self.calendar: Calendar = department_calendar(session, department, first, last)
        self.linacs: tuple[LinacSpec, ...] = linac_specs(department.linacs)
        linac_ids = [spec.id for spec in self.linacs]
        start, end = local_day_bounds(self.tz, first, last)
        rows = session.execute(
            sa.select(
                Fraction.id,
                Fraction.course_id,
                Fraction.patient_id,
                Fraction.linac_id,
                Fraction.starts_at,
                Fraction.ends_at,
            ).where(
                Fraction.linac_id.in_(linac_ids),
                Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
                Fraction.starts_at < end,
                Fraction.ends_at > start,
            )
        ).all()
        self.where: dict[int, tuple[int, int, int, Interval]] = {
            r.id: (r.course_id, r.patient_id, r.linac_id, Interval(r.starts_at, r.ends_at))
            for r in rows
        }
        self.downtime: dict[int, list[Interval]] = {}
        for linac_id, starts_at, ends_at in session.execute(
            sa.select(Downtime.linac_id, Downtime.starts_at, Downtime.ends_at).where(
                Downtime.linac_id.in_(linac_ids),
                Downtime.starts_at < end,
                Downtime.ends_at > start,
            )
        ):
            self.downtime.setdefault(linac_id, []).append(Interval(starts_at, ends_at))
        # Supervised sessions by fraction id (course, where): moves keep them up to date.
        hold_physicist_roster(session, department)  # the re-plan writes what it places
        self.cover = roster_cover(session, department, first, last)
        self.supervised: dict[int, tuple[int, Interval]] = {}
        if self.cover is not None:
            for s in supervised_sessions(session, department, self.cover, start, end):
                self.supervised[s.fraction_id] = (s.course_id, s.interval)

    def context(self, course: Course, holding: Iterable[Interval] = ()) -> SearchContext:
        """The world as one course sees it: without its own fractions, with the patient's
        other ones, and ``holding`` (places the patient still holds until the moves are
        written one after another) as the patient's too."""
        busy: dict[int, list[Interval]] = {lid: list(ivs) for lid, ivs in self.downtime.items()}
        patient: list[Interval] = list(holding)
        own_course, own_patient = course.id, course.patient_id
        for course_id, patient_id, linac_id, interval in self.where.values():
            if course_id == own_course:
                continue
            busy.setdefault(linac_id, []).append(interval)
            if patient_id == own_patient:
                patient.append(interval)
        for ivs in busy.values():
            ivs.sort(key=lambda iv: iv.start)
        patient.sort(key=lambda iv: iv.start)
        physicists = None
        if self.cover is not None:
            others = sorted(
                (iv for course_id, iv in self.supervised.values() if course_id != own_course),
                key=lambda iv: iv.start,
            )
            physicists = replace(self.cover, supervised=tuple(others))
        return SearchContext(self.calendar, self.linacs, busy, patient, physicists)

    def move(self, fraction: Fraction, target: PlannedFraction) -> None:
        self.where[fraction.id] = (
            fraction.course_id,
            fraction.patient_id,
            target.linac_id,
            target.interval,
        )
        if fraction.id in self.supervised:
            self.supervised[fraction.id] = (fraction.course_id, target.interval)


@dataclass
class _CourseState:
    course: Course
    rules: Rules
    plan: dict[int, PlannedFraction]  # number -> where it stands now
    rows: dict[int, Fraction]
    displaced: list[Fraction]  # in start order
    baseline: frozenset[tuple[str, int | None]] = frozenset()

    def schedule(self) -> Schedule:
        return Schedule(tuple(self.plan[n] for n in sorted(self.plan)))


def _acceptable(
    state: _CourseState,
    validator: Validator,
    moved: set[int],
    pending: set[int],
    not_before: datetime,
) -> bool:
    """Whether the course's current plan keeps every rule it kept before, with the ``moved``
    numbers free of conflicts; the ``pending`` ones still stand in the downtime and are not
    judged yet."""
    fixed = [n for n in state.plan if n not in moved]
    for v in validator.validate(state.schedule(), state.rules, not_before=not_before, fixed=fixed):
        if v.fraction in pending:
            continue
        if (v.code, v.fraction) not in state.baseline or (
            v.fraction in moved and v.code in _BLOCKING
        ):
            return False
    return True


class _Planner:
    def __init__(
        self,
        session: Session,
        department: Department,
        linac_id: int,
        affected: Sequence[Fraction],
        *,
        now: datetime,
        first_come: bool,
    ) -> None:
        self.session = session
        self.tz = department.timezone
        self.now = now
        self.first_come = first_come
        self.lead = now + MOVE_LEAD_TIME
        down = next((x for x in department.linacs if x.id == linac_id), None)
        self.group = [
            x.id
            for x in department.linacs
            if x.id == linac_id
            or (down is not None and down.beam_group and x.beam_group == down.beam_group)
        ]
        self.partners = [x for x in self.group if x != linac_id]
        days = [local_date(f.starts_at, self.tz) for f in affected]
        today = local_date(now, self.tz)
        first = max(today, min(days) - timedelta(days=DAYS_BEFORE))
        last = max(days) + timedelta(days=DAYS_AFTER)
        self.world = _World(session, department, first - timedelta(days=1), last)
        self.states = self._states(affected)
        self.result = Replan()

    def _states(self, affected: Sequence[Fraction]) -> list[_CourseState]:
        ids = sorted({f.course_id for f in affected})
        courses = {
            c.id: c
            for c in self.session.scalars(
                sa.select(Course)
                .where(Course.id.in_(ids))
                .options(joinedload(Course.protocol), selectinload(Course.fractions))
            )
        }
        states: list[_CourseState] = []
        for course_id in ids:
            course = courses[course_id]
            rows = {f.number: f for f in course.fractions if f.status in _SCHEDULED}
            mine = sorted(
                (f for f in affected if f.course_id == course_id),
                key=lambda f: (f.starts_at, f.number),
            )
            state = _CourseState(
                course,
                rules_from_protocol(course.protocol),
                {n: _planned(f) for n, f in rows.items()},
                rows,
                mine,
            )
            ctx = self.world.context(course)
            state.baseline = frozenset(
                (v.code, v.fraction) for v in rulebook.validate(state.schedule(), state.rules, ctx)
            )
            states.append(state)
        # Urgent courses first, then the earliest displaced, then id: the same order every run.
        states.sort(key=lambda s: (s.course.priority, s.displaced[0].starts_at, s.course.id))
        return states

    # -- placing ----------------------------------------------------------------------------

    def run(self) -> Replan:
        if not self.first_come:
            self._keep_own_times()
        for state in self.states:
            self._place_rest(state)
        return self.result

    def _record(self, state: _CourseState, fraction: Fraction, target: PlannedFraction) -> None:
        before = _planned(fraction)
        state.plan[fraction.number] = target
        self.world.move(fraction, target)
        self.result.moves.append(Move(fraction, target))
        self.result.counts[outcome(before, target, self.tz)] += 1

    def _pending(self, state: _CourseState) -> set[int]:
        placed = {m.fraction.id for m in self.result.moves}
        return {f.number for f in state.displaced if f.id not in placed}

    def _keep_own_times(self) -> None:
        """Pass 1: every displaced fraction whose own time is free on a partner, all courses
        together, in start order."""
        everyone = sorted(
            ((f, s) for s in self.states for f in s.displaced),
            key=lambda pair: (pair[0].starts_at, pair[0].linac_id, pair[0].id),
        )
        for fraction, state in everyone:
            if fraction.starts_at < self.now:
                continue  # already under way: nothing to keep
            target = self._own_time_on_partner(state, fraction)
            if target is not None:
                self._record(state, fraction, target)

    def _own_time_on_partner(
        self, state: _CourseState, fraction: Fraction
    ) -> PlannedFraction | None:
        validator = Validator(self.world.context(state.course))
        pending = self._pending(state) - {fraction.number}
        own = state.plan[fraction.number]
        for partner in self.partners:
            state.plan[fraction.number] = replace(own, linac_id=partner)
            if _acceptable(state, validator, {fraction.number}, pending, self.now):
                target = state.plan[fraction.number]
                state.plan[fraction.number] = own
                return target
        state.plan[fraction.number] = own
        return None

    def _place_rest(self, state: _CourseState) -> None:
        """Pass 2 for one course: each remaining displaced fraction on its own, else the
        search for all of them together."""
        pending = sorted(self._pending(state))
        if not pending:
            return
        saved = dict(state.plan)
        chosen: list[tuple[Fraction, PlannedFraction]] = []
        for number in pending:
            target = self._nearest(
                state, state.rows[number], set(pending) - {number} - {f.number for f, _ in chosen}
            )
            if target is None:
                break
            state.plan[number] = target
            chosen.append((state.rows[number], target))
        else:
            for fraction, target in chosen:
                state.plan[fraction.number] = saved[fraction.number]
                self._record(state, fraction, target)
            return
        state.plan = saved
        # Fractions that fit only together (the first one's place decides the second's) are
        # left to the search, which places them jointly.
        schedule = self._search(state, set(pending))
        if schedule is not None:
            placed = {p.number: p for p in schedule.fractions}
            for number in pending:
                self._record(state, state.rows[number], placed[number])
            return
        self.result.unplaced[state.course.id] = [
            f for f in state.displaced if f.number in set(pending)
        ]
        self.result.counts[Outcome.NEEDS_HUMAN] += len(pending)

    def _nearest(
        self, state: _CourseState, fraction: Fraction, pending: set[int]
    ) -> PlannedFraction | None:
        """The least disturbing valid placement of one fraction, the rest of its course
        staying where it is."""
        # Moves are written one by one, and the database forbids even a passing overlap: a
        # fraction may not take a place its course still holds.
        ctx = self.world.context(state.course, [state.plan[n].interval for n in pending])
        validator = Validator(ctx)
        own = state.plan[fraction.number]
        minutes = state.rules.minutes_for(fraction.number)
        length = timedelta(minutes=minutes)
        rank = {lid: 0 for lid in self.group}
        capable_linacs = [x for x in ctx.linacs if capable(x, state.rules)]
        blocked = BusyIndex(ctx.patient_busy)
        spaced = self._spacing_check(state, fraction.number, pending)
        for tier in (0, 1):
            linacs = [x for x in capable_linacs if rank.get(x.id, 1) == tier]
            candidates = sorted(
                self._starts(validator, blocked, linacs, own, length, state.rules),
                key=lambda c: self._disturbance(c, own),
            )
            for linac_id, start, day in candidates:
                if not spaced(start, start + length, day):
                    continue
                state.plan[fraction.number] = PlannedFraction(
                    fraction.number, linac_id, start, start + length
                )
                if _acceptable(state, validator, {fraction.number}, pending, self.lead):
                    target = state.plan[fraction.number]
                    state.plan[fraction.number] = own
                    return target
            state.plan[fraction.number] = own
        return None

    def _spacing_check(
        self, state: _CourseState, number: int, pending: set[int]
    ) -> Callable[[datetime, datetime, date], bool]:
        """A quick test of the spacing with the neighbouring fractions, so that the full rule
        check (which words every broken rule) runs only for candidates that can pass it.

        It asks nothing the full check does not: the previous fraction is judged even when it
        still waits for its own move (the rule book charges that pair to this fraction), the
        next one only when it stays."""
        # A rule the course already breaks (booked with an override) is left to the full check.
        waived = {code for code, _ in state.baseline if code in _SPACING}
        rules = state.rules
        min_gap = timedelta(hours=rules.min_hours_between)
        pairs: list[tuple[PlannedFraction, date, bool]] = []  # (neighbour, its day, before?)
        prev, nxt = state.plan.get(number - 1), state.plan.get(number + 1)
        if prev is not None:
            pairs.append((prev, local_date(prev.start, self.tz), True))
        if nxt is not None and number + 1 not in pending:
            pairs.append((nxt, local_date(nxt.start, self.tz), False))
        max_days = rules.max_interval_days if "max_interval_days" not in waived else None
        checks = {
            "order": lambda first, second, gap: second.start <= first.start,
            "self_overlap": lambda first, second, gap: second.start < first.end,
            "min_hours_between": lambda first, second, gap: second.start - first.start < min_gap,
            "min_interval_days": lambda first, second, gap: gap < rules.min_interval_days,
            "max_interval_days": lambda first, second, gap: max_days is not None and gap > max_days,
        }
        broken = [check for code, check in checks.items() if code not in waived]

        def spaced(start: datetime, end: datetime, day: date) -> bool:
            here = PlannedFraction(number, 0, start, end)
            for other, other_day, before in pairs:
                first, second = (other, here) if before else (here, other)
                gap = (day - other_day).days if before else (other_day - day).days
                if any(check(first, second, gap) for check in broken):
                    return False
            return True

        return spaced

    def _disturbance(self, candidate: tuple[int, datetime, date], own: PlannedFraction) -> tuple:
        linac_id, start, _ = candidate
        linac_order = self.group.index(linac_id) if linac_id in self.group else linac_id
        if self.first_come:
            return (start, linac_order)
        return (abs(start - own.start), start < own.start, linac_order, start)

    def _starts(
        self,
        validator: Validator,
        blocked: BusyIndex,
        linacs: Iterable[LinacSpec],
        own: PlannedFraction,
        length: timedelta,
        rules: Rules,
    ) -> Iterable[tuple[int, datetime, date]]:
        """Free starts on a grid through the fraction's own time of day, near its own day."""
        own_day = local_date(own.start, self.tz)
        own_time = to_local(own.start, self.tz).time()
        zone = ZoneInfo(self.tz)
        first = max(self.world.first, own_day - timedelta(days=DAYS_BEFORE))
        last = min(self.world.last, own_day + timedelta(days=DAYS_AFTER))
        not_before = max(self.lead, own.start) if self.first_come else self.lead
        day = first
        while day <= last:
            if (
                day.weekday() in rules.weekdays
                and closed_reason(validator.ctx.calendar, day) is None
            ):
                anchor = datetime.combine(day, own_time, zone).astimezone(UTC)
                for linac in linacs:
                    window = validator.window(linac, day)
                    if window is None:
                        continue
                    for gap_start, gap_end in validator.linac_busy(linac.id).free(*window):
                        for start, end in blocked.free(gap_start, gap_end):
                            start = max(start, not_before)
                            k = -((anchor - start) // STEP)  # first grid point >= start
                            t = anchor + k * STEP
                            while t + length <= end:
                                yield linac.id, t, day
                                t += STEP
            day += timedelta(days=1)

    def _search(self, state: _CourseState, free: set[int]) -> Schedule | None:
        """The search's best completion of the course with ``free`` re-placed, inside the
        days this re-plan has read."""
        fixed = {n: p for n, p in state.plan.items() if n not in free}
        request = ScheduleRequest(
            rules=state.rules,
            earliest=max(self.world.first, local_date(self.lead, self.tz)),
            not_before=self.lead,
            count=1,
            horizon_days=DAYS_AFTER,
            fixed=fixed,
            preferred_linacs=tuple(self.group),
        )
        holding = [state.plan[n].interval for n in free]
        for schedule in search.propose(request, self.world.context(state.course, holding)):
            if all(local_date(p.end, self.tz) <= self.world.last for p in schedule.fractions):
                return schedule
        return None


def replan_displaced(
    session: Session,
    department: Department,
    linac_id: int,
    affected: Sequence[Fraction],
    *,
    now: datetime,
    first_come: bool = False,
) -> Replan:
    """Where every fraction displaced from ``linac_id`` should go (nothing is written).

    The downtime must already be in the session (flushed), so the re-plan sees it.
    """
    if not affected:
        return Replan()
    return _Planner(session, department, linac_id, affected, now=now, first_come=first_come).run()


__all__ = ["Move", "Outcome", "Replan", "outcome", "replan_displaced"]
