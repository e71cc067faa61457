"""Proposals through the API: a late or impossible start comes with its cause and code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

import time_machine
from flask.testing import FlaskClient

from scheduler.search import EXPLANATION_CODES
from tests.api.conftest import Seed
from web.api.schemas import ExplanationCode

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # Monday, 07:00 in New York


def _course(client: FlaskClient, seed: Seed) -> int:
    auth = seed.auth("scheduler")
    patient = client.post(
        "/api/v1/patients",
        json={"department_id": seed.department_id, "mrn": "WHY-1", "given_name": "Test",
              "family_name": "Patient", "email": "why-1@example.org",
              "date_of_birth": "1962-01-30"},
        headers=auth,
    )  # fmt: skip
    assert patient.status_code == 201, patient.json
    course = client.post(
        "/api/v1/courses",
        json={"patient_id": patient.json["id"], "protocol_id": seed.protocol_id},
        headers=auth,
    )
    assert course.status_code == 201, course.json
    return course.json["id"]


def test_a_late_start_names_the_downtime(client: FlaskClient, seed: Seed) -> None:
    with time_machine.travel(NOW, tick=False):
        course_id = _course(client, seed)
        for linac_id in seed.linac_ids:
            down = client.post(
                f"/api/v1/linacs/{linac_id}/downtimes",
                json={"starts_at": "2026-03-02T00:00:00", "ends_at": "2026-03-23T00:00:00",
                      "kind": "planned", "reason": "upgrade"},
                headers=seed.auth("admin"),
            )  # fmt: skip
            assert down.status_code == 200, down.json
        response = client.post(
            f"/api/v1/courses/{course_id}/proposals",
            json={"earliest": "2026-03-02"},
            headers=seed.auth("scheduler"),
        )
    assert response.status_code == 200, response.json
    assert response.json["schedules"]
    assert response.json["schedules"][0]["fractions"][0]["local_start"].startswith("2026-03-23")
    assert response.json["explanation"] == {
        "code": "linac_downtime",
        "message": "TrueBeam 1 and TrueBeam 2 down 2–22 March (upgrade); "
        "earliest possible start 23 March",
        "earliest_feasible": "2026-03-23",
    }


def test_the_explanation_codes_are_documented(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").json
    code = document["components"]["schemas"]["ExplanationOut"]["properties"]["code"]
    assert set(code["enum"]) == EXPLANATION_CODES == set(get_args(ExplanationCode))
    assert "linac_downtime" in code["description"]
