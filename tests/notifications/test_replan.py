"""Reminders follow the patient's consent: START after STOP, or consent recorded again by
staff, plans the reminders of the sessions still ahead; the ones already past stay unsent."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import time_machine

from notifications import outbox, replies
from notifications.models import Reminder, ReminderStatus
from notifications.replies import ReplyAction
from scheduler.models import Fraction
from scheduler.services import Placement
from tests import factories as f
from tests.committing import records, services

# The signed Twilio webhook client of the webhook tests, and its helpers.
from tests.notifications.test_webhooks import (  # noqa: F401
    client,
    inbound,
    twilio_settings,
    twiml_messages,
)

NOW = f.MONDAY
PHONE = "+12125550123"  # the factories' patient number


def _book(session, w, **patient) -> tuple[int, int]:
    pat = f.patient(session, w["department"], **patient)
    course = f.course(session, pat, w["liver"])
    session.commit()
    # A week ahead, so every reminder of every fraction is still to come when booked.
    proposal = services.propose_schedules(
        session, course.id, earliest=(NOW + timedelta(days=7)).date(), now=NOW
    ).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(session, course.id, placements, now=NOW)
    return pat.id, course.id


def _fraction_reminders(session, patient_id: int, channel: str = "sms") -> list[Reminder]:
    session.expire_all()
    return list(
        session.scalars(
            sa.select(Reminder)
            .where(
                Reminder.patient_id == patient_id,
                Reminder.channel == channel,
                Reminder.fraction_id.is_not(None),
            )
            .order_by(Reminder.due_at, Reminder.id)
        )
    )


def _inbound(session, sid: str, body: str, *, now):
    return replies.handle_inbound(session, provider_id=sid, from_number=PHONE, body=body, now=now)


def test_start_after_stop_plans_the_reminders_still_ahead_again(session):
    w = f.world(session)
    patient_id, _ = _book(session, w, sms_consent=True, email="ana@example.org", email_consent=True)
    planned = {r.dedupe_key: r.due_at for r in _fraction_reminders(session, patient_id)}
    assert len(planned) == 5  # a day-before reminder per session (07:00 sessions)

    assert _inbound(session, "SM1", "STOP", now=NOW + timedelta(hours=1)).action is (
        ReplyAction.OPT_OUT
    )
    stopped = _fraction_reminders(session, patient_id)
    assert {(r.status, r.status_reason) for r in stopped} == {
        (ReminderStatus.SUPPRESSED, outbox.OPTED_OUT_REASON)
    }

    # START arrives once the first session's reminder would have gone out.
    first, second = stopped[0], stopped[1]
    start_at = first.due_at + timedelta(minutes=1)
    result = _inbound(session, "SM2", "START", now=start_at)
    assert result.action is ReplyAction.OPT_IN

    rows = _fraction_reminders(session, patient_id)
    assert {r.dedupe_key for r in rows} == set(planned)  # the same reminders, no copies
    past = [r for r in rows if r.dedupe_key == first.dedupe_key]
    ahead = [r for r in rows if r.dedupe_key != first.dedupe_key]
    assert [(r.status, r.status_reason) for r in past] == [
        (ReminderStatus.SUPPRESSED, outbox.OPTED_OUT_REASON)
    ]
    assert len(ahead) == 4
    for row in ahead:
        assert row.status == ReminderStatus.PENDING
        assert row.status_reason == replies.REPLANNED_AFTER_START
        assert row.due_at == planned[row.dedupe_key] > start_at
    # Email was never stopped: its reminders are untouched.
    emails = _fraction_reminders(session, patient_id, "email")
    assert {r.status for r in emails} == {ReminderStatus.PENDING}
    assert {r.status_reason for r in emails} == {None}

    # They are sent like any other reminder when they come due.
    claimed = outbox.claim_due(session, now=second.due_at)
    assert second.id in claimed and first.id not in claimed

    # A repeated START (a provider retry of another message) changes nothing more.
    _inbound(session, "SM3", "START", now=start_at + timedelta(minutes=1))
    again = _fraction_reminders(session, patient_id)
    assert len(again) == len(rows)
    assert session.get(Reminder, second.id).status == ReminderStatus.CLAIMED


def test_start_without_recorded_consent_plans_no_text(session):
    w = f.world(session)
    patient_id, _ = _book(session, w, sms_consent=False)
    assert _fraction_reminders(session, patient_id) == []
    _inbound(session, "SM1", "STOP", now=NOW + timedelta(hours=1))
    _inbound(session, "SM2", "START", now=NOW + timedelta(hours=2))
    assert _fraction_reminders(session, patient_id) == []


def test_staff_recording_consent_again_plans_the_reminders_still_ahead(session):
    w = f.world(session)
    patient_id, _ = _book(session, w, sms_consent=True)
    rows = _fraction_reminders(session, patient_id)
    # Consent withdrawn at the desk; the first reminder then came due and the sender held it.
    records.update_patient(session, patient_id, {"sms_consent": False}, now=NOW)
    first = session.get(Reminder, rows[0].id)
    first.status, first.status_reason = ReminderStatus.SUPPRESSED, outbox.NO_SMS_CONSENT_REASON
    second = session.get(Reminder, rows[1].id)
    second.status, second.status_reason = ReminderStatus.SUPPRESSED, outbox.NO_SMS_CONSENT_REASON
    session.commit()

    # Consent recorded again between the first and the second session's reminder.
    at = rows[0].due_at + timedelta(hours=1)
    records.update_patient(session, patient_id, {"sms_consent": True}, now=at)
    after = {r.id: r for r in _fraction_reminders(session, patient_id)}
    assert len(after) == 5
    assert after[first.id].status == ReminderStatus.SUPPRESSED
    assert after[second.id].status == ReminderStatus.PENDING
    assert after[second.id].status_reason == records.REPLANNED_AFTER_CONSENT
    assert all(r.status == ReminderStatus.PENDING for r in after.values() if r.id != first.id)


def test_consent_given_after_booking_plans_texts_that_were_never_planned(session):
    w = f.world(session)
    patient_id, _ = _book(session, w, sms_consent=False)
    assert _fraction_reminders(session, patient_id) == []
    records.update_patient(session, patient_id, {"sms_consent": True}, now=NOW)
    rows = _fraction_reminders(session, patient_id)
    assert len(rows) == 5
    assert {(r.kind, r.status, r.status_reason) for r in rows} == {
        ("day_before", ReminderStatus.PENDING, records.REPLANNED_AFTER_CONSENT)
    }
    # Saving the patient again with nothing regained plans nothing more.
    records.update_patient(session, patient_id, {"given_name": "Ana María"}, now=NOW)
    assert len(_fraction_reminders(session, patient_id)) == 5


def test_a_reminder_suppressed_by_staff_stays_suppressed(session):
    w = f.world(session)
    patient_id, _ = _book(session, w, sms_consent=True)
    row = _fraction_reminders(session, patient_id)[-1]
    row.status, row.status_reason = ReminderStatus.SUPPRESSED, "suppressed by staff: duplicate"
    session.commit()
    _inbound(session, "SM1", "STOP", now=NOW + timedelta(hours=1))
    _inbound(session, "SM2", "START", now=NOW + timedelta(hours=2))
    assert session.get(Reminder, row.id).status == ReminderStatus.SUPPRESSED
    assert session.get(Reminder, row.id).status_reason == "suppressed by staff: duplicate"


# --- one reminder per evening, kept through moves ----------------------------------------------


def test_moving_a_session_takes_back_or_restores_the_previous_sessions_same_day_reminder(
    session,
):
    """A patient in Madrid treated in New York: 13:00 New York is 19:00 in Madrid, so the
    first session's same-day reminder goes out at 17:00 Madrid time, in the evening."""
    w = f.world(session)
    pat = f.patient(session, w["department"], sms_consent=True, timezone="Europe/Madrid")
    course = f.course(session, pat, w["liver"])
    session.commit()
    linac = w["linacs"]["A"].id
    ny = ZoneInfo("America/New_York")
    monday = datetime(2026, 6, 8, tzinfo=ny)
    # Monday, Wednesday, Thursday, Friday and the next Monday, all at 13:00 New York time.
    starts = [(monday + timedelta(days=d)).replace(hour=13) for d in (0, 2, 3, 4, 7)]
    services.book_course(
        session, course.id, [Placement(n, linac, s) for n, s in enumerate(starts, 1)], now=NOW
    )
    first, second = session.scalars(
        sa.select(Fraction).where(Fraction.course_id == course.id).order_by(Fraction.number)
    ).all()[:2]

    def first_same_day() -> list[tuple[str, str | None]]:
        session.expire_all()
        return [
            (r.status, r.status_reason)
            for r in session.scalars(
                sa.select(Reminder).where(
                    Reminder.fraction_id == first.id, Reminder.kind == "same_day"
                )
            )
        ]

    assert first_same_day() == [(ReminderStatus.PENDING, None)]
    # Moved to Tuesday, its day-before reminder goes out at 19:00 Madrid time on Monday.
    tuesday = starts[0] + timedelta(days=1)
    services.move_fraction(session, second.id, linac_id=linac, starts_at=tuesday, now=NOW)
    assert first_same_day() == [(ReminderStatus.SUPERSEDED, outbox.GIVES_WAY_REASON)]
    texts = [
        r
        for r in session.scalars(
            sa.select(Reminder).where(
                Reminder.patient_id == pat.id,
                Reminder.kind.in_(["day_before", "same_day"]),
                Reminder.status == ReminderStatus.PENDING,
            )
        )
    ]
    madrid = ZoneInfo("Europe/Madrid")
    evenings = [
        r.due_at.astimezone(madrid).date() for r in texts if r.due_at.astimezone(madrid).hour >= 17
    ]
    assert len(evenings) == len(set(evenings))
    # Back on Wednesday: Monday evening is free again and the same-day reminder returns.
    services.move_fraction(session, second.id, linac_id=linac, starts_at=starts[1], now=NOW)
    assert first_same_day() == [(ReminderStatus.PENDING, None)]


def test_stop_then_start_through_the_signed_webhook(client, session):  # noqa: F811
    w = f.world(session)
    patient_id, _ = _book(session, w, sms_consent=True)
    first = _fraction_reminders(session, patient_id)[0]
    session.rollback()  # the app writes next (SQLite takes its write lock at BEGIN)
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        assert twiml_messages(inbound(client, "SM1", "STOP")) == []
    with time_machine.travel(first.due_at + timedelta(minutes=1), tick=False):
        assert twiml_messages(inbound(client, "SM2", "START")) == []
    rows = _fraction_reminders(session, patient_id)
    assert [(r.status, r.status_reason) for r in rows] == [
        (ReminderStatus.SUPPRESSED, outbox.OPTED_OUT_REASON)
    ] + [(ReminderStatus.PENDING, replies.REPLANNED_AFTER_START)] * 4
