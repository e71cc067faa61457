"""Booking use cases: propose, book, move, cancel, record missed/completed, downtime.

Each function owns its unit of work: it reads what it needs, checks the rules with the
pure engine, writes the change together with its BookingEvent row, and commits once. A
lost race surfaces as :class:`Conflict` (HTTP 409) naming the taken time, never as an
overlap: PostgreSQL's exclusion constraints reject it, and on SQLite the write lock taken
at BEGIN makes the overlap check and the insert one step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, joinedload, selectinload
from sqlalchemy.orm.util import identity_key

from notifications import outbox
from scheduler import rules as rulebook
from scheduler import search
from scheduler.context import rules_from_protocol, search_context
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
    Course,
    CourseStatus,
    Department,
    Downtime,
    Fraction,
    FractionStatus,
    Linac,
    Patient,
)
from scheduler.timeutil import local_date
from scheduler.types import (
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
    """Complete valid schedules for a course, best first, or why there are none."""
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
    found = search.propose_ranked(request, context_for(request))
    schedules = found.schedules
    if not found.settled and request.horizon_days < horizon_days:
        request = replace(request, horizon_days=horizon_days)
        schedules = search.propose(request, context_for(request))
    explanation = None
    if not schedules:
        # The explanation looks for the earliest feasible start beyond the horizon too.
        wide = replace(request, horizon_days=horizon_days + search.EXPLAIN_HORIZON_DAYS)
        explanation = search.explain(request, context_for(wide), horizon_days=wide.horizon_days)
    session.rollback()  # read-only: release the SQLite write lock promptly
    return ProposalResult(schedules, explanation, timezone)


# --- booking ---------------------------------------------------------------------------


def _violations_to_breaks(violations: Iterable[Violation]) -> list[RuleBreak]:
    return [
        RuleBreak(v.code, v.message, v.fraction, overridable=v.code in OVERRIDABLE_RULES)
        for v in violations
    ]


def _check_violations(
    session: Session,
    violations: list[Violation],
    override_reason: str | None,
    linac_ids: Iterable[int],
    patient_id: int,
    window: Interval,
) -> None:
    """Raise for what may not be booked: conflicts (409), rules without an override (422)."""
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


@_retry_lost_races
def book_course(
    session: Session,
    course_id: int,
    placements: Sequence[Placement],
    *,
    override_reason: str | None = None,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> Course:
    """Book every fraction of a course at once, or nothing."""
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
    ready = course.ready_to_treat
    for f in planned:
        # Until plan approval and physics QA are recorded the first fraction stays
        # tentative, so no message can call it confirmed.
        status = FractionStatus.BOOKED if ready or f.number > 1 else FractionStatus.TENTATIVE
        session.add(
            Fraction(
                course_id=course.id,
                patient_id=course.patient_id,
                linac_id=f.linac_id,
                number=f.number,
                starts_at=f.start,
                ends_at=f.end,
                status=status,
                override_reason=override_reason.strip() if overridden and override_reason else None,
                created_at=now,
                updated_at=now,
            )
        )
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
) -> list[PlannedFraction]:
    """Valid new placements for one fraction, keeping every rule with its neighbours."""
    now = _now(now)
    fraction = _active_fraction(session, fraction_id, action="be moved")
    course = _get_course(session, fraction.course_id)
    department = _department_of(session, course)
    group = _group_order(department, fraction.linac_id)
    schedules = _complete(
        session,
        course,
        department,
        _scheduled(course),
        {fraction.number},
        not_before=now,
        count=count,
        preferred_linacs=group,
    )
    session.rollback()
    return [f for s in schedules for f in s.fractions if f.number == fraction.number]


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
        and len(_scheduled(course)) == course.protocol.fractions
    ):
        course.status = CourseStatus.COMPLETED
    _event(session, "fraction_completed", course, fraction=fraction, actor_id=actor_id, now=now)
    session.commit()
    return fraction


@_retry_lost_races
def record_missed(
    session: Session, fraction_id: int, *, actor_id: int | None = None, now: datetime | None = None
) -> MissedResult:
    """Mark a fraction missed and rebook it inside the course's overall time if possible.

    First only the missed position is re-placed; if that cannot keep the rules, the later
    fractions are re-placed with it. If neither works the course is flagged for review.
    """
    now = _now(now)
    fraction = _active_fraction(session, fraction_id)
    if fraction.starts_at > now:
        session.rollback()
        raise StateConflict("a fraction cannot be missed before its start time")
    course = _get_course(session, fraction.course_id)
    department = _department_of(session, course)
    was_tentative = fraction.status == FractionStatus.TENTATIVE
    _set_status(fraction, FractionStatus.MISSED, "patient did not attend", now)
    _event(
        session,
        "fraction_missed",
        course,
        fraction=fraction,
        actor_id=actor_id,
        now=now,
        before=_fraction_payload(fraction),
        version=fraction.version,
    )
    session.flush()
    keep = _scheduled(course)
    later = {n for n, f in keep.items() if n > fraction.number and f.starts_at > now}
    group = _group_order(department, fraction.linac_id)
    schedule: Schedule | None = None
    moved_later: set[int] = set()
    for free in ({fraction.number}, {fraction.number} | later):
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
            break
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
    """Record a linac downtime and re-plan every affected fraction, course by course.

    Each affected course is re-placed whole or not at all: first on the linac's
    beam-matched partners (no new plan needed), then on any capable linac, never earlier
    than its original time. Courses that cannot be re-placed are flagged for a human.
    With ``preview`` nothing is stored.
    """
    now = _now(now)
    errors = []
    if ends_at <= starts_at:
        errors.append(FieldError("ends_at", "must be after starts_at"))
    if kind not in DOWNTIME_KINDS:
        errors.append(FieldError("kind", "planned or unplanned"))
    if errors:
        raise InvalidInput("invalid downtime", errors)
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
    affected = session.scalars(
        sa.select(Fraction)
        .join(Course)
        .where(
            Fraction.linac_id == linac_id,
            Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
            Fraction.starts_at < ends_at,
            Fraction.ends_at > starts_at,
        )
        .order_by(Course.priority, Fraction.starts_at)
    ).all()
    by_course: dict[int, list[Fraction]] = {}
    for fraction in affected:
        by_course.setdefault(fraction.course_id, []).append(fraction)
    moved: list[MovedFraction] = []
    unplaceable: list[UnplaceableFraction] = []
    department = session.get(
        Department, linac.department_id, options=[selectinload(Department.linacs)]
    )
    assert department is not None
    group = _group_order(department, linac_id)[1:]
    for course_id, fractions in by_course.items():
        course = _get_course(session, course_id)
        keep = _scheduled(course)
        free = {f.number for f in fractions}
        earliest_start = max(now, min(f.starts_at for f in fractions))
        schedule = _same_time_on_partner(
            session, course, department, keep, free, group, not_before=now
        ) or next(
            iter(
                _complete(
                    session,
                    course,
                    department,
                    keep,
                    free,
                    not_before=earliest_start,
                    count=1,
                    preferred_linacs=group,
                )
            ),
            None,
        )
        if schedule is None:
            for f in fractions:
                unplaceable.append(
                    UnplaceableFraction(
                        f.id,
                        course.id,
                        f.number,
                        f.starts_at,
                        f.ends_at,
                        "no placement keeps the protocol's rules; needs a scheduler",
                    )
                )
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
            continue
        placed = {f.number: f for f in schedule.fractions}
        for f in fractions:
            before = _planned(f)
            _apply_move(
                session, course, f, placed[f.number], actor_id=actor_id, now=now, cause="downtime"
            )
            moved.append(MovedFraction(f.id, course.id, f.number, before, placed[f.number]))
        # Later courses must see these new placements as taken.
        session.flush()
    if preview:
        session.rollback()
        return DowntimeReport(None, moved, unplaceable)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict("bookings changed while re-planning; try again") from exc
    return DowntimeReport(downtime.id, moved, unplaceable)


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
    "UnplaceableFraction",
    "add_downtime",
    "book_course",
    "cancel_course",
    "cancel_fraction",
    "fraction_alternatives",
    "list_fractions",
    "move_fraction",
    "propose_schedules",
    "record_completed",
    "record_missed",
    "record_readiness",
]
