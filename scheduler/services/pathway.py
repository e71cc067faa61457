"""The pathway before treatment: fiducial markers, CT simulation and planning.

A course's pathway is booked on the department's CT simulators and interventional radiology
(IR) rooms: fiducial markers (liver, by protocol default) in an IR room some days before the
CT, the CT simulation itself, then planning for a number of department working days. Booking
it gives the course its earliest ready-to-treat date (``Course.ready_to_treat_on``), which
proposals start from; the readiness steps (plan approval, physics QA) stay the gate for the
first fraction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from scheduler import unit_of_work
from scheduler.context import department_calendar, opening_hours
from scheduler.errors import Conflict, FieldError, InvalidInput, StateConflict
from scheduler.models import (
    BookingEvent,
    BookingEventKind,
    Course,
    CourseStatus,
    Department,
    PathwayStep,
    PathwayStepKind,
    PathwayStepStatus,
    Resource,
    ResourceKind,
)
from scheduler.services.common import _department_of, _get_course, _iso, _now
from scheduler.timeutil import local_date, local_window
from scheduler.types import Calendar, OpeningHours

CT_SIM_MINUTES = (60, 120)
FIDUCIALS_MINUTES = (30, 180)
PLANNING_WORKING_DAYS = (1, 30)
FIDUCIALS_DAYS_BEFORE_CT = (1, 28)
# Protocol sites whose courses have fiducial markers placed unless the caller says otherwise.
FIDUCIAL_SITES = frozenset({"liver"})
# Steps start on the quarter hour, as people book rooms.
SLOT_MINUTES = 15
# How far ahead a free room is looked for before the proposal gives up.
SEARCH_DAYS = 90


@dataclass(frozen=True)
class PathwayOptions:
    """What the pathway consists of; ``fiducials`` None means the protocol's default."""

    ct_sim_minutes: int = 90
    planning_working_days: int = 5
    fiducials: bool | None = None
    fiducials_minutes: int = 60
    fiducials_days_before_ct: int = 7


@dataclass(frozen=True)
class StepChoice:
    """A resource step the caller chose (normally from a proposal): its room and start."""

    resource_id: int
    starts_at: datetime


@dataclass(frozen=True)
class ProposedStep:
    kind: str  # a PathwayStepKind
    resource_id: int | None = None
    resource_name: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    working_days: int | None = None
    ready_on: date | None = None


@dataclass(frozen=True)
class PathwayProposal:
    course_id: int
    steps: list[ProposedStep]
    ready_on: date
    timezone: str


@dataclass(frozen=True)
class CoursePathway:
    """A course's pathway steps (every status, in order) and the ready date they give."""

    course: Course
    steps: list[PathwayStep] = field(default_factory=list)
    timezone: str = "UTC"

    @property
    def booked(self) -> list[PathwayStep]:
        return [s for s in self.steps if s.status != PathwayStepStatus.CANCELLED]

    @property
    def ready_on(self) -> date | None:
        planning = [s for s in self.booked if s.kind == PathwayStepKind.PLANNING]
        return planning[-1].ready_on if planning else None


# --- working days ---------------------------------------------------------------------------


def _is_working_day(calendar: Calendar) -> Callable[[date], bool]:
    """Open by the department's hours, and neither a public holiday nor a local closure."""

    def working(day: date) -> bool:
        return calendar.hours.window(day.weekday()) is not None and day not in calendar.closed_dates

    return working


def planning_ready_on(
    session: Session, department: Department, ct_day: date, working_days: int
) -> date:
    """The day planning that starts after a CT on ``ct_day`` is done: ``working_days``
    department working days later (weekends, public holidays and closures skipped)."""
    if not department.opening_hours:
        raise InvalidInput(
            "the department has no opening hours, so it has no working days",
            [FieldError("planning_working_days", "the department is never open")],
        )
    day, remaining = ct_day, working_days
    while True:
        # A stretch generous enough for holidays and closures; a longer run of them reads
        # the next stretch of the calendar.
        last = day + timedelta(days=working_days * 2 + 21)
        calendar = department_calendar(session, department, day + timedelta(days=1), last)
        working = _is_working_day(calendar)
        while day < last:
            day += timedelta(days=1)
            if working(day):
                remaining -= 1
                if remaining == 0:
                    return day


# --- free time on resources -----------------------------------------------------------------


def _hours(resource: Resource, department: Department) -> OpeningHours:
    own = opening_hours(resource.opening_hours)
    return own if own is not None else (opening_hours(department.opening_hours) or OpeningHours({}))


