"""Typed text and identifiers that must be refused through the API: line breaks, control and
invisible characters in names, numbers that would cost money or reach nobody, time zones that are
not places, lookalike staff addresses. Each is a 422 problem naming the field, and nothing stored
changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import Department, Linac, Patient, User
from tests.api.conftest import Seed

PROBLEM = "application/problem+json"

# Each is something no person types on purpose but that pasted text or a hostile client carries.
HIDDEN_CHARACTERS = {
    "line feed": "TrueBeam\nA",
    "carriage return": "TrueBeam\rA",
    "tab": "TrueBeam\tA",
    "NUL": "TrueBeam\x00A",
    "C1 control": "TrueBeam\x85A",
    "right-to-left override": "Smith\u202eHTIMS",
    "first-strong isolate": "Smith\u2068",
    "zero-width space": "MRN\u200b001",
    "zero-width joiner": "MRN\u200d001",
    "word joiner": "MRN\u2060001",
    "byte order mark": "\ufeffMRN001",
    "line separator": "TrueBeam\u2028A",
}


def _refused(response, field: str) -> str:
    assert response.status_code == 422, response.json
    assert response.mimetype == PROBLEM
    messages = [e["message"] for e in response.json["errors"] if e["field"] == field]
    assert messages, response.json
    return messages[0]


def _patient(seed: Seed, **changes) -> dict:
    return {
        "department_id": seed.department_id,
        "mrn": "MRN-0001",
        "given_name": "Ana",
        "family_name": "Lopez",
        "date_of_birth": "1961-02-03",
        "phone": "+14155552671",
        "language": "es",
        **changes,
    }


@pytest.mark.parametrize("text", HIDDEN_CHARACTERS.values(), ids=HIDDEN_CHARACTERS.keys())
def test_a_linac_name_with_hidden_characters_is_refused(
    client: FlaskClient, seed: Seed, db: Session, text: str
) -> None:
    response = client.post(
        "/api/v1/linacs",
        json={"department_id": seed.department_id, "name": text, "capabilities": ["sbrt"]},
        headers=seed.auth(),
    )
    _refused(response, "name")
    renamed = client.patch(
        f"/api/v1/linacs/{seed.linac_ids[0]}", json={"name": text}, headers=seed.auth()
    )
    _refused(renamed, "name")
    assert db.get(Linac, seed.linac_ids[0]).name == "TrueBeam 1"


@pytest.mark.parametrize("field", ["mrn", "given_name", "family_name"])
@pytest.mark.parametrize("text", HIDDEN_CHARACTERS.values(), ids=HIDDEN_CHARACTERS.keys())
def test_patient_names_and_mrn_with_hidden_characters_are_refused(
    client: FlaskClient, seed: Seed, db: Session, field: str, text: str
) -> None:
    response = client.post(
        "/api/v1/patients", json=_patient(seed, **{field: text}), headers=seed.auth("scheduler")
    )
    assert "character" in _refused(response, field) or "one line" in _refused(response, field)
    assert db.query(Patient).count() == 0


def test_a_patient_rename_with_a_bidi_override_keeps_the_stored_name(
    client: FlaskClient, seed: Seed, db: Session
) -> None:
    created = client.post("/api/v1/patients", json=_patient(seed), headers=seed.auth("scheduler"))
    assert created.status_code == 201, created.json
    patient_id = created.json["id"]
    response = client.patch(
        f"/api/v1/patients/{patient_id}",
        json={"family_name": "Lopez\u202ezepoL"},
        headers=seed.auth("scheduler"),
    )
    assert "U+202E" in _refused(response, "family_name")
    db.expire_all()
    assert db.get(Patient, patient_id).family_name == "Lopez"


def test_department_protocol_and_closure_text_with_line_breaks_is_refused(
    client: FlaskClient, seed: Seed, db: Session
) -> None:
    department = client.patch(
        f"/api/v1/departments/{seed.department_id}",
        json={"name": "Radiation\r\nOncology"},
        headers=seed.auth(),
    )
    _refused(department, "name")
    protocol = client.patch(
        f"/api/v1/protocols/{seed.protocol_id}", json={"name": "Liver\n5 fx"}, headers=seed.auth()
    )
    _refused(protocol, "name")
    closure = client.post(
        f"/api/v1/departments/{seed.department_id}/closures",
        json={"day": "2031-07-04", "reason": "Holiday\u200b"},
        headers=seed.auth(),
    )
    _refused(closure, "reason")
    assert db.get(Department, seed.department_id).name == "Demo Radiation Oncology"


def test_course_notes_keep_line_breaks_but_not_invisible_characters(
    client: FlaskClient, seed: Seed
) -> None:
    patient = client.post("/api/v1/patients", json=_patient(seed), headers=seed.auth("scheduler"))
    body = {"patient_id": patient.json["id"], "protocol_id": seed.protocol_id}
    refused = client.post(
        "/api/v1/courses",
        json={**body, "notes": "Fiducials placed\u202e"},
        headers=seed.auth("scheduler"),
    )
    _refused(refused, "notes")
    kept = client.post(
        "/api/v1/courses",
        json={**body, "notes": "Fiducials placed.\nCheck\tbreath hold."},
        headers=seed.auth("scheduler"),
    )
    assert kept.status_code == 201, kept.json
    assert kept.json["notes"] == "Fiducials placed.\nCheck\tbreath hold."


def test_a_downtime_reason_with_a_line_break_is_refused(
    client: FlaskClient, seed: Seed, now: datetime
) -> None:
    start = (now + timedelta(days=30)).astimezone(UTC).replace(microsecond=0)
    response = client.post(
        f"/api/v1/linacs/{seed.linac_ids[0]}/downtimes",
        json={
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=4)).isoformat(),
            "reason": "Service\nEND:VEVENT",
        },
        headers=seed.auth(),
    )
    _refused(response, "reason")
    listed = client.get(f"/api/v1/linacs/{seed.linac_ids[0]}/downtimes", headers=seed.auth())
    assert listed.json == []


@pytest.mark.parametrize(
    ("phone", "kind"),
    [
        ("+19005550100", "premium-rate"),  # US 900
        ("+448712345678", "premium-rate"),  # UK 0871
        ("+34902123456", "shared-cost"),  # Spain 902
        ("+447031234567", "personal"),  # UK 070 "personal numbers" forward anywhere, at a price
        ("+447640123456", "pager"),
    ],
)
def test_patient_phone_numbers_that_cost_money_or_reach_nobody_are_refused(
    client: FlaskClient, seed: Seed, db: Session, phone: str, kind: str
) -> None:
    response = client.post(
        "/api/v1/patients",
        json=_patient(seed, phone=phone, sms_consent=True),
        headers=seed.auth("scheduler"),
    )
    message = _refused(response, "phone")
    assert kind in message and "own mobile or landline" in message
    assert db.query(Patient).count() == 0


def test_a_department_phone_may_not_be_premium_rate(client: FlaskClient, seed: Seed) -> None:
    response = client.patch(
        f"/api/v1/departments/{seed.department_id}",
        json={"phone": "+19005550100"},
        headers=seed.auth(),
    )
    assert "premium-rate" in _refused(response, "phone")


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules", "posix/Europe/Madrid"])
def test_time_zones_that_are_not_places_are_refused(
    client: FlaskClient, seed: Seed, db: Session, zone: str
) -> None:
    patient = client.post(
        "/api/v1/patients", json=_patient(seed, timezone=zone), headers=seed.auth("scheduler")
    )
    _refused(patient, "timezone")
    department = client.patch(
        f"/api/v1/departments/{seed.department_id}", json={"timezone": zone}, headers=seed.auth()
    )
    _refused(department, "timezone")
    assert db.get(Department, seed.department_id).timezone == "America/New_York"


def test_a_legacy_zone_alias_is_still_accepted(client: FlaskClient, seed: Seed) -> None:
    # Records may have been stored with one; refusing it would make them uneditable.
    response = client.post(
        "/api/v1/patients", json=_patient(seed, timezone="US/Central"), headers=seed.auth()
    )
    assert response.status_code == 201, response.json


@pytest.mark.parametrize(
    "email",
    [
        "\u0430dmin@clinic.example",  # Cyrillic a
        "admin@cl\u0456nic.example",  # Cyrillic i in the domain
        "\uff41dmin@clinic.example",  # fullwidth a, which NFKC would fold to "a"
        "jos\u00e9@clinic.example",
    ],
)
def test_staff_accounts_refuse_non_ascii_lookalike_emails(
    client: FlaskClient, seed: Seed, db: Session, email: str
) -> None:
    response = client.post(
        "/api/v1/users",
        json={"email": email, "name": "Lookalike", "role": "viewer"},
        headers=seed.auth(),
    )
    assert "lookalike" in _refused(response, "email")
    assert db.query(User).filter(User.name == "Lookalike").count() == 0


def test_staff_names_with_line_breaks_are_refused(client: FlaskClient, seed: Seed) -> None:
    response = client.post(
        "/api/v1/users",
        json={"email": "new@example.org", "name": "New\nUser", "role": "viewer"},
        headers=seed.auth(),
    )
    _refused(response, "name")
    renamed = client.patch(
        f"/api/v1/users/{seed.admin_id}", json={"name": "Admin\u202e"}, headers=seed.auth()
    )
    _refused(renamed, "name")
