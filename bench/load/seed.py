"""The department a load run works on: the demo department grown to a busy clinic's size.

Booked courses (whose reminders are made due during the run), draft courses for the simulated
schedulers to book, and staff accounts to sign in with. Everything goes through the use cases,
as the product would write it; only the patients' time zone and the reminders' due times are
then set directly, as set-up steps (see `make_due_during`).
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from config import Settings
from notifications.models import Reminder
from scheduler import accounts, records, services, unit_of_work
from scheduler.demo import DEMO_DEPARTMENT, seed_demo
from scheduler.models import Department, Fraction, Patient, Protocol
from scheduler.timeutil import local_date

# Protocols the simulated schedulers book (all need an SBRT-capable linac).
PROTOCOLS = ("liver-5fx", "lung-peripheral-3fx", "prostate-5fx", "spine-1fx", "oligomets-3fx")
STAFF_USERS = 10


@dataclass
class LoadPlan:
    """What the Locust users need: who signs in, and the records they work on."""

    department_id: int
    users: list[tuple[str, str]] = field(default_factory=list)
    booked_courses: list[int] = field(default_factory=list)
    draft_courses: list[int] = field(default_factory=list)
    fractions: list[int] = field(default_factory=list)
    search_terms: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return self.__dict__


def midday_zone(now: datetime) -> str:
    """An IANA zone where it is now about midday, far from the message window's edges.

    The run uses the real clock; a patient whose evening it is would have the run's
    day-before and same-day reminders deferred to the next morning. POSIX signs: Etc/GMT-5
    is UTC+5.
    """
    offset = 12 - now.astimezone(UTC).hour
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def _phone(i: int) -> str:
    return f"+1212555{1000 + i:04d}"


def seed_load_department(
    session: Session,
    settings: Settings,
    *,
    booked: int,
    drafts: int,
    now: datetime,
    rng: random.Random,
) -> LoadPlan:
    """The demo department, `booked` booked courses and `drafts` courses waiting to be booked."""
    seed_demo(session, settings, now=now)
    department = session.scalar(sa.select(Department).where(Department.name == DEMO_DEPARTMENT))
    assert department is not None
    protocols = {
        p.code: p.id
        for p in session.scalars(sa.select(Protocol).where(Protocol.code.in_(PROTOCOLS)))
    }
    plan = LoadPlan(department_id=department.id)
    with unit_of_work.transaction(session):
        for n in range(STAFF_USERS):
            email = f"load-scheduler-{n}@demo.example"
            password = secrets.token_urlsafe(18)
            accounts.create_user(
                session,
                email=email,
                name=f"Load Scheduler {n}",
                role="scheduler",
                password=password,
                department_ids=[department.id],
            )
            plan.users.append((email, password))
    today = local_date(now, department.timezone)
    for i in range(booked + drafts):
        with unit_of_work.transaction(session):
            course_id, mrn = _patient_with_course(
                session, department.id, protocols, i, today, rng, now=now
            )
        plan.search_terms.append(mrn)
        if i >= booked:
            plan.draft_courses.append(course_id)
            continue
        # Booked through the same use cases as the API; a lost race cannot happen here (one
        # writer), but a course the department has no room for is left as a draft.
        with unit_of_work.transaction(session):
            proposal = services.propose_schedules(session, course_id, now=now)
            if not proposal.schedules:
                continue
            placements = [
                services.Placement(p.number, p.linac_id, p.start)
                for p in proposal.schedules[0].fractions
            ]
            services.book_course(session, course_id, placements, now=now)
        plan.booked_courses.append(course_id)
    plan.fractions = list(
        session.scalars(
            sa.select(Fraction.id)
            .where(Fraction.course_id.in_(plan.booked_courses))
            .order_by(Fraction.id)
        )
    )
    session.rollback()
    # Message times follow the patient's zone: midday there, so quiet hours defer nothing.
    with unit_of_work.transaction(session):
        session.execute(sa.update(Patient).values(timezone=midday_zone(now)))
    return plan


def _patient_with_course(
    session: Session,
    department_id: int,
    protocols: dict[str, int],
    i: int,
    today: date,
    rng: random.Random,
    *,
    now: datetime,
) -> tuple[int, str]:
    mrn = f"LOAD{10000 + i}"
    # A third by SMS only, a third by email only, a third by both.
    sms, email = (True, False) if i % 3 == 0 else (False, True) if i % 3 == 1 else (True, True)
    patient = records.create_patient(
        session,
        {
            "department_id": department_id,
            "mrn": mrn,
            "given_name": f"Given{i}",
            "family_name": f"Family{i}",
            "date_of_birth": date(1940 + i % 50, 1 + i % 12, 1 + i % 28),
            "phone": _phone(i),
            "email": f"patient{i}@mail.example",
            "language": "es" if i % 4 == 0 else "en",
            "sms_consent": sms,
            "email_consent": email,
        },
        now=now,
    )
    course = records.create_course(
        session,
        {
            "patient_id": patient.id,
            "protocol_id": protocols[PROTOCOLS[i % len(PROTOCOLS)]],
            "ready_to_treat_on": today + timedelta(days=1 + rng.randrange(28)),
        },
    )
    return course.id, mrn


def make_due_during(session: Session, start: datetime, seconds: float, rng: random.Random) -> int:
    """Spread every pending reminder's due time over the run, as a morning's come due.

    Returns how many. Confirmations of the seeded bookings are among them: they were due at
    booking and would otherwise all go out the moment the workers start.
    """
    ids = list(
        session.scalars(
            sa.select(Reminder.id).where(Reminder.status == "pending").order_by(Reminder.id)
        )
    )
    table = Reminder.__table__
    with unit_of_work.transaction(session):
        session.execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("rid"))
            .values(due_at=sa.bindparam("due", type_=table.c.due_at.type)),
            [{"rid": i, "due": start + timedelta(seconds=rng.uniform(0, seconds))} for i in ids],
        )
    return len(ids)
