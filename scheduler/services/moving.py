"""Moving one fraction, and the valid alternatives offered for it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from scheduler import alternatives as alternative_search
from scheduler import rules as rulebook
from scheduler import search
from scheduler.context import rules_from_protocol, search_context
from scheduler.errors import (
    FieldError,
    InvalidInput,
)
from scheduler.models import (
    BookingEventKind,
    Course,
    Department,
    Fraction,
    FractionStatus,
)
from scheduler.services.common import (
    CONFLICT_RULES,
    _active_fraction,
    _check_violations,
    _context_for,
    _department_of,
    _event,
    _flush_or_conflict,
    _fraction_payload,
    _get_course,
    _now,
    _planned,
    _scheduled,
)
from scheduler.timeutil import local_date
from scheduler.types import (
    PlannedFraction,
    Schedule,
    ScheduleRequest,
    Violation,
)


def _introduced(before: list[Violation], after: list[Violation]) -> list[Violation]:
    """Violations a change adds (ones the course already had, e.g. overridden, stay)."""
    known = {(v.code, v.fraction) for v in before}
    return [v for v in after if (v.code, v.fraction) not in known]


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
    session.flush()
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
        BookingEventKind.FRACTION_MOVED,
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
