"""Cancelling, and recording what happened: completed and missed fractions, readiness,
the patient's confirmation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from scheduler import links
from scheduler import rules as rulebook
from scheduler.context import rules_from_protocol
from scheduler.errors import (
    FieldError,
    InvalidInput,
    StateConflict,
)
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    MISSED_REASON_LABELS,
    BookingEventKind,
    Course,
    CourseStatus,
    Department,
    Fraction,
    FractionStatus,
    MissedReason,
    Patient,
)
from scheduler.plain_text import plain_text_problem
from scheduler.services import pathway
from scheduler.services.common import (
    MAX_REASON_TEXT,
    READINESS_STEPS,
    REBOOK_LEAD_TIME,
    MissedResult,
    _active_fraction,
    _check_plain_text,
    _context_for,
    _department_of,
    _event,
    _flush_or_conflict,
    _fraction_payload,
    _get_course,
    _now,
    _planned,
    _scheduled,
    _set_status,
)
from scheduler.services.moving import _apply_move, _complete, _group_order, _introduced
from scheduler.services.repair import _note_missing_fractions
from scheduler.types import (
    PlannedFraction,
    Schedule,
)


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
        BookingEventKind.FRACTION_CANCELLED,
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
    session.flush()
    return fraction


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
        raise StateConflict(f"course {course_id} is already {course.status}")
    cancelled = [f for f in course.fractions if f.status in ACTIVE_FRACTION_STATUSES]
    for fraction in cancelled:
        _set_status(fraction, FractionStatus.CANCELLED, reason, now)
    course.status = CourseStatus.CANCELLED
    course.updated_at = now
    _event(
        session,
        BookingEventKind.COURSE_CANCELLED,
        course,
        actor_id=actor_id,
        now=now,
        reason=reason,
        fractions=[{**_fraction_payload(f), "id": f.id, "version": f.version} for f in cancelled],
    )
    # The course's links stop with it, in the same transaction: a forwarded or old message
    # must not keep showing a schedule that no longer exists.
    links.revoke_patient_links(session, course_id=course.id, now=now)
    session.flush()
    return course


def record_completed(
    session: Session, fraction_id: int, *, actor_id: int | None = None, now: datetime | None = None
) -> Fraction:
    now = _now(now)
    fraction = _active_fraction(session, fraction_id)
    if fraction.starts_at > now:
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
    _event(
        session,
        BookingEventKind.FRACTION_COMPLETED,
        course,
        fraction=fraction,
        actor_id=actor_id,
        now=now,
    )
    session.flush()
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
        raise StateConflict("a fraction cannot be missed before its start time")
    course = _get_course(session, fraction.course_id)
    department = _department_of(session, course)
    was_tentative = fraction.status == FractionStatus.TENTATIVE
    status_before = fraction.status
    _set_status(fraction, FractionStatus.MISSED, words, now)
    fraction.missed_reason = reason
    _event(
        session,
        BookingEventKind.FRACTION_MISSED,
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
            BookingEventKind.COURSE_NEEDS_REVIEW,
            course,
            actor_id=actor_id,
            now=now,
            reason=course.review_reason,
        )
        session.flush()
        return MissedResult(fraction, None, True)
    placed = {f.number: f for f in schedule.fractions}
    # The database forbids even a passing overlap of the patient's fractions: those moving
    # earlier go first, in course order, then those moving later, from the last back.
    earlier = sorted(n for n in moved_later if placed[n].start < keep[n].starts_at)
    later_first = sorted((n for n in moved_later if n not in earlier), reverse=True)
    for n in (*earlier, *later_first):
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
        BookingEventKind.FRACTION_REBOOKED,
        course,
        fraction=rebooked,
        actor_id=actor_id,
        now=now,
        after=_fraction_payload(rebooked),
        replaces=fraction.id,
        version=rebooked.version,
    )
    session.flush()
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
    pathway.note_readiness(session, course.id, step, done_at is not None)
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
            BookingEventKind.COURSE_READY
            if course.ready_to_treat
            else BookingEventKind.COURSE_NOT_READY,
            course,
            fraction=first,
            actor_id=actor_id,
            now=now,
            version=first.version,
        )
    session.flush()
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
        return None
    fraction.status = FractionStatus.CONFIRMED
    fraction.updated_at = now
    _event(
        session,
        BookingEventKind.FRACTION_CONFIRMED,
        fraction.course,
        fraction=fraction,
        now=now,
        version=fraction.version,
    )
    session.flush()
    return fraction


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
