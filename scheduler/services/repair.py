"""Repairing a course left short of fractions: rebooking, prescription changes, undoing a
missed fraction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler import rules as rulebook
from scheduler.context import rules_from_protocol
from scheduler.errors import (
    FieldError,
    InvalidInput,
    StateConflict,
)
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    BookingEvent,
    BookingEventKind,
    Course,
    CourseStatus,
    Department,
    Downtime,
    Fraction,
    FractionStatus,
)
from scheduler.plain_text import plain_text_problem
from scheduler.services.booking import _new_fraction
from scheduler.services.common import (
    MAX_REASON_TEXT,
    OVERRIDABLE_RULES,
    REBOOK_LEAD_TIME,
    SCHEDULED_STATUSES,
    Placement,
    _check_violations,
    _context_for,
    _department_of,
    _event,
    _flush_or_conflict,
    _fraction_payload,
    _get_course,
    _get_fraction,
    _now,
    _planned,
    _scheduled,
    _set_status,
)
from scheduler.services.moving import _complete, _group_order, _introduced
from scheduler.timeutil import local_date
from scheduler.types import (
    Interval,
    PlannedFraction,
    Schedule,
)


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
    _event(
        session,
        BookingEventKind.COURSE_NEEDS_REVIEW,
        course,
        actor_id=actor_id,
        now=now,
        reason=reason,
    )


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
        raise StateConflict(f"course {course_id} is not missing any fraction")
    schedules = _rebooking_schedules(session, course, department, now=now, count=count)
    reason = None
    if not schedules:
        reason = _cannot_complete_reason(course, missing)
        _flag_for_clinician(session, course, reason, actor_id=None, now=now)
        session.flush()
    return RebookingProposal(course_id, missing, schedules, timezone, not schedules, reason)


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
        raise StateConflict(f"course {course_id} is not missing any fraction")
    numbers = sorted(p.number for p in placements)
    if numbers != missing:
        raise InvalidInput(
            f"give exactly one placement for each missing fraction {missing}",
            [FieldError("fractions", f"expected numbers {missing}, got {numbers}")],
        )
    if course.fraction_count < course.protocol.fractions:
        raise StateConflict(_cannot_complete_reason(course, missing))
    department = _department_of(session, course)
    unknown = sorted({p.linac_id for p in placements} - {linac.id for linac in department.linacs})
    if unknown:
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
            BookingEventKind.FRACTION_REBOOKED,
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
    session.flush()
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
        raise InvalidInput("the prescription was not changed", errors)
    before = course.fraction_count
    course.prescribed_fractions = fractions
    course.prescription_reason = reason
    course.updated_at = now
    _event(
        session,
        BookingEventKind.PRESCRIPTION_CHANGED,
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
    session.flush()
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
        raise StateConflict(f"fraction {fraction_id} is {fraction.status}, not missed")
    course = _get_course(session, fraction.course_id)
    timezone = _department_of(session, course).timezone
    recorded = session.scalars(
        sa.select(BookingEvent)
        .where(
            BookingEvent.fraction_id == fraction.id,
            BookingEvent.kind == BookingEventKind.FRACTION_MISSED,
        )
        .order_by(BookingEvent.id.desc())
        .limit(1)
    ).first()
    recorded_at = recorded.created_at if recorded is not None else fraction.updated_at
    recorded_on = local_date(recorded_at, timezone)
    if recorded_on != local_date(now, timezone):
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
        raise StateConflict(
            f"fraction {fraction.number} was already delivered in its rebooked session; "
            "the missed one cannot be restored"
        )
    if replacement is not None:
        _set_status(replacement, FractionStatus.CANCELLED, "the missed fraction was restored", now)
        _event(
            session,
            BookingEventKind.FRACTION_CANCELLED,
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
        BookingEventKind.FRACTION_MISSED_UNDONE,
        course,
        fraction=fraction,
        actor_id=actor_id,
        now=now,
        version=fraction.version,
        reason=reason,
        status=restored,
        cancelled_replacement=replacement.id if replacement is not None else None,
    )
    session.flush()
    return fraction


def mark_reviewed(
    session: Session,
    course_id: int,
    *,
    override_reason: str | None = None,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> Course:
    """A scheduler has handled a course the re-plan could not place: back to booked (or
    incomplete, when it is still short of fractions), provided its schedule keeps the
    protocol's rules as a booking would. Overridable rules need ``override_reason``; a
    fraction still overlapping a downtime must be moved first. Flushes only."""
    now = _now(now)
    course = _get_course(session, course_id)
    if course.status != CourseStatus.NEEDS_REVIEW:
        raise StateConflict(f"course {course_id} is {course.status}, not waiting for review")
    scheduled = _scheduled(course)
    active = [f for f in scheduled.values() if f.status in ACTIVE_FRACTION_STATUSES]
    if not active:
        raise StateConflict(
            "the course has no active fractions: rebook or cancel it from the course page"
        )
    down = _downtime_overlaps(session, active)
    if down:
        raise StateConflict(
            f"fraction {', '.join(map(str, down))} still overlaps a downtime: "
            "move it from the course page first"
        )
    department = _department_of(session, course)
    rules = rules_from_protocol(course.protocol)
    schedule = Schedule(tuple(_planned(f) for _, f in sorted(scheduled.items())))
    ctx = _context_for(
        session, department, course, [f.starts_at for f in scheduled.values()], pad_days=1
    )
    # Sessions already under way or delivered are settled; a rule a fraction was booked
    # against with a recorded reason stays accepted; a course still short of fractions stays
    # incomplete (its count is the rebooking's business, not the review's).
    settled = [
        n
        for n, f in scheduled.items()
        if f.starts_at <= now or f.status not in ACTIVE_FRACTION_STATUSES
    ]
    accepted = {f.number for f in scheduled.values() if f.override_reason}
    violations = [
        v
        for v in rulebook.validate(schedule, rules, ctx, not_before=now, fixed=settled)
        if not (v.code == "fraction_count" and course.incomplete)
        and not (v.fraction in accepted and v.code in OVERRIDABLE_RULES)
    ]
    window = Interval(min(f.starts_at for f in active), max(f.ends_at for f in active))
    _check_violations(
        session,
        violations,
        override_reason,
        {f.linac_id for f in active},
        course.patient_id,
        window,
    )
    course.status = CourseStatus.INCOMPLETE if course.incomplete else CourseStatus.BOOKED
    reason = course.review_reason
    course.review_reason = None
    course.updated_at = now
    _event(
        session,
        BookingEventKind.COURSE_REVIEWED,
        course,
        actor_id=actor_id,
        now=now,
        review_reason=reason,
        status=str(course.status),
        override_reason=override_reason.strip() if violations and override_reason else None,
        violations=[v.code for v in violations],
    )
    session.flush()
    return course


def _downtime_overlaps(session: Session, fractions: Sequence[Fraction]) -> list[int]:
    """Numbers of these fractions whose linac has a downtime overlapping them."""
    return sorted(
        f.number
        for f in fractions
        if session.scalar(
            sa.select(Downtime.id)
            .where(
                Downtime.linac_id == f.linac_id,
                Downtime.starts_at < f.ends_at,
                Downtime.ends_at > f.starts_at,
            )
            .limit(1)
        )
        is not None
    )
