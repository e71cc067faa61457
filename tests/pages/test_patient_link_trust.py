"""Patient links through HTTP: no page shows a working link, links end when they should, and
staff revoke links or send a fresh one (pages and API, audited).

An anonymous client plays the holder of a link; the token comes from the SMS the loopback
Twilio server received, as it would from the patient's phone. Both database backends.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from notifications import outbox, replies, sending
from notifications.channels.local import LocalOutboxChannel
from notifications.channels.twilio_sms import TwilioSmsChannel
from notifications.models import Reminder
from scheduler import links
from scheduler.models import AuditEntry, Fraction, FractionStatus, User
from scheduler.services import Placement
from tests import factories as f
from tests.api.conftest import Seed
from tests.committing import records, services
from tests.pages.test_messages_pages import sign_in
from web import create_app

NOW = f.MONDAY
AT = NOW + timedelta(hours=3)  # 10:00 in New York: inside the message window
PUBLIC = "https://clinic.example.org"
LINKISH = re.compile(r"/p/([^\s\"'<]+)")
FORM_TOKEN_RE = re.compile(r'name="form_token" value="([0-9a-f]+)"')
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
ENDED = "This link is no longer in use"
CLINIC_PHONE = "+12125550100"  # the factories' department


@pytest.fixture
def travel() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(AT, tick=False) as traveller:
        yield traveller


@dataclasses.dataclass
class Sent:
    patient_id: int
    course_id: int
    token: str  # from the SMS the patient received
    reminder_id: int


def _channels(fake) -> sending.Channels:
    sms = TwilioSmsChannel(
        fake.account_sid,
        fake.auth_token,
        from_number="+12125550199",
        base_url=fake.base_url,
        timeout_seconds=1,
        validity_period_seconds=3600,
    )
    return sending.Channels(sms=sms, email=LocalOutboxChannel())


def _send_due(db: Session, session_factory: sessionmaker[Session], fake, at=AT) -> list[str]:
    """Claim and send what is due; returns the links' tokens in the SMS that went out."""
    before = len(fake.create_requests)
    ids = outbox.claim_due(db, now=at)
    db.rollback()
    sending.send_batch(
        session_factory, ids, _channels(fake), public_base_url=PUBLIC, now=lambda: at
    )
    bodies = [r.form["Body"][0] for r in fake.create_requests[before:]]
    return [token for body in bodies for token in LINKISH.findall(body)]


def _book_and_send(db: Session, session_factory: sessionmaker[Session], fake) -> Sent:
    dept = f.department(db)
    # The seed's staff work in this department, so its patients are theirs to see.
    for user in db.scalars(sa.select(User)):
        user.departments.append(dept)
    f.linacs(db, dept)
    liver = f.protocol(db)
    patient = f.patient(db, dept, sms_consent=True)
    course = f.course(db, patient, liver)
    db.commit()
    proposal = services.propose_schedules(
        db, course.id, earliest=(NOW + timedelta(days=7)).date(), now=NOW
    ).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(db, course.id, placements, now=NOW)
    confirmation = db.scalars(sa.select(Reminder).where(Reminder.kind == "confirmation")).one()
    (token,) = _send_due(db, session_factory, fake)
    sent = Sent(patient.id, course.id, token, confirmation.id)
    db.rollback()
    return sent


