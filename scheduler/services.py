"""Booking use cases: propose, book, move, cancel, record missed/completed, downtime.

Each function owns its unit of work: it reads what it needs, checks the rules with the
pure engine, writes the change together with its BookingEvent row, and commits once. A
lost race surfaces as :class:`Conflict` (HTTP 409) naming the taken time, never as an
overlap: PostgreSQL's exclusion constraints reject it, and on SQLite the write lock taken
at BEGIN makes the overlap check and the insert one step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, joinedload, selectinload
from sqlalchemy.orm.util import identity_key

from notifications import outbox
from scheduler import alternatives as alternative_search
from scheduler import replan, search
from scheduler import rules as rulebook
from scheduler.context import local_day_bounds, rules_from_protocol, search_context
from scheduler.errors import (
    Conflict,
    ConflictingBooking,
    FieldError,
    InvalidInput,
    NearbyCourse,
    NearbyCourseWarning,
    NotFound,
    RuleBreak,
    RulesBroken,
    StateConflict,
)
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    MISSED_REASON_LABELS,
    BookingEvent,
    Course,
    CourseStatus,
    Department,
    Downtime,
    Fraction,
    FractionStatus,
    Linac,
    MissedReason,
    Patient,
    Protocol,
)
from scheduler.plain_text import plain_text_problem
from scheduler.timeutil import local_date
from scheduler.types import (
    DowntimeSpan,
    Explanation,
    Interval,
    PlannedFraction,
    Schedule,
    ScheduleRequest,
    SearchContext,
    Violation,
)

P = ParamSpec("P")
R = TypeVar("R")

# Clinical spacing rules a scheduler may break with a recorded reason. Everything else
# (machine or patient double-booked, closed day, outside hours, missing capability) is
# physically impossible or unsafe and is never overridable.
OVERRIDABLE_RULES = frozenset(
    {
        "min_hours_between",
        "min_interval_days",
        "max_interval_days",
        "min_overall_days",
        "max_overall_days",
        "weekday",
        "start_weekday",
    }
)
CONFLICT_RULES = frozenset({"linac_busy", "patient_busy"})
READINESS_STEPS = {
    "ct_simulation": "ct_simulation_at",
    "plan_approved": "plan_approved_at",
    "physics_qa": "physics_qa_at",
    "consent": "consent_at",
    "fiducials_placed": "fiducials_placed_at",
}
DOWNTIME_KINDS = frozenset({"planned", "unplanned"})
# Bookings read for a first look at proposals; the whole horizon only when the ranking is
# not settled within it (at 85% utilisation, 10 days settle it for 51 of 52 start dates).
FIRST_LOOK_DAYS = 10
# A rebooked session needs time for the patient to be told and to travel.
REBOOK_LEAD_TIME = timedelta(hours=2)
# Longest written reason kept for a missed fraction.
MAX_REASON_TEXT = 500
# Kept fractions whose course has run: they anchor the rules but are never re-placed.
SCHEDULED_STATUSES = (*ACTIVE_FRACTION_STATUSES, FractionStatus.COMPLETED)


@dataclass(frozen=True)
class Placement:
    """A fraction position the caller chose: the end follows from the protocol."""

    number: int
    linac_id: int
    starts_at: datetime


@dataclass(frozen=True)
class ProposalResult:
    schedules: list[Schedule]
    explanation: Explanation | None
    timezone: str


@dataclass(frozen=True)
class MissedResult:
    missed: Fraction
    rebooked: Fraction | None
    needs_review: bool


@dataclass(frozen=True)
class MovedFraction:
    fraction_id: int
    course_id: int
    number: int
    before: PlannedFraction
    after: PlannedFraction


@dataclass(frozen=True)
class UnplaceableFraction:
    fraction_id: int
    course_id: int
    number: int
    starts_at: datetime
    ends_at: datetime
    reason: str


@dataclass(frozen=True)
class DowntimeReport:
    downtime_id: int | None
    moved: list[MovedFraction]
    unplaceable: list[UnplaceableFraction]
    # How the displaced fractions fared: own time kept (on a partner), moved within the same
    # local day, moved to another day, or left for a human.
    kept_time: int = 0
    same_day: int = 0
    other_day: int = 0
    needs_human: int = 0
    # After shortening or deleting: fractions this downtime moved whose own place is free
    # again. Nobody is moved back without a scheduler deciding it.
    returnable: list[ReturnableFraction] = field(default_factory=list)


@dataclass(frozen=True)
class ReturnableFraction:
    fraction_id: int
    course_id: int
    number: int
    current: PlannedFraction
    original: PlannedFraction


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _planned(fraction: Fraction) -> PlannedFraction:
    return PlannedFraction(fraction.number, fraction.linac_id, fraction.starts_at, fraction.ends_at)


_COURSE_OPTIONS = (
    joinedload(Course.protocol),
    joinedload(Course.patient).joinedload(Patient.department).joinedload(Department.linacs),
)
_COURSE_WITH_FRACTIONS_OPTIONS = (*_COURSE_OPTIONS, selectinload(Course.fractions))
# Built once: a statement reused as is skips building it and generating its cache key.
_COURSE = sa.select(Course).options(*_COURSE_OPTIONS).where(Course.id == sa.bindparam("id"))
_COURSE_WITH_FRACTIONS = (
    sa.select(Course)
    .options(*_COURSE_WITH_FRACTIONS_OPTIONS)
    .where(Course.id == sa.bindparam("id"))
)


def _get_course(session: Session, course_id: int, *, fractions: bool = True) -> Course:
    """The course with what every use case reads: one round trip for course, protocol,
    patient, department and linacs (plus one for the fractions when wanted)."""
    if session.identity_map.get(identity_key(Course, course_id)) is not None:
        # Already in the session: get() returns it as it stands (or refreshes it if expired).
        options = _COURSE_WITH_FRACTIONS_OPTIONS if fractions else _COURSE_OPTIONS
        course = session.get(Course, course_id, options=options)
    else:
        statement = _COURSE_WITH_FRACTIONS if fractions else _COURSE
        course = session.scalars(statement, {"id": course_id}).unique().one_or_none()
    if course is None:
        raise NotFound(f"course {course_id} does not exist")
    return course


def _get_fraction(session: Session, fraction_id: int) -> Fraction:
    fraction = session.get(Fraction, fraction_id)
    if fraction is None:
        raise NotFound(f"fraction {fraction_id} does not exist")
    return fraction


def _active_fraction(session: Session, fraction_id: int, *, action: str | None = None) -> Fraction:
    """The fraction, if it still holds its slot (tentative, booked or confirmed)."""
    fraction = _get_fraction(session, fraction_id)
    if fraction.status not in ACTIVE_FRACTION_STATUSES:
        session.rollback()
        suffix = f" and cannot {action}" if action else ""
        raise StateConflict(f"fraction {fraction_id} is {fraction.status}{suffix}")
    return fraction


def _department_of(session: Session, course: Course) -> Department:
    # Loaded with the course (see _get_course); no further query.
    return course.patient.department


def _scheduled(course: Course) -> dict[int, Fraction]:
    """The fraction currently standing at each position (cancelled/missed ones dropped)."""
    return {f.number: f for f in course.fractions if f.status in SCHEDULED_STATUSES}


def _event(
    session: Session,
    kind: str,
    course: Course,
    *,
    fraction: Fraction | None = None,
    actor_id: int | None = None,
    now: datetime,
    **payload: object,
) -> None:
    event = BookingEvent(
        kind=kind,
        course_id=course.id,
        fraction_id=fraction.id if fraction is not None else None,
        payload=payload,
        actor_id=actor_id,
        created_at=now,
    )
    session.add(event)
    # The patient messages this change calls for are written in the same transaction: they
    # exist if and only if the change is committed.
    outbox.record_booking_event(session, event, now=now)


def _fraction_payload(fraction: Fraction | PlannedFraction) -> dict[str, object]:
    if isinstance(fraction, Fraction):
        fraction = _planned(fraction)
    return {
        "number": fraction.number,
        "linac_id": fraction.linac_id,
        "starts_at": _iso(fraction.start),
        "ends_at": _iso(fraction.end),
    }


def _context_for(
    session: Session,
    department: Department,
    course: Course,
    instants: Iterable[datetime],
    *,
    pad_days: int,
) -> SearchContext:
    days = [local_date(t, department.timezone) for t in instants]
    return search_context(
        session,
        department,
        min(days) - timedelta(days=1),
        max(days) + timedelta(days=pad_days),
        patient_id=course.patient_id,
        exclude_course_id=course.id,
    )


# --- proposing -------------------------------------------------------------------------


def propose_schedules(
    session: Session,
    course_id: int,
    *,
    earliest: date | None = None,
    count: int = 3,
    preferred_window: tuple[time, time] | None = None,
    horizon_days: int = 56,
    now: datetime | None = None,
) -> ProposalResult:
    """Complete valid schedules for a course, best first; and why there are none, or why
    they start later than the requested date (the explanation names the cause)."""
    now = _now(now)
    course = _get_course(session, course_id, fractions=False)
    department = _department_of(session, course)
    rules = rules_from_protocol(course.protocol)
    # Read before the rollback below expires it: reading it after would cost a round trip.
    timezone = department.timezone
    today = local_date(now, timezone)
    first = max(d for d in (earliest, today, course.ready_to_treat_on) if d is not None)

    def context_for(request: ScheduleRequest) -> SearchContext:
        lo, hi = search.search_dates(request)
        return search_context(
            session, department, lo, hi, patient_id=course.patient_id, exclude_course_id=course.id
        )

    request = ScheduleRequest(
        rules=rules,
        earliest=first,
        not_before=now,
        count=count,
        horizon_days=min(FIRST_LOOK_DAYS, horizon_days),
        preferred_window=preferred_window,
    )
    # A first day's wait bounds the score of every course starting then, so once the first
    # days hold enough proposals that no later start could outrank (the search says the
    # ranking is settled), they are exactly the ones the whole horizon would give; reading a
    # few weeks of bookings instead of months is what keeps a proposal fast in a busy
    # department.
    ctx = context_for(request)
    found = search.propose_ranked(request, ctx)
    schedules = found.schedules
    if not found.settled and request.horizon_days < horizon_days:
        request = replace(request, horizon_days=horizon_days)
        ctx = context_for(request)
        schedules = search.propose(request, ctx)
    explanation = None
    if not schedules:
        # The explanation looks for the earliest feasible start beyond the horizon too.
        wide = replace(request, horizon_days=horizon_days + search.EXPLAIN_HORIZON_DAYS)
        explanation = search.explain(
            request,
            context_for(wide),
            horizon_days=wide.horizon_days,
            downtimes=_downtime_spans(session, department, *search.search_dates(wide)),
        )
    else:
        start = min(local_date(s.first_start, timezone) for s in schedules)
        if start > first:
            # A late start is explained by its cause (downtime, closures, bookings).
            explanation = search.explain_late_start(
                request,
                ctx,
                start,
                downtimes=_downtime_spans(session, department, *search.search_dates(request)),
            )
    session.rollback()  # read-only: release the SQLite write lock promptly
    return ProposalResult(schedules, explanation, timezone)


def _downtime_spans(
    session: Session, department: Department, first: date, last: date
) -> list[DowntimeSpan]:
    """The department's linac downtime touching local days first..last, with reasons."""
    start, end = local_day_bounds(department.timezone, first, last)
    rows = session.execute(
        sa.select(Downtime.linac_id, Downtime.starts_at, Downtime.ends_at, Downtime.reason)
        .join(Linac, Linac.id == Downtime.linac_id)
        .where(
            Linac.department_id == department.id,
            Downtime.starts_at < end,
            Downtime.ends_at > start,
        )
        .order_by(Downtime.starts_at, Downtime.linac_id)
    ).all()
    return [DowntimeSpan(r.linac_id, r.starts_at, r.ends_at, r.reason or "") for r in rows]