def _round_up(instant: datetime) -> datetime:
    """The first quarter hour at or after ``instant`` (zones are whole or half hours off UTC)."""
    base = instant.replace(second=0, microsecond=0)
    if base < instant:
        base += timedelta(minutes=1)
    extra = -base.minute % SLOT_MINUTES
    return base + timedelta(minutes=extra)


def _busy(
    session: Session, resource_ids: Iterable[int], start: datetime, end: datetime
) -> dict[int, list[tuple[datetime, datetime]]]:
    """Booked steps on these resources overlapping start..end, sorted per resource."""
    ids = list(resource_ids)
    rows = session.execute(
        sa.select(PathwayStep.resource_id, PathwayStep.starts_at, PathwayStep.ends_at)
        .where(
            PathwayStep.resource_id.in_(ids),
            PathwayStep.status == PathwayStepStatus.BOOKED,
            PathwayStep.starts_at < end,
            PathwayStep.ends_at > start,
        )
        .order_by(PathwayStep.resource_id, PathwayStep.starts_at)
    ).all()
    busy: dict[int, list[tuple[datetime, datetime]]] = {i: [] for i in ids}
    for resource_id, starts_at, ends_at in rows:
        busy[resource_id].append((starts_at, ends_at))
    return busy


def _first_gap(
    opens: datetime, closes: datetime, minutes: int, busy: list[tuple[datetime, datetime]]
) -> datetime | None:
    """The earliest quarter-hour start of ``minutes`` between opens and closes missing busy."""
    length = timedelta(minutes=minutes)
    candidate = _round_up(opens)
    for starts_at, ends_at in busy:
        if candidate + length <= starts_at:
            break
        if ends_at > candidate:
            candidate = _round_up(ends_at)
    return candidate if candidate + length <= closes else None


def _resources(session: Session, department: Department, kind: ResourceKind) -> list[Resource]:
    return list(
        session.scalars(
            sa.select(Resource)
            .where(
                Resource.department_id == department.id,
                Resource.kind == kind,
                Resource.active.is_(True),
            )
            .order_by(Resource.id)
        )
    )


def earliest_slot(
    session: Session,
    department: Department,
    kind: ResourceKind,
    minutes: int,
    *,
    first_day: date,
    not_before: datetime,
    days: int = SEARCH_DAYS,
) -> ProposedStep | None:
    """The earliest free ``minutes`` on any active resource of ``kind`` from ``first_day``,
    inside each resource's hours, on days the department is open (None if none in ``days``)."""
    resources = _resources(session, department, kind)
    if not resources:
        return None
    last_day = first_day + timedelta(days=days)
    tz = department.timezone
    calendar = department_calendar(session, department, first_day, last_day)
    span_start, _ = local_window(first_day, time.min, time.min, tz)
    span_end, _ = local_window(last_day + timedelta(days=1), time.min, time.min, tz)
    busy = _busy(session, (r.id for r in resources), span_start, span_end)
    hours = {r.id: _hours(r, department) for r in resources}
    step_kind = PathwayStepKind.CT_SIM if kind == ResourceKind.CT_SIM else PathwayStepKind.FIDUCIALS
    day = first_day
    while day <= last_day:
        if day not in calendar.closed_dates:
            best: tuple[datetime, Resource] | None = None
            for resource in resources:
                window = hours[resource.id].window(day.weekday())
                if window is None:
                    continue
                opens, closes = local_window(day, window[0], window[1], tz)
                start = _first_gap(max(opens, not_before), closes, minutes, busy[resource.id])
                if start is not None and (best is None or start < best[0]):
                    best = (start, resource)
            if best is not None:
                start, resource = best
                return ProposedStep(
                    kind=step_kind,
                    resource_id=resource.id,
                    resource_name=resource.name,
                    starts_at=start,
                    ends_at=start + timedelta(minutes=minutes),
                )
        day += timedelta(days=1)
    return None


# --- checking what the caller asked for -----------------------------------------------------


def _check_options(options: PathwayOptions) -> None:
    errors: list[FieldError] = []

    def within(name: str, value: object, bounds: tuple[int, int], unit: str) -> None:
        lo, hi = bounds
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(FieldError(name, "must be an integer"))
        elif not lo <= value <= hi:
            errors.append(FieldError(name, f"must be {lo} to {hi} {unit}"))

    within("ct_sim_minutes", options.ct_sim_minutes, CT_SIM_MINUTES, "minutes")
    within("planning_working_days", options.planning_working_days, PLANNING_WORKING_DAYS, "days")
    within("fiducials_minutes", options.fiducials_minutes, FIDUCIALS_MINUTES, "minutes")
    within(
        "fiducials_days_before_ct",
        options.fiducials_days_before_ct,
        FIDUCIALS_DAYS_BEFORE_CT,
        "days",
    )
    if options.fiducials is not None and not isinstance(options.fiducials, bool):
        errors.append(FieldError("fiducials", "must be true, false or null"))
    if errors:
        raise InvalidInput("The pathway is not valid.", errors)


