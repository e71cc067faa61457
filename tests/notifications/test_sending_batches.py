"""Sending claimed reminders in batches: shared queries, the status guard per row, holding back."""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa

from notifications import outbox, sending
from notifications.channels.local import LocalOutboxChannel
from notifications.channels.twilio_sms import TwilioSmsChannel
from notifications.models import MessageTemplate, Reminder, ReminderStatus
from scheduler import links as patient_links
from scheduler.models import PatientLink
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY
AT = NOW + timedelta(hours=3)  # 10:00 in New York: inside the message window
PUBLIC = "https://clinic.example.org"


def _channels(fake) -> sending.Channels:
    sms = TwilioSmsChannel(
        fake.account_sid,
        fake.auth_token,
        from_number="+12125550199",
        base_url=fake.base_url,
        timeout_seconds=1,
    )
    return sending.Channels(sms=sms, email=LocalOutboxChannel())


def _book_patients(session, count: int, **patient) -> list[int]:
    """``count`` patients, each with a booked liver course; their confirmations are due at AT."""
    w = f.world(session)
    course_ids = []
    for i in range(count):
        values = {"sms_consent": True, "phone_e164": f"+1212555{1000 + i:04d}"}
        course = f.course(session, f.patient(session, w["department"], **values | patient),
                          w["liver"])  # fmt: skip
        session.commit()
        proposal = services.propose_schedules(
            session, course.id, earliest=(NOW + timedelta(days=7 + 7 * i)).date(), now=NOW
        ).schedules[0]
        placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
        services.book_course(session, course.id, placements, now=NOW)
        course_ids.append(course.id)
    return course_ids


def _send(session, session_factory, ids, channels, **kwargs):
    session.rollback()  # the test's own reads must not hold SQLite's write lock
    return sending.send_batch(
        session_factory, ids, channels, public_base_url=PUBLIC, now=lambda: AT, **kwargs
    )


def _statements(engine, action) -> int:
    count = 0

    def counter(*_args, **_kwargs) -> None:
        nonlocal count
        count += 1

    sa.event.listen(engine, "before_cursor_execute", counter)
    try:
        action()
    finally:
        sa.event.remove(engine, "before_cursor_execute", counter)
    return count


def test_a_batch_shares_its_queries_and_adds_one_write_per_message(
    engine, session, session_factory, fake_twilio
):
    _book_patients(session, 9)
    ids = outbox.claim_due(session, now=AT)
    assert len(ids) == 9
    channels = _channels(fake_twilio)
    one, two, six = (
        _statements(engine, lambda batch=batch: _send(session, session_factory, batch, channels))
        for batch in (ids[:1], ids[1:3], ids[3:])
    )
    # Loading, checking, rendering and recording cost the same for 1 or 6 messages; each
    # message adds only its compare-and-set (and, on SQLite, the BEGIN that takes the lock).
    per_message = two - one
    assert 1 <= per_message <= 2
    assert six - two == 4 * per_message
    session.expire_all()
    rows = session.scalars(sa.select(Reminder).where(Reminder.id.in_(ids))).all()
    assert {row.status for row in rows} == {ReminderStatus.SENT}
    assert len(fake_twilio.create_requests) == 9
    # One request per patient, each carrying the body stored for that patient's reminder
    # (stored with its patient link masked).
    by_phone = {r.form["To"][0]: r.form["Body"][0] for r in fake_twilio.create_requests}
    assert len(by_phone) == 9
    for row in rows:
        assert patient_links.mask_patient_links(by_phone[row.patient.phone_e164]) == (
            row.rendered_body
        )
        assert fake_twilio.messages[row.provider_id]["to"] == row.patient.phone_e164


def test_every_sent_message_gets_its_own_link_and_a_suppressed_one_none(
    session, session_factory, fake_twilio
):
    _book_patients(session, 3)
    ids = outbox.claim_due(session, now=AT)
    opted_out = session.get(Reminder, ids[1]).patient
    opted_out.sms_opted_out = True
    session.commit()
    statuses = _send(session, session_factory, ids, _channels(fake_twilio))
    assert statuses == {ids[0]: ReminderStatus.SENT, ids[2]: ReminderStatus.SENT}
    session.expire_all()
    assert session.get(Reminder, ids[1]).status == ReminderStatus.SUPPRESSED
    tokens = [
        re.search(r"/p/([A-Za-z0-9]{16})\b", r.form["Body"][0]).group(1)
        for r in fake_twilio.create_requests
    ]
    assert len(set(tokens)) == 2
    links = session.scalars(sa.select(PatientLink)).all()
    assert sorted(link.patient_id for link in links) == sorted(
        session.get(Reminder, i).patient_id for i in (ids[0], ids[2])
    )


def test_a_batch_delivered_twice_sends_each_message_once(session, session_factory, fake_twilio):
    _book_patients(session, 4)
    ids = outbox.claim_due(session, now=AT)
    channels = _channels(fake_twilio)
    assert len(_send(session, session_factory, ids, channels)) == 4
    assert _send(session, session_factory, ids, channels) == {}  # the status guard
    assert len(fake_twilio.create_requests) == 4