def _confirm_form(client: FlaskClient, token: str) -> dict[str, str]:
    """The confirm form's fields as the page gave them, so a later POST is refused only
    because the link ended, not for a missing form or CSRF token."""
    page = client.get(f"/p/{token}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    (form_token,) = FORM_TOKEN_RE.findall(html)
    (csrf_token,) = CSRF_RE.findall(html)
    return {"form_token": form_token, "csrf_token": csrf_token}


def _assert_ended(client: FlaskClient, token: str, form: dict[str, str], db: Session) -> None:
    """The holder gets the page that says to call the clinic: no schedule, no confirming."""
    page = client.get(f"/p/{token}")
    html = page.get_data(as_text=True)
    assert page.status_code == 410
    assert ENDED in html and CLINIC_PHONE in html
    assert "Session 1 of" not in html and "form_token" not in html
    assert client.get(f"/p/{token}/schedule.ics").status_code == 410
    posted = client.post(f"/p/{token}/confirm", data=form)
    assert posted.status_code == 410
    db.expire_all()
    confirmed = db.scalars(
        sa.select(Fraction).where(Fraction.status == FractionStatus.CONFIRMED)
    ).all()
    db.rollback()
    assert confirmed == []


def _audit(db: Session, action: str) -> list[tuple[str, int | None, dict]]:
    """The audit entries of ``action`` as plain values (reading a row later would start a
    transaction, and on SQLite hold the write lock the app needs)."""
    db.expire_all()
    rows = db.execute(
        sa.select(AuditEntry.subject_type, AuditEntry.subject_id, AuditEntry.detail).where(
            AuditEntry.action == action
        )
    ).all()
    db.rollback()
    return [tuple(row) for row in rows]


# --- no working link stored or shown ----------------------------------------------------------


def test_message_pages_and_stored_rows_hold_no_working_link(
    client: FlaskClient, db: Session, session_factory, seed: Seed, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    # The patient's own message works: the page and its confirm form.
    assert "form_token" in client.get(f"/p/{sent.token}").get_data(as_text=True)

    staff = client.application.test_client()
    sign_in(staff, db, "viewer")
    shown = []
    for url in (
        "/messages",
        f"/patients/{sent.patient_id}/messages",
        f"/courses/{sent.course_id}/messages",
    ):
        html = staff.get(url).get_data(as_text=True)
        assert "See https://clinic.example.org/p/••••" in html, url
        shown += LINKISH.findall(html)
    db.expire_all()
    stored = db.get(Reminder, sent.reminder_id)
    assert stored is not None and stored.rendered_body is not None
    shown += LINKISH.findall(stored.rendered_body)
    api = client.get(f"/api/v1/patients/{sent.patient_id}", headers=seed.auth("viewer"))
    shown += LINKISH.findall(api.get_data(as_text=True))
    db.rollback()

    assert sent.token not in "".join(shown)
    for candidate in {*shown, links.MASKED_TOKEN}:
        anonymous = client.application.test_client()
        assert anonymous.get(f"/p/{candidate}").status_code in (404, 410), candidate


def test_a_copy_stored_before_masking_is_shown_masked(
    client: FlaskClient, db: Session, session_factory, seed: Seed, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    # A row written by an earlier version, with the working link in it.
    row = db.get(Reminder, sent.reminder_id)
    assert row is not None
    row.rendered_body = f"Clinic: 5 visits. See {PUBLIC}/p/{sent.token} Reply C"
    db.commit()
    sign_in(client, db, "viewer")
    html = client.get(f"/patients/{sent.patient_id}/messages").get_data(as_text=True)
    assert sent.token not in html and f"{PUBLIC}/p/••••" in html


# --- links end --------------------------------------------------------------------------------


def test_cancelling_the_course_ends_its_links(
    client: FlaskClient, db: Session, session_factory, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    form_token = _confirm_form(client, sent.token)
    services.cancel_course(db, sent.course_id, reason="patient chose another centre", now=AT)
    _assert_ended(client, sent.token, form_token, db)
    # The cancellation notice carries a link too; it opens the same "call us" page.
    (notice_token,) = _send_due(db, session_factory, fake_twilio)
    assert client.get(f"/p/{notice_token}").status_code == 410


def test_a_new_phone_number_ends_the_links(
    client: FlaskClient, db: Session, session_factory, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    form_token = _confirm_form(client, sent.token)
    records.update_patient(db, sent.patient_id, {"phone": "+12125550177"}, now=AT)
    _assert_ended(client, sent.token, form_token, db)


def test_a_changed_email_address_ends_the_links(
    client: FlaskClient, db: Session, session_factory, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    # A first address added: the links already sent went to the phone, which is unchanged.
    records.update_patient(db, sent.patient_id, {"email": "ana@example.org"}, now=AT)
    db.rollback()
    form_token = _confirm_form(client, sent.token)
    records.update_patient(db, sent.patient_id, {"email": "someone@example.org"}, now=AT)
    _assert_ended(client, sent.token, form_token, db)


def test_an_unchanged_record_keeps_the_links(
    client: FlaskClient, db: Session, session_factory, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    same = {"phone": "+12125550123", "given_name": "Anna"}  # the phone as it was
    records.update_patient(db, sent.patient_id, same, now=AT)
    db.rollback()
    assert client.get(f"/p/{sent.token}").status_code == 200


def test_staff_withdrawing_sms_consent_ends_the_links(
    client: FlaskClient, db: Session, session_factory, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    form_token = _confirm_form(client, sent.token)
    records.update_patient(db, sent.patient_id, {"sms_consent": False}, now=AT)
    _assert_ended(client, sent.token, form_token, db)


def test_a_stop_reply_ends_the_links(
    client: FlaskClient, db: Session, session_factory, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    form_token = _confirm_form(client, sent.token)
    replies.handle_inbound(
        db, provider_id="SM" + "a" * 32, from_number="+12125550123", body="STOP", now=AT
    )
    _assert_ended(client, sent.token, form_token, db)


def _last_end(db: Session, course_id: int):
    end = db.scalar(sa.select(sa.func.max(Fraction.ends_at)).where(Fraction.course_id == course_id))
    db.rollback()
    return end


def test_links_expire_a_week_after_the_last_session(
    client: FlaskClient, db: Session, session_factory, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    form_token = _confirm_form(client, sent.token)
    last_end = _last_end(db, sent.course_id)
    travel.move_to(last_end + timedelta(days=7) - timedelta(minutes=1))
    assert client.get(f"/p/{sent.token}").status_code == 200
    travel.move_to(last_end + timedelta(days=7))
    _assert_ended(client, sent.token, form_token, db)


def test_the_expiry_is_a_setting_and_follows_the_course_as_it_is_now(
    settings: Settings, db: Session, session_factory, fake_twilio, travel
) -> None:
    app = create_app(dataclasses.replace(settings, patient_link_days_after_last_fraction=1))
    client = app.test_client()
    sent = _book_and_send(db, session_factory, fake_twilio)
    fractions = db.scalars(
        sa.select(Fraction).where(Fraction.course_id == sent.course_id).order_by(Fraction.number)
    ).all()
    last_end = fractions[-1].ends_at
    db.rollback()
    travel.move_to(last_end + timedelta(hours=23))
    assert client.get(f"/p/{sent.token}").status_code == 200
    travel.move_to(last_end + timedelta(days=1))
    assert client.get(f"/p/{sent.token}").status_code == 410
    # The last session cancelled: the link ends a day after the one before it.
    travel.move_to(AT)
    services.cancel_fraction(db, fractions[-1].id, reason="plan changed", now=AT)
    travel.move_to(fractions[-2].ends_at + timedelta(days=1))
    assert client.get(f"/p/{sent.token}").status_code == 410


def test_unknown_links_still_get_the_generic_page(client: FlaskClient, travel) -> None:
    page = client.get("/p/" + "A" * 16)
    assert page.status_code == 404
    assert ENDED not in page.get_data(as_text=True)
    assert CLINIC_PHONE not in page.get_data(as_text=True)


# --- staff actions ----------------------------------------------------------------------------


def test_staff_revoke_a_patients_links_on_the_page(
    client: FlaskClient, db: Session, session_factory, seed: Seed, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    form_token = _confirm_form(client, sent.token)
    staff = client.application.test_client()
    csrf = sign_in(staff, db, "viewer")
    url = f"/patients/{sent.patient_id}/links/revoke"
    assert staff.post(url, data={"csrf_token": csrf}).status_code == 403
    assert client.get(f"/p/{sent.token}").status_code == 200

    staff = client.application.test_client()
    csrf = sign_in(staff, db, "scheduler")
    assert "Revoke schedule links" in staff.get(f"/patients/{sent.patient_id}").get_data(
        as_text=True
    )
    response = staff.post(url, data={"csrf_token": csrf}, follow_redirects=True)
    assert response.status_code == 200
    assert "1 link revoked" in response.get_data(as_text=True)
    _assert_ended(client, sent.token, form_token, db)
    ((subject_type, subject_id, detail),) = _audit(db, "revoke_links")
    assert (subject_type, subject_id) == ("patient", sent.patient_id)
    assert detail["revoked"] == 1


def test_staff_revoke_a_patients_links_through_the_api(
    client: FlaskClient, db: Session, session_factory, seed: Seed, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    form_token = _confirm_form(client, sent.token)
    url = f"/api/v1/patients/{sent.patient_id}/links/revoke"
    assert client.post(url, headers=seed.auth("viewer")).status_code == 403
    response = client.post(url, headers=seed.auth("scheduler"))
    assert response.status_code == 200
    assert response.get_json() == {"patient_id": sent.patient_id, "revoked": 1}
    _assert_ended(client, sent.token, form_token, db)
    ((_type, subject_id, _detail),) = _audit(db, "revoke_links")
    assert subject_id == sent.patient_id
    missing = client.post("/api/v1/patients/999999/links/revoke", headers=seed.auth("scheduler"))
    assert missing.status_code == 404


def test_staff_send_a_fresh_link_on_the_page(
    client: FlaskClient, db: Session, session_factory, seed: Seed, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    form_token = _confirm_form(client, sent.token)
    staff = client.application.test_client()
    csrf = sign_in(staff, db, "scheduler")
    assert "Send a fresh link" in staff.get(f"/courses/{sent.course_id}").get_data(as_text=True)
    response = staff.post(
        f"/courses/{sent.course_id}/fresh-link", data={"csrf_token": csrf}, follow_redirects=True
    )
    assert response.status_code == 200
    assert "A fresh link is queued by SMS" in response.get_data(as_text=True)
    # The old link stops at once; the new message brings a working one.
    _assert_ended(client, sent.token, form_token, db)
    (fresh,) = _send_due(db, session_factory, fake_twilio)
    assert fresh != sent.token
    assert "form_token" in client.get(f"/p/{fresh}").get_data(as_text=True)
    ((subject_type, subject_id, detail),) = _audit(db, "send_fresh_link")
    assert (subject_type, subject_id) == ("course", sent.course_id)
    assert len(detail["reminder_ids"]) == 1


def test_staff_send_a_fresh_link_through_the_api(
    client: FlaskClient, db: Session, session_factory, seed: Seed, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    url = f"/api/v1/courses/{sent.course_id}/fresh-link"
    assert client.post(url, headers=seed.auth("viewer")).status_code == 403
    response = client.post(url, headers=seed.auth("scheduler"))
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["course_id"] == sent.course_id
    assert [m["channel"] for m in body["messages"]] == ["sms"]
    assert "token" not in response.get_data(as_text=True).lower()
    assert client.get(f"/p/{sent.token}").status_code == 410
    (fresh,) = _send_due(db, session_factory, fake_twilio)
    assert client.get(f"/p/{fresh}").status_code == 200
    assert len(_audit(db, "send_fresh_link")) == 1
    # A cancelled course has no link to send: 409, nothing queued, nothing audited.
    services.cancel_course(db, sent.course_id, reason="patient chose another centre", now=AT)
    refused = client.post(url, headers=seed.auth("scheduler"))
    assert refused.status_code == 409
    assert len(_audit(db, "send_fresh_link")) == 1


def test_no_fresh_link_for_a_patient_who_cannot_be_messaged(
    client: FlaskClient, db: Session, session_factory, seed: Seed, fake_twilio, travel
) -> None:
    sent = _book_and_send(db, session_factory, fake_twilio)
    records.update_patient(db, sent.patient_id, {"sms_consent": False}, now=AT)
    queued_before = db.scalar(sa.select(sa.func.count(Reminder.id)))
    db.rollback()
    refused = client.post(
        f"/api/v1/courses/{sent.course_id}/fresh-link", headers=seed.auth("scheduler")
    )
    assert refused.status_code == 409
    assert "cannot be messaged" in refused.get_data(as_text=True)
    assert db.scalar(sa.select(sa.func.count(Reminder.id))) == queued_before
    db.rollback()
    assert _audit(db, "send_fresh_link") == []
