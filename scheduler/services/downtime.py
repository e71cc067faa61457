"""Linac downtime: adding, editing and removing it, with the re-plan of what it displaces."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import ParamSpec

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from scheduler import replan
from scheduler.errors import (
    Conflict,
    FieldError,
    InvalidInput,
    NotFound,
)
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    BookingEvent,
    BookingEventKind,
    CourseStatus,
    Department,
    Downtime,
    Fraction,
    Linac,
)
from scheduler.plain_text import plain_text_problem
from scheduler.services.common import (
    DOWNTIME_KINDS,
    DowntimeReport,
    MovedFraction,
    ReturnableFraction,
    UnplaceableFraction,
    _event,
    _flush_or_conflict,
    _now,
    _planned,
)
from scheduler.services.moving import _apply_move
from scheduler.types import (
    Interval,
    PlannedFraction,
)

P = ParamSpec("P")


def _finish_downtime(session: Session, report: DowntimeReport, *, preview: bool) -> DowntimeReport:
    """Flush the change; a constraint violation means bookings changed while re-planning."""
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict("bookings changed while re-planning; try again") from exc
    return report


def _previewable(use_case: Callable[P, DowntimeReport]) -> Callable[P, DowntimeReport]:
    """With ``preview=True`` the change is made inside a savepoint and rolled back to it: the
    report says what would happen and the caller's transaction is left as it was."""

    @functools.wraps(use_case)
    def run(*args: P.args, **kwargs: P.kwargs) -> DowntimeReport:
        if not kwargs.get("preview"):
            return use_case(*args, **kwargs)
        session = args[0]
        assert isinstance(session, Session)
        savepoint = session.begin_nested()
        try:
            return use_case(*args, **kwargs)
        finally:
            if savepoint.is_active:
                savepoint.rollback()

    return run


@_previewable
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
            BookingEventKind.COURSE_NEEDS_REVIEW,
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


@_previewable
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


@_previewable
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
            BookingEvent.kind == BookingEventKind.FRACTION_MOVED,
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
