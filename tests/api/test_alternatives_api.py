"""GET /api/v1/fractions/{id}/alternatives: valid moves around the fraction's own date."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.alternatives import KINDS
from scheduler.models import Department, Protocol
from scheduler.services import Placement
from scheduler.timeutil import local_to_utc
from tests import factories
from tests.api.conftest import Seed
from tests.committing import services

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # Monday, 07:00 in New York
TZ = "America/New_York"


def _book(db: Session, seed: Seed, days: list[date], clock: time) -> list[int]:
    """A course booked on ``days`` at local ``clock`` on the first linac; fraction ids."""
    department = db.get(Department, seed.department_id)
    protocol = db.get(Protocol, seed.protocol_id)
    assert department is not None and protocol is not None
    course = factories.course(db, factories.patient(db, department), protocol)
    db.commit()
    placements = [
        Placement(n, seed.linac_ids[0], local_to_utc(datetime.combine(d, clock), TZ))
        for n, d in enumerate(days, start=1)
    ]
    booked = services.book_course(db, course.id, placements, now=NOW)
    ids = [f.id for f in sorted(booked.fractions, key=lambda f: f.number)]
    db.rollback()  # end the read: on SQLite it would hold the lock the app needs
    return ids


def test_a_fraction_ten_weeks_ahead_has_alternatives(
    client: FlaskClient, seed: Seed, db: Session
) -> None:
    monday = date(2026, 5, 11)
    ids = _book(db, seed, [monday + timedelta(days=i) for i in range(5)], time(10, 0))
    with time_machine.travel(NOW, tick=False):
        response = client.get(
            f"/api/v1/fractions/{ids[2]}/alternatives", headers=seed.auth("viewer")
        )
    assert response.status_code == 200, response.json
    offered = {(a["linac_id"], a["local_start"][:16]) for a in response.json}
    wednesday = "2026-05-13"
    # The same day two hours later, and the beam-matched partner at the same time.
    assert (seed.linac_ids[0], f"{wednesday}T12:00") in offered
    assert (seed.linac_ids[1], f"{wednesday}T10:00") in offered
    # Never the placement it already has.
    assert (seed.linac_ids[0], f"{wednesday}T10:00") not in offered
    assert all(a["number"] == 3 for a in response.json)
    kinds = {(a["linac_id"], a["local_start"][:16]): a["kind"] for a in response.json}
    assert kinds[(seed.linac_ids[1], f"{wednesday}T10:00")] == "partner_same_time"
    assert kinds[(seed.linac_ids[0], f"{wednesday}T12:00")] == "same_day_other_time"


def test_the_kinds_are_documented(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").json
    kind = document["components"]["schemas"]["AlternativeOut"]["properties"]["kind"]
    assert set(kind["enum"]) == set(KINDS)


def test_alternatives_remain_after_an_override_move(
    client: FlaskClient, seed: Seed, db: Session
) -> None:
    ids = _book(db, seed, [date(2026, 3, 9) + timedelta(days=i) for i in range(5)], time(10, 0))
    with time_machine.travel(NOW, tick=False):
        moved = client.post(
            f"/api/v1/fractions/{ids[4]}/move",
            json={"linac_id": seed.linac_ids[0], "starts_at": "2026-03-20T10:00:00",
                  "override_reason": "patient travels; agreed by Dr X"},
            headers=seed.auth("scheduler"),
        )  # fmt: skip
        assert moved.status_code == 200, moved.json
        response = client.get(
            f"/api/v1/fractions/{ids[1]}/alternatives", headers=seed.auth("viewer")
        )
    assert response.status_code == 200, response.json
    assert response.json, "the override of fraction 5 leaves fraction 2 somewhere to go"
