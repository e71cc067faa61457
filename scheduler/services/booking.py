"""Booking a whole course at once, and the warning about a patient's nearby course."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.util import identity_key

from scheduler import rules as rulebook
from scheduler.context import rules_from_protocol
from scheduler.errors import (
    FieldError,
    InvalidInput,
    NearbyCourse,
    NearbyCourseWarning,
    NotFound,
    StateConflict,
)
from scheduler.models import (
    BookingEventKind,
    Course,
    CourseStatus,
    Fraction,
    FractionStatus,
    Protocol,
)
from scheduler.services.common import (
    _COURSE_OPTIONS,
    SCHEDULED_STATUSES,
    Placement,
    _check_violations,
    _context_for,
    _department_of,
    _event,
    _flush_or_conflict,
    _fraction_payload,
    _get_course,
    _iso,
    _now,
    _scheduled,
)
from scheduler.timeutil import local_date
from scheduler.types import (
    Interval,
    PlannedFraction,
    Schedule,
)

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
    course = bookable_course(session, course_id)
    protocol = course.protocol
    rules = rules_from_protocol(protocol)
    numbers = sorted(p.number for p in placements)
    if numbers != list(range(1, rules.fractions + 1)):
        raise InvalidInput(
            f"give exactly one placement for each fraction 1..{rules.fractions}",
            [FieldError("fractions", f"expected numbers 1..{rules.fractions}, got {numbers}")],
        )
    department = _department_of(session, course)
    linac_ids = {linac.id for linac in department.linacs}
    unknown = sorted({p.linac_id for p in placements} - linac_ids)
    if unknown:
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
    nearby = checked_nearby_courses(session, course, window, acknowledged_course_ids)
    add_fractions(session, course, planned, override_reason if overridden else None, now=now)
    _flush_or_conflict(session, {f.linac_id for f in planned}, course.patient_id, window)
    return record_booked(
        session,
        course,
        planned,
        actor_id=actor_id,
        now=now,
        override_reason=override_reason if overridden else None,
        violations=[v.code for v in violations],
        nearby=nearby,
    )


# The course with what a booking reads, fractions joined in the same round trip: a draft has
# none (or a few cancelled ones), so the join adds no rows to speak of, where the loader
# shared with other use cases reads the fractions in a second query.
_BOOKABLE_COURSE = (
    sa.select(Course)
    .options(*_COURSE_OPTIONS, joinedload(Course.fractions))
    .where(Course.id == sa.bindparam("id"))
)


def bookable_course(session: Session, course_id: int) -> Course:
    """The course with its fractions, if it is a draft with nothing scheduled."""
    if session.identity_map.get(identity_key(Course, course_id)) is not None:
        course = _get_course(session, course_id)
    else:
        course = session.scalars(_BOOKABLE_COURSE, {"id": course_id}).unique().one_or_none()
        if course is None:
            raise NotFound(f"course {course_id} does not exist")
    if course.status != CourseStatus.DRAFT or _scheduled(course):
        raise StateConflict(f"course {course_id} is {course.status}; only a draft can be booked")
    return course


def checked_nearby_courses(
    session: Session, course: Course, window: Interval, acknowledged_course_ids: Collection[int]
) -> list[NearbyCourse]:
    """The patient's nearby courses (see :func:`_nearby_courses`); raise
    :class:`NearbyCourseWarning` unless every one of them is acknowledged."""
    nearby = _nearby_courses(session, course, window)
    acknowledged = set(acknowledged_course_ids)
    if any(n.course_id not in acknowledged for n in nearby):
        raise NearbyCourseWarning(
            "the patient has another active course overlapping this schedule or within "
            f"{NEARBY_COURSE_DAYS} days of it; acknowledge it to book",
            nearby,
        )
    return nearby


def add_fractions(
    session: Session,
    course: Course,
    planned: Sequence[PlannedFraction],
    override_reason: str | None,
    *,
    now: datetime,
) -> None:
    """Add the course's fraction rows and mark it booked (not flushed: the caller flushes and
    turns a lost race into what it needs)."""
    for f in planned:
        session.add(_new_fraction(course, f, override_reason, now=now))
    course.status = CourseStatus.BOOKED
    course.updated_at = now


def record_booked(
    session: Session,
    course: Course,
    planned: Sequence[PlannedFraction],
    *,
    actor_id: int | None,
    now: datetime,
    override_reason: str | None = None,
    violations: Sequence[str] = (),
    nearby: Sequence[NearbyCourse] = (),
) -> Course:
    """The booking event (and with it the patient's messages) of a course whose fractions
    are flushed; the course as it now stands."""
    _event(
        session,
        BookingEventKind.COURSE_BOOKED,
        course,
        actor_id=actor_id,
        now=now,
        fractions=[_fraction_payload(f) for f in planned],
        override_reason=override_reason,
        violations=list(violations),
        nearby_courses_acknowledged=[n.course_id for n in nearby],
    )
    session.flush()
    # The outbox has just reloaded the course's fractions (with their ids and versions) and
    # nothing else of the course is computed by the database: it stands as it was written.
    return course
