"""The patient's date of birth and the warning before booking a course near another course
of the same patient, through the JSON API (problem details for every refusal)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, BookingEvent, Department
from tests import factories
from tests.api.conftest import Seed

PROBLEM = "application/problem+json"
NEARBY_TYPE = "urn:sbrt-scheduler:problem:nearby-course-warning"
# Monday 2 March 2026, 07:00 in New York: the clock every test here runs at.
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clock():
    with time_machine.travel(NOW, tick=False):
        yield


def _patient(seed: Seed, mrn: str = "DOB-1", **changes) -> dict:
    return {
        "department_id": seed.department_id,
        "mrn": mrn,
        "given_name": "Ines",
        "family_name": "Ferreira",
        "date_of_birth": "1958-04-17",
        "email": f"{mrn.lower()}@example.org",
        **changes,
    }


def _errors(response) -> dict[str, str]:
    assert response.mimetype == PROBLEM, response.get_data(as_text=True)
    return {e["field"]: e["message"] for e in response.json["errors"]}


# --- date of birth ----------------------------------------------------------------------


def test_date_of_birth_is_stored_and_returned(client: FlaskClient, seed: Seed) -> None:
    created = client.post("/api/v1/patients", json=_patient(seed), headers=seed.auth("scheduler"))
    assert created.status_code == 201, created.json
    assert created.json["date_of_birth"] == "1958-04-17"
    fetched = client.get(f"/api/v1/patients/{created.json['id']}", headers=seed.auth("viewer"))
    assert fetched.json["date_of_birth"] == "1958-04-17"
    # Born today is a valid (if unusual) date of birth.
    today = client.post(
        "/api/v1/patients",
        json=_patient(seed, "DOB-2", date_of_birth="2026-03-02"),
        headers=seed.auth("scheduler"),
    )
    assert today.status_code == 201, today.json


def test_a_new_patient_needs_a_date_of_birth(client: FlaskClient, seed: Seed) -> None:
    body = _patient(seed)
    del body["date_of_birth"]
    response = client.post("/api/v1/patients", json=body, headers=seed.auth("scheduler"))
    assert response.status_code == 422
    assert "date_of_birth" in _errors(response)


@pytest.mark.parametrize(
    ("date_of_birth", "message"),
    [
        ("2026-03-03", "must not be in the future"),
        ("2031-01-01", "must not be in the future"),
        ("1899-12-31", "must be on or after 1900-01-01"),
        ("17/04/1958", None),
    ],
)
def test_a_bad_date_of_birth_is_a_problem_naming_the_field(
    client: FlaskClient, seed: Seed, db: Session, date_of_birth: str, message: str | None
) -> None:
    response = client.post(
        "/api/v1/patients",
        json=_patient(seed, date_of_birth=date_of_birth),
        headers=seed.auth("scheduler"),
    )
    assert response.status_code == 422
    assert response.json["status"] == 422 and response.json["type"].startswith("urn:")
    errors = _errors(response)
    assert "date_of_birth" in errors
    if message is not None:
        assert errors["date_of_birth"] == message
    db.rollback()
    assert db.scalar(sa.text("SELECT count(*) FROM patients")) == 0


def test_a_patient_registered_before_it_was_asked_gets_a_date_of_birth_later(
    client: FlaskClient, seed: Seed, db: Session
) -> None:
    department = db.get(Department, seed.department_id)
    legacy = factories.patient(db, department, date_of_birth=None)
    db.commit()
    auth = seed.auth("scheduler")
    shown = client.get(f"/api/v1/patients/{legacy.id}", headers=auth)
    assert shown.status_code == 200 and shown.json["date_of_birth"] is None
    # Other changes do not need it...
    renamed = client.patch(
        f"/api/v1/patients/{legacy.id}", json={"given_name": "Eva"}, headers=auth
    )
    assert renamed.status_code == 200, renamed.json
    # ...a future one is refused, a real one is kept...
    future = client.patch(
        f"/api/v1/patients/{legacy.id}", json={"date_of_birth": "2027-01-01"}, headers=auth
    )
    assert future.status_code == 422 and "date_of_birth" in _errors(future)
    recorded = client.patch(
        f"/api/v1/patients/{legacy.id}", json={"date_of_birth": "1950-10-05"}, headers=auth
    )
    assert recorded.status_code == 200 and recorded.json["date_of_birth"] == "1950-10-05"
    # ...and once recorded it cannot be removed.
    cleared = client.patch(
        f"/api/v1/patients/{legacy.id}", json={"date_of_birth": None}, headers=auth
    )
    assert cleared.status_code == 422 and "date_of_birth" in _errors(cleared)


def test_the_openapi_document_states_the_date_of_birth_and_the_acknowledgement(
    client: FlaskClient,
) -> None:
    document = client.get("/api/openapi.json").json
    schemas = document["components"]["schemas"]
    assert "date_of_birth" in schemas["PatientIn"]["required"]
    assert "date_of_birth" in schemas["PatientOut"]["properties"]
    assert "date_of_birth" in schemas["PatientPatch"]["properties"]
    assert "acknowledged_course_ids" in schemas["BookingIn"]["properties"]
    assert "nearby_courses" in schemas["Problem"]["properties"]
    booking = document["paths"]["/api/v1/courses/{course_id}/booking"]["post"]
    assert "nearby-course-warning" in booking["responses"]["409"]["description"]


# --- a second course for the same patient -----------------------------------------------


def _course(client: FlaskClient, seed: Seed, patient_id: int) -> int:
    course = client.post(
        "/api/v1/courses",
        json={"patient_id": patient_id, "protocol_id": seed.protocol_id},
        headers=seed.auth("scheduler"),
    )
    assert course.status_code == 201, course.json
    return course.json["id"]


def _week(seed: Seed, monday: str) -> dict:
    """Five daily fractions Monday to Friday at 10:00 local on the first linac."""
    day = int(monday[-2:])
    return {
        "fractions": [
            {
                "number": n + 1,
                "linac_id": seed.linac_ids[0],
                "starts_at": f"{monday[:-2]}{day + n:02d}T10:00:00",
            }
            for n in range(5)
        ]
    }


@pytest.fixture
def two_courses(client: FlaskClient, seed: Seed) -> tuple[int, int]:
    """A patient with a course booked Monday 9 to Friday 13 March, and a second draft."""
    patient = client.post("/api/v1/patients", json=_patient(seed), headers=seed.auth("scheduler"))
    assert patient.status_code == 201, patient.json
    first = _course(client, seed, patient.json["id"])
    second = _course(client, seed, patient.json["id"])
    booked = client.post(
        f"/api/v1/courses/{first}/booking",
        json=_week(seed, "2026-03-09"),
        headers=seed.auth("scheduler"),
    )
    assert booked.status_code == 201, booked.json
    return first, second


def test_a_second_course_within_seven_days_is_a_409_until_acknowledged(
    client: FlaskClient, seed: Seed, db: Session, two_courses: tuple[int, int]
) -> None:
    first, second = two_courses
    auth = seed.auth("scheduler")
    # Monday 16 March: three days after the first course ends.
    body = _week(seed, "2026-03-16")
    warned = client.post(f"/api/v1/courses/{second}/booking", json=body, headers=auth)
    assert warned.status_code == 409
    assert warned.mimetype == PROBLEM
    assert warned.json["type"] == NEARBY_TYPE
    assert [n["course_id"] for n in warned.json["nearby_courses"]] == [first]
    nearby = warned.json["nearby_courses"][0]
    assert nearby["days_apart"] == 3 and nearby["status"] == "booked"
    assert nearby["first_start"] == "2026-03-09T14:00:00Z"
    unbooked = client.get(f"/api/v1/courses/{second}", headers=auth).json
    assert unbooked["status"] == "draft" and unbooked["fractions"] == []

    acknowledged = client.post(
        f"/api/v1/courses/{second}/booking",
        json=body | {"acknowledged_course_ids": [first]},
        headers=auth,
    )
    assert acknowledged.status_code == 201, acknowledged.json
    assert acknowledged.json["status"] == "booked"

    event = db.scalars(
        sa.select(BookingEvent).where(
            BookingEvent.course_id == second, BookingEvent.kind == "course_booked"
        )
    ).one()
    assert event.payload["nearby_courses_acknowledged"] == [first]
    audit = db.scalars(
        sa.select(AuditEntry).where(AuditEntry.action == "book", AuditEntry.subject_id == second)
    ).one()
    assert audit.detail["acknowledged_nearby_courses"] == [first]


def test_overlapping_dates_warn_too(
    client: FlaskClient, seed: Seed, two_courses: tuple[int, int]
) -> None:
    first, second = two_courses
    body = _week(seed, "2026-03-09")
    for fraction in body["fractions"]:
        fraction["starts_at"] = fraction["starts_at"].replace("T10:00", "T15:00")
    warned = client.post(
        f"/api/v1/courses/{second}/booking", json=body, headers=seed.auth("scheduler")
    )
    assert warned.status_code == 409 and warned.json["type"] == NEARBY_TYPE
    assert [(n["course_id"], n["days_apart"]) for n in warned.json["nearby_courses"]] == [
        (first, 0)
    ]


def test_a_second_course_more_than_seven_days_away_books_without_a_warning(
    client: FlaskClient, seed: Seed, db: Session, two_courses: tuple[int, int]
) -> None:
    _, second = two_courses
    # Monday 23 March: ten days after the first course ends.
    booked = client.post(
        f"/api/v1/courses/{second}/booking",
        json=_week(seed, "2026-03-23"),
        headers=seed.auth("scheduler"),
    )
    assert booked.status_code == 201, booked.json
    event = db.scalars(
        sa.select(BookingEvent).where(
            BookingEvent.course_id == second, BookingEvent.kind == "course_booked"
        )
    ).one()
    assert event.payload["nearby_courses_acknowledged"] == []
