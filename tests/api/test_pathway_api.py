"""The pathway before treatment through the API: resources, proposing and booking a course's
pathway with the slots a proposal gave, a taken slot, cancelling, and problem details for bad
input."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from tests.api.conftest import Seed
from tests.committing import records

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # Monday 07:00 in New York
PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def _course(db: Session, seed: Seed, mrn: str) -> int:
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": mrn, "given_name": "Test",
         "family_name": mrn, "date_of_birth": date(1950, 1, 1)},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    return course.id


def _resources(client: FlaskClient, seed: Seed) -> dict[str, int]:
    made = {}
    for kind, name in (("ct_sim", "CT sim"), ("ir_room", "IR 1")):
        answer = client.post(
            "/api/v1/resources",
            json={"department_id": seed.department_id, "kind": kind, "name": name},
            headers=seed.auth(),
        )
        assert answer.status_code == 201, answer.json
        made[kind] = answer.json["id"]
    return made


def test_resources_are_admin_records(client: FlaskClient, seed: Seed) -> None:
    made = _resources(client, seed)
    listed = client.get(
        "/api/v1/resources",
        query_string={"department_id": seed.department_id, "kind": "ir_room"},
        headers=seed.auth("viewer"),
    )
    assert [r["id"] for r in listed.json] == [made["ir_room"]]
    patched = client.patch(
        f"/api/v1/resources/{made['ct_sim']}",
        json={"opening_hours": {"5": ["08:00", "12:00"]}},
        headers=seed.auth(),
    )
    assert patched.status_code == 200
    assert patched.json["opening_hours"] == {"5": ["08:00", "12:00"]}
    refused = client.post(
        "/api/v1/resources",
        json={"department_id": seed.department_id, "kind": "ct_sim", "name": "CT 2"},
        headers=seed.auth("scheduler"),
    )
    assert refused.status_code == 403
    for body, field in (
        ({"department_id": seed.department_id, "kind": "mri", "name": "MR"}, "kind"),
        ({"department_id": seed.department_id, "kind": "ct_sim", "name": "CT sim"}, "name"),
    ):
        bad = client.post("/api/v1/resources", json=body, headers=seed.auth())
        assert bad.status_code == 422 and bad.content_type == PROBLEM
        assert field in {e["field"].split(".")[0] for e in bad.json["errors"]}, bad.json


def test_propose_then_book_the_proposed_slots(client: FlaskClient, seed: Seed, db: Session):
    made = _resources(client, seed)
    course_id = _course(db, seed, "PATH-1")
    proposal = client.post(
        f"/api/v1/courses/{course_id}/pathway/proposals",
        json={"fiducials_days_before_ct": 3, "planning_working_days": 4},
        headers=seed.auth("scheduler"),
    )
    assert proposal.status_code == 200, proposal.json
    steps = proposal.json["steps"]
    # The seed's protocol is a liver protocol: fiducials by default.
    assert [s["kind"] for s in steps] == ["fiducials", "ct_sim", "planning"]
    assert steps[0]["resource_id"] == made["ir_room"]
    assert steps[0]["local_start"].startswith("2026-03-02T07:00:00")
    assert steps[1]["local_start"].startswith("2026-03-05T07:00:00")  # Thursday
    # Four working days after Thursday 5 March: Fri, Mon, Tue, Wed.
    assert proposal.json["ready_on"] == steps[2]["ready_on"] == "2026-03-11"

    body = {
        "fiducials_days_before_ct": 3,
        "planning_working_days": 4,
        "fiducials_slot": {"resource_id": made["ir_room"], "starts_at": steps[0]["starts_at"]},
        # A naive time is the department's local time.
        "ct_sim_slot": {"resource_id": made["ct_sim"], "starts_at": "2026-03-05T07:00:00"},
    }
    booked = client.post(
        f"/api/v1/courses/{course_id}/pathway", json=body, headers=seed.auth("scheduler")
    )
    assert booked.status_code == 201, booked.json
    assert booked.json["ready_on"] == booked.json["ready_to_treat_on"] == "2026-03-11"
    assert [(s["kind"], s["status"]) for s in booked.json["steps"]] == [
        ("fiducials", "booked"),
        ("ct_sim", "booked"),
        ("planning", "booked"),
    ]
    course = client.get(f"/api/v1/courses/{course_id}", headers=seed.auth("viewer"))
    assert course.json["ready_to_treat_on"] == "2026-03-11"
    shown = client.get(f"/api/v1/courses/{course_id}/pathway", headers=seed.auth("viewer"))
    assert shown.json == booked.json

    # Another course asking for the same CT time: the slot is taken.
    other = _course(db, seed, "PATH-2")
    taken = client.post(
        f"/api/v1/courses/{other}/pathway",
        json={**body, "fiducials": True},
        headers=seed.auth("scheduler"),
    )
    assert taken.status_code == 409 and taken.content_type == PROBLEM
    assert "booked" in taken.json["detail"]
    # Booking the same course twice is a state conflict; cancelling frees it.
    again = client.post(
        f"/api/v1/courses/{course_id}/pathway", json={}, headers=seed.auth("scheduler")
    )
    assert again.status_code == 409
    cancelled = client.post(
        f"/api/v1/courses/{course_id}/pathway/cancel", headers=seed.auth("scheduler")
    )
    assert cancelled.status_code == 200
    assert {s["status"] for s in cancelled.json["steps"]} == {"cancelled"}
    assert cancelled.json["ready_on"] is None


def test_bad_input_is_a_problem_and_stores_nothing(client: FlaskClient, seed: Seed, db: Session):
    ct = _resources(client, seed)["ct_sim"]
    course_id = _course(db, seed, "PATH-3")
    url = f"/api/v1/courses/{course_id}/pathway"
    for body in (
        {"ct_sim_minutes": 30},
        {"planning_working_days": 0},
        {"fiducials": [True]},
        {"colour": "red"},
        {"ct_sim_slot": {"resource_id": ct}},
        {"ct_sim_slot": {"resource_id": 424242, "starts_at": "2026-03-09T09:00:00"},
         "fiducials": False},
        # Sunday: the CT simulator keeps the department's weekday hours.
        {"ct_sim_slot": {"resource_id": ct, "starts_at": "2026-03-08T09:00:00"},
         "fiducials": False},
    ):  # fmt: skip
        answer = client.post(url, json=body, headers=seed.auth("scheduler"))
        assert answer.status_code == 422, (body, answer.json)
        assert answer.content_type == PROBLEM
    shown = client.get(f"{url}", headers=seed.auth("viewer"))
    assert shown.json["steps"] == [] and shown.json["ready_to_treat_on"] is None
    cancel = client.post(f"{url}/cancel", headers=seed.auth("scheduler"))
    assert cancel.status_code == 409 and cancel.content_type == PROBLEM
    missing = client.post(
        "/api/v1/courses/424242/pathway/proposals", json={}, headers=seed.auth("scheduler")
    )
    assert missing.status_code == 404
