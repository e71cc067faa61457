"""Planning several draft courses of one department together, from the database.

:func:`plan_courses` reads the department's world as a proposal does (hours, holidays,
closures, bookings, downtime, the patients' other appointments), places the courses with the
constraint model and checks every schedule with the engine's ``validate`` before returning
it. It only reads: booking the schedules is the caller's step (``services.book_course``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from scheduler import search
from scheduler.context import local_day_bounds, rules_from_protocol, search_context
from scheduler.models import ACTIVE_FRACTION_STATUSES, Course, CourseStatus, Department, Fraction
from scheduler.optimiser.model import (
    CourseToPlace,
    Problem,
    solve,
    supervision_breaches,
)
from scheduler.rules import validate
from scheduler.timeutil import local_date
from scheduler.types import Interval, Schedule, ScheduleRequest, SearchContext

log = logging.getLogger(__name__)

# Batches up to this size are solved exactly (a day's ready courses); larger ones (a period's
# arrivals) search near the one-by-one placement, which keeps them improving within seconds.
EXACT_UP_TO = 12
SLACK_DAYS = 7


@dataclass(frozen=True)
class CourseRequest:
    """A draft course to place, and what the plan should respect for it."""

    course_id: int
    priority: int | None = None  # 1 (urgent) .. 5; None: the course's own priority
    preferred_window: tuple[time, time] | None = None  # local time of day
    earliest: date | None = None  # None: today or the ready-to-treat date, the later


def plan_courses(
    session: Session,
    department_id: int,
    requests: Sequence[CourseRequest],
    *,
    now: datetime,
    time_limit_seconds: float = 10.0,
    horizon_days: int = 42,
    deterministic: bool = True,
) -> dict[int, Schedule]:
    """Valid schedules for as many of the requested draft courses as fit, by course id.

    Placed together: fewest courses left out, then the least wait weighted by priority, then
    the least disturbance (see :mod:`scheduler.optimiser.model`). A course that cannot be
    placed within ``horizon_days`` of its earliest date, or is not a draft, is absent.

    Up to ``EXACT_UP_TO`` courses are searched exactly; a larger batch looks for each
    course's first fraction within ``SLACK_DAYS`` of where placing them one by one puts it.
    ``deterministic`` limits the solver's work rather than wall time (see
    :func:`scheduler.optimiser.model.solve`).
    """
    department = session.get(Department, department_id)
    if department is None or not requests:
        return {}
    tz = department.timezone
    today = local_date(now, tz)
    ids = [r.course_id for r in requests]
    courses = {
        c.id: c
        for c in session.scalars(
            sa.select(Course)
            .where(Course.id.in_(ids))
            .options(selectinload(Course.protocol), selectinload(Course.patient))
        )
    }
    to_place: list[CourseToPlace] = []
    seen: set[int] = set()
    for request in requests:
        if request.course_id in seen:  # asked twice: the first request stands
            continue
        seen.add(request.course_id)
        course = courses.get(request.course_id)
        if course is None or course.patient.department_id != department_id:
            log.warning("course %s is not in department %s", request.course_id, department_id)
            continue
        if course.status != CourseStatus.DRAFT:
            log.warning("course %s is %s; only drafts are planned", course.id, course.status)
            continue
        earliest = max(
            d for d in (request.earliest, today, course.ready_to_treat_on) if d is not None
        )
        to_place.append(
            CourseToPlace(
                key=course.id,
                rules=rules_from_protocol(course.protocol),
                earliest=earliest,
                not_before=now,
                priority=request.priority if request.priority is not None else course.priority,
                preferred_window=request.preferred_window,
                patient=course.patient_id,
                horizon_days=horizon_days,
            )
        )
    if not to_place:
        return {}

    first = min(c.earliest for c in to_place)
    last = max(_last_day(c) for c in to_place)
    world = search_context(session, department, first, last)
    busy = _patients_busy(session, tz, first, last, to_place)
    to_place = [replace(c, patient_busy=busy.get(c.key, ())) for c in to_place]
    problem = Problem(
        calendar=world.calendar,
        linacs=world.linacs,
        courses=tuple(to_place),
        linac_busy=world.linac_busy,
        physicists=world.physicists,
    )
    solution = solve(
        problem,
        time_limit_seconds=time_limit_seconds,
        deterministic=deterministic,
        slack_days=None if len(to_place) <= EXACT_UP_TO else SLACK_DAYS,
    )
    log.info(
        "planned %d of %d courses (%s) in %.2f s",
        len(solution.schedules),
        len(to_place),
        solution.status,
        solution.wall_seconds,
    )
    return _checked(problem, world, solution.schedules, now)


def _last_day(course: CourseToPlace) -> date:
    request = ScheduleRequest(
        rules=course.rules, earliest=course.earliest, horizon_days=course.horizon_days
    )
    return search.search_dates(request)[1]


def _patients_busy(
    session: Session, tz: str, first: date, last: date, courses: Sequence[CourseToPlace]
) -> dict[int, tuple[Interval, ...]]:
    """Each course's patient's active bookings of other courses in local days first..last."""
    start, end = local_day_bounds(tz, first, last)
    patient_ids = {c.patient for c in courses}
    rows = session.execute(
        sa.select(Fraction.patient_id, Fraction.course_id, Fraction.starts_at, Fraction.ends_at)
        .where(
            Fraction.patient_id.in_(patient_ids),
            Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
            Fraction.starts_at < end,
            Fraction.ends_at > start,
        )
        .order_by(Fraction.starts_at)
    ).all()
    out: dict[int, tuple[Interval, ...]] = {}
    for course in courses:
        out[course.key] = tuple(
            Interval(r.starts_at, r.ends_at)
            for r in rows
            if r.patient_id == course.patient and r.course_id != course.key
        )
    return out


def _checked(
    problem: Problem, world: SearchContext, schedules: dict, now: datetime
) -> dict[int, Schedule]:
    """The schedules that pass ``validate`` against the world and the ones kept before them
    (the model guarantees it; this is the safety net), logging any dropped with its reasons."""
    kept: dict[int, Schedule] = {}
    linac_busy = {lid: list(ivs) for lid, ivs in world.linac_busy.items()}
    patient_kept: dict[object, list[Interval]] = {}
    supervised = list(world.physicists.supervised) if world.physicists is not None else []
    for course in problem.courses:
        schedule = schedules.get(course.key)
        if schedule is None:
            continue
        ctx = SearchContext(
            calendar=world.calendar,
            linacs=world.linacs,
            linac_busy={
                lid: sorted(ivs, key=lambda iv: iv.start) for lid, ivs in linac_busy.items()
            },
            patient_busy=sorted(
                [*course.patient_busy, *patient_kept.get(course.patient, [])],
                key=lambda iv: iv.start,
            ),
            physicists=world.physicists,
        )
        problems = [v.message for v in validate(schedule, course.rules, ctx, not_before=now)]
        cover = world.physicists
        if cover is not None:
            mine = [
                f.interval for f in schedule.fractions if cover.supervises(course.rules, f.number)
            ]
            breaches = supervision_breaches(
                replace(cover, supervised=tuple(supervised)), world.calendar.timezone, mine
            )
            problems += [f"no physicist free for {iv.start:%Y-%m-%d %H:%M} UTC" for iv in breaches]
        if problems:
            log.error("dropped the plan of course %s: %s", course.key, "; ".join(problems))
            continue
        kept[course.key] = schedule
        for f in schedule.fractions:
            linac_busy.setdefault(f.linac_id, []).append(f.interval)
            patient_kept.setdefault(course.patient, []).append(f.interval)
            if cover is not None and cover.supervises(course.rules, f.number):
                supervised.append(f.interval)
    return kept