# --- booking ---------------------------------------------------------------------------


def _violations_to_breaks(violations: Iterable[Violation]) -> list[RuleBreak]:
    return [
        RuleBreak(v.code, v.message, v.fraction, overridable=v.code in OVERRIDABLE_RULES)
        for v in violations
    ]


def _check_plain_text(session: Session, field: str, value: str | None) -> None:
    """Refuse a reason holding line breaks, control or invisible characters: it is shown on
    pages and written into calendar files and the audit log."""
    problem = None if value is None else plain_text_problem(value)
    if problem is not None:
        session.rollback()
        raise InvalidInput(
            f"the {field.replace('_', ' ')} is not plain text", [FieldError(field, problem)]
        )


def _check_violations(
    session: Session,
    violations: list[Violation],
    override_reason: str | None,
    linac_ids: Iterable[int],
    patient_id: int,
    window: Interval,
) -> None:
    """Raise for what may not be booked: conflicts (409), rules without an override (422)."""
    _check_plain_text(session, "override_reason", override_reason)
    if any(v.code in CONFLICT_RULES for v in violations):
        session.rollback()
        raise Conflict(
            "; ".join(v.message for v in violations if v.code in CONFLICT_RULES),
            _conflicts(session, linac_ids, patient_id, window),
        )
    hard = [v for v in violations if v.code not in OVERRIDABLE_RULES]
    soft = [v for v in violations if v.code in OVERRIDABLE_RULES]
    if hard or (soft and not (override_reason and override_reason.strip())):
        session.rollback()
        detail = (
            "the schedule cannot be booked"
            if hard
            else "the schedule breaks protocol rules; give an override reason to book it anyway"
        )
        raise RulesBroken(detail, _violations_to_breaks(violations))


def _conflicts(
    session: Session, linac_ids: Iterable[int], patient_id: int, window: Interval
) -> list[ConflictingBooking]:
    """What occupies these linacs or this patient around the window (fresh read)."""
    linac_ids = list(set(linac_ids))
    rows = session.execute(
        sa.select(Fraction.linac_id, Fraction.patient_id, Fraction.starts_at, Fraction.ends_at)
        .where(
            sa.or_(Fraction.linac_id.in_(linac_ids), Fraction.patient_id == patient_id),
            Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
            Fraction.starts_at < window.end,
            Fraction.ends_at > window.start,
        )
        .order_by(Fraction.starts_at)
    ).all()
    found = [
        ConflictingBooking(
            "patient" if row.patient_id == patient_id else "linac",
            row.linac_id,
            _iso(row.starts_at),
            _iso(row.ends_at),
        )
        for row in rows
    ]
    downs = session.execute(
        sa.select(Downtime.linac_id, Downtime.starts_at, Downtime.ends_at).where(
            Downtime.linac_id.in_(linac_ids),
            Downtime.starts_at < window.end,
            Downtime.ends_at > window.start,
        )
    ).all()
    found += [
        ConflictingBooking("downtime", d.linac_id, _iso(d.starts_at), _iso(d.ends_at))
        for d in downs
    ]
    session.rollback()
    return found


class _LostRace(Exception):
    """PostgreSQL broke a deadlock between two bookings by aborting ours: run it again."""


# PostgreSQL's deadlock and serialisation failures: the transaction did nothing and may be
# retried. Two bookings for one patient on two linacs can wait on each other's exclusion
# checks; the database aborts one and the retry then sees the winner's rows.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
RACE_RETRIES = 3


