"""Shared pieces of the booking use cases: result types, loaders, booking events, the
rule checks and the guards that turn a lost race into a Conflict."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, joinedload, selectinload
from sqlalchemy.orm.util import identity_key

from notifications import outbox
from scheduler import unit_of_work
from scheduler.context import hold_physicist_roster, search_context
from scheduler.errors import (
    Conflict,
    ConflictingBooking,
    FieldError,
    InvalidInput,
    NotFound,
    RuleBreak,
    RulesBroken,
    StateConflict,
)
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    BookingEvent,
    BookingEventKind,
    Course,
    Department,
    Downtime,
    Fraction,
    FractionStatus,
    Patient,
)
from scheduler.plain_text import plain_text_problem
from scheduler.timeutil import local_date
from scheduler.types import (
    Explanation,
    Interval,
    PlannedFraction,
    Schedule,
    SearchContext,
    Violation,
)

P = ParamSpec("P")


R = TypeVar("R")


# Clinical spacing rules a scheduler may break with a recorded reason, and physicist cover
# (the department can call in a physicist who is not on the roster; the reason says who).
# Everything else (machine or patient double-booked, closed day, outside hours, missing
# capability) is physically impossible or unsafe and is never overridable.
OVERRIDABLE_RULES = frozenset(
    {
        "physicist_cover",
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
    kind: BookingEventKind,
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
    # Every caller is about to write the course's fractions: hold the physicists first.
    hold_physicist_roster(session, department)
    days = [local_date(t, department.timezone) for t in instants]
    return search_context(
        session,
        department,
        min(days) - timedelta(days=1),
        max(days) + timedelta(days=pad_days),
        patient_id=course.patient_id,
        exclude_course_id=course.id,
    )


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
        raise Conflict(
            "; ".join(v.message for v in violations if v.code in CONFLICT_RULES),
            _conflicts(session, linac_ids, patient_id, window),
        )
    hard = [v for v in violations if v.code not in OVERRIDABLE_RULES]
    soft = [v for v in violations if v.code in OVERRIDABLE_RULES]
    if hard or (soft and not (override_reason and override_reason.strip())):
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
    return found


def _flush_or_conflict(
    session: Session, linac_ids: Iterable[int], patient_id: int, window: Interval
) -> None:
    """Flush; a constraint violation means a concurrent booking won the race."""
    try:
        session.flush()
    except OperationalError as exc:
        if unit_of_work.is_lost_race(exc):
            # The database aborted the whole transaction: whoever owns it runs the action
            # again (unit_of_work.run).
            raise unit_of_work.LostRace() from exc
        raise
    except IntegrityError as exc:
        # The failed statement has aborted the transaction (PostgreSQL refuses any further
        # statement in it), so the action is lost whatever happens next: end it here to read
        # what won the race, and let the Conflict end the caller's unit of work.
        session.rollback()
        raise Conflict(
            "the requested time was booked by someone else a moment ago; choose another",
            _conflicts(session, linac_ids, patient_id, window),
        ) from exc


def _set_status(
    fraction: Fraction, status: FractionStatus, reason: str | None, now: datetime
) -> None:
    fraction.status = status
    fraction.status_reason = reason
    fraction.version += 1
    fraction.updated_at = now