def test_a_rate_limit_holds_back_the_rest_of_the_batch_uncounted(
    session, session_factory, fake_twilio
):
    _book_patients(session, 4)
    ids = outbox.claim_due(session, now=AT)
    fake_twilio.program(status=429, retry_after="120")
    statuses = _send(session, session_factory, ids, _channels(fake_twilio))
    assert set(statuses.values()) == {ReminderStatus.PENDING}
    # The provider asked us to slow down: the batch stopped after one request.
    assert len(fake_twilio.create_requests) == 1
    session.expire_all()
    rows = session.scalars(sa.select(Reminder).where(Reminder.id.in_(ids))).all()
    attempts = sorted(row.attempts for row in rows)
    assert attempts == [0, 0, 0, 1]  # only the one request made counts as an attempt
    for row in rows:
        assert row.send_started_at is None and row.lease_until is None
        assert row.next_attempt_at >= AT + timedelta(seconds=120)
    assert outbox.claim_due(session, now=AT + timedelta(seconds=60)) == []
    later = max(row.next_attempt_at for row in rows)
    assert sorted(outbox.claim_due(session, now=later)) == sorted(ids)
    session.rollback()
    statuses = sending.send_batch(
        session_factory, ids, _channels(fake_twilio), public_base_url=PUBLIC, now=lambda: later
    )
    assert set(statuses.values()) == {ReminderStatus.SENT}
    assert len(fake_twilio.create_requests) == 5


def test_a_batch_past_its_deadline_hands_back_what_it_has_not_started(
    session, session_factory, fake_twilio
):
    _book_patients(session, 3)
    ids = outbox.claim_due(session, now=AT)
    session.rollback()
    with session_factory() as s:
        prepared = sending.prepare(s, ids, public_base_url=PUBLIC, now=AT)
    ticks = iter([0.0, 5.0, 11.0])  # the third message would start after the deadline

    def start(message):
        with session_factory() as s:
            return sending.mark_started(s, message, now=AT)

    sent, held = sending.deliver(
        prepared, _channels(fake_twilio), start=start, deadline=10.0, clock=lambda: next(ticks)
    )
    assert [p.reminder_id for p, _ in sent] == [p.reminder_id for p in prepared[:2]]
    assert [h.prepared.reminder_id for h in held] == [prepared[2].reminder_id]
    with session_factory() as s:
        statuses = sending.record(s, sent, held, now=AT)
    assert statuses[prepared[2].reminder_id] == ReminderStatus.PENDING
    session.expire_all()
    row = session.get(Reminder, prepared[2].reminder_id)
    assert row.attempts == 0 and row.next_attempt_at is None  # due again at the next tick
    assert len(fake_twilio.create_requests) == 2


def test_one_message_that_cannot_be_rendered_does_not_stop_the_others(
    session, session_factory, fake_twilio
):
    _book_patients(session, 2)
    _book_patients_es = session.get(Reminder, outbox.claim_due(session, now=AT)[1]).patient
    _book_patients_es.language = "es"
    # A stored edit that fails at render time (an undefined filter), for Spanish only.
    session.add(
        MessageTemplate(
            kind="confirmation", part="sms", language="es", source="{{ patient | nonsense }}"
        )
    )
    session.commit()
    ids = sorted(
        session.scalars(sa.select(Reminder.id).where(Reminder.status == ReminderStatus.CLAIMED))
    )
    statuses = _send(session, session_factory, ids, _channels(fake_twilio))
    session.expire_all()
    by_language = {session.get(Reminder, i).patient.language: i for i in ids}
    assert statuses == {by_language["en"]: ReminderStatus.SENT}
    failed = session.get(Reminder, by_language["es"])
    assert failed.status == ReminderStatus.FAILED
    assert failed.status_reason == (
        "not sent: the message template does not render (No filter named 'nonsense'.)"
    )
    assert len(fake_twilio.create_requests) == 1


def test_without_retry_after_the_held_back_messages_wait_for_the_next_tick(
    session, session_factory, fake_twilio
):
    _book_patients(session, 3)
    ids = outbox.claim_due(session, now=AT)
    fake_twilio.program(status=503)
    statuses = _send(session, session_factory, ids, _channels(fake_twilio))
    assert set(statuses.values()) == {ReminderStatus.PENDING}
    assert len(fake_twilio.create_requests) == 1
    session.expire_all()
    refused, *held = session.scalars(
        sa.select(Reminder).where(Reminder.id.in_(ids)).order_by(Reminder.attempts.desc())
    ).all()
    assert refused.attempts == 1 and refused.next_attempt_at >= AT + sending.BACKOFF_BASE / 2
    assert [(row.attempts, row.next_attempt_at) for row in held] == [(0, None), (0, None)]
    # Due again at the next tick; the refused one keeps its own backoff.
    assert sorted(outbox.claim_due(session, now=AT + timedelta(seconds=1))) == sorted(
        row.id for row in held
    )


def test_a_batch_that_waited_in_the_queue_renews_its_claims_before_sending(
    session, session_factory
):
    _book_patients(session, 2)
    ids = outbox.claim_due(session, now=AT, lease=timedelta(minutes=5))
    later = AT + timedelta(minutes=4, seconds=50)  # ten seconds of the lease left
    session.rollback()
    with session_factory() as s:
        prepared = sending.prepare(
            s, ids, public_base_url=PUBLIC, now=later, lease=timedelta(minutes=5)
        )
    assert len(prepared) == 2
    session.expire_all()
    for reminder_id in ids:
        row = session.get(Reminder, reminder_id)
        assert row.status == ReminderStatus.CLAIMED and row.send_started_at is None
        assert row.lease_until == later + timedelta(minutes=5)
    # So the dispatcher does not take them back while the batch sends them.
    assert outbox.claim_due(session, now=AT + timedelta(minutes=6)) == []
