"""The template editor answers runaway or broken templates with a readable problem, never a
500 or a held worker; a message an edited template makes unsendable shows why on the message
pages."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from html import unescape

import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from notifications import outbox, sending, template_store
from notifications.channels.local import LocalOutboxChannel
from notifications.models import MessageTemplate, Reminder, ReminderStatus
from scheduler.services import Placement
from tests.api.conftest import Seed
from tests.committing import records, services
from tests.conftest import at_clinic_hours

# The sign-in helper and the cheap password hashing of the message page tests.
from tests.pages.test_messages_pages import (  # noqa: F401
    _fast_password_hashes,
    _patient_with_course,
    _reminder,
    sign_in,
)

URL = "/admin/templates/confirmation/sms"
SMS = "{{ clinic_sms_name }}: visit {{ first.sms_when }}. {{ link }} Reply C to confirm"


def _post(client: FlaskClient, csrf: str, source: str, action: str) -> tuple[int, str]:
    shipped_es = template_store.shipped_source("confirmation", "sms", "es")
    data = {"csrf_token": csrf, "source_en": source, "source_es": shipped_es, "action": action}
    response = client.post(URL, data=data)
    return response.status_code, unescape(response.get_data(as_text=True))


def test_runaway_and_broken_templates_get_a_readable_problem_not_a_500(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    csrf = sign_in(client, db, "admin")
    cases = {
        "{{ range(10**9) }}": "A range in the template has more than 1000 items.",
        "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
        "{% endfor %}{% endfor %}{% endfor %}": "The template does too much work",
        "{{ 'x' * 10**9 }}": "The template makes a text longer than 20000 characters.",
        "{{ 1 / 0 }}": "The template does not render: division by zero",
        "{{ {}[range] }}": "dict object has no element <function bounded_range>",
    }
    for source, problem in cases.items():
        status, page = _post(client, csrf, source, "preview")
        assert status == 200, source
        assert problem in page, source
        assert "0x" not in page and "/notifications/templates" not in page
        status, page = _post(client, csrf, source, "save")
        assert status == 422 and problem in page, source
    count = db.scalar(sa.select(sa.func.count(MessageTemplate.id)))
    db.rollback()
    assert count == 0


@at_clinic_hours  # sent at once, not held for the patient's message window
def test_a_real_sms_refused_at_send_time_shows_its_reason_on_the_problem_page(
    client: FlaskClient,
    db: Session,
    seed: Seed,
    session_factory: sessionmaker[Session],
    now: datetime,
) -> None:
    csrf = sign_in(client, db, "admin")
    # Branches on a name the sample course does not have: the editor's checks pass it.
    source = "{% if given_name == 'Zed' %}{{ 'recnac'|reverse }} {% endif %}" + SMS
    status, page = _post(client, csrf, source, "save")
    assert status == 302, page

    patient = records.create_patient(
        db,
        {
            "department_id": seed.department_id,
            "mrn": "MRN-77",
            "given_name": "Zed",
            "family_name": "Moreau",
            "date_of_birth": date(1961, 4, 2),
            "phone": "+12125550178",
            "language": "en",
            "sms_consent": True,
        },
    )
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    course_id = course.id
    db.commit()
    proposal = services.propose_schedules(
        db, course_id, earliest=(now + timedelta(days=7)).date(), now=now
    ).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(db, course_id, placements, now=now)
    ids = outbox.claim_due(db, now=now)
    db.rollback()
    channels = sending.Channels(sms=LocalOutboxChannel(), email=LocalOutboxChannel())
    sending.send_batch(session_factory, ids, channels, public_base_url="https://clinic.example.org")
    row = db.scalars(
        sa.select(Reminder).where(Reminder.channel == "sms", Reminder.kind == "confirmation")
    ).one()
    reminder_id, row_status = row.id, row.status
    db.rollback()
    assert row_status == ReminderStatus.FAILED

    page = unescape(client.get("/messages/problems").get_data(as_text=True))
    assert f"message-{reminder_id}" in page
    assert "not sent: the SMS names a diagnosis or treatment (cancer)" in page

    # The API shows the same reason, and no message text.
    response = client.get(f"/api/v1/courses/{course_id}/messages", headers=seed.auth("viewer"))
    assert response.status_code == 200
    (api_row,) = [m for m in response.get_json() if m["id"] == reminder_id]
    assert api_row["status"] == "failed" and api_row["attempts"] == 0
    assert api_row["status_reason"] == "not sent: the SMS names a diagnosis or treatment (cancer)"
    assert "body" not in api_row and "rendered_body" not in api_row
    assert client.get("/api/v1/courses/999999/messages", headers=seed.auth()).status_code == 404


def test_previews_of_a_runaway_template_share_one_time_limit_per_page(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    """Each render stops at its own limit, but a page listing many messages would still wait
    for every one of them: past the page's shared limit the rest are shown without preview."""
    csrf = sign_in(client, db, "admin")
    assert csrf
    # Stays under the step budget but does slow work in every step: only the clock stops it.
    slow = "{% set s = 'ab ' * 5000 %}{% for i in range(1000) %}{{ (s|wordwrap(79))|length }}"
    slow += "{% endfor %}"
    template_store.save_override(db, "day_before", "sms", "en", slow + SMS, user_id=None)
    db.commit()
    patient_id, course_id = _patient_with_course(db, seed)
    for n in range(12):
        _reminder(db, patient_id, course_id, ReminderStatus.PENDING, n)
    db.rollback()

    page = unescape(client.get(f"/courses/{course_id}/messages").get_data(as_text=True))
    assert "(no preview: The template took longer than 0.5 s to render.)" in page
    assert page.count("(no preview: No time is left for rendering more messages here.)") >= 6
