"""Test data for the health checks: heartbeat stamps, due reminders and task failures."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from notifications.models import Reminder, ReminderStatus
from scheduler import heartbeats, task_failures
from scheduler.models import Protocol
from tests import factories

_keys = iter(range(1, 10**6))


def stamp(session: Session, name: str, at: datetime) -> None:
    heartbeats.stamp(session, name, at)
    session.commit()


def due_reminder(
    session: Session, due_at: datetime, status: ReminderStatus = ReminderStatus.PENDING
) -> Reminder:
    """A reminder of a fresh patient's course, due at ``due_at``, committed."""
    dept = factories.department(session, name=f"Health dept {next(_keys)}")
    pat = factories.patient(session, dept)
    proto = session.scalar(sa.select(Protocol).where(Protocol.code == "liver-5fx"))
    proto = proto or factories.protocol(session)
    course = factories.course(session, pat, proto)
    row = Reminder(
        dedupe_key=f"health-test-{next(_keys)}",
        kind="confirmation",
        channel="sms",
        patient_id=pat.id,
        course_id=course.id,
        due_at=due_at,
        status=status,
    )
    session.add(row)
    session.commit()
    return row


def failure(session: Session, task_name: str, exc: BaseException, at: datetime) -> None:
    task_failures.record(session, task_name, exc, now=at)
    session.commit()
