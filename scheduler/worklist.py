"""What needs a scheduler's attention today: the home page's worklist and the menu's counts.

Read-only queries on the caller's session. A staff request's session is already narrowed to
the user's departments (scheduler.access), so everything here is department-scoped without
naming a department; the service's own sessions see every department.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from notifications.models import InboundMessage, Reminder, ReminderStatus
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    Course,
    CourseStatus,
    Department,
    Fraction,
    FractionStatus,
    Linac,
    Patient,
)
from scheduler.timeutil import localize, to_local

# Courses a person must act on: flagged for a clinician, or short of fractions.
ATTENTION_COURSE_STATUSES = (CourseStatus.NEEDS_REVIEW, CourseStatus.INCOMPLETE)
# Messages that did not (or may not) reach the patient and wait for a retry or suppression.
FAILED_MESSAGE_STATUSES = (ReminderStatus.FAILED, ReminderStatus.UNKNOWN)
# Today's list shows what was delivered or missed today next to what is still to come; a
# cancelled session is no longer part of anyone's day.
TODAY_STATUSES = (*ACTIVE_FRACTION_STATUSES, FractionStatus.COMPLETED, FractionStatus.MISSED)
# The home page lists the most recent of these; the counts and the full pages cover the rest.
LIST_LIMIT = 20


@dataclass(frozen=True)
class LinacDay:
    """One linac's sessions of one local day, in time order."""

    linac: Linac
    fractions: list[Fraction]


@dataclass(frozen=True)
class DepartmentDay:
    """One department's today and tomorrow, by its own time zone."""

    department: Department
    today: date
    linacs: list[LinacDay]
    # Tomorrow's tentative fractions whose course is not ready to treat (plan approval or
    # physics QA missing): without them the session cannot go ahead.
    not_ready_tomorrow: list[Fraction]

    @property
    def tomorrow(self) -> date:
        return self.today + timedelta(days=1)


@dataclass(frozen=True)
class Worklist:
    days: list[DepartmentDay]
    courses: list[Course]  # needing review or incomplete, most urgent first
    failed: list[Reminder]  # newest first
    # Oldest first, as the inbox lists them, each with the patient it came from (if known).
    replies: list[tuple[InboundMessage, Patient | None]]


@dataclass(frozen=True)
class AttentionCounts:
    """The menu's counts; None where the caller did not ask for it (a role that cannot act)."""

    courses: int | None
    failed: int | None
    replies: int | None


def local_day_bounds(day: date, tz: str) -> tuple[datetime, datetime]:
    """[start, end) of a local calendar day as UTC instants (23 or 25 hours across DST)."""
    return localize(datetime.combine(day, time()), tz), localize(
        datetime.combine(day + timedelta(days=1), time()), tz
    )


def _day_fractions(
    session: Session, linac_ids: Sequence[int], start: datetime, end: datetime, statuses
) -> list[Fraction]:
    if not linac_ids:
        return []
    return list(
        session.scalars(
            sa.select(Fraction)
            .where(
                Fraction.linac_id.in_(linac_ids),
                Fraction.starts_at >= start,
                Fraction.starts_at < end,
                Fraction.status.in_(statuses),
            )
            .options(
                selectinload(Fraction.course).selectinload(Course.patient),
                selectinload(Fraction.course).selectinload(Course.protocol),
            )
            .order_by(Fraction.starts_at, Fraction.linac_id, Fraction.id)
        )
    )


def department_day(session: Session, department: Department, now: datetime) -> DepartmentDay:
    today = to_local(now, department.timezone).date()
    linacs = [linac for linac in department.linacs if linac.active]
    ids = [linac.id for linac in department.linacs]
    start, end = local_day_bounds(today, department.timezone)
    todays = _day_fractions(session, ids, start, end, TODAY_STATUSES)
    by_linac: dict[int, list[Fraction]] = {linac.id: [] for linac in linacs}
    for fraction in todays:
        # A session kept on a linac since taken out of service still belongs to the day.
        if fraction.linac_id not in by_linac:
            linac = next(x for x in department.linacs if x.id == fraction.linac_id)
            linacs.append(linac)
            by_linac[linac.id] = []
        by_linac[fraction.linac_id].append(fraction)
    tomorrow_start, tomorrow_end = local_day_bounds(today + timedelta(days=1), department.timezone)
    tentative = _day_fractions(
        session, ids, tomorrow_start, tomorrow_end, (FractionStatus.TENTATIVE,)
    )
    return DepartmentDay(
        department=department,
        today=today,
        linacs=[LinacDay(linac, by_linac[linac.id]) for linac in linacs],
        not_ready_tomorrow=[f for f in tentative if not f.course.ready_to_treat],
    )


