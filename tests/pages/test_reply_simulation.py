"""Simulated patient replies from the local outbox: each keyword has the effect a real SMS
reply through the inbound webhook has, and the forms exist only without Twilio settings."""

from __future__ import annotations

import dataclasses
import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

import scheduler.accounts
from config import Settings
from notifications import outbox, replies
from notifications.channels.local import LocalOutboxChannel
from notifications.models import InboundMessage, Reminder, ReminderStatus
from notifications.sending import Channels, send_reminder
from scheduler.models import AuditEntry, Course, Department, Fraction, FractionStatus, Patient
from tests.api.conftest import Seed
from tests.committing import records, services
from tests.pages.test_messages_pages import sign_in
from web import create_app

NY = ZoneInfo("America/New_York")
CLINIC_PHONE = "+12125550100"


@pytest.fixture(autouse=True)
def _fast_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(scheduler.accounts, "_hasher", lambda: cheap)


@dataclasses.dataclass(frozen=True)
class Booked:
    patient_id: int
    course_id: int
    sms_id: int  # the confirmation SMS
    email_id: int  # the confirmation email


def _booked(db: Session, seed: Seed, now: datetime) -> Booked:
    """A ready course of five sessions from next Monday, with SMS and email consent."""
    department = db.get(Department, seed.department_id)
    assert department is not None
    department.phone = CLINIC_PHONE
    db.commit()
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": "MRN-R1", "given_name": "Rosa",
         "family_name": "Delgado", "date_of_birth": date(1968, 9, 23),
         "phone": "+12125550177", "email": "rosa@example.org", "language": "en",
         "sms_consent": True, "email_consent": True},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    ready = db.get(Course, course.id)
    assert ready is not None
    ready.plan_approved_at = ready.physics_qa_at = now
    db.commit()
    monday = now.astimezone(NY).date() + timedelta(days=7 - now.astimezone(NY).weekday())
    placements = [
        services.Placement(
            n, seed.linac_ids[0], datetime.combine(monday + timedelta(days=n - 1),
                                                   datetime.min.time(), NY).replace(hour=10)
        )
        for n in range(1, 6)
    ]  # fmt: skip
    services.book_course(db, course.id, placements, now=now)
    confirmations = {
        row.channel: row.id
        for row in db.scalars(
            sa.select(Reminder).where(
                Reminder.course_id == course.id, Reminder.kind == "confirmation"
            )
        )
    }
    booked = Booked(patient.id, course.id, confirmations["sms"], confirmations["email"])
    db.rollback()
    return booked


@pytest.fixture
def booked(db: Session, seed: Seed, now: datetime) -> Booked:
    return _booked(db, seed, now)


def _reply(client: FlaskClient, csrf: str, url: str, body: str, back: str = "log") -> str:
    response = client.post(
        url, data={"csrf_token": csrf, "body": body, "back": back}, follow_redirects=True
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:800]
    html = response.get_data(as_text=True)
    flashes = re.findall(r'<p class="flash (?:success|error)" role="status">(.*?)</p>', html, re.S)
    assert flashes, html[:2000]
    return " ".join(flashes)


def _sms_statuses(db: Session, patient_id: int) -> dict[str, str]:
    db.expire_all()
    rows = db.scalars(
        sa.select(Reminder).where(Reminder.patient_id == patient_id, Reminder.channel == "sms")
    )
    statuses = {row.dedupe_key: f"{row.status}|{row.status_reason}" for row in rows}
    db.rollback()
    return statuses


def test_c_confirms_the_next_session_and_help_gets_the_clinic_phone(
    client: FlaskClient, db: Session, seed: Seed, booked: Booked
) -> None:
    csrf = sign_in(client, db, "scheduler")
    said = _reply(client, csrf, f"/messages/{booked.sms_id}/simulate-reply", "C")
    assert f"Simulated reply from patient {booked.patient_id}: confirmed the next session." in said
    assert "your next appointment is confirmed" in said
    first = db.scalars(
        sa.select(Fraction).where(Fraction.course_id == booked.course_id, Fraction.number == 1)
    ).one()
    assert first.status == FractionStatus.CONFIRMED
    db.rollback()

    said = _reply(client, csrf, f"/patients/{booked.patient_id}/simulate-reply", "help", "patient")
    assert "asked for help" in said
    # The clinic's number as patients dial it in the US, not as it is stored.
    assert "call (212) 555-0100" in said
    replies_stored = db.scalars(sa.select(InboundMessage).order_by(InboundMessage.id)).all()
    assert [(r.action, r.from_number, r.needs_attention) for r in replies_stored] == [
        ("confirm", "+12125550177", False),
        ("help", "+12125550177", False),
    ]
    # Staff acted for the patient: both recorded, by patient id and reply action only.
    entries = db.scalars(
        sa.select(AuditEntry).where(AuditEntry.action == "simulate_reply").order_by(AuditEntry.id)
    ).all()
    assert [(e.subject_id, e.detail["reply_action"]) for e in entries] == [
        (booked.patient_id, "confirm"),
        (booked.patient_id, "help"),
    ]
    db.rollback()


