"""The patient link in a sent message: minted at send time, stored and shown only masked.

Runs the real sender against the loopback Twilio server on SQLite and PostgreSQL. The token
is taken from what the provider received; every stored copy is tried as a link too.
"""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa

from notifications import outbox, sending
from notifications.channels.local import LocalOutboxChannel
from notifications.channels.twilio_sms import TwilioSmsChannel
from notifications.models import MessageTemplate, Reminder, ReminderStatus
from scheduler import links
from scheduler.models import PatientLink
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY
AT = NOW + timedelta(hours=3)  # 10:00 in New York: inside the message window
PUBLIC = "https://clinic.example.org"
# Anything after /p/ up to a space: what someone copying a link from a page would take.
LINKISH = re.compile(r"/p/(\S+)")


def _twilio(fake) -> TwilioSmsChannel:
    return TwilioSmsChannel(
        fake.account_sid,
        fake.auth_token,
        from_number="+12125550199",
        base_url=fake.base_url,
        timeout_seconds=1,
        validity_period_seconds=3600,
    )


def _book(session) -> int:
    w = f.world(session)
    patient = f.patient(session, w["department"], sms_consent=True)
    course = f.course(session, patient, w["liver"])
    session.commit()
    proposal = services.propose_schedules(
        session, course.id, earliest=(NOW + timedelta(days=7)).date(), now=NOW
    ).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(session, course.id, placements, now=NOW)
    return course.id


def _send(session_factory, session, reminder_id, channels, at=AT):
    session.rollback()  # the test's own reads must not hold SQLite's write lock
    return sending.send_reminder(
        session_factory, reminder_id, channels, public_base_url=PUBLIC, now=lambda: at
    )


def _live(session, token: str, at=AT) -> bool:
    found = links.resolve_patient_link(session, token, purpose="schedule", now=at)
    session.rollback()
    return found is not None


def test_the_sent_sms_has_a_working_link_and_the_stored_copy_none(
    session, session_factory, fake_twilio
):
    _book(session)
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    (reminder_id,) = outbox.claim_due(session, now=AT)
    assert _send(session_factory, session, reminder_id, channels) == ReminderStatus.SENT

    (request,) = fake_twilio.create_requests
    (sent_body,) = request.form["Body"]
    (token,) = LINKISH.findall(sent_body)
    assert _live(session, token)  # the patient's message works

    row = session.get(Reminder, reminder_id)
    assert row.rendered_body == sent_body.replace(token, links.MASKED_TOKEN)
    assert token not in row.rendered_body
    for candidate in LINKISH.findall(row.rendered_body):
        assert not _live(session, candidate)
    # The database holds the link's digest only, never the token itself.
    stored = session.scalars(sa.select(PatientLink.token_digest)).all()
    assert links.token_digest(token) in stored and token not in stored


def test_a_retried_send_mints_a_new_link_and_stores_none(session, session_factory, fake_twilio):
    _book(session)
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    fake_twilio.program(status=429)  # refused: known unsent, so retried later
    (reminder_id,) = outbox.claim_due(session, now=AT)
    assert _send(session_factory, session, reminder_id, channels) == ReminderStatus.PENDING
    later = AT + timedelta(hours=1)
    assert outbox.claim_due(session, now=later) == [reminder_id]
    assert _send(session_factory, session, reminder_id, channels, at=later) == ReminderStatus.SENT

    first, second = (r.form["Body"][0] for r in fake_twilio.create_requests)
    (token_1,), (token_2,) = LINKISH.findall(first), LINKISH.findall(second)
    assert token_1 != token_2 and _live(session, token_2, at=later)
    row = session.get(Reminder, reminder_id)
    assert token_1 not in row.rendered_body and token_2 not in row.rendered_body


def test_a_lost_answer_is_reconciled_by_the_masked_copy_not_sent_twice(
    session, session_factory, fake_twilio
):
    _book(session)
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    fake_twilio.program(delay=3)  # accepted, but the answer comes after our 1 s timeout
    (reminder_id,) = outbox.claim_due(session, now=AT)
    assert _send(session_factory, session, reminder_id, channels) == ReminderStatus.UNKNOWN
    session.rollback()
    # Twilio has the real link, we only the masked one: they still match.
    later = AT + sending.RECONCILE_GRACE * 2
    assert sending.reconcile_unknown(session_factory, channels, now=later) == 1
    session.expire_all()
    row = session.get(Reminder, reminder_id)
    assert row.status == ReminderStatus.SENT and row.provider_id in fake_twilio.messages
    assert len(fake_twilio.create_requests) == 1


def test_masking_keeps_the_text_and_removes_every_token() -> None:
    token = "Ab3dE5gH7jK9mN12"
    text = f"Clinic: 5 visits. See https://c.example/p/{token} Reply C. Code {token}."
    masked = links.mask_patient_links(text, token)
    assert masked == "Clinic: 5 visits. See https://c.example/p/•••• Reply C. Code ••••."
    assert links.mask_patient_links(masked) == masked
    # By shape alone, as for a copy whose token is not known (what a provider returns).
    assert links.mask_patient_links(f"See https://c.example/p/{token} now") == (
        "See https://c.example/p/•••• now"
    )
    assert links.mask_patient_links(None) is None


def test_a_refused_message_names_no_link_in_its_reason(session, session_factory, fake_twilio):
    _book(session)
    # An edited template whose error quotes the link it was given.
    session.add(
        MessageTemplate(kind="confirmation", part="sms", language="en", source="{{ {}[link] }}")
    )
    session.commit()
    channels = sending.Channels(sms=_twilio(fake_twilio), email=LocalOutboxChannel())
    (reminder_id,) = outbox.claim_due(session, now=AT)
    _send(session_factory, session, reminder_id, channels)
    session.expire_all()
    row = session.get(Reminder, reminder_id)
    assert row.status == ReminderStatus.FAILED
    assert f"{PUBLIC}/p/{links.MASKED_TOKEN}" in row.status_reason
    assert not re.search(r"/p/[A-Za-z0-9]{16}", row.status_reason)
    assert fake_twilio.create_requests == []
