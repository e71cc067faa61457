"""The patient messages page: what each patient was (or would be) sent, staff only."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from flask.testing import FlaskClient

from scheduler.services import Placement
from tests.api.conftest import ADMIN_PASSWORD, Seed
from tests.api.test_auth import _csrf
from tests.committing import records, services

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_messages_page_shows_the_confirmation_as_the_patient_reads_it(
    client: FlaskClient, seed: Seed, db
) -> None:
    assert client.get("/messages").status_code == 302  # sign in first

    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": "MRN-77", "given_name": "Rosa",
         "family_name": "Delgado", "date_of_birth": date(1968, 9, 23),
         "phone": "+12125550177", "language": "es",
         "sms_consent": True},
        now=NOW,
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    proposal = services.propose_schedules(
        db, course.id, earliest=(NOW + timedelta(days=7)).date(), now=NOW
    ).schedules[0]
    services.book_course(
        db, course.id, [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions],
        now=NOW,
    )  # fmt: skip
    db.rollback()

    token = _csrf(client.get("/login").get_data(as_text=True))
    client.post(
        "/login",
        data={"email": "admin@example.org", "password": ADMIN_PASSWORD, "csrf_token": token},
    )
    page = client.get("/messages")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "confirmation" in html and "RD (MRN-77)" in html
    assert "Delgado" not in html  # initials and MRN only
    assert "SMS" in html and "pending" in html
    # Spanish patient: the preview is in Spanish.
    assert "Responda" in html or "responda" in html
