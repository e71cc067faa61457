"""Who may see which department's records: the one access policy of both front doors.

The rule:

- Admins administer the installation (departments, linacs, users, feeds) and so see every
  department.
- Schedulers and viewers see only the departments they are members of. A user who belongs to
  no department sees nothing patient-related: lists are empty and ids answer "not found".
- A patient belongs to exactly one department (``patients.department_id``, fixed once
  registered). Everything about a patient follows the patient: courses, fractions, booking
  events, reminders, inbound messages matched to the patient, patient links. Linacs belong to
  a department, and their downtimes and calendar feeds follow the linac. CT simulators and IR
  rooms belong to a department; a course's pathway steps follow the course. Fractions are only
  ever booked on linacs of the patient's own department, so what a member sees of a linac's
  schedule is the whole schedule. Protocols are shared reference data and visible to all.
- Inbound SMS that matched no patient carry no department; whoever belongs to at least one
  department may see them, so that someone can triage them.

Once a request knows its user, it calls :func:`restrict_session`; from then on every ORM query
on that session -- lists, look-ups by id, lazy loads, searches, calendars, the use cases the
request runs -- is narrowed to the visible departments by :func:`narrow_query`, registered on
the web's session factory. A record outside them is simply not found, so ids answer 404 and
never reveal that the record exists. Celery tasks, the CLI, webhooks and anonymous patient
links and feeds never restrict their sessions: they act for the service, not for a person.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker, with_loader_criteria

from notifications.models import InboundMessage, Reminder
from scheduler.errors import FieldError, InvalidInput
from scheduler.models import (
    BookingEvent,
    CalendarFeed,
    Closure,
    Course,
    Department,
    DepartmentMember,
    Downtime,
    Fraction,
    Linac,
    PathwayStep,
    Patient,
    PatientLink,
    Resource,
    Role,
    RosterBlock,
    RosterException,
    User,
)

# session.info key: the frozenset of department ids the session's user may see. Absent means
# the session acts for the service (or an admin) and sees everything.
SCOPE_KEY = "sbrt.visible_department_ids"


def visible_department_ids(session: Session, user: User) -> frozenset[int] | None:
    """The departments ``user`` may see, or None for every department (admins)."""
    if user.role == Role.ADMIN:
        return None
    rows = session.scalars(
        sa.select(DepartmentMember.department_id).where(DepartmentMember.user_id == user.id)
    )
    return frozenset(rows)


def restrict_session(session: Session, user: User) -> frozenset[int] | None:
    """Narrow every later query on ``session`` to what ``user`` may see; returns the scope."""
    scope = visible_department_ids(session, user)
    if scope is None:
        session.info.pop(SCOPE_KEY, None)
    else:
        session.info[SCOPE_KEY] = scope
    return scope


def session_scope(session: Session) -> frozenset[int] | None:
    """The departments this session is narrowed to, or None when it is not narrowed."""
    return session.info.get(SCOPE_KEY)


def criteria(department_ids: Collection[int]) -> list[object]:
    """The loader options that keep each department-owned entity inside ``department_ids``.

    Subqueries use the tables, not the mapped classes, so that the options do not nest.
    """
    ids = sorted(department_ids)
    patients, linacs, courses = Patient.__table__, Linac.__table__, Course.__table__
    visible_patients = sa.select(patients.c.id).where(patients.c.department_id.in_(ids))
    visible_linacs = sa.select(linacs.c.id).where(linacs.c.department_id.in_(ids))
    visible_courses = sa.select(courses.c.id).where(courses.c.patient_id.in_(visible_patients))
    unmatched_inbound = sa.and_(InboundMessage.patient_id.is_(None), sa.literal(bool(ids)))
    rules: list[tuple[type, sa.ColumnElement[bool]]] = [
        (Department, Department.id.in_(ids)),
        (Closure, Closure.department_id.in_(ids)),
        (RosterBlock, RosterBlock.department_id.in_(ids)),
        (RosterException, RosterException.department_id.in_(ids)),
        (Linac, Linac.department_id.in_(ids)),
        (Downtime, Downtime.linac_id.in_(visible_linacs)),
        (Resource, Resource.department_id.in_(ids)),
        (PathwayStep, PathwayStep.course_id.in_(visible_courses)),
        (CalendarFeed, CalendarFeed.linac_id.in_(visible_linacs)),
        (Patient, Patient.department_id.in_(ids)),
        (Course, Course.patient_id.in_(visible_patients)),
        (Fraction, Fraction.patient_id.in_(visible_patients)),
        (BookingEvent, BookingEvent.course_id.in_(visible_courses)),
        (PatientLink, PatientLink.patient_id.in_(visible_patients)),
        (Reminder, Reminder.patient_id.in_(visible_patients)),
        (
            InboundMessage,
            sa.or_(InboundMessage.patient_id.in_(visible_patients), unmatched_inbound),
        ),
    ]
    return [
        with_loader_criteria(entity, rule, include_aliases=True, propagate_to_loaders=True)
        for entity, rule in rules
    ]


def narrow_query(state: ORMExecuteState) -> None:
    """``do_orm_execute`` hook: add the session's department criteria to every ORM SELECT."""
    scope = state.session.info.get(SCOPE_KEY)
    if scope is None or not state.is_select:
        return
    # Column refreshes of an already visible row need no criteria; relationship loads do, and
    # inherit them from the statement that loaded the parent (propagate_to_loaders).
    if state.is_column_load or state.is_relationship_load:
        return
    state.statement = state.statement.options(*criteria(scope))


def install(factory: sessionmaker[Session]) -> None:
    """Make sessions from ``factory`` honour :func:`restrict_session`; once per factory.

    No ``event.contains`` guard: SQLAlchemy's event registry keys listeners by ``id()`` of
    their target, so a new factory whose session class reuses the id of a discarded one
    would be taken as already narrowed -- and its sessions would see every department.
    """
    event.listen(factory, "do_orm_execute", narrow_query)


def set_departments(
    session: Session, user: User, department_ids: Iterable[int], *, field: str = "department_ids"
) -> None:
    """Make ``user`` a member of exactly ``department_ids``; unknown ids are invalid input."""
    wanted = sorted(set(department_ids))
    found = session.scalars(sa.select(Department).where(Department.id.in_(wanted))).all()
    missing = sorted(set(wanted) - {department.id for department in found})
    if missing:
        raise InvalidInput(
            "The user is not valid.",
            [FieldError(field, f"no department {', '.join(map(str, missing))}")],
        )
    user.departments = sorted(found, key=lambda department: department.id)
