"""The last check before a real message goes out: an edited template that passed the save-time
checks on the sample course but renders one patient's message into something unsendable fails
that one message, with a reason staff can read, and the rest of the batch is sent."""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa

from notifications import outbox, sending, template_store
from notifications.channels.local import LocalOutboxChannel
from notifications.channels.twilio_sms import TwilioSmsChannel
from notifications.models import Reminder, ReminderStatus
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY
AT = NOW + timedelta(hours=3)  # 10:00 in New York: inside the message window
PUBLIC = "https://clinic.example.org"
SMS = "{{ clinic_sms_name }}: visit {{ first.sms_when }}. {{ link }} Reply C to confirm"
# Each branch is taken only for a name the sample course does not have ("Alejandra"), and no
# diagnosis word is in the source itself: the save-time checks cannot see any of them.
BRANCHING = (
    "{% if given_name == 'Zed' %}{{ 'recnac'|reverse }} {% endif %}"
    "{% if given_name == 'Yul' %}{{ 'Please read this. ' * 30 }}{% endif %}"
    "{% if given_name == 'Max' %}{% for a in range(1000) %}{% for b in range(1000) %}"
    "{% endfor %}{% endfor %}{% endif %}"
    "{% if given_name == 'Quin' %}{{ 1 // 0 }}{% endif %}" + SMS
)


def _channels(fake) -> sending.Channels:
    sms = TwilioSmsChannel(
        fake.account_sid,
        fake.auth_token,
        from_number="+12125550199",
        base_url=fake.base_url,
        timeout_seconds=1,
    )
    return sending.Channels(sms=sms, email=LocalOutboxChannel())


def _book(session, names: list[str]) -> dict[str, str]:
    """A booked liver course per name; returns each name's phone number."""
    w = f.world(session)
    phones = {}
    for i, name in enumerate(names):
        phone = f"+1212555{2000 + i:04d}"
        patient = f.patient(
            session,
            w["department"],
            given_name=name,
            phone_e164=phone,
            sms_consent=True,
            date_of_birth=date(1960, 1, 1 + i),
        )
        course = f.course(session, patient, w["liver"])
        session.commit()
        proposal = services.propose_schedules(
            session, course.id, earliest=(NOW + timedelta(days=7 + 7 * i)).date(), now=NOW
        ).schedules[0]
        placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
        services.book_course(session, course.id, placements, now=NOW)
        phones[name] = phone
    return phones


def _save_template(session, source: str) -> None:
    check = template_store.check_source("confirmation", "sms", "en", source)
    assert check.ok, check.problems
    template_store.save_override(session, "confirmation", "sms", "en", source, user_id=None)
    session.commit()


def test_a_message_an_edited_template_makes_unsendable_fails_alone_with_its_reason(
    session, session_factory, fake_twilio
):
    phones = _book(session, ["Zed", "Yul", "Max", "Quin", "Ann"])
    _save_template(session, BRANCHING)
    ids = outbox.claim_due(session, now=AT)
    assert len(ids) == 5
    channels = _channels(fake_twilio)
    session.rollback()  # the test's own reads must not hold SQLite's write lock

    statuses = sending.send_batch(
        session_factory, ids, channels, public_base_url=PUBLIC, now=lambda: AT
    )
    assert list(statuses.values()) == [ReminderStatus.SENT]
    (request,) = fake_twilio.create_requests
    assert request.form["To"] == [phones["Ann"]]
    assert fake_twilio.violations == []

    session.expire_all()
    rows = {
        row.patient.given_name: row
        for row in session.scalars(sa.select(Reminder).where(Reminder.id.in_(ids)))
    }
    assert rows["Ann"].status == ReminderStatus.SENT
    for name in ("Zed", "Yul", "Max", "Quin"):
        row = rows[name]
        assert row.status == ReminderStatus.FAILED, name
        # Never started: nothing was posted, no text stored, no attempt counted.
        assert row.send_started_at is None and row.rendered_body is None and row.attempts == 0
    assert rows["Zed"].status_reason == (
        "not sent: the SMS names a diagnosis or treatment (cancer)"
    )
    assert rows["Yul"].status_reason.startswith("not sent: the SMS is ")
    assert "segments; at most 3 are sent" in rows["Yul"].status_reason
    assert rows["Max"].status_reason == (
        "not sent: the message template does not render "
        "(The template does too much work (more than 20000 steps).)"
    )
    assert rows["Quin"].status_reason == (
        "not sent: the message template does not render (integer division or modulo by zero)"
    )

    # A failed message is final: delivering the same ids again sends nothing more.
    session.rollback()
    again = sending.send_batch(
        session_factory, ids, channels, public_base_url=PUBLIC, now=lambda: AT
    )
    assert again == {}
    assert len(fake_twilio.create_requests) == 1


def test_an_sms_that_needs_ucs2_is_held_to_ucs2_segments(session, session_factory, fake_twilio):
    # The same words go in three GSM-7 parts to Zoe, but "ë" makes Zoë's SMS UCS-2, where a
    # part holds 67 characters, not 153.
    phones = _book(session, ["Zoë", "Zoe"])
    longer = "{% if given_name.startswith('Zo') %}{{ given_name }}, "
    longer += "{{ 'please bring the list of your medicines. ' * 4 }}{% endif %}"
    _save_template(session, longer + SMS)
    ids = outbox.claim_due(session, now=AT)
    session.rollback()
    statuses = sending.send_batch(
        session_factory, ids, _channels(fake_twilio), public_base_url=PUBLIC, now=lambda: AT
    )
    assert list(statuses.values()) == [ReminderStatus.SENT]
    (request,) = fake_twilio.create_requests
    assert request.form["To"] == [phones["Zoe"]]
    session.expire_all()
    failed = session.scalars(sa.select(Reminder).where(Reminder.status == "failed")).one()
    assert failed.patient.given_name == "Zoë"
    assert "(UCS-2), 4 segments; at most 3 are sent" in failed.status_reason