def _retry_lost_races(use_case: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(use_case)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for _ in range(RACE_RETRIES - 1):
            try:
                return use_case(*args, **kwargs)
            except _LostRace:
                continue
        try:
            return use_case(*args, **kwargs)
        except _LostRace as exc:
            raise Conflict("bookings changed while this one was made; try again") from exc

    return run


def _flush_or_conflict(
    session: Session, linac_ids: Iterable[int], patient_id: int, window: Interval
) -> None:
    """Flush; a constraint violation means a concurrent booking won the race."""
    try:
        session.flush()
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
            session.rollback()
            raise _LostRace() from exc
        raise
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(
            "the requested time was booked by someone else a moment ago; choose another",
            _conflicts(session, linac_ids, patient_id, window),
        ) from exc


# A second course this close to another of the same patient is rare: more often a duplicate
# or a plan that should have been one course, so booking it needs an explicit acknowledgement.
NEARBY_COURSE_DAYS = 7
# Courses whose dates no longer matter to a new booking (nothing booked, or all over).
_SETTLED_COURSE_STATUSES = (CourseStatus.DRAFT, CourseStatus.CANCELLED, CourseStatus.COMPLETED)


def _nearby_courses(session: Session, course: Course, window: Interval) -> list[NearbyCourse]:
    """The patient's other active courses whose sessions overlap ``window`` or come within
    NEARBY_COURSE_DAYS local calendar days of it, nearest first."""
    tz = _department_of(session, course).timezone
    rows = session.execute(
        sa.select(
            Course.id,
            Protocol.code,
            Course.status,
            sa.func.min(Fraction.starts_at),
            sa.func.max(Fraction.ends_at),
        )
        .join(Protocol, Protocol.id == Course.protocol_id)
        .join(Fraction, Fraction.course_id == Course.id)
        .where(
            Course.patient_id == course.patient_id,
            Course.id != course.id,
            Course.status.not_in(_SETTLED_COURSE_STATUSES),
            Fraction.status.in_(SCHEDULED_STATUSES),
        )
        .group_by(Course.id, Protocol.code, Course.status)
        .order_by(Course.id)
    ).all()
    first_day, last_day = local_date(window.start, tz), local_date(window.end, tz)
    found = []
    for other_id, code, status, starts_at, ends_at in rows:
        # Aggregates keep the column type, so these are aware UTC instants on both backends.
        starts_at, ends_at = starts_at.astimezone(UTC), ends_at.astimezone(UTC)
        other_first, other_last = local_date(starts_at, tz), local_date(ends_at, tz)
        days_apart = max((first_day - other_last).days, (other_first - last_day).days, 0)
        if days_apart <= NEARBY_COURSE_DAYS:
            found.append(
                NearbyCourse(
                    other_id, code, str(status), _iso(starts_at), _iso(ends_at), days_apart
                )
            )
    return sorted(found, key=lambda n: (n.days_apart, n.course_id))


def nearby_courses(
    session: Session, course_id: int, placements: Sequence[Placement]
) -> list[NearbyCourse]:
    """The check ``book_course`` makes before booking: the patient's other active courses
    overlapping these placements or within NEARBY_COURSE_DAYS of them (a read only)."""
    course = _get_course(session, course_id, fractions=False)
    rules = rules_from_protocol(course.protocol)
    starts = [p.starts_at.astimezone(UTC) for p in placements]
    ends = [
        p.starts_at.astimezone(UTC) + timedelta(minutes=rules.minutes_for(p.number))
        for p in placements
    ]
    if not starts:
        return []
    return _nearby_courses(session, course, Interval(min(starts), max(ends)))


def _new_fraction(
    course: Course, planned: PlannedFraction, override_reason: str | None, *, now: datetime
) -> Fraction:
    """A session row for a course being booked or repaired."""
    # Until plan approval and physics QA are recorded the first fraction stays tentative, so
    # no message can call it confirmed.
    ready = course.ready_to_treat or planned.number > 1
    return Fraction(
        course_id=course.id,
        patient_id=course.patient_id,
        linac_id=planned.linac_id,
        number=planned.number,
        starts_at=planned.start,
        ends_at=planned.end,
        status=FractionStatus.BOOKED if ready else FractionStatus.TENTATIVE,
        override_reason=override_reason.strip() if override_reason else None,
        created_at=now,
        updated_at=now,
    )


@_retry_lost_races
def book_course(
    session: Session,
    course_id: int,
    placements: Sequence[Placement],
    *,
    override_reason: str | None = None,
    acknowledged_course_ids: Collection[int] = (),
    actor_id: int | None = None,
    now: datetime | None = None,
) -> Course:
    """Book every fraction of a course at once, or nothing.

    When the patient has another active course overlapping the schedule or within
    NEARBY_COURSE_DAYS of it, every such course must be among ``acknowledged_course_ids``
    (else :class:`NearbyCourseWarning`); the acknowledgement is kept in the booking event.
    """
    now = _now(now)
    course = _get_course(session, course_id)
    if course.status != CourseStatus.DRAFT or _scheduled(course):
        session.rollback()
        raise StateConflict(f"course {course_id} is {course.status}; only a draft can be booked")
    protocol = course.protocol
    rules = rules_from_protocol(protocol)
    numbers = sorted(p.number for p in placements)
    if numbers != list(range(1, rules.fractions + 1)):
        session.rollback()
        raise InvalidInput(
            f"give exactly one placement for each fraction 1..{rules.fractions}",
            [FieldError("fractions", f"expected numbers 1..{rules.fractions}, got {numbers}")],
        )
    department = _department_of(session, course)
    linac_ids = {linac.id for linac in department.linacs}
    unknown = sorted({p.linac_id for p in placements} - linac_ids)
    if unknown:
        session.rollback()
        raise InvalidInput(
            "unknown linac",
            [FieldError("fractions.linac_id", f"no linac {i} in this department") for i in unknown],
        )
    planned = tuple(
        PlannedFraction(
            p.number,
            p.linac_id,
            p.starts_at.astimezone(UTC),
            p.starts_at.astimezone(UTC) + timedelta(minutes=rules.minutes_for(p.number)),
        )
        for p in sorted(placements, key=lambda p: p.number)
    )
    schedule = Schedule(planned)
    window = Interval(min(f.start for f in planned), max(f.end for f in planned))
    ctx = _context_for(session, department, course, [window.start, window.end], pad_days=1)
    violations = rulebook.validate(schedule, rules, ctx, not_before=now)
    _check_violations(
        session,
        violations,
        override_reason,
        {f.linac_id for f in planned},
        course.patient_id,
        window,
    )
    overridden = bool(violations)
    nearby = _nearby_courses(session, course, window)
    acknowledged = set(acknowledged_course_ids)
    if any(n.course_id not in acknowledged for n in nearby):
        session.rollback()
        raise NearbyCourseWarning(
            "the patient has another active course overlapping this schedule or within "
            f"{NEARBY_COURSE_DAYS} days of it; acknowledge it to book",
            nearby,
        )
    for f in planned:
        session.add(_new_fraction(course, f, override_reason if overridden else None, now=now))
    course.status = CourseStatus.BOOKED
    course.updated_at = now
    _flush_or_conflict(session, {f.linac_id for f in planned}, course.patient_id, window)
    _event(
        session,
        "course_booked",
        course,
        actor_id=actor_id,
        now=now,
        fractions=[_fraction_payload(f) for f in planned],
        override_reason=override_reason if overridden else None,
        violations=[v.code for v in violations],
        nearby_courses_acknowledged=[n.course_id for n in nearby],
    )
    session.commit()
    session.refresh(course)
    return course


# --- moving ----------------------------------------------------------------------------


def _introduced(before: list[Violation], after: list[Violation]) -> list[Violation]:
    """Violations a change adds (ones the course already had, e.g. overridden, stay)."""
    known = {(v.code, v.fraction) for v in before}
    return [v for v in after if (v.code, v.fraction) not in known]


@_retry_lost_races
def move_fraction(
    session: Session,
    fraction_id: int,
    *,
    linac_id: int,
    starts_at: datetime,
    override_reason: str | None = None,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> Fraction:
    """Move one fraction; its neighbours' rules must hold unless overridden with a reason."""
    now = _now(now)
    fraction = _active_fraction(session, fraction_id, action="be moved")
    course = _get_course(session, fraction.course_id)
    department = _department_of(session, course)
    if linac_id not in {linac.id for linac in department.linacs}:
        session.rollback()
        raise InvalidInput("unknown linac", [FieldError("linac_id", f"no linac {linac_id}")])
    rules = rules_from_protocol(course.protocol)
    scheduled = _scheduled(course)
    start = starts_at.astimezone(UTC)
    new = PlannedFraction(
        fraction.number,
        linac_id,
        start,
        start + timedelta(minutes=rules.minutes_for(fraction.number)),
    )
    old_schedule = Schedule(tuple(_planned(f) for _, f in sorted(scheduled.items())))
    new_schedule = Schedule(
        tuple(new if n == fraction.number else _planned(f) for n, f in sorted(scheduled.items()))
    )
    instants = [f.start for f in new_schedule.fractions] + [f.start for f in old_schedule.fractions]
    ctx = _context_for(session, department, course, instants, pad_days=1)
    # Only what the move introduces counts: earlier fractions are legitimately in the past.
    violations = _introduced(
        rulebook.validate(old_schedule, rules, ctx, not_before=now),
        rulebook.validate(new_schedule, rules, ctx, not_before=now),
    )
    window = new.interval
    _check_violations(session, violations, override_reason, {linac_id}, course.patient_id, window)
    if violations:
        fraction.override_reason = override_reason.strip() if override_reason else None
    _apply_move(
        session,
        course,
        fraction,
        new,
        actor_id=actor_id,
        now=now,
        cause="manual",
        override_reason=override_reason if violations else None,
        violations=[v.code for v in violations],
        flush=lambda: _flush_or_conflict(session, {linac_id}, course.patient_id, window),
    )
    session.commit()
    return fraction


def _complete(
    session: Session,
    course: Course,
    department: Department,
    keep: dict[int, Fraction],
    free: set[int],
    *,
    not_before: datetime,
    count: int,
    preferred_linacs: tuple[int, ...] = (),
) -> list[Schedule]:
    """Schedules that keep ``keep`` and place the ``free`` positions (none if impossible)."""
    rules = rules_from_protocol(course.protocol)
    fixed = {n: _planned(f) for n, f in keep.items() if n not in free}
    today = local_date(not_before, department.timezone)
    anchors = [f.start for f in fixed.values()] + [not_before]
    ctx = _context_for(
        session, department, course, anchors, pad_days=(rules.max_overall_days or 14) + 28
    )
    request = ScheduleRequest(
        rules=rules,
        earliest=today,
        not_before=not_before,
        count=count,
        horizon_days=28,
        fixed=fixed,
        preferred_linacs=preferred_linacs,
    )
    return search.propose(request, ctx)


def _same_time_on_partner(
    session: Session,
    course: Course,
    department: Department,
    keep: dict[int, Fraction],
    free: set[int],
    partners: Sequence[int],
    *,
    not_before: datetime,
) -> Schedule | None:
    """The displaced fractions at their booked times on a beam-matched partner, if that keeps
    every rule: the change a patient barely notices, so it is tried before any other time."""
    if not partners or any(keep[n].starts_at < not_before for n in free):
        return None
    rules = rules_from_protocol(course.protocol)
    current = Schedule(tuple(_planned(f) for _, f in sorted(keep.items())))
    ctx = _context_for(
        session, department, course, [f.start for f in current.fractions], pad_days=1
    )
    before = rulebook.validate(current, rules, ctx)
    for partner in partners:
        candidate = Schedule(
            tuple(
                replace(f, linac_id=partner) if f.number in free else f for f in current.fractions
            )
        )
        after = rulebook.validate(candidate, rules, ctx)
        still_blocked = any(v.code in CONFLICT_RULES and v.fraction in free for v in after)
        if not still_blocked and not _introduced(before, after):
            return candidate
    return None


def fraction_alternatives(
    session: Session, fraction_id: int, *, count: int = 5, now: datetime | None = None
) -> list[alternative_search.Alternative]:
    """Useful new placements for one fraction that a move would accept without an override:
    the same time on a beam-matched partner, the same time on other days, other times on
    its day, then any other valid time (see scheduler.alternatives); never its current one."""
    now = _now(now)
    fraction = _active_fraction(session, fraction_id, action="be moved")
    course = _get_course(session, fraction.course_id)
    department = _department_of(session, course)
    rules = rules_from_protocol(course.protocol)
    current = Schedule(tuple(_planned(f) for _, f in sorted(_scheduled(course).items())))
    tz = department.timezone
    first, last = alternative_search.search_days(current, fraction.number, tz, not_before=now)
    course_days = [local_date(f.start, tz) for f in current.fractions]
    # The whole course is validated with each candidate, so its dates are read too.
    ctx = search_context(
        session,
        department,
        min(first, *course_days) - timedelta(days=1),
        max(last, *course_days) + timedelta(days=1),
        patient_id=course.patient_id,
        exclude_course_id=course.id,
    )
    found = alternative_search.alternatives(
        current,
        fraction.number,
        rules,
        ctx,
        not_before=now,
        count=count,
        linac_order=_group_order(department, fraction.linac_id),
    )
    session.rollback()
    return found


def _group_order(department: Department, linac_id: int) -> tuple[int, ...]:
    """This linac, then its beam-matched partners: where a plan can go without re-planning."""
    this = next((linac for linac in department.linacs if linac.id == linac_id), None)
    partners = [
        linac.id
        for linac in department.linacs
        if this is not None
        and this.beam_group
        and linac.beam_group == this.beam_group
        and linac.id != linac_id
    ]
    return (linac_id, *partners)


# --- cancelling and recording outcomes ---------------------------------------------------


def cancel_fraction(
    session: Session,
    fraction_id: int,
    *,
    reason: str,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> Fraction:
    now = _now(now)
    _check_plain_text(session, "reason", reason)
    fraction = _active_fraction(session, fraction_id, action="be cancelled")
    course = fraction.course
    _set_status(fraction, FractionStatus.CANCELLED, reason, now)
    _event(
        session,
        "fraction_cancelled",
        course,
        fraction=fraction,
        actor_id=actor_id,
        now=now,
        before=_fraction_payload(fraction),
        version=fraction.version,
        reason=reason,
    )
    session.flush()
    _note_missing_fractions(
        session,
        _get_course(session, course.id),
        actor_id=actor_id,
        now=now,
        why=f"fraction {fraction.number} was cancelled",
    )
    session.commit()
    return fraction


def _set_status(
    fraction: Fraction, status: FractionStatus, reason: str | None, now: datetime
) -> None:
    fraction.status = status
    fraction.status_reason = reason
    fraction.version += 1
    fraction.updated_at = now


def cancel_course(
    session: Session,
    course_id: int,
    *,
    reason: str,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> Course:
    now = _now(now)
    _check_plain_text(session, "reason", reason)
    course = _get_course(session, course_id)
    if course.status in (CourseStatus.CANCELLED, CourseStatus.COMPLETED):
        session.rollback()
        raise StateConflict(f"course {course_id} is already {course.status}")
    cancelled = [f for f in course.fractions if f.status in ACTIVE_FRACTION_STATUSES]
    for fraction in cancelled:
        _set_status(fraction, FractionStatus.CANCELLED, reason, now)
    course.status = CourseStatus.CANCELLED
    course.updated_at = now
    _event(
        session,
        "course_cancelled",
        course,
        actor_id=actor_id,
        now=now,
        reason=reason,
        fractions=[{**_fraction_payload(f), "id": f.id, "version": f.version} for f in cancelled],
    )
    session.commit()
    return course


def record_completed(
    session: Session, fraction_id: int, *, actor_id: int | None = None, now: datetime | None = None
) -> Fraction:
    now = _now(now)
    fraction = _active_fraction(session, fraction_id)
    if fraction.starts_at > now:
        session.rollback()
        raise StateConflict("a fraction cannot be completed before it starts")
    _set_status(fraction, FractionStatus.COMPLETED, None, now)
    course = fraction.course
    if (
        all(
            f.status in (FractionStatus.COMPLETED, FractionStatus.CANCELLED, FractionStatus.MISSED)
            for f in course.fractions
        )
        and len(_scheduled(course)) == course.fraction_count
    ):
        course.status = CourseStatus.COMPLETED
    _event(session, "fraction_completed", course, fraction=fraction, actor_id=actor_id, now=now)
    session.commit()
    return fraction


def _missed_reason_words(reason: str, reason_text: str | None) -> str:
    """The reason as people read it; raises InvalidInput for an unknown or unexplained one."""
    text = (reason_text or "").strip()
    if reason not in set(MissedReason):
        raise InvalidInput(
            "unknown reason for a missed fraction",
            [FieldError("reason", f"one of {', '.join(MissedReason)}")],
        )
    if reason == MissedReason.OTHER and not text:
        raise InvalidInput(
            "say why the fraction was missed",
            [FieldError("reason_text", "required when the reason is other")],
        )
    if len(text) > MAX_REASON_TEXT:
        raise InvalidInput(
            "the reason is too long",
            [FieldError("reason_text", f"at most {MAX_REASON_TEXT} characters")],
        )
    if (problem := plain_text_problem(text)) is not None:
        raise InvalidInput("the reason is not plain text", [FieldError("reason_text", problem)])
    if reason == MissedReason.OTHER:
        return text
    label = MISSED_REASON_LABELS[MissedReason(reason)]
    return f"{label}: {text}" if text else label


@_retry_lost_races
def record_missed(
    session: Session,
    fraction_id: int,
    *,
    reason: str,
    reason_text: str | None = None,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> MissedResult:
    """Mark a fraction missed for a reason and rebook it inside the course's overall time.

    A machine fault is rebooked like a downtime move: while the booked session is not over
    (the patient is still in the department) the same time on a beam-matched partner comes
    first. Otherwise only the missed position is re-placed; if that cannot keep the rules,
    the later fractions are re-placed with it. If nothing works the course is flagged for
    review.
    """
    now = _now(now)
    words = _missed_reason_words(reason, reason_text)
    fraction = _active_fraction(session, fraction_id)
    if fraction.starts_at > now:
        session.rollback()
        raise StateConflict("a fraction cannot be missed before its start time")
    course = _get_course(session, fraction.course_id)
    department = _department_of(session, course)
    was_tentative = fraction.status == FractionStatus.TENTATIVE
    status_before = fraction.status
    _set_status(fraction, FractionStatus.MISSED, words, now)
    fraction.missed_reason = reason
    _event(
        session,
        "fraction_missed",
        course,
        fraction=fraction,
        actor_id=actor_id,
        now=now,
        before=_fraction_payload(fraction),
        version=fraction.version,
        reason=reason,
        reason_text=words,
        status_before=status_before,
    )
    session.flush()
    keep = _scheduled(course)
    later = {n for n, f in keep.items() if n > fraction.number and f.starts_at > now}
    group = _group_order(department, fraction.linac_id)
    schedule: Schedule | None = None
    moved_later: set[int] = set()
    if reason == MissedReason.MACHINE_FAULT and fraction.ends_at > now:
        schedule = _same_time_on_a_partner(session, course, department, keep, fraction, group[1:])
    for free in ({fraction.number}, {fraction.number} | later):
        if schedule is not None:
            break
        found = _complete(
            session,
            course,
            department,
            keep,
            free,
            not_before=now + REBOOK_LEAD_TIME,
            count=1,
            preferred_linacs=group,
        )
        if found:
            schedule, moved_later = found[0], free - {fraction.number}
    if schedule is None:
        course.status = CourseStatus.NEEDS_REVIEW
        course.review_reason = (
            f"fraction {fraction.number} was missed and cannot be rebooked within the "
            "protocol's rules; a clinician must decide"
        )
        _event(
            session,
            "course_needs_review",
            course,
            actor_id=actor_id,
            now=now,
            reason=course.review_reason,
        )
        session.commit()
        return MissedResult(fraction, None, True)
    placed = {f.number: f for f in schedule.fractions}
    for n in sorted(moved_later):
        _apply_move(session, course, keep[n], placed[n], actor_id=actor_id, now=now, cause="missed")
    target = placed[fraction.number]
    rebooked = Fraction(
        course_id=course.id,
        patient_id=course.patient_id,
        linac_id=target.linac_id,
        number=fraction.number,
        starts_at=target.start,
        ends_at=target.end,
        status=FractionStatus.TENTATIVE if was_tentative else FractionStatus.BOOKED,
        created_at=now,
        updated_at=now,
    )
    session.add(rebooked)
    _flush_or_conflict(session, {target.linac_id}, course.patient_id, target.interval)
    _event(
        session,
        "fraction_rebooked",
        course,
        fraction=rebooked,
        actor_id=actor_id,
        now=now,
        after=_fraction_payload(rebooked),
        replaces=fraction.id,
        version=rebooked.version,
    )
    session.commit()
    return MissedResult(fraction, rebooked, False)


def _same_time_on_a_partner(
    session: Session,
    course: Course,
    department: Department,
    keep: dict[int, Fraction],
    missed: Fraction,
    partners: Sequence[int],
) -> Schedule | None:
    """The missed fraction at its booked time on a beam-matched partner, if that partner is
    free then and every rule still holds: the patient is treated as planned, elsewhere."""
    if not partners:
        return None
    rules = rules_from_protocol(course.protocol)
    kept = [_planned(f) for n, f in sorted(keep.items()) if n != missed.number]
    ctx = _context_for(
        session, department, course, [missed.starts_at, *(f.start for f in kept)], pad_days=1
    )
    numbers = [f.number for f in kept]
    before = rulebook.validate(Schedule(tuple(kept)), rules, ctx, fixed=numbers)
    for partner in partners:
        here = PlannedFraction(missed.number, partner, missed.starts_at, missed.ends_at)
        candidate = Schedule(tuple(sorted([*kept, here], key=lambda f: f.number)))
        after = rulebook.validate(candidate, rules, ctx, fixed=numbers)
        if not [v for v in _introduced(before, after) if v.code != "fraction_count"]:
            return candidate
    return None


def _apply_move(
    session: Session,
    course: Course,
    fraction: Fraction,
    target: PlannedFraction,
    *,
    actor_id: int | None,
    now: datetime,
    cause: str,
    flush: Callable[[], None] | None = None,
    **extra: object,
) -> None:
    """Put a fraction at ``target`` (new version) and record the move and its notices.

    ``flush`` runs after the change and before the event, where a lost race must surface.
    """
    before = _planned(fraction)
    fraction.linac_id, fraction.starts_at, fraction.ends_at = (
        target.linac_id,
        target.start,
        target.end,
    )
    fraction.version += 1
    fraction.updated_at = now
    if fraction.status == FractionStatus.CONFIRMED:
        fraction.status = FractionStatus.BOOKED  # the patient confirmed the old time
    if flush is not None:
        flush()
    _event(
        session,
        "fraction_moved",
        course,
        fraction=fraction,
        actor_id=actor_id,
        now=now,
        before=_fraction_payload(before),
        after=_fraction_payload(target),
        version=fraction.version,
        cause=cause,
        **extra,
    )


def record_readiness(
    session: Session,
    course_id: int,
    *,
    step: str,
    done_at: datetime | None,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> Course:
    """Record (or clear) one readiness step; the first fraction follows plan readiness."""
    now = _now(now)
    if step not in READINESS_STEPS:
        raise InvalidInput(
            "unknown readiness step",
            [FieldError("step", f"one of {', '.join(READINESS_STEPS)}")],
        )
    course = _get_course(session, course_id)
    was_ready = course.ready_to_treat
    setattr(course, READINESS_STEPS[step], done_at)
    course.updated_at = now
    first = _scheduled(course).get(1)
    if (
        first is not None
        and first.status in ACTIVE_FRACTION_STATUSES
        and was_ready != course.ready_to_treat
    ):
        new_status = FractionStatus.BOOKED if course.ready_to_treat else FractionStatus.TENTATIVE
        _set_status(first, new_status, None, now)
        _event(
            session,
            "course_ready" if course.ready_to_treat else "course_not_ready",
            course,
            fraction=first,
            actor_id=actor_id,
            now=now,
            version=first.version,
        )
    session.commit()
    return course


def confirm_next_fraction(
    session: Session, patient_id: int, *, now: datetime | None = None
) -> Fraction | None:
    """The patient confirmed (by SMS reply): mark their next booked fraction confirmed.

    A tentative fraction (plan not yet approved) cannot be confirmed by the patient. The
    time does not change, so the version and the pending reminders stay as they are.
    """
    now = _now(now)
    fraction = session.scalars(
        sa.select(Fraction)
        .where(
            Fraction.patient_id == patient_id,
            Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
            Fraction.starts_at > now,
        )
        .order_by(Fraction.starts_at)
        .limit(1)
    ).first()
    if fraction is None or fraction.status != FractionStatus.BOOKED:
        session.rollback()
        return None
    fraction.status = FractionStatus.CONFIRMED
    fraction.updated_at = now
    _event(
        session,
        "fraction_confirmed",
        fraction.course,
        fraction=fraction,
        now=now,
        version=fraction.version,
    )
    session.commit()
    return fraction


# --- repairing incomplete courses --------------------------------------------------------


@dataclass(frozen=True)
class RebookingProposal:
    """Ways to place a course's missing fractions, or why a clinician must decide."""

    course_id: int
    missing: list[int]
    schedules: list[Schedule]
    timezone: str
    needs_clinician: bool
    reason: str | None


def _cannot_complete_reason(course: Course, missing: Sequence[int]) -> str:
    numbers = ", ".join(str(n) for n in missing)
    if course.fraction_count < course.protocol.fractions:
        return (
            f"fraction {numbers} is missing from a reduced prescription; a clinician must "
            "change the prescription"
        )
    return (
        f"fraction {numbers} cannot be rebooked within the protocol's overall time and "
        "spacing; a clinician must decide"
    )


def _rebooking_schedules(
    session: Session, course: Course, department: Department, *, now: datetime, count: int
) -> list[Schedule]:
    """Complete schedules that keep every held fraction and place the missing ones."""
    missing = course.missing_numbers
    # The engine places every position the protocol has; with a reduced prescription some
    # open positions must stay empty, which only a clinician can choose.
    if not missing or course.fraction_count < course.protocol.fractions:
        return []
    # Prefer the machine the missing fraction was on, then its beam-matched partners.
    gone = [f for f in course.fractions if f.number in missing]
    linac_id = gone[-1].linac_id if gone else next(iter(_scheduled(course).values())).linac_id
    return _complete(
        session,
        course,
        department,
        _scheduled(course),
        set(missing),
        not_before=now + REBOOK_LEAD_TIME,
        count=count,
        preferred_linacs=_group_order(department, linac_id),
    )


def _flag_for_clinician(
    session: Session, course: Course, reason: str, *, actor_id: int | None, now: datetime
) -> None:
    if course.status == CourseStatus.NEEDS_REVIEW and course.review_reason == reason:
        return
    course.status = CourseStatus.NEEDS_REVIEW
    course.review_reason = reason
    course.updated_at = now
    _event(session, "course_needs_review", course, actor_id=actor_id, now=now, reason=reason)


def _note_missing_fractions(
    session: Session, course: Course, *, actor_id: int | None, now: datetime, why: str
) -> None:
    """A fraction left the course: it is incomplete, and flagged for a clinician at once when
    no rebooking inside the protocol's rules exists."""
    missing = course.missing_numbers
    if not missing:
        return
    if course.status == CourseStatus.BOOKED:
        course.status = CourseStatus.INCOMPLETE
        course.updated_at = now
    department = _department_of(session, course)
    if not _rebooking_schedules(session, course, department, now=now, count=1):
        _flag_for_clinician(
            session,
            course,
            f"{why}: {_cannot_complete_reason(course, missing)}",
            actor_id=actor_id,
            now=now,
        )


def _settle_status(course: Course, now: datetime) -> None:
    """After a repair: booked again when nothing is missing, else still incomplete."""
    if course.status not in (
        CourseStatus.BOOKED,
        CourseStatus.INCOMPLETE,
        CourseStatus.NEEDS_REVIEW,
    ):
        return
    if course.incomplete:
        if course.status == CourseStatus.BOOKED:
            course.status = CourseStatus.INCOMPLETE
        return
    held = [f for f in course.fractions if f.status in SCHEDULED_STATUSES]
    if held and all(f.status == FractionStatus.COMPLETED for f in held):
        course.status = CourseStatus.COMPLETED
    else:
        course.status = CourseStatus.BOOKED
    course.review_reason = None
    course.updated_at = now


def propose_rebooking(
    session: Session, course_id: int, *, count: int = 3, now: datetime | None = None
) -> RebookingProposal:
    """Placements for a course's missing fractions inside the protocol's overall time.

    When there are none the course is flagged for a clinician there and then (the only
    write), so it shows on the work queue with the reason.
    """
    now = _now(now)
    course = _get_course(session, course_id)
    department = _department_of(session, course)
    timezone = department.timezone
    missing = course.missing_numbers
    if not missing:
        session.rollback()
        raise StateConflict(f"course {course_id} is not missing any fraction")
    schedules = _rebooking_schedules(session, course, department, now=now, count=count)
    reason = None
    if not schedules:
        reason = _cannot_complete_reason(course, missing)
        _flag_for_clinician(session, course, reason, actor_id=None, now=now)
        session.commit()
    else:
        session.rollback()  # read-only: release the SQLite write lock promptly
    return RebookingProposal(course_id, missing, schedules, timezone, not schedules, reason)


@_retry_lost_races
def rebook_fractions(
    session: Session,
    course_id: int,
    placements: Sequence[Placement],
    *,
    override_reason: str | None = None,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> Course:
    """Book every missing fraction of an incomplete course at once, or nothing.

    The new fractions must keep every rule with the held ones (overridable rules only with
    a reason); the patient is sent a notice and the usual reminders for each.
    """
    now = _now(now)
    course = _get_course(session, course_id)
    missing = course.missing_numbers
    if not missing:
        session.rollback()
        raise StateConflict(f"course {course_id} is not missing any fraction")
    numbers = sorted(p.number for p in placements)
    if numbers != missing:
        session.rollback()
        raise InvalidInput(
            f"give exactly one placement for each missing fraction {missing}",
            [FieldError("fractions", f"expected numbers {missing}, got {numbers}")],
        )
    if course.fraction_count < course.protocol.fractions:
        session.rollback()
        raise StateConflict(_cannot_complete_reason(course, missing))
    department = _department_of(session, course)
    unknown = sorted({p.linac_id for p in placements} - {linac.id for linac in department.linacs})
    if unknown:
        session.rollback()
        raise InvalidInput(
            "unknown linac",
            [FieldError("fractions.linac_id", f"no linac {i} in this department") for i in unknown],
        )
    rules = rules_from_protocol(course.protocol)
    keep = _scheduled(course)
    kept = [_planned(f) for _, f in sorted(keep.items())]
    new = [
        PlannedFraction(
            p.number,
            p.linac_id,
            p.starts_at.astimezone(UTC),
            p.starts_at.astimezone(UTC) + timedelta(minutes=rules.minutes_for(p.number)),
        )
        for p in sorted(placements, key=lambda p: p.number)
    ]
    whole = Schedule(tuple(sorted([*kept, *new], key=lambda f: f.number)))
    ctx = _context_for(session, department, course, [f.start for f in whole.fractions], pad_days=1)
    # Held fractions may be past or overridden already: only what the new ones add counts.
    violations = _introduced(
        rulebook.validate(Schedule(tuple(kept)), rules, ctx, not_before=now, fixed=list(keep)),
        rulebook.validate(whole, rules, ctx, not_before=now, fixed=list(keep)),
    )
    window = Interval(min(f.start for f in new), max(f.end for f in new))
    linac_ids = {f.linac_id for f in new}
    _check_violations(session, violations, override_reason, linac_ids, course.patient_id, window)
    replaced = {f.number: f.id for f in course.fractions if f.number in missing}
    added = []
    for f in new:
        row = _new_fraction(course, f, override_reason if violations else None, now=now)
        session.add(row)
        added.append(row)
    _flush_or_conflict(session, linac_ids, course.patient_id, window)
    session.refresh(course, ["fractions"])
    _settle_status(course, now)
    for row in added:
        _event(
            session,
            "fraction_rebooked",
            course,
            fraction=row,
            actor_id=actor_id,
            now=now,
            after=_fraction_payload(row),
            replaces=replaced.get(row.number),
            version=row.version,
            cause="rebooking",
            override_reason=override_reason if violations else None,
            violations=[v.code for v in violations],
        )
    session.commit()
    return course


def change_prescription(
    session: Session,
    course_id: int,
    *,
    fractions: int,
    reason: str,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> Course:
    """A clinician's change to the number of fractions, with the reason recorded.

    Fewer fractions may be prescribed only down to those the course holds (cancel one
    first to go lower); raising the count back to the protocol's makes the course
    incomplete again, to be rebooked.
    """
    now = _now(now)
    reason = (reason or "").strip()
    course = _get_course(session, course_id)
    if course.status not in (
        CourseStatus.BOOKED,
        CourseStatus.INCOMPLETE,
        CourseStatus.NEEDS_REVIEW,
    ):
        session.rollback()
        raise StateConflict(
            f"course {course_id} is {course.status}; only a booked course's prescription can change"
        )
    held = len(course.held_numbers)
    protocol_count = course.protocol.fractions
    errors = []
    if not reason:
        errors.append(FieldError("reason", "give the clinical reason for the change"))
    elif len(reason) > MAX_REASON_TEXT:
        errors.append(FieldError("reason", f"at most {MAX_REASON_TEXT} characters"))
    elif (problem := plain_text_problem(reason)) is not None:
        errors.append(FieldError("reason", problem))
    lowest = max(1, held)
    if fractions not in {lowest, protocol_count} or not lowest <= fractions <= protocol_count:
        allowed = sorted({lowest, protocol_count})
        errors.append(
            FieldError(
                "fractions",
                f"one of {' or '.join(str(n) for n in allowed)}: the course holds {held} "
                f"fraction{'s' if held != 1 else ''} and the protocol prescribes "
                f"{protocol_count}",
            )
        )
    if errors:
        session.rollback()
        raise InvalidInput("the prescription was not changed", errors)
    before = course.fraction_count
    course.prescribed_fractions = fractions
    course.prescription_reason = reason
    course.updated_at = now
    _event(
        session,
        "prescription_changed",
        course,
        actor_id=actor_id,
        now=now,
        before=before,
        after=fractions,
        reason=reason,
    )
    # A clinician's decision settles a review raised by the missing fractions.
    if course.status == CourseStatus.NEEDS_REVIEW:
        course.status = CourseStatus.INCOMPLETE
    _settle_status(course, now)
    session.commit()
    return course


def undo_missed(
    session: Session, fraction_id: int, *, actor_id: int | None = None, now: datetime | None = None
) -> Fraction:
    """Take back a missed fraction recorded in error, on the day it was recorded.

    The fraction gets back the status it had; a session rebooked in its place is cancelled
    (the patient is told). Later fractions a re-plan moved stay where they are.
    """
    now = _now(now)
    fraction = _get_fraction(session, fraction_id)
    if fraction.status != FractionStatus.MISSED:
        session.rollback()
        raise StateConflict(f"fraction {fraction_id} is {fraction.status}, not missed")
    course = _get_course(session, fraction.course_id)
    timezone = _department_of(session, course).timezone
    recorded = session.scalars(
        sa.select(BookingEvent)
        .where(BookingEvent.fraction_id == fraction.id, BookingEvent.kind == "fraction_missed")
        .order_by(BookingEvent.id.desc())
        .limit(1)
    ).first()
    recorded_at = recorded.created_at if recorded is not None else fraction.updated_at
    recorded_on = local_date(recorded_at, timezone)
    if recorded_on != local_date(now, timezone):
        session.rollback()
        raise StateConflict(
            f"fraction {fraction.number} was recorded as missed on {recorded_on.isoformat()}; "
            "it can be undone only on that day. Rebook the course or change its prescription "
            "instead"
        )
    replacement = next(
        (
            f
            for f in course.fractions
            if f.number == fraction.number
            and f.id != fraction.id
            and f.status in SCHEDULED_STATUSES
        ),
        None,
    )
    if replacement is not None and replacement.status == FractionStatus.COMPLETED:
        session.rollback()
        raise StateConflict(
            f"fraction {fraction.number} was already delivered in its rebooked session; "
            "the missed one cannot be restored"
        )
    if replacement is not None:
        _set_status(replacement, FractionStatus.CANCELLED, "the missed fraction was restored", now)
        _event(
            session,
            "fraction_cancelled",
            course,
            fraction=replacement,
            actor_id=actor_id,
            now=now,
            before=_fraction_payload(replacement),
            version=replacement.version,
            reason="the missed fraction was restored",
        )
        # The restored row takes the position back: the replacement must let go of it first.
        session.flush()
    payload = recorded.payload if recorded is not None else {}
    restored = payload.get("status_before", FractionStatus.BOOKED)
    if restored not in ACTIVE_FRACTION_STATUSES:
        restored = FractionStatus.BOOKED
    reason = fraction.missed_reason
    _set_status(fraction, FractionStatus(restored), None, now)
    fraction.missed_reason = None
    window = Interval(fraction.starts_at, fraction.ends_at)
    _flush_or_conflict(session, {fraction.linac_id}, course.patient_id, window)
    session.refresh(course, ["fractions"])
    _settle_status(course, now)
    _event(
        session,
        "fraction_missed_undone",
        course,
        fraction=fraction,
        actor_id=actor_id,
        now=now,
        version=fraction.version,
        reason=reason,
        status=restored,
        cancelled_replacement=replacement.id if replacement is not None else None,
    )
    session.commit()
    return fraction


# --- downtime ----------------------------------------------------------------------------


@_retry_lost_races
def add_downtime(
    session: Session,
    linac_id: int,
    *,
    starts_at: datetime,
    ends_at: datetime,
    kind: str,
    reason: str,
    preview: bool = False,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> DowntimeReport:
    """Record a linac downtime and re-plan every affected fraction, the whole department
    together (see :mod:`scheduler.replan`): first every fraction whose own time is free on a
    beam-matched partner keeps it, then the rest go where they disturb patients least.
    Fractions that cannot be re-placed are listed and their courses flagged for a human.
    With ``preview`` nothing is stored.
    """
    now = _now(now)
    _check_downtime(starts_at, ends_at, kind, reason)
    linac = session.get(Linac, linac_id)
    if linac is None:
        raise NotFound(f"linac {linac_id} does not exist")
    downtime = Downtime(
        linac_id=linac_id,
        starts_at=starts_at,
        ends_at=ends_at,
        kind=kind,
        reason=reason,
        created_by_id=actor_id,
        created_at=now,
    )
    session.add(downtime)
    session.flush()
    affected = _displaced_by(session, linac_id, Interval(starts_at, ends_at))
    report = _replan_for(session, downtime, linac, affected, actor_id=actor_id, now=now)
    report = _finish_downtime(session, report, preview=preview)
    # A previewed downtime was never stored, so it has no id.
    return replace(report, downtime_id=None) if preview else report


def _check_downtime(starts_at: datetime, ends_at: datetime, kind: str, reason: str | None) -> None:
    errors = []
    if reason and (problem := plain_text_problem(reason)) is not None:
        errors.append(FieldError("reason", problem))
    if ends_at <= starts_at:
        errors.append(FieldError("ends_at", "must be after starts_at"))
    if kind not in DOWNTIME_KINDS:
        errors.append(FieldError("kind", "planned or unplanned"))
    if errors:
        raise InvalidInput("invalid downtime", errors)


def _displaced_by(
    session: Session, linac_id: int, window: Interval, *, already: Interval | None = None
) -> list[Fraction]:
    """Active fractions on the linac overlapping ``window`` (and not ``already``, which an
    earlier re-plan of the same downtime has handled)."""
    query = sa.select(Fraction).where(
        Fraction.linac_id == linac_id,
        Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
        Fraction.starts_at < window.end,
        Fraction.ends_at > window.start,
    )
    if already is not None:
        query = query.where(
            sa.or_(Fraction.starts_at >= already.end, Fraction.ends_at <= already.start)
        )
    return list(session.scalars(query.order_by(Fraction.starts_at, Fraction.id)))


def _replan_for(
    session: Session,
    downtime: Downtime,
    linac: Linac,
    affected: Sequence[Fraction],
    *,
    actor_id: int | None,
    now: datetime,
) -> DowntimeReport:
    """Re-plan ``affected`` around ``downtime`` (flushed) and write the moves and flags."""
    department = session.get(
        Department, linac.department_id, options=[selectinload(Department.linacs)]
    )
    assert department is not None  # foreign key
    plan = replan.replan_displaced(session, department, linac.id, affected, now=now)
    moved: list[MovedFraction] = []
    for move in plan.moves:
        fraction = move.fraction
        before = _planned(fraction)
        target = move.target
        patient_id = fraction.patient_id
        _apply_move(
            session,
            fraction.course,
            fraction,
            target,
            actor_id=actor_id,
            now=now,
            cause="downtime",
            # Each move is written before the next, so a lost race names the move that lost it.
            flush=lambda t=target, p=patient_id: _flush_or_conflict(
                session, {t.linac_id}, p, t.interval
            ),
            downtime_id=downtime.id,
        )
        moved.append(
            MovedFraction(fraction.id, fraction.course_id, fraction.number, before, target)
        )
    unplaceable: list[UnplaceableFraction] = []
    for course_id, fractions in sorted(plan.unplaced.items()):
        course = fractions[0].course
        unplaceable += [
            UnplaceableFraction(
                f.id,
                course_id,
                f.number,
                f.starts_at,
                f.ends_at,
                "no placement keeps the protocol's rules; needs a scheduler",
            )
            for f in fractions
        ]
        course.status = CourseStatus.NEEDS_REVIEW
        course.review_reason = f"linac {linac.name} downtime: fractions could not be re-planned"
        _event(
            session,
            "course_needs_review",
            course,
            actor_id=actor_id,
            now=now,
            reason=course.review_reason,
            downtime_id=downtime.id,
        )
    counts = plan.counts
    return DowntimeReport(
        downtime.id,
        moved,
        unplaceable,
        kept_time=counts[replan.Outcome.KEPT_TIME],
        same_day=counts[replan.Outcome.SAME_DAY],
        other_day=counts[replan.Outcome.OTHER_DAY],
        needs_human=counts[replan.Outcome.NEEDS_HUMAN],
    )


def _finish_downtime(session: Session, report: DowntimeReport, *, preview: bool) -> DowntimeReport:
    """Roll a preview back (its report says what would happen), or commit."""
    if preview:
        session.rollback()
        return report
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict("bookings changed while re-planning; try again") from exc
    return report


@_retry_lost_races
def update_downtime(
    session: Session,
    downtime_id: int,
    *,
    starts_at: datetime,
    ends_at: datetime,
    kind: str,
    reason: str,
    preview: bool = False,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> DowntimeReport:
    """Change a downtime's times, kind or reason.

    Fractions the new times newly cover are re-planned like a new downtime's. Shortening moves
    nobody back: the report lists the fractions this downtime moved that could now return.
    With ``preview`` nothing is stored.
    """
    now = _now(now)
    _check_downtime(starts_at, ends_at, kind, reason)
    downtime = _get_downtime(session, downtime_id)
    linac = downtime.linac
    before = Interval(downtime.starts_at, downtime.ends_at)
    downtime.starts_at, downtime.ends_at = starts_at, ends_at
    downtime.kind, downtime.reason = kind, reason
    downtime.version += 1
    downtime.updated_at, downtime.updated_by_id = now, actor_id
    session.flush()
    affected = _displaced_by(session, linac.id, Interval(starts_at, ends_at), already=before)
    report = _replan_for(session, downtime, linac, affected, actor_id=actor_id, now=now)
    returnable = returnable_fractions(session, downtime, now=now)
    return _finish_downtime(session, replace(report, returnable=returnable), preview=preview)


def delete_downtime(
    session: Session,
    downtime_id: int,
    *,
    preview: bool = False,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> DowntimeReport:
    """Remove a downtime. Nobody is moved back: the report lists the fractions it moved that
    could return to their own place. With ``preview`` nothing is stored."""
    now = _now(now)
    downtime = _get_downtime(session, downtime_id)
    returnable = returnable_fractions(session, downtime, now=now, deleted=True)
    report = DowntimeReport(downtime.id, [], [], returnable=returnable)
    session.delete(downtime)
    session.flush()
    return _finish_downtime(session, report, preview=preview)


def _get_downtime(session: Session, downtime_id: int) -> Downtime:
    downtime = session.get(Downtime, downtime_id)
    if downtime is None:
        session.rollback()
        raise NotFound(f"downtime {downtime_id} does not exist")
    return downtime


def _planned_from_payload(payload: dict) -> PlannedFraction:
    return PlannedFraction(
        payload["number"],
        payload["linac_id"],
        datetime.fromisoformat(payload["starts_at"]),
        datetime.fromisoformat(payload["ends_at"]),
    )


def returnable_fractions(
    session: Session, downtime: Downtime, *, now: datetime, deleted: bool = False
) -> list[ReturnableFraction]:
    """Fractions ``downtime`` moved away that could go back: not moved since, their own
    place still ahead, outside the downtime as it now stands (or it is being deleted), and
    free of every other booking and downtime on that linac and for that patient."""
    events = session.scalars(
        sa.select(BookingEvent)
        .where(
            BookingEvent.kind == "fraction_moved",
            BookingEvent.fraction_id.is_not(None),
            BookingEvent.created_at >= downtime.created_at,
        )
        .order_by(BookingEvent.id)
    ).all()
    # The last move this downtime caused per fraction; the original place is its "before".
    moves = {
        e.fraction_id: e
        for e in events
        if e.payload.get("cause") == "downtime" and e.payload.get("downtime_id") == downtime.id
    }
    found: list[ReturnableFraction] = []
    for fraction_id, event in sorted(moves.items()):
        fraction = session.get(Fraction, fraction_id)
        if fraction is None or fraction.status not in ACTIVE_FRACTION_STATUSES:
            continue
        original = _planned_from_payload(event.payload["before"])
        if _planned(fraction) != _planned_from_payload(event.payload["after"]):
            continue  # moved again since: a scheduler placed it deliberately
        own = original.interval
        if original.start <= now or (
            not deleted and own.overlaps(Interval(downtime.starts_at, downtime.ends_at))
        ):
            continue
        taken = session.scalar(
            sa.select(sa.func.count())
            .select_from(Fraction)
            .where(
                sa.or_(
                    Fraction.linac_id == original.linac_id,
                    Fraction.patient_id == fraction.patient_id,
                ),
                Fraction.id != fraction.id,
                Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
                Fraction.starts_at < own.end,
                Fraction.ends_at > own.start,
            )
        )
        down = session.scalar(
            sa.select(sa.func.count())
            .select_from(Downtime)
            .where(
                Downtime.linac_id == original.linac_id,
                Downtime.id != downtime.id,
                Downtime.starts_at < own.end,
                Downtime.ends_at > own.start,
            )
        )
        if taken or down:
            continue
        found.append(
            ReturnableFraction(
                fraction.id, fraction.course_id, fraction.number, _planned(fraction), original
            )
        )
    return found


# --- listing -----------------------------------------------------------------------------


def list_fractions(
    session: Session,
    *,
    start: datetime,
    end: datetime,
    linac_id: int | None = None,
    department_id: int | None = None,
    include_inactive: bool = False,
) -> list[Fraction]:
    """Fractions overlapping [start, end), by start time (for calendars and integrations)."""
    query = (
        sa.select(Fraction)
        .where(Fraction.starts_at < end, Fraction.ends_at > start)
        .options(selectinload(Fraction.course).selectinload(Course.protocol))
        .order_by(Fraction.starts_at, Fraction.linac_id)
    )
    if not include_inactive:
        query = query.where(Fraction.status.in_(ACTIVE_FRACTION_STATUSES))
    if linac_id is not None:
        query = query.where(Fraction.linac_id == linac_id)
    if department_id is not None:
        query = query.join(Patient, Patient.id == Fraction.patient_id).where(
            Patient.department_id == department_id
        )
    return list(session.scalars(query))


__all__ = [
    "DowntimeReport",
    "MissedResult",
    "MovedFraction",
    "Placement",
    "ProposalResult",
    "ReturnableFraction",
    "UnplaceableFraction",
    "add_downtime",
    "RebookingProposal",
    "book_course",
    "cancel_course",
    "cancel_fraction",
    "change_prescription",
    "delete_downtime",
    "fraction_alternatives",
    "list_fractions",
    "move_fraction",
    "propose_schedules",
    "record_completed",
    "record_missed",
    "propose_rebooking",
    "rebook_fractions",
    "record_readiness",
    "returnable_fractions",
    "undo_missed",
    "update_downtime",
]
