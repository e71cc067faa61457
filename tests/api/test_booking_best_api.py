"""Booking the best option in one request: `{"best": true}` on the booking endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, Fraction
from tests.api.conftest import Seed, draft_course_over_api
from tests.committing import records

PROBLEM = "application/problem+json"
NEW_YORK = ZoneInfo("America/New_York")


def _week_ahead(now: datetime) -> str:
    # A week ahead of the department's today, so the time of day the test runs does not
    # decide which slots are left today.
    return (now.astimezone(NEW_YORK).date() + timedelta(days=7)).isoformat()


def _best(client: FlaskClient, seed: Seed, course_id: int, **body: object):  # type: ignore[no-untyped-def]
    return client.post(
        f"/api/v1/courses/{course_id}/booking",
        json={"best": True, **body},
        headers=seed.auth("scheduler"),
    )


@pytest.mark.pinned_dates
def test_best_option_books_one_of_the_equally_best_proposals(
    client: FlaskClient, seed: Seed, db: Session, now: datetime
) -> None:
    course_id = draft_course_over_api(client, seed, "BEST-1")
    earliest = _week_ahead(now)
    window = {"start": "08:00", "end": "12:00"}
    proposed = client.post(
        f"/api/v1/courses/{course_id}/proposals",
        json={"count": 4, "earliest": earliest, "preferred_window": window},
        headers=seed.auth("scheduler"),
    ).json["schedules"]
    best_total = proposed[0]["score"]["total"]
    equally_best = [
        [(f["linac_id"], f["starts_at"]) for f in p["fractions"]]
        for p in proposed
        if p["score"]["total"] == best_total
    ]

    booked = _best(client, seed, course_id, earliest=earliest, preferred_window=window)

    assert booked.status_code == 201, booked.json
    assert booked.json["status"] == "booked"
    placed = [(f["linac_id"], f["starts_at"]) for f in booked.json["fractions"]]
    assert placed in equally_best
    first = datetime.fromisoformat(booked.json["fractions"][0]["local_start"])
    assert 8 <= first.hour < 12
    # Audited like a booking, saying the server chose and that nobody else got in between.
    entry = db.scalars(
        sa.select(AuditEntry).where(AuditEntry.action == "book", AuditEntry.subject_id == course_id)
    ).one()
    assert entry.detail["best_option"] is True and entry.detail["lost_races"] == 0


def test_best_option_needs_either_placements_or_best(
    client: FlaskClient, seed: Seed, db: Session
) -> None:
    course_id = draft_course_over_api(client, seed, "BEST-2")
    placement = {"number": 1, "linac_id": seed.linac_ids[0], "starts_at": "2030-01-07T09:00"}
    for body in (
        {},
        {"best": False},
        {"best": True, "fractions": [placement]},
        {"best": True, "override_reason": "clinician asked"},
        {"fractions": [placement], "earliest": "2030-01-07"},
        {"fractions": [placement], "preferred_window": {"start": "08:00", "end": "12:00"}},
    ):
        response = client.post(
            f"/api/v1/courses/{course_id}/booking", json=body, headers=seed.auth("scheduler")
        )
        assert response.status_code == 422, (body, response.json)
        assert response.mimetype == PROBLEM
    assert db.scalar(sa.select(sa.func.count()).select_from(Fraction)) == 0


def test_nothing_to_book_is_a_409_naming_the_cause(
    client: FlaskClient, seed: Seed, db: Session
) -> None:
    # No linac of the department has what this protocol needs.
    protocol = records.create_protocol(
        db,
        {"code": "needs-mr", "name": "Needs MR guidance", "site": "liver", "fractions": 3,
         "min_interval_days": 1, "max_interval_days": 3, "capabilities": ["sbrt", "mr_guided"]},
    )  # fmt: skip
    patient = client.post(
        "/api/v1/patients",
        json={"department_id": seed.department_id, "mrn": "BEST-3", "given_name": "Test",
              "family_name": "Patient", "date_of_birth": "1960-01-02",
              "email": "best3@example.org"},
        headers=seed.auth("scheduler"),
    ).json  # fmt: skip
    course = client.post(
        "/api/v1/courses",
        json={"patient_id": patient["id"], "protocol_id": protocol.id},
        headers=seed.auth("scheduler"),
    ).json

    response = _best(client, seed, course["id"])

    assert response.status_code == 409, response.json
    assert response.mimetype == PROBLEM
    assert response.json["type"] == "urn:sbrt-scheduler:problem:no-schedule-available"
    assert response.json["explanation"]["code"] == "no_capable_linac"
    assert "MR_GUIDED" in response.json["explanation"]["message"]
    assert (
        client.get(f"/api/v1/courses/{course['id']}", headers=seed.auth("viewer")).json["status"]
        == "draft"
    )


@pytest.mark.pinned_dates
def test_best_option_asks_for_a_nearby_course_to_be_acknowledged(
    client: FlaskClient, seed: Seed, now: datetime
) -> None:
    first = draft_course_over_api(client, seed, "BEST-4")
    earliest = _week_ahead(now)
    assert _best(client, seed, first, earliest=earliest).status_code == 201
    patient_id = client.get(f"/api/v1/courses/{first}", headers=seed.auth("viewer")).json[
        "patient_id"
    ]
    second = client.post(
        "/api/v1/courses",
        json={"patient_id": patient_id, "protocol_id": seed.protocol_id},
        headers=seed.auth("scheduler"),
    ).json["id"]

    warned = _best(client, seed, second, earliest=earliest)
    assert warned.status_code == 409, warned.json
    assert warned.json["type"] == "urn:sbrt-scheduler:problem:nearby-course-warning"
    assert [n["course_id"] for n in warned.json["nearby_courses"]] == [first]

    booked = _best(client, seed, second, earliest=earliest, acknowledged_course_ids=[first])
    assert booked.status_code == 201, booked.json
    again = _best(client, seed, second, earliest=earliest, acknowledged_course_ids=[first])
    assert again.status_code == 409 and again.json["type"].endswith(":state-conflict")


def test_best_option_is_for_schedulers(client: FlaskClient, seed: Seed) -> None:
    course_id = draft_course_over_api(client, seed, "BEST-5")
    response = client.post(
        f"/api/v1/courses/{course_id}/booking", json={"best": True}, headers=seed.auth("viewer")
    )
    assert response.status_code == 403


def test_the_openapi_document_describes_the_best_option(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").json
    booking = document["components"]["schemas"]["BookingIn"]["properties"]
    assert {"best", "earliest", "preferred_window", "fractions"} <= set(booking)
    post = document["paths"]["/api/v1/courses/{course_id}/booking"]["post"]
    assert "best" in post["description"] and "no-schedule-available" in post["description"]
    assert "explanation" in document["components"]["schemas"]["Problem"]["properties"]


def test_the_best_option_is_in_utc_like_every_booking(
    client: FlaskClient, seed: Seed, now: datetime
) -> None:
    course_id = draft_course_over_api(client, seed, "BEST-6")
    booked = _best(client, seed, course_id, earliest=_week_ahead(now))
    assert booked.status_code == 201, booked.json
    starts = [datetime.fromisoformat(f["starts_at"]) for f in booked.json["fractions"]]
    assert all(s.utcoffset() == timedelta(0) for s in starts)
    assert min(starts) > datetime.now(UTC)