def courses_needing_attention(session: Session, limit: int = LIST_LIMIT) -> list[Course]:
    return list(
        session.scalars(
            sa.select(Course)
            .where(Course.status.in_(ATTENTION_COURSE_STATUSES))
            .options(
                selectinload(Course.patient),
                selectinload(Course.protocol),
                selectinload(Course.fractions),
            )
            .order_by(Course.priority, Course.updated_at, Course.id)
            .limit(limit)
        )
    )


def failed_messages(session: Session, limit: int = LIST_LIMIT) -> list[Reminder]:
    return list(
        session.scalars(
            sa.select(Reminder)
            .where(Reminder.status.in_(FAILED_MESSAGE_STATUSES))
            .options(selectinload(Reminder.patient), selectinload(Reminder.fraction))
            .order_by(Reminder.updated_at.desc(), Reminder.id.desc())
            .limit(limit)
        )
    )


def _unread_replies_filter() -> sa.ColumnElement[bool]:
    # The inbox's own notion of unread: a reply no keyword handled that nobody has marked
    # handled yet.
    return sa.and_(InboundMessage.needs_attention.is_(True), InboundMessage.handled_at.is_(None))


def unread_replies(
    session: Session, limit: int = LIST_LIMIT
) -> list[tuple[InboundMessage, Patient | None]]:
    rows = session.execute(
        sa.select(InboundMessage, Patient)
        .outerjoin(Patient, Patient.id == InboundMessage.patient_id)
        .where(_unread_replies_filter())
        .order_by(InboundMessage.received_at, InboundMessage.id)
        .limit(limit)
    )
    return [(message, patient) for message, patient in rows.tuples()]


def load_worklist(session: Session, now: datetime, *, with_replies: bool) -> Worklist:
    departments = session.scalars(
        sa.select(Department).options(selectinload(Department.linacs)).order_by(Department.id)
    ).all()
    return Worklist(
        days=[department_day(session, department, now) for department in departments],
        courses=courses_needing_attention(session),
        failed=failed_messages(session),
        replies=unread_replies(session) if with_replies else [],
    )


def attention_counts(
    session: Session, *, courses: bool, failed: bool, replies: bool
) -> AttentionCounts:
    """The counts asked for, in one statement (one round trip, on every staff page).

    Each count is a scalar subquery over its ORM entity, so the session's department
    narrowing applies inside each of them as it does to any query.
    """
    asked: dict[str, sa.Select] = {}
    if courses:
        asked["courses"] = sa.select(sa.func.count(Course.id)).where(
            Course.status.in_(ATTENTION_COURSE_STATUSES)
        )
    if failed:
        asked["failed"] = sa.select(sa.func.count(Reminder.id)).where(
            Reminder.status.in_(FAILED_MESSAGE_STATUSES)
        )
    if replies:
        asked["replies"] = sa.select(sa.func.count(InboundMessage.id)).where(
            _unread_replies_filter()
        )
    if not asked:
        return AttentionCounts(None, None, None)
    row = session.execute(
        sa.select(*(query.scalar_subquery().label(name) for name, query in asked.items()))
    ).one()
    found = row._asdict()
    return AttentionCounts(found.get("courses"), found.get("failed"), found.get("replies"))


def patient_label(patient: Patient) -> str:
    """Initials and MRN: the worklist sits on shared screens, as the calendars do."""
    return f"{patient.given_name[:1]}{patient.family_name[:1]} ({patient.mrn})"
