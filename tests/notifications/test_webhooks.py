"""The Twilio webhooks end to end through Flask, signed as Twilio signs them, on both backends."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
import sqlalchemy as sa
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from config import Settings, load_settings
from notifications.models import InboundMessage, ProviderEvent, Reminder, ReminderStatus
from scheduler.models import BookingEvent, Fraction, FractionStatus, Patient
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services
from web import create_app, webhooks

NOW = f.MONDAY
TOKEN = "test-twilio-auth-token"
PUBLIC = "https://sbrt.example.org"
PHONE = "+12125550123"
STATUS = "/webhooks/twilio/status"
INBOUND = "/webhooks/twilio/inbound"


@pytest.fixture
def twilio_settings(settings: Settings) -> Settings:
    return _settings(settings, TWILIO_AUTH_TOKEN=TOKEN)


def _settings(settings: Settings, **extra: str) -> Settings:
    return load_settings(
        {
            "DATABASE_URL": settings.database_url,
            "BROKER_URL": "memory://",
            "SECRET_KEY": settings.secret_key,
            "INSTANCE_DIR": str(settings.instance_dir),
            # The app sits behind a proxy: signatures cover this URL, not the one Flask sees.
            "PUBLIC_BASE_URL": PUBLIC + "/",
            **extra,
        }
    )


def _app(settings: Settings) -> Flask:
    app = create_app(settings)
    app.config["TESTING"] = True
    # Until create_app registers the webhooks itself.
    if webhooks.bp.name not in app.blueprints:
        webhooks.init_app(app)
    return app


@pytest.fixture
def client(twilio_settings: Settings, engine: sa.Engine, session: Session) -> FlaskClient:
    # `engine` empties the tables first; the app builds its own engine for the same URL.
    app = _app(twilio_settings)

    class Client(FlaskClient):
        def open(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            # On SQLite every transaction takes the write lock at BEGIN: the test's own
            # session must not hold one while the app handles a request. Ending it also
            # makes the test read afresh afterwards.
            session.rollback()
            return super().open(*args, **kwargs)

    app.test_client_class = Client
    return app.test_client()


def sign(path: str, params: dict[str, str], *, token: str = TOKEN, base: str = PUBLIC) -> str:
    return RequestValidator(token).compute_signature(base + path, params)


def post(client: FlaskClient, path: str, params: dict[str, str], **sign_kw: str):
    return client.post(
        path, data=params, headers={"X-Twilio-Signature": sign(path, params, **sign_kw)}
    )


def status(client: FlaskClient, sid: str, status: str, code: str | None = None):
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC" + "0" * 32}
    if code:
        params["ErrorCode"] = code
    return post(client, STATUS, params)


def inbound(client: FlaskClient, sid: str, body: str, sender: str = PHONE):
    params = {"MessageSid": sid, "From": sender, "To": "+12125550000", "Body": body}
    return post(client, INBOUND, params)


def twiml_messages(response) -> list[str]:
    assert response.status_code == 200
    assert response.mimetype == "application/xml"
    root = ET.fromstring(response.data)
    assert root.tag == "Response"
    return [m.text or "" for m in root.iter("Message")]


# --- signatures -------------------------------------------------------------------------------


def _reminder(session, pat, course, *, key, status="sent", provider_id=None, channel="sms"):
    row = Reminder(
        dedupe_key=key,
        kind="same_day",
        channel=channel,
        patient_id=pat.id,
        course_id=course.id,
        due_at=NOW + timedelta(days=1),
        status=status,
        provider_id=provider_id,
    )
    session.add(row)
    session.flush()
    return row


@pytest.fixture
def sent(session):
    """One SMS the provider accepted (SM100) and one still waiting, for one patient."""
    w = f.world(session)
    pat = f.patient(session, w["department"], sms_consent=True)
    course = f.course(session, pat, w["liver"])
    row = _reminder(session, pat, course, key="sent", provider_id="SM100")
    waiting = _reminder(session, pat, course, key="waiting", status="pending")
    session.commit()
    return {"patient_id": pat.id, "reminder_id": row.id, "waiting_id": waiting.id}


def _count(session, model) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(model))


def test_forged_and_unsigned_webhooks_are_refused(client, session, sent):
    params = {"MessageSid": "SM100", "MessageStatus": "delivered"}
    for path in (STATUS, INBOUND):
        unsigned = client.post(path, data=params)
        wrong_key = post(client, path, params, token="not-the-token")
        # Signed over the URL Flask sees behind the proxy, not the public one.
        wrong_url = post(client, path, params, base="http://localhost")
        tampered = client.post(
            path,
            data={**params, "MessageStatus": "failed"},
            headers={"X-Twilio-Signature": sign(path, params)},
        )
        for response in (unsigned, wrong_key, wrong_url, tampered):
            assert response.status_code == 403
            assert response.mimetype == "text/plain"
            assert response.get_data(as_text=True) == "Forbidden\n"
    session.expire_all()
    assert _count(session, ProviderEvent) == 0 and _count(session, InboundMessage) == 0
    assert session.get(Reminder, sent["reminder_id"]).status == ReminderStatus.SENT


def test_without_a_configured_auth_token_every_webhook_is_refused(settings, engine):
    client = _app(_settings(settings)).test_client()
    params = {"MessageSid": "SM100", "MessageStatus": "delivered"}
    assert post(client, STATUS, params).status_code == 403
    assert client.post(INBOUND, data={"MessageSid": "SM1", "From": PHONE}).status_code == 403


def test_the_query_string_is_part_of_the_signed_url(client, sent):
    params = {"MessageSid": "SM100", "MessageStatus": "sent"}
    path = STATUS + "?attempt=2"
    response = client.post(path, data=params, headers={"X-Twilio-Signature": sign(path, params)})
    assert response.status_code == 200
    # The same signature without its query does not verify.
    response = client.post(
        STATUS + "?attempt=3", data=params, headers={"X-Twilio-Signature": sign(path, params)}
    )
    assert response.status_code == 403


def test_no_csrf_token_is_needed_and_no_session_cookie_is_set(client, sent):
    response = status(client, "SM100", "sent")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers


def test_a_signed_request_missing_fields_is_a_bad_request(client):
    assert post(client, STATUS, {"MessageStatus": "sent"}).status_code == 400
    assert post(client, INBOUND, {"MessageSid": "SM1", "Body": "C"}).status_code == 400


# --- status callbacks -------------------------------------------------------------------------


def test_repeated_and_out_of_order_callbacks_end_delivered(client, session, sent):
    for name in ("sent", "delivered", "delivered", "sent", "queued", "delivered"):
        assert status(client, "SM100", name).status_code == 200
    session.expire_all()
    row = session.get(Reminder, sent["reminder_id"])
    assert row.status == ReminderStatus.DELIVERED and row.provider_status == "delivered"
    assert row.delivered_at is not None
    events = session.scalars(sa.select(ProviderEvent.status).order_by(ProviderEvent.status))
    assert events.all() == ["delivered", "queued", "sent"]  # one per status


def test_unknown_message_sid_gets_200_and_a_log_line_with_the_sid_only(client, session, caplog):
    with caplog.at_level(logging.INFO):
        response = status(client, "SMunknown0000", "delivered")
    assert response.status_code == 200
    assert any("SMunknown0000" in r.getMessage() for r in caplog.records)
    assert _count(session, ProviderEvent) == 0


def test_a_permanent_error_code_flags_the_patients_sms(client, session, sent):
    assert status(client, "SM100", "undelivered", code="21614").status_code == 200
    session.expire_all()
    row = session.get(Reminder, sent["reminder_id"])
    assert row.status == ReminderStatus.FAILED and "21614" in row.status_reason
    patient = session.get(Patient, sent["patient_id"])
    assert patient.sms_blocked_reason and "21614" in patient.sms_blocked_reason
    assert session.get(Reminder, sent["waiting_id"]).status == ReminderStatus.SUPPRESSED


# --- inbound SMS ------------------------------------------------------------------------------


def _book(session, *, ready: bool = True) -> int:
    w = f.world(session)
    pat = f.patient(session, w["department"], sms_consent=True)
    course = f.course(session, pat, w["liver"], ready=ready)
    session.commit()
    proposal = services.propose_schedules(session, course.id, now=NOW).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(session, course.id, placements, now=NOW)
    return pat.id


def _statuses(session, patient_id: int) -> list[str]:
    session.expire_all()
    query = sa.select(Fraction.status).where(Fraction.patient_id == patient_id)
    return list(session.scalars(query.order_by(Fraction.number)))


@pytest.fixture
def at_now():
    # The webhooks read the wall clock; the booked course starts at NOW, so the patient
    # answers the evening before.
    with time_machine.travel(NOW - timedelta(hours=14), tick=False):
        yield


@pytest.mark.usefixtures("at_now")
@pytest.mark.parametrize("body", ["C", "yes!", " Confirm. "])
def test_confirm_replies_confirm_the_next_booked_fraction(client, session, body):
    patient_id = _book(session)
    (message,) = twiml_messages(inbound(client, "SM1", body))
    assert "confirmed" in message
    assert _statuses(session, patient_id) == ["confirmed"] + ["booked"] * 4


@pytest.mark.usefixtures("at_now")
def test_a_replayed_confirmation_has_no_second_effect(client, session):
    patient_id = _book(session)
    first = inbound(client, "SM1", "C")
    second = inbound(client, "SM1", "C")
    assert twiml_messages(first) == twiml_messages(second)
    assert _statuses(session, patient_id) == ["confirmed"] + ["booked"] * 4
    assert _count(session, InboundMessage) == 1
    confirmations = sa.select(sa.func.count(BookingEvent.id)).where(
        BookingEvent.kind == "fraction_confirmed"
    )
    assert session.scalar(confirmations) == 1


@pytest.mark.usefixtures("at_now")
def test_a_tentative_first_fraction_is_not_confirmed(client, session):
    patient_id = _book(session, ready=False)
    (message,) = twiml_messages(inbound(client, "SM1", "C"))
    assert "could not confirm" in message and "(212) 555-0100" in message
    assert _statuses(session, patient_id)[0] == FractionStatus.TENTATIVE
    row = session.scalars(sa.select(InboundMessage)).one()
    assert row.needs_attention


def test_stop_suppresses_pending_sms_and_start_clears_the_opt_out(client, session, sent):
    assert twiml_messages(inbound(client, "SM1", "STOP")) == []
    session.expire_all()
    assert session.get(Patient, sent["patient_id"]).sms_opted_out
    waiting = session.get(Reminder, sent["waiting_id"])
    assert waiting.status == ReminderStatus.SUPPRESSED and waiting.status_reason == "opted out"
    assert session.get(Reminder, sent["reminder_id"]).status == ReminderStatus.SENT

    assert twiml_messages(inbound(client, "SM2", "Start")) == []
    session.expire_all()
    assert not session.get(Patient, sent["patient_id"]).sms_opted_out


def test_help_answers_with_the_clinic_phone(client, session, sent):
    (message,) = twiml_messages(inbound(client, "SM1", "HELP"))
    assert "(212) 555-0100" in message  # as dialled in the US, not as stored
    # The department is called "... Radiation Oncology": that must not appear in an SMS.
    assert "Radiation" not in message and message.startswith("Your clinic:")


def test_other_text_lands_in_the_inbox(client, session, sent, caplog):
    body = "Can I bring my daughter on Tuesday?"
    with caplog.at_level(logging.INFO):
        assert twiml_messages(inbound(client, "SM1", body)) == []
    row = session.scalars(sa.select(InboundMessage)).one()
    assert row.needs_attention and row.action == "inbox" and row.body == body
    assert row.patient_id == sent["patient_id"] and row.from_number == PHONE
    # Neither the body nor the full number reaches the logs.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "SM1" in logged and body not in logged and "5550123" not in logged


def test_a_replayed_stop_has_no_second_effect(client, session, sent):
    inbound(client, "SM1", "STOP")
    inbound(client, "SM2", "START")
    # Twilio retrying the old STOP must not opt the patient out again.
    assert twiml_messages(inbound(client, "SM1", "STOP")) == []
    session.expire_all()
    assert not session.get(Patient, sent["patient_id"]).sms_opted_out
    assert _count(session, InboundMessage) == 2


# --- signed but malformed input ---------------------------------------------------------------
# A valid signature proves Twilio (or the holder of the token) sent it, not that every field is
# tidy: a patient's message must be stored, never lost to a 500.

LONG_SID = "SM" + "0123456789abcdef" * 5  # 82 characters: longer than the provider id column


def _logged(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_an_inbound_sms_with_an_overlong_sid_is_stored_once(client, session, sent, caplog):
    body = "Can I bring my daughter on Tuesday?"
    with caplog.at_level(logging.INFO):
        first = inbound(client, LONG_SID, body)
        replay = inbound(client, LONG_SID, body)
    assert twiml_messages(first) == [] and twiml_messages(replay) == []
    row = session.scalars(sa.select(InboundMessage)).one()
    assert row.body == body and row.needs_attention and row.patient_id == sent["patient_id"]
    assert len(row.provider_id) <= 64
    logged = _logged(caplog)
    assert "replay ignored" in logged
    assert "MessageSid not in Twilio's format" in logged
    assert body not in logged and "5550123" not in logged and LONG_SID not in logged


def test_nul_and_control_characters_are_removed_from_an_inbound_body(client, session, sent, caplog):
    with caplog.at_level(logging.INFO):
        response = inbound(client, "SM1", "Running\x00 late\x07,\r\nsorry\x1b[2J\tX")
    assert twiml_messages(response) == []
    row = session.scalars(sa.select(InboundMessage)).one()
    assert row.body == "Running late,\nsorry[2J X"
    assert row.needs_attention and row.patient_id == sent["patient_id"]
    logged = _logged(caplog)
    assert "removed 3 control characters" in logged and "Running" not in logged


def test_an_overlong_sid_and_a_nul_in_the_body_together_still_act_once(client, session, sent):
    assert twiml_messages(inbound(client, LONG_SID, "STOP\x00")) == []
    session.expire_all()
    assert session.get(Patient, sent["patient_id"]).sms_opted_out
    row = session.scalars(sa.select(InboundMessage)).one()
    assert row.body == "STOP" and row.action == "opt_out"

    inbound(client, "SM2", "START")
    # Twilio retrying the old STOP must not opt the patient out again.
    assert twiml_messages(inbound(client, LONG_SID, "STOP\x00")) == []
    session.expire_all()
    assert not session.get(Patient, sent["patient_id"]).sms_opted_out
    assert _count(session, InboundMessage) == 2


def test_a_nul_in_the_sid_or_the_sender_is_stored_and_deduplicated(client, session, sent):
    odd_sid = "SM1\x00\n"
    assert twiml_messages(inbound(client, odd_sid, "Hello", sender=PHONE + "\x00")) == []
    assert twiml_messages(inbound(client, odd_sid, "Hello", sender=PHONE + "\x00")) == []
    row = session.scalars(sa.select(InboundMessage)).one()
    assert row.from_number == PHONE and row.patient_id == sent["patient_id"]
    assert row.provider_id.isprintable() and len(row.provider_id) <= 64
    # A different odd id is a different message.
    inbound(client, "SM1\x00\r", "Hello")
    assert _count(session, InboundMessage) == 2


def test_a_sender_that_is_nothing_but_control_characters_is_a_bad_request(client, session, caplog):
    with caplog.at_level(logging.INFO):
        response = inbound(client, "SM1", "My chemo starts Monday", sender="\x00\x01")
    assert response.status_code == 400
    assert "without MessageSid or From" in _logged(caplog)
    assert "chemo" not in _logged(caplog)
    assert _count(session, InboundMessage) == 0


def test_status_callbacks_with_odd_sids_are_answered_and_logged(client, session, sent, caplog):
    with caplog.at_level(logging.INFO):
        for sid in (LONG_SID, "SM100\x00", "SM\x00" * 40):
            assert status(client, sid, "delivered").status_code == 200
    logged = _logged(caplog)
    assert "status callback for unknown message" in logged and "\x00" not in logged
    assert LONG_SID not in logged
    session.expire_all()
    assert session.get(Reminder, sent["reminder_id"]).status == ReminderStatus.SENT
    assert _count(session, ProviderEvent) == 0


def test_odd_message_statuses_and_error_codes_never_fail(client, session, sent, caplog):
    with caplog.at_level(logging.INFO):
        assert status(client, "SM100", "sent\x00").status_code == 200
        assert status(client, "SM100", "x" * 200).status_code == 200
        assert status(client, "SM100", "\x00\x01").status_code == 200
        assert status(client, "SM100", "received").status_code == 200
    session.expire_all()
    row = session.get(Reminder, sent["reminder_id"])
    assert row.provider_status == "sent" and row.status == ReminderStatus.SENT
    events = session.scalars(sa.select(ProviderEvent.status)).all()
    assert all(e.isprintable() and len(e) <= 20 for e in events)
    assert "ignored unknown provider status" in _logged(caplog)

    code = "216\x0014" + "9" * 100
    assert status(client, "SM100", "undelivered", code=code).status_code == 200
    session.expire_all()
    row = session.get(Reminder, sent["reminder_id"])
    assert row.status == ReminderStatus.FAILED
    assert row.status_reason.isprintable() and len(row.status_reason) <= 60