def test_stop_opts_out_and_start_opts_back_in(
    client: FlaskClient,
    db: Session,
    seed: Seed,
    booked: Booked,
    session_factory: sessionmaker[Session],
) -> None:
    csrf = sign_in(client, db, "scheduler")
    before = _sms_statuses(db, booked.patient_id)
    assert before and all(s.startswith("pending") for s in before.values())

    said = _reply(client, csrf, f"/messages/{booked.sms_id}/simulate-reply", "STOP")
    assert "opted out of SMS" in said
    patient = db.get(Patient, booked.patient_id)
    assert patient is not None and patient.sms_opted_out
    db.rollback()
    stopped = _sms_statuses(db, booked.patient_id)
    assert set(stopped.values()) == {f"suppressed|{outbox.OPTED_OUT_REASON}"}
    # The sender does not send them: the local outbox channel is never handed the text.
    channels = Channels(sms=LocalOutboxChannel(), email=LocalOutboxChannel())
    send_reminder(session_factory, booked.sms_id, channels, public_base_url="http://x")
    row = db.get(Reminder, booked.sms_id)
    assert row is not None and row.status == ReminderStatus.SUPPRESSED and row.sent_at is None
    db.rollback()
    # The email still goes: STOP is about texts.
    email = db.get(Reminder, booked.email_id)
    assert email is not None and email.status == ReminderStatus.PENDING
    db.rollback()

    said = _reply(client, csrf, f"/patients/{booked.patient_id}/simulate-reply", "START", "patient")
    assert "opted back in to SMS" in said
    patient = db.get(Patient, booked.patient_id)
    assert patient is not None and not patient.sms_opted_out
    db.rollback()
    restarted = _sms_statuses(db, booked.patient_id)
    # The session reminders still ahead are planned again; the confirmation stays held.
    reopened = {k for k, v in restarted.items() if v.startswith("pending")}
    assert reopened and all(
        restarted[k] == f"pending|{replies.REPLANNED_AFTER_START}" for k in reopened
    )


def test_free_text_lands_in_the_inbox(
    client: FlaskClient, db: Session, seed: Seed, booked: Booked
) -> None:
    csrf = sign_in(client, db, "scheduler")
    said = _reply(
        client, csrf, f"/patients/{booked.patient_id}/simulate-reply", "Can I come at 3?", "patient"
    )
    assert "went to the inbox" in said
    assert "Can I come at 3?" not in said  # the patient's words stay out of flash messages
    inbox = client.get("/messages/inbox").get_data(as_text=True)
    assert "Can I come at 3?" in inbox and "RD (MRN-R1)" in inbox


def test_refused_input_roles_and_email(
    client: FlaskClient, db: Session, seed: Seed, booked: Booked
) -> None:
    url = f"/messages/{booked.sms_id}/simulate-reply"
    csrf = sign_in(client, db, "viewer")
    assert client.post(url, data={"csrf_token": csrf, "body": "C"}).status_code == 403
    csrf = sign_in(client, db, "scheduler")
    assert client.post(url, data={"body": "C"}).status_code == 400  # no CSRF token
    said = _reply(client, csrf, url, "   ")
    assert "The reply cannot be simulated. The body is empty." in said
    email = client.post(
        f"/messages/{booked.email_id}/simulate-reply", data={"csrf_token": csrf, "body": "C"}
    )
    assert email.status_code == 404
    assert db.scalar(sa.select(sa.func.count()).select_from(InboundMessage)) == 0
    db.rollback()
    # The forms are on the outbox page and the patient's timeline.
    log = client.get("/messages").get_data(as_text=True)
    assert f'action="/messages/{booked.sms_id}/simulate-reply"' in log
    assert f'action="/messages/{booked.email_id}/simulate-reply"' not in log
    timeline = client.get(f"/patients/{booked.patient_id}/messages").get_data(as_text=True)
    assert f'action="/patients/{booked.patient_id}/simulate-reply"' in timeline


def test_with_twilio_configured_there_is_nothing_to_simulate(
    settings: Settings, db: Session, seed: Seed, booked: Booked
) -> None:
    configured = dataclasses.replace(
        settings,
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
        twilio_from_number="+15005550006",
    )
    app: Flask = create_app(configured)
    client = app.test_client()
    csrf = sign_in(client, db, "admin")
    for url in (
        f"/messages/{booked.sms_id}/simulate-reply",
        f"/patients/{booked.patient_id}/simulate-reply",
    ):
        assert client.post(url, data={"csrf_token": csrf, "body": "STOP"}).status_code == 404
    assert "simulate-reply" not in client.get("/messages").get_data(as_text=True)
    patient = db.get(Patient, booked.patient_id)
    assert patient is not None and not patient.sms_opted_out
    db.rollback()