def _open_course(session: Session, course_id: int) -> Course:
    course = _get_course(session, course_id, fractions=False)
    if course.status in (CourseStatus.CANCELLED, CourseStatus.COMPLETED):
        raise StateConflict(f"course {course_id} is {course.status}: it has no pathway to book")
    return course


def wants_fiducials(course: Course, options: PathwayOptions) -> bool:
    """The caller's choice, else the protocol's default (liver courses have markers placed)."""
    if options.fiducials is not None:
        return options.fiducials
    return course.protocol.site in FIDUCIAL_SITES


def _no_slot(kind: ResourceKind, department: Department, session: Session) -> InvalidInput:
    label = "CT simulator" if kind == ResourceKind.CT_SIM else "interventional radiology room"
    field_name = "ct_sim_slot" if kind == ResourceKind.CT_SIM else "fiducials"
    if not _resources(session, department, kind):
        return InvalidInput(
            f"the department has no active {label}",
            [FieldError(field_name, f"add a {label} on the department's admin page first")],
        )
    return InvalidInput(
        f"no free {label} time in the next {SEARCH_DAYS} days",
        [FieldError(field_name, f"no free {label} time in the next {SEARCH_DAYS} days")],
    )


# --- use cases --------------------------------------------------------------------------------


def propose_pathway(
    session: Session,
    course_id: int,
    *,
    options: PathwayOptions | None = None,
    earliest: date | None = None,
    now: datetime | None = None,
) -> PathwayProposal:
    """The earliest pathway for a course: fiducials (when wanted) in an IR room, the CT
    simulation at least the asked days later, then planning; and the ready date it gives.

    The earliest fiducial placement gives the earliest CT day it allows, so taking each step
    at its earliest gives the earliest ready date.
    """
    now = _now(now)
    options = options or PathwayOptions()
    _check_options(options)
    course = _open_course(session, course_id)
    department = _department_of(session, course)
    tz = department.timezone
    today = local_date(now, tz)
    first = max(earliest or today, today)
    steps: list[ProposedStep] = []
    ct_first = first
    if wants_fiducials(course, options):
        placed = earliest_slot(
            session,
            department,
            ResourceKind.IR_ROOM,
            options.fiducials_minutes,
            first_day=first,
            not_before=now,
        )
        if placed is None or placed.starts_at is None:
            raise _no_slot(ResourceKind.IR_ROOM, department, session)
        steps.append(placed)
        ct_first = local_date(placed.starts_at, tz) + timedelta(
            days=options.fiducials_days_before_ct
        )
    ct = earliest_slot(
        session,
        department,
        ResourceKind.CT_SIM,
        options.ct_sim_minutes,
        first_day=ct_first,
        not_before=now,
    )
    if ct is None or ct.starts_at is None:
        raise _no_slot(ResourceKind.CT_SIM, department, session)
    steps.append(ct)
    ready_on = planning_ready_on(
        session, department, local_date(ct.starts_at, tz), options.planning_working_days
    )
    steps.append(
        ProposedStep(
            kind=PathwayStepKind.PLANNING,
            working_days=options.planning_working_days,
            ready_on=ready_on,
        )
    )
    return PathwayProposal(course.id, steps, ready_on, tz)


def _chosen_step(
    session: Session,
    department: Department,
    choice: StepChoice,
    kind: ResourceKind,
    minutes: int,
    *,
    field_name: str,
    now: datetime,
) -> ProposedStep:
    """Check a chosen slot: a resource of this kind in the department, open then, not past."""
    resource = session.get(Resource, choice.resource_id)
    if resource is None or resource.department_id != department.id:
        raise InvalidInput(
            "The pathway is not valid.",
            [FieldError(f"{field_name}.resource_id", "no such resource in this department")],
        )
    if resource.kind != kind or not resource.active:
        raise InvalidInput(
            "The pathway is not valid.",
            [FieldError(f"{field_name}.resource_id", f"must be an active {kind} resource")],
        )
    starts_at = choice.starts_at
    ends_at = starts_at + timedelta(minutes=minutes)
    tz = department.timezone
    day = local_date(starts_at, tz)
    window = _hours(resource, department).window(day.weekday())
    calendar = department_calendar(session, department, day, day)
    problem = None
    if starts_at < now:
        problem = "is in the past"
    elif day in calendar.closed_dates:
        problem = f"the department is closed that day ({calendar.closed_reasons.get(day, '')})"
    elif window is None:
        problem = f"{resource.name} is closed that weekday"
    else:
        opens, closes = local_window(day, window[0], window[1], tz)
        if starts_at < opens or ends_at > closes:
            problem = f"is outside {resource.name}'s hours"
    if problem is not None:
        raise InvalidInput(
            "The pathway is not valid.", [FieldError(f"{field_name}.starts_at", problem)]
        )
    step_kind = PathwayStepKind.CT_SIM if kind == ResourceKind.CT_SIM else PathwayStepKind.FIDUCIALS
    return ProposedStep(step_kind, resource.id, resource.name, starts_at, ends_at)


