"""Sending claimed reminders through real loopback providers, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from email import message_from_bytes, policy
from zoneinfo import ZoneInfo

import icalendar
import pytest
import sqlalchemy as sa

from notifications import outbox, sending
from notifications.channels.local import LocalOutboxChannel
from notifications.channels.smtp_email import SmtpEmailChannel
from notifications.channels.twilio_sms import TwilioSmsChannel
from notifications.models import Reminder, ReminderStatus
from scheduler import links
from scheduler.models import Patient
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY
AT = NOW + timedelta(hours=3)  # 10:00 in New York: inside the message window
PUBLIC = "https://clinic.example.org"


def _twilio(fake) -> TwilioSmsChannel:
    return TwilioSmsChannel(
        fake.account_sid,
        fake.auth_token,
        from_number="+12125550199",
        base_url=fake.base_url,
        timeout_seconds=1,
        validity_period_seconds=3600,
    )


def _smtp(fake) -> SmtpEmailChannel:
    return SmtpEmailChannel(
        fake.host, fake.port, from_address="Clinic <clinic@example.org>", use_starttls=False
    )


def _book(session, **patient) -> int:
    w = f.world(session)
    values = {"sms_consent": True} | patient
    course = f.course(session, f.patient(session, w["department"], **values), w["liver"])
    session.commit()
    proposal = services.propose_schedules(
        session, course.id, earliest=(NOW + timedelta(days=7)).date(), now=NOW
    ).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(session, course.id, placements, now=NOW)
    return course.id


def _send(session_factory, reminder_id, channels, at=AT, *, reader=None):
    if reader is not None:
        reader.rollback()  # the test's own reads must not hold SQLite's write lock
    return sending.send_reminder(
        session_factory,
        reminder_id,
        channels,
        link=f"{PUBLIC}/p",
        public_base_url=PUBLIC,
        now=lambda: at,
    )


def _confirmation(session) -> Reminder:
    return session.scalars(sa.select(Reminder).where(Reminder.kind == "confirmation")).one()


def test_claimed_confirmation_is_sent_once_with_a_status_callback(
    session, session_factory, fake_twilio
):
    _book(session)
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    ids = outbox.claim_due(session, now=AT)
    assert ids == [_confirmation(session).id]

    assert _send(session_factory, ids[0], channels, reader=session) == ReminderStatus.SENT
    assert _send(session_factory, ids[0], channels, reader=session) is None  # the status guard
    (request,) = fake_twilio.create_requests
    assert fake_twilio.violations == []
    assert request.form["StatusCallback"] == [f"{PUBLIC}/webhooks/twilio/status"]
    session.expire_all()
    row = session.get(Reminder, ids[0])
    assert row.provider_id and row.sent_at == AT and row.attempts == 1
    assert row.rendered_body and "STOP" in row.rendered_body
    assert request.form["Body"] == [row.rendered_body]


def test_a_reminder_whose_fraction_moved_after_the_claim_is_never_sent(
    session, session_factory, fake_twilio
):
    course_id = _book(session)
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    first = services.list_fractions(session, start=NOW, end=NOW + timedelta(days=40))[0]
    prep = session.scalars(
        sa.select(Reminder).where(Reminder.fraction_id == first.id, Reminder.kind == "day_before")
    ).one()
    due = prep.due_at + timedelta(minutes=1)
    assert prep.id in outbox.claim_due(session, now=due)
    # The scheduler moves the fraction while the send task is still in the queue.
    target = next(
        a
        for a in services.fraction_alternatives(session, first.id, now=NOW)
        if a.start != first.starts_at
    )
    services.move_fraction(
        session, first.id, linac_id=target.linac_id, starts_at=target.start, now=NOW
    )
    row = session.get(Reminder, prep.id)
    row.status = ReminderStatus.CLAIMED  # as if the claim had happened just before the move
    session.commit()
    assert _send(session_factory, prep.id, channels, at=due, reader=session) is None
    session.expire_all()
    assert session.get(Reminder, prep.id).status == ReminderStatus.SUPERSEDED
    assert fake_twilio.create_requests == []
    assert course_id


def test_rate_limited_sends_back_off_then_give_up(session, session_factory, fake_twilio):
    _book(session)
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    fake_twilio.program(status=429, times=sending.MAX_ATTEMPTS)
    reminder_id = outbox.claim_due(session, now=AT)[0]
    at = AT
    for attempt in range(1, sending.MAX_ATTEMPTS + 1):
        status = _send(session_factory, reminder_id, channels, at=at, reader=session)
        session.expire_all()
        row = session.get(Reminder, reminder_id)
        if attempt < sending.MAX_ATTEMPTS:
            assert status == ReminderStatus.PENDING
            assert row.next_attempt_at > at
            at = row.next_attempt_at
            assert outbox.claim_due(session, now=at) == [reminder_id]
        else:
            assert status == ReminderStatus.FAILED
            assert "20429" in row.status_reason
    assert len(fake_twilio.create_requests) == sending.MAX_ATTEMPTS


def test_an_hour_of_provider_errors_delays_a_reminder_but_never_gives_it_up(
    session, session_factory, fake_twilio
):
    """Twilio answering 500 for an hour: every try in that hour leaves the reminder pending.

    The ten-minute outage drill (bench/drills.py) had reminders reach their sixth try, which
    was the last one before: a slightly longer outage would have lost them.
    """
    _book(session)
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    fake_twilio.program(status=500, times=sending.MAX_ATTEMPTS)
    reminder_id = outbox.claim_due(session, now=AT)[0]
    at, tries = AT, 0
    while at < AT + timedelta(hours=1):
        status = _send(session_factory, reminder_id, channels, at=at, reader=session)
        tries += 1
        session.expire_all()
        row = session.get(Reminder, reminder_id)
        assert status == ReminderStatus.PENDING, (tries, row.status_reason)
        assert row.status_reason == "retrying: 500"
        assert row.next_attempt_at - at >= sending.backoff(tries, rng=lambda: 0.0)
        at = row.next_attempt_at
        assert outbox.claim_due(session, now=at) == [reminder_id]
    assert tries < sending.MAX_ATTEMPTS
    assert len(fake_twilio.create_requests) == tries


@pytest.mark.parametrize("code", [21211, 21610, 21614])
def test_permanent_errors_are_not_retried_and_flag_the_number(
    session, session_factory, fake_twilio, code
):
    _book(session)
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    fake_twilio.program(status=400, code=code)
    reminder_id = outbox.claim_due(session, now=AT)[0]
    assert _send(session_factory, reminder_id, channels, reader=session) == ReminderStatus.FAILED
    session.expire_all()
    patient = session.scalars(sa.select(Patient)).one()
    assert str(code) in patient.sms_blocked_reason
    pending = session.scalars(
        sa.select(Reminder).where(Reminder.status == ReminderStatus.PENDING)
    ).all()
    assert pending == []  # every other SMS for this number is suppressed
    assert len(fake_twilio.create_requests) == 1


def test_a_timeout_after_the_request_left_is_reconciled_not_resent(
    session, session_factory, fake_twilio
):
    _book(session)
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    fake_twilio.program(delay=3)  # accepted, but the answer comes after our 1 s timeout
    reminder_id = outbox.claim_due(session, now=AT)[0]
    assert _send(session_factory, reminder_id, channels, reader=session) == ReminderStatus.UNKNOWN
    session.rollback()
    assert sending.reconcile_unknown(session_factory, channels, now=AT) == 1
    session.expire_all()
    row = session.get(Reminder, reminder_id)
    assert row.status == ReminderStatus.SENT
    assert row.provider_id in fake_twilio.messages
    assert len(fake_twilio.create_requests) == 1


def test_an_unknown_send_the_provider_never_saw_is_sent_again_after_a_grace(
    session, session_factory, fake_twilio
):
    _book(session)
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    reminder_id = outbox.claim_due(session, now=AT)[0]
    row = session.get(Reminder, reminder_id)
    # A worker died after marking the send started, before the request left.
    row.status, row.send_started_at, row.rendered_body = ReminderStatus.UNKNOWN, AT, "never sent"
    session.commit()
    assert sending.reconcile_unknown(session_factory, channels, now=AT) == 0  # too early
    later = AT + sending.RECONCILE_GRACE
    assert sending.reconcile_unknown(session_factory, channels, now=later) == 1
    assert outbox.claim_due(session, now=later) == [reminder_id]
    assert (
        _send(session_factory, reminder_id, channels, at=later, reader=session)
        == ReminderStatus.SENT
    )
    assert len(fake_twilio.create_requests) == 1


def test_email_goes_through_smtp_with_text_html_and_headers(session, session_factory, fake_smtp):
    _book(session, phone_e164=None, sms_consent=False, email="ana@example.org",
          email_consent=True)  # fmt: skip
    channels = sending.Channels(sms=LocalOutboxChannel(), email=_smtp(fake_smtp))
    reminder_id = outbox.claim_due(session, now=AT)[0]
    assert _send(session_factory, reminder_id, channels, reader=session) == ReminderStatus.SENT
    (mail,) = fake_smtp.messages
    parsed = message_from_bytes(mail.content, policy=policy.default)
    assert parsed["To"] == "ana@example.org" and parsed["Message-ID"] and parsed["Date"]
    assert parsed.get_body(("plain",)) is not None and parsed.get_body(("html",)) is not None
    (attachment,) = [
        p for p in parsed.iter_attachments() if p.get_content_type() == "text/calendar"
    ]
    events = list(icalendar.Calendar.from_ical(attachment.get_content()).walk("VEVENT"))
    fractions = services.list_fractions(session, start=NOW, end=NOW + timedelta(days=40))
    assert {str(e["UID"]) for e in events} == {
        f"fraction-{x.id}@clinic.example.org" for x in fractions
    }


@pytest.mark.parametrize("local_start", [time(14, 0), time(7, 0)])
def test_a_retry_outside_the_message_window_waits_for_the_morning_or_is_dropped(
    session, session_factory, fake_twilio, local_start
):
    _book(session)
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    first = services.list_fractions(session, start=NOW, end=NOW + timedelta(days=40))[0]
    zone = ZoneInfo("America/New_York")
    day = first.starts_at.astimezone(zone).date()
    # Test set-up: put the fraction at the chosen local time (same version, so the reminder
    # is still current).
    length = first.ends_at - first.starts_at
    first.starts_at = datetime.combine(day, local_start, zone).astimezone(UTC)
    first.ends_at = first.starts_at + length
    prep = session.scalars(
        sa.select(Reminder).where(Reminder.fraction_id == first.id, Reminder.kind == "day_before")
    ).one()
    late = datetime.combine(day - timedelta(days=1), time(22, 0), zone).astimezone(UTC)
    prep.status, prep.lease_until = ReminderStatus.CLAIMED, late + timedelta(minutes=5)
    session.commit()
    assert _send(session_factory, prep.id, channels, at=late, reader=session) is None
    session.expire_all()
    row = session.get(Reminder, prep.id)
    if local_start > time(8, 0):
        assert row.status == ReminderStatus.PENDING
        opens = datetime.combine(day, time(8, 0), zone).astimezone(UTC)
        assert row.next_attempt_at == opens
    else:  # the window opens only after the fraction: never send after it
        assert row.status == ReminderStatus.SUPPRESSED
    assert fake_twilio.create_requests == []


def test_each_message_carries_a_patient_link_that_opens_the_schedule(
    session, session_factory, fake_twilio
):
    _book(session)
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    reminder_id = outbox.claim_due(session, now=AT)[0]
    session.rollback()
    status = sending.send_reminder(
        session_factory, reminder_id, channels, public_base_url=PUBLIC, now=lambda: AT
    )
    assert status == ReminderStatus.SENT
    (request,) = fake_twilio.create_requests
    match = re.search(rf"{re.escape(PUBLIC)}/p/([A-Za-z0-9]{{16}})\b", request.form["Body"][0])
    assert match, request.form["Body"]
    link = links.resolve_patient_link(session, match.group(1), purpose="schedule", now=AT)
    assert link is not None and link.course_id is not None
    assert len(request.form["Body"][0]) <= 160


def test_an_email_from_a_long_clinic_domain_is_recorded_as_sent(
    session, session_factory, fake_smtp
):
    """A Message-ID carries the sender's domain; a hospital's long one must still be kept as
    the provider id once the mail server has accepted the message."""
    domain = "radiotherapy.northwest-regional-teaching-hospital.nhs.example.org"
    _book(session, phone_e164=None, sms_consent=False, email="ana@example.org",
          email_consent=True)  # fmt: skip
    email = SmtpEmailChannel(
        fake_smtp.host, fake_smtp.port, from_address=f"Clinic <clinic@{domain}>",
        use_starttls=False,
    )  # fmt: skip
    channels = sending.Channels(sms=LocalOutboxChannel(), email=email)
    reminder_id = outbox.claim_due(session, now=AT)[0]
    assert _send(session_factory, reminder_id, channels, reader=session) == ReminderStatus.SENT
    (mail,) = fake_smtp.messages
    message_id = message_from_bytes(mail.content, policy=policy.default)["Message-ID"]
    assert len(message_id) > 64 and message_id.endswith(f"@{domain}>")
    session.expire_all()
    assert session.get(Reminder, reminder_id).provider_id == message_id
