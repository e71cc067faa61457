"""Fixtures for end-to-end API tests: an app on each backend, staff tokens, reference data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from tests.committing import accounts, records
from web import create_app

ADMIN_PASSWORD = "admin-password-long-enough"
WEEKDAY_HOURS = {str(d): ["07:00", "19:00"] for d in range(5)}


@pytest.fixture
def app(settings: Settings, engine: sa.Engine) -> Flask:
    # `engine` empties the tables first; the app builds its own engine for the same URL.
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def db(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@dataclass(frozen=True)
class Seed:
    department_id: int
    linac_ids: tuple[int, int]
    protocol_id: int
    admin_id: int
    tokens: dict[str, str]  # role -> bearer token

    def auth(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def seed_reference_data(session: Session) -> Seed:
    """One New York department with two beam-matched SBRT linacs, a 5-fraction protocol and
    one user (with a token) per role, each a member of the department."""
    department = records.create_department(
        session,
        {"name": "Demo Radiation Oncology", "timezone": "America/New_York",
         "opening_hours": WEEKDAY_HOURS},
    )  # fmt: skip
    linacs = tuple(
        records.create_linac(
            session,
            {"department_id": department.id, "name": name,
             "capabilities": ["sbrt", "cbct", "gating"], "beam_group": "truebeam"},
        ).id
        for name in ("TrueBeam 1", "TrueBeam 2")
    )  # fmt: skip
    protocol = records.create_protocol(
        session,
        {"code": "liver5", "name": "Liver 5 fx", "site": "liver", "fractions": 5,
         "min_interval_days": 1, "max_interval_days": 3, "min_overall_days": 5,
         "max_overall_days": 15},
    )  # fmt: skip
    tokens: dict[str, str] = {}
    admin_id = 0
    for role in ("admin", "scheduler", "viewer"):
        user = accounts.create_user(
            session,
            email=f"{role}@example.org",
            name=role.title(),
            role=role,
            password=ADMIN_PASSWORD if role == "admin" else None,
            # Members of the test department, as staff of a department are; the access tests
            # make users of other departments and users of none.
            department_ids=[department.id],
        )
        admin_id = user.id if role == "admin" else admin_id
        tokens[role] = accounts.create_api_token(session, user.id, f"{role} test token")
    return Seed(department.id, linacs, protocol.id, admin_id, tokens)  # type: ignore[arg-type]


@pytest.fixture
def seed(db: Session) -> Seed:
    return seed_reference_data(db)


def draft_course_over_api(client: FlaskClient, seed: Seed, mrn: str, **patient: object) -> int:
    """A new patient (reached by email; ``patient`` adds fields) with a draft course of the
    seeded protocol, both made through the API as a scheduler; returns the course's id."""
    auth = seed.auth("scheduler")
    made = client.post(
        "/api/v1/patients",
        json={"department_id": seed.department_id, "mrn": mrn, "given_name": "Test",
              "family_name": f"Patient {mrn}", "date_of_birth": "1959-06-30",
              "email": f"{mrn.lower()}@example.org", **patient},
        headers=auth,
    )  # fmt: skip
    assert made.status_code == 201, made.json
    course = client.post(
        "/api/v1/courses",
        json={"patient_id": made.json["id"], "protocol_id": seed.protocol_id, "priority": 2},
        headers=auth,
    )
    assert course.status_code == 201, course.json
    assert course.json["status"] == "draft" and course.json["fractions"] == []
    return course.json["id"]