def _refuse_overlaps(session: Session, steps: Iterable[ProposedStep]) -> None:
    """A resource step overlapping a booked one is a conflict (409): the database refuses it
    too on PostgreSQL, and on SQLite this check and the insert share the write lock."""
    for step in steps:
        if step.resource_id is None or step.starts_at is None or step.ends_at is None:
            continue
        taken = _busy(session, [step.resource_id], step.starts_at, step.ends_at)[step.resource_id]
        if taken:
            starts_at, ends_at = taken[0]
            raise Conflict(
                f"{step.resource_name} is booked from {_iso(starts_at)} to {_iso(ends_at)}; "
                "choose another time"
            )


def _event(
    session: Session,
    kind: BookingEventKind,
    course: Course,
    *,
    actor_id: int | None,
    now: datetime,
    **payload: object,
) -> None:
    # Written straight away: the pathway sends the patient no messages (yet), so there is
    # nothing for the reminder outbox to plan from it.
    session.add(
        BookingEvent(
            kind=kind, course_id=course.id, payload=payload, actor_id=actor_id, created_at=now
        )
    )


def _step_payload(step: PathwayStep) -> dict[str, object]:
    return {
        "id": step.id,
        "kind": step.kind,
        "resource_id": step.resource_id,
        "starts_at": _iso(step.starts_at) if step.starts_at else None,
        "ends_at": _iso(step.ends_at) if step.ends_at else None,
        "working_days": step.working_days,
        "ready_on": step.ready_on.isoformat() if step.ready_on else None,
    }


def _steps_of(session: Session, course_id: int) -> list[PathwayStep]:
    return list(
        session.scalars(
            sa.select(PathwayStep)
            .where(PathwayStep.course_id == course_id)
            .order_by(PathwayStep.id)
        )
    )


def get_pathway(session: Session, course_id: int) -> CoursePathway:
    """The course's pathway steps, every status, in the order they were booked."""
    course = _get_course(session, course_id, fractions=False)
    department = _department_of(session, course)
    return CoursePathway(course, _steps_of(session, course.id), department.timezone)


