"""The physicist roster through the API: read, replace, remove; bad input is a problem
document naming the field, and nothing stored changes."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry
from scheduler.timeutil import local_to_utc
from tests.api.conftest import Seed
from web.api.openapi import document as openapi_document

PROBLEM = "application/problem+json"
TZ = "America/New_York"
ROSTER = {
    "every_fraction": False,
    "blocks": [
        {"weekday": 0, "start": "08:00", "end": "12:00", "physicists": 2},
        {"weekday": 0, "start": "12:00", "end": "17:00", "physicists": 1},
    ],
    "exceptions": [{"day": "2099-03-02", "start": "08:00", "end": "17:00", "physicists": 0}],
}


def url(seed: Seed) -> str:
    return f"/api/v1/departments/{seed.department_id}/physicist-roster"


def test_a_department_starts_without_a_roster(client: FlaskClient, seed: Seed) -> None:
    response = client.get(url(seed), headers=seed.auth("viewer"))
    assert response.status_code == 200
    assert response.json["enabled"] is False
    assert response.json["blocks"] == []


def test_put_replaces_and_get_reads_back(client: FlaskClient, seed: Seed, db: Session) -> None:
    response = client.put(url(seed), json=ROSTER, headers=seed.auth("scheduler"))
    assert response.status_code == 200, response.json
    assert response.json["enabled"] is True
    assert response.json["uncovered"] == []
    got = client.get(url(seed), headers=seed.auth("viewer")).json
    assert got["blocks"] == ROSTER["blocks"]
    assert got["exceptions"] == ROSTER["exceptions"]
    entry = db.query(AuditEntry).filter_by(subject_type="physicist_roster").one()
    assert entry.subject_id == seed.department_id
    db.rollback()  # end the read, so the next request may write
    # Removing it.
    removed = client.put(url(seed), json={"enabled": False}, headers=seed.auth("scheduler"))
    assert removed.status_code == 200
    assert client.get(url(seed), headers=seed.auth("viewer")).json["enabled"] is False


def test_a_viewer_cannot_change_it(client: FlaskClient, seed: Seed) -> None:
    response = client.put(url(seed), json=ROSTER, headers=seed.auth("viewer"))
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"blocks": [{"weekday": 9, "start": "08:00", "end": "12:00", "physicists": 1}]},
         "blocks.0.weekday"),
        ({"blocks": [{"weekday": 0, "start": "8:00", "end": "12:00", "physicists": 1}]},
         "blocks.0.start"),
        ({"blocks": [{"weekday": 0, "start": "08:00", "end": "12:00", "physicists": -1}]},
         "blocks.0.physicists"),
        ({"blocks": [{"weekday": 0, "start": "13:00", "end": "12:00", "physicists": 1}]},
         "blocks[0].end"),
        ({"blocks": [{"weekday": 0, "start": "08:00", "end": "12:00", "physicists": 1},
                     {"weekday": 0, "start": "11:00", "end": "14:00", "physicists": 1}]},
         "blocks[1]"),
        ({"exceptions": [{"day": "2099-02-30", "start": "08:00", "end": "12:00",
                          "physicists": 1}]},
         "exceptions.0.day"),
        ({"staff": 3}, "staff"),
    ],
)  # fmt: skip
def test_bad_input_is_a_problem_naming_the_field_and_changes_nothing(
    client: FlaskClient, seed: Seed, body: dict, field: str
) -> None:
    assert client.put(url(seed), json=ROSTER, headers=seed.auth("scheduler")).status_code == 200
    response = client.put(url(seed), json=body, headers=seed.auth("scheduler"))
    assert response.status_code in (400, 422)
    assert response.mimetype == PROBLEM
    fields = {e["field"] for e in response.json["errors"]}
    assert any(f == field or f.endswith(field) for f in fields), fields
    assert client.get(url(seed), headers=seed.auth("viewer")).json["blocks"] == ROSTER["blocks"]


def test_not_json_is_a_problem(client: FlaskClient, seed: Seed) -> None:
    response = client.put(
        url(seed), data="blocks", content_type="text/plain", headers=seed.auth("scheduler")
    )
    assert 400 <= response.status_code < 500
    assert response.mimetype == PROBLEM


def test_proposals_follow_the_roster(client: FlaskClient, seed: Seed, db: Session) -> None:
    """The first fraction of every proposal lies in the only rostered hours."""
    afternoons = {
        "blocks": [
            {"weekday": d, "start": "14:00", "end": "16:00", "physicists": 1} for d in range(5)
        ]
    }
    assert client.put(url(seed), json=afternoons, headers=seed.auth("scheduler")).status_code == 200
    patient = client.post(
        "/api/v1/patients",
        json={
            "department_id": seed.department_id,
            "mrn": "MRN-PHYS-1",
            "given_name": "Ana",
            "family_name": "Lopez",
            "date_of_birth": "1961-02-03",
        },
        headers=seed.auth("scheduler"),
    )
    assert patient.status_code == 201, patient.json
    course = client.post(
        "/api/v1/courses",
        json={"patient_id": patient.json["id"], "protocol_id": seed.protocol_id},
        headers=seed.auth("scheduler"),
    )
    assert course.status_code == 201, course.json
    proposals = client.post(
        f"/api/v1/courses/{course.json['id']}/proposals",
        json={"count": 3, "earliest": "2099-03-02"},
        headers=seed.auth("scheduler"),
    )
    assert proposals.status_code == 200, proposals.json
    assert proposals.json["schedules"]
    for schedule in proposals.json["schedules"]:
        first = schedule["fractions"][0]
        starts = datetime.fromisoformat(first["starts_at"])
        day = date.fromisoformat(first["starts_at"][:10])
        assert local_to_utc(datetime.combine(day, time(14)), TZ) <= starts
        ends = datetime.fromisoformat(first["ends_at"])
        assert ends <= local_to_utc(datetime.combine(day, time(16)), TZ)


def test_openapi_documents_the_roster(app) -> None:
    with app.app_context():
        document = openapi_document()
    path = document["paths"]["/api/v1/departments/{department_id}/physicist-roster"]
    assert {"get", "put"} <= set(path)
    assert "PhysicistRosterIn" in document["components"]["schemas"]
