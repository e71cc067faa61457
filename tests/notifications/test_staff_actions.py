"""Staff actions on messages as use cases: retry, suppress, mark a reply handled. They flush
only; the caller's unit of work commits."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from notifications import staff_actions
from notifications.models import InboundMessage, Reminder, ReminderStatus
from scheduler.errors import InvalidInput, NotFound, StateConflict
from scheduler.unit_of_work import transaction
from tests import factories as f

NOW = f.MONDAY


def _reminder(session, status: str) -> int:
    w = f.world(session)
    patient = f.patient(session, w["department"], sms_consent=True)
    course = f.course(session, patient, w["liver"])
    row = Reminder(
        dedupe_key=f"k-{status}",
        kind="same_day",
        channel="sms",
        patient_id=patient.id,
        course_id=course.id,
        due_at=NOW + timedelta(days=1),
        status=status,
    )
    session.add(row)
    session.commit()
    return row.id


def _status(session_factory, reminder_id: int) -> str:
    with session_factory() as other:
        return other.scalar(sa.select(Reminder.status).where(Reminder.id == reminder_id))


def test_retry_queues_a_failed_message_only_when_the_caller_commits(session, session_factory):
    reminder_id = _reminder(session, ReminderStatus.FAILED)
    assert staff_actions.retry_message(session, reminder_id, confirmed=False, now=NOW) == "failed"
    session.rollback()
    assert _status(session_factory, reminder_id) == ReminderStatus.FAILED
    staff_actions.retry_message(session, reminder_id, confirmed=False, now=NOW)
    session.commit()
    assert _status(session_factory, reminder_id) == ReminderStatus.PENDING


def test_an_unknown_message_is_resent_only_when_confirmed(session, session_factory):
    reminder_id = _reminder(session, ReminderStatus.UNKNOWN)
    with pytest.raises(staff_actions.ConfirmationNeeded), transaction(session):
        staff_actions.retry_message(session, reminder_id, confirmed=False, now=NOW)
    with transaction(session):
        staff_actions.retry_message(session, reminder_id, confirmed=True, now=NOW)
    assert _status(session_factory, reminder_id) == ReminderStatus.PENDING


def test_a_message_settled_meanwhile_is_not_changed(session, session_factory):
    reminder_id = _reminder(session, ReminderStatus.SENT)
    with pytest.raises(StateConflict), transaction(session):
        staff_actions.retry_message(session, reminder_id, confirmed=True, now=NOW)
    with pytest.raises(StateConflict), transaction(session):
        staff_actions.suppress_message(session, reminder_id, reason="duplicate", now=NOW)
    assert _status(session_factory, reminder_id) == ReminderStatus.SENT
    with pytest.raises(NotFound):
        staff_actions.retry_message(session, reminder_id + 1000, confirmed=True)


def test_suppress_needs_a_reason_and_keeps_it_on_the_row(session, session_factory):
    reminder_id = _reminder(session, ReminderStatus.PENDING)
    with pytest.raises(InvalidInput), transaction(session):
        staff_actions.suppress_message(session, reminder_id, reason="  ", now=NOW)
    with transaction(session):
        was = staff_actions.suppress_message(
            session, reminder_id, reason="patient   asked", now=NOW
        )
    assert was == ReminderStatus.PENDING
    with session_factory() as other:
        row = other.get(Reminder, reminder_id)
        assert row.status == ReminderStatus.SUPPRESSED
        assert row.status_reason == "suppressed by staff: patient asked"


def test_marking_a_reply_handled_twice_keeps_the_first_time(session, session_factory):
    row = InboundMessage(
        provider_id="SM1", from_number="+14155552671", body="call me", action="free_text",
        needs_attention=True, received_at=NOW,
    )  # fmt: skip
    session.add(row)
    session.commit()
    with transaction(session):
        staff_actions.mark_reply_handled(session, row.id, actor_id=None, now=NOW)
    with transaction(session):
        staff_actions.mark_reply_handled(
            session, row.id, actor_id=None, now=NOW + timedelta(hours=1)
        )
    with session_factory() as other:
        stored = other.get(InboundMessage, row.id)
        assert stored.handled_at.replace(tzinfo=None) == NOW.replace(tzinfo=None)
        assert stored.needs_attention is False