def book_pathway(
    session: Session,
    course_id: int,
    *,
    options: PathwayOptions | None = None,
    ct_sim: StepChoice | None = None,
    fiducials: StepChoice | None = None,
    earliest: date | None = None,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> CoursePathway:
    """Book the course's pathway and set its ready-to-treat date.

    With ``ct_sim`` (and ``fiducials`` when markers are wanted) the chosen slots are checked
    and booked as they are, so a slot someone took since the proposal is a Conflict; without,
    the earliest proposal is booked.
    """
    now = _now(now)
    options = options or PathwayOptions()
    _check_options(options)
    course = _open_course(session, course_id)
    department = _department_of(session, course)
    tz = department.timezone
    if any(s.status == PathwayStepStatus.BOOKED for s in _steps_of(session, course.id)):
        raise StateConflict(
            f"course {course_id} already has a booked pathway; cancel it to book another"
        )
    if ct_sim is None:
        if fiducials is not None:
            raise InvalidInput(
                "The pathway is not valid.",
                [FieldError("ct_sim_slot", "is required when a fiducials slot is chosen")],
            )
        proposal = propose_pathway(session, course_id, options=options, earliest=earliest, now=now)
        chosen = [s for s in proposal.steps if s.kind != PathwayStepKind.PLANNING]
        ready_on = proposal.ready_on
    else:
        chosen = []
        if fiducials is None and wants_fiducials(course, options):
            raise InvalidInput(
                "The pathway is not valid.",
                [
                    FieldError(
                        "fiducials_slot", "is required: this course has fiducial markers placed"
                    )
                ],
            )
        if fiducials is not None:
            chosen.append(
                _chosen_step(
                    session,
                    department,
                    fiducials,
                    ResourceKind.IR_ROOM,
                    options.fiducials_minutes,
                    field_name="fiducials_slot",
                    now=now,
                )
            )
        ct = _chosen_step(
            session,
            department,
            ct_sim,
            ResourceKind.CT_SIM,
            options.ct_sim_minutes,
            field_name="ct_sim_slot",
            now=now,
        )
        if chosen and chosen[0].starts_at is not None and ct.starts_at is not None:
            gap = (local_date(ct.starts_at, tz) - local_date(chosen[0].starts_at, tz)).days
            if gap < options.fiducials_days_before_ct:
                raise InvalidInput(
                    "The pathway is not valid.",
                    [
                        FieldError(
                            "ct_sim_slot.starts_at",
                            f"must be at least {options.fiducials_days_before_ct} days "
                            "after the fiducial placement",
                        )
                    ],
                )
        chosen.append(ct)
        assert ct.starts_at is not None
        ready_on = planning_ready_on(
            session, department, local_date(ct.starts_at, tz), options.planning_working_days
        )
    _refuse_overlaps(session, chosen)
    rows = [
        PathwayStep(
            course_id=course.id,
            kind=step.kind,
            resource_id=step.resource_id,
            starts_at=step.starts_at,
            ends_at=step.ends_at,
            status=PathwayStepStatus.BOOKED,
            created_at=now,
            updated_at=now,
        )
        for step in chosen
    ]
    rows.append(
        PathwayStep(
            course_id=course.id,
            kind=PathwayStepKind.PLANNING,
            working_days=options.planning_working_days,
            ready_on=ready_on,
            status=PathwayStepStatus.BOOKED,
            created_at=now,
            updated_at=now,
        )
    )
    session.add_all(rows)
    _flush_or_conflict(session)
    course.ready_to_treat_on = ready_on
    course.updated_at = now
    _event(
        session,
        BookingEventKind.PATHWAY_BOOKED,
        course,
        actor_id=actor_id,
        now=now,
        ready_on=ready_on.isoformat(),
        steps=[_step_payload(row) for row in rows],
    )
    session.flush()
    return CoursePathway(course, _steps_of(session, course.id), tz)


def _flush_or_conflict(session: Session) -> None:
    """Flush; the exclusion constraint refusing the steps means a concurrent booking won."""
    try:
        session.flush()
    except OperationalError as exc:
        if unit_of_work.is_lost_race(exc):
            raise unit_of_work.LostRace() from exc
        raise
    except IntegrityError as exc:
        # PostgreSQL has aborted the transaction: end it so the caller's unit of work ends.
        session.rollback()
        raise Conflict(
            "the requested room time was booked by someone else a moment ago; propose again"
        ) from exc


def cancel_pathway(
    session: Session,
    course_id: int,
    *,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> CoursePathway:
    """Cancel the course's booked pathway steps, freeing their rooms.

    The course keeps its ready-to-treat date: a scheduler changes it, or books a new pathway.
    """
    now = _now(now)
    course = _get_course(session, course_id, fractions=False)
    department = _department_of(session, course)
    steps = [s for s in _steps_of(session, course.id) if s.status == PathwayStepStatus.BOOKED]
    if not steps:
        raise StateConflict(f"course {course_id} has no booked pathway to cancel")
    for step in steps:
        step.status = PathwayStepStatus.CANCELLED
        step.updated_at = now
    _event(
        session,
        BookingEventKind.PATHWAY_CANCELLED,
        course,
        actor_id=actor_id,
        now=now,
        steps=[step.id for step in steps],
    )
    session.flush()
    return CoursePathway(course, _steps_of(session, course.id), department.timezone)


# Readiness steps that say a pathway step happened.
READINESS_FOR_STEP = {
    "fiducials_placed": PathwayStepKind.FIDUCIALS,
    "ct_simulation": PathwayStepKind.CT_SIM,
    "plan_approved": PathwayStepKind.PLANNING,
}


def note_readiness(session: Session, course_id: int, step: str, done: bool) -> None:
    """Keep the pathway in step with readiness: recording fiducials placed, CT simulation or
    plan approval marks the matching booked step done; clearing it books it again."""
    kind = READINESS_FOR_STEP.get(step)
    if kind is None:
        return
    before, after = (
        (PathwayStepStatus.BOOKED, PathwayStepStatus.DONE)
        if done
        else (PathwayStepStatus.DONE, PathwayStepStatus.BOOKED)
    )
    for row in _steps_of(session, course_id):
        if row.kind == kind and row.status == before:
            row.status = after
