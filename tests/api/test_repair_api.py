"""Repairing a course through the API: incomplete courses, rebooking, prescription changes,
missed reasons and undoing a missed fraction. The clock is fixed, so the results never depend
on the day the tests run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry
from tests.api.conftest import Seed

PROBLEM = "application/problem+json"
# A Monday in early March 2026, 07:00 in New York: the whole course fits before the DST change.
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _booked_course(client: FlaskClient, seed: Seed, mrn: str) -> dict:
    auth = seed.auth("scheduler")
    patient = client.post(
        "/api/v1/patients",
        json={"department_id": seed.department_id, "mrn": mrn, "given_name": "Test",
              "family_name": f"Patient {mrn}", "email": f"{mrn.lower()}@example.org",
              "date_of_birth": "1960-05-17"},
        headers=auth,
    )  # fmt: skip
    assert patient.status_code == 201, patient.json
    course = client.post(
        "/api/v1/courses",
        json={"patient_id": patient.json["id"], "protocol_id": seed.protocol_id},
        headers=auth,
    )
    assert course.status_code == 201, course.json
    course_id = course.json["id"]
    proposed = client.post(f"/api/v1/courses/{course_id}/proposals", json={}, headers=auth)
    assert proposed.status_code == 200, proposed.json
    fractions = proposed.json["schedules"][0]["fractions"]
    booked = client.post(
        f"/api/v1/courses/{course_id}/booking",
        json={"fractions": [
            {"number": f["number"], "linac_id": f["linac_id"], "starts_at": f["starts_at"]}
            for f in fractions
        ]},
        headers=auth,
    )  # fmt: skip
    assert booked.status_code == 201, booked.json
    assert booked.json["incomplete"] is False and booked.json["missing_fractions"] == []
    assert booked.json["prescribed_fractions"] == 5
    return booked.json


def test_a_cancelled_fraction_is_rebooked_through_the_api(client: FlaskClient, seed: Seed) -> None:
    auth = seed.auth("scheduler")
    with time_machine.travel(NOW, tick=False):
        course = _booked_course(client, seed, "REBOOK-1")
        third = course["fractions"][2]
        cancelled = client.post(
            f"/api/v1/fractions/{third['id']}/cancel", json={"reason": "away"}, headers=auth
        )
        assert cancelled.status_code == 200, cancelled.json

        shown = client.get(f"/api/v1/courses/{course['id']}", headers=seed.auth("viewer"))
        assert shown.json["status"] == "incomplete"
        assert shown.json["incomplete"] is True and shown.json["missing_fractions"] == [3]
        listed = client.get("/api/v1/courses", query_string={"status": "incomplete"}, headers=auth)
        assert [c["id"] for c in listed.json] == [course["id"]]

        proposals = client.post(
            f"/api/v1/courses/{course['id']}/rebooking/proposals", json={"count": 2}, headers=auth
        )
        assert proposals.status_code == 200, proposals.json
        assert proposals.json["missing_fractions"] == [3]
        assert proposals.json["needs_clinician"] is False
        new = next(f for f in proposals.json["schedules"][0]["fractions"] if f["number"] == 3)

        wrong = client.post(
            f"/api/v1/courses/{course['id']}/rebooking",
            json={"fractions": [{"number": 4, "linac_id": new["linac_id"],
                                 "starts_at": new["starts_at"]}]},
            headers=auth,
        )  # fmt: skip
        assert wrong.status_code == 422 and wrong.mimetype == PROBLEM
        assert wrong.json["errors"][0]["field"] == "fractions"

        rebooked = client.post(
            f"/api/v1/courses/{course['id']}/rebooking",
            # A naive local time: the department's zone is implied.
            json={"fractions": [{"number": 3, "linac_id": new["linac_id"],
                                 "starts_at": new["local_start"][:19]}]},
            headers=auth,
        )  # fmt: skip
        assert rebooked.status_code == 201, rebooked.json
        assert rebooked.json["status"] == "booked" and rebooked.json["incomplete"] is False
        active = [f for f in rebooked.json["fractions"] if f["status"] in ("tentative", "booked")]
        assert sorted(f["number"] for f in active) == [1, 2, 3, 4, 5]

        again = client.post(
            f"/api/v1/courses/{course['id']}/rebooking/proposals", json={}, headers=auth
        )
        assert again.status_code == 409 and again.mimetype == PROBLEM


def test_a_prescription_change_needs_a_reason_and_a_possible_count(
    client: FlaskClient, seed: Seed
) -> None:
    auth = seed.auth("scheduler")
    with time_machine.travel(NOW, tick=False):
        course = _booked_course(client, seed, "RX-1")
        fifth = course["fractions"][4]
        client.post(f"/api/v1/fractions/{fifth['id']}/cancel", json={"reason": "tox"}, headers=auth)
        url = f"/api/v1/courses/{course['id']}/prescription"

        no_reason = client.put(url, json={"fractions": 4, "reason": ""}, headers=auth)
        assert no_reason.status_code == 422 and no_reason.mimetype == PROBLEM
        too_few = client.put(url, json={"fractions": 2, "reason": "dose"}, headers=auth)
        assert too_few.status_code == 422 and too_few.mimetype == PROBLEM
        assert too_few.json["errors"][0]["field"] == "fractions"
        viewer = client.put(url, json={"fractions": 4, "reason": "x"}, headers=seed.auth("viewer"))
        assert viewer.status_code == 403

        changed = client.put(
            url, json={"fractions": 4, "reason": "four fractions agreed"}, headers=auth
        )
        assert changed.status_code == 200, changed.json
        assert changed.json["status"] == "booked" and changed.json["incomplete"] is False
        assert changed.json["prescribed_fractions"] == 4
        assert changed.json["prescription_reason"] == "four fractions agreed"


def test_missed_needs_a_reason_and_can_be_undone_only_that_day(
    client: FlaskClient, seed: Seed, db: Session
) -> None:
    auth = seed.auth("scheduler")
    with time_machine.travel(NOW, tick=False):
        course = _booked_course(client, seed, "MISS-API-1")
    second, third = course["fractions"][1], course["fractions"][2]
    during = datetime.fromisoformat(second["starts_at"]) + timedelta(minutes=20)
    with time_machine.travel(during, tick=False):
        url = f"/api/v1/fractions/{second['id']}/missed"
        assert client.post(url, json={}, headers=auth).status_code == 422
        other = client.post(url, json={"reason": "other"}, headers=auth)
        assert other.status_code == 422 and other.mimetype == PROBLEM
        assert other.json["errors"][0]["field"] == "reason_text"
        unknown = client.post(url, json={"reason": "late"}, headers=auth)
        assert unknown.status_code == 422 and unknown.mimetype == PROBLEM

        missed = client.post(url, json={"reason": "unwell", "reason_text": "fever"}, headers=auth)
        assert missed.status_code == 200, missed.json
        assert missed.json["missed"]["missed_reason"] == "unwell"
        assert missed.json["missed"]["status_reason"] == "patient unwell: fever"
        assert missed.json["rebooked"] is not None

        undone = client.post(f"{url}/undo", headers=auth)
        assert undone.status_code == 200, undone.json
        assert undone.json["status"] == "booked" and undone.json["missed_reason"] is None
    entry = db.scalars(sa.select(AuditEntry).where(AuditEntry.action == "undo_missed")).one()
    assert entry.subject_id == second["id"] and entry.actor_id is not None
    db.rollback()  # on SQLite an open transaction holds the write lock the app needs

    during = datetime.fromisoformat(third["starts_at"]) + timedelta(minutes=20)
    with time_machine.travel(during, tick=False):
        url = f"/api/v1/fractions/{third['id']}/missed"
        missed = client.post(url, json={"reason": "did_not_attend"}, headers=auth)
        assert missed.status_code == 200, missed.json
    with time_machine.travel(during + timedelta(days=1), tick=False):
        late = client.post(f"{url}/undo", headers=auth)
        assert late.status_code == 409 and late.mimetype == PROBLEM
        assert "only on that day" in late.json["detail"]
