"""Downtime through the API: the re-plan report's counts, edit and delete with a preview,
listing across a department, and problem details for bad input."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import Downtime, Fraction
from tests.api.conftest import Seed
from tests.committing import records, services

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
WEEK = date(2026, 3, 16)  # a Monday two weeks after NOW
PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def book_week(db: Session, seed: Seed, mrn: str, linac: int, hour: int) -> int:
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": mrn, "given_name": "Test",
         "family_name": mrn, "date_of_birth": date(1950, 1, 1)},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    placements = [
        services.Placement(n + 1, linac, datetime.combine(WEEK + timedelta(days=n), time(hour), NY))
        for n in range(5)
    ]
    course_id = course.id
    services.book_course(db, course_id, placements)
    # End the read: on SQLite an open transaction holds the write lock the app needs.
    db.rollback()
    return course_id


def week_with_a_taken_partner(db: Session, seed: Seed) -> tuple[int, int]:
    """TrueBeam 1 at 07:00 and 08:00 all week; TrueBeam 2 taken at 07:00, free at 08:00."""
    one, two = seed.linac_ids
    early = book_week(db, seed, "EARLY", one, 7)
    later = book_week(db, seed, "LATER", one, 8)
    book_week(db, seed, "OTHER", two, 7)
    return early, later


def test_the_report_counts_how_the_displaced_fractions_fared(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    week_with_a_taken_partner(db, seed)
    url = f"/api/v1/linacs/{seed.linac_ids[0]}/downtimes"
    body = {"starts_at": f"{WEEK + timedelta(days=2)}T00:00",
            "ends_at": f"{WEEK + timedelta(days=4)}T00:00", "kind": "unplanned",
            "reason": "gantry fault"}  # fmt: skip

    preview = client.post(url, json={**body, "preview": True}, headers=seed.auth())
    assert preview.status_code == 200, preview.json
    counts = {k: preview.json[k] for k in ("kept_time", "same_day", "other_day", "needs_human")}
    assert counts == {"kept_time": 2, "same_day": 2, "other_day": 0, "needs_human": 0}
    # The 08:00 course keeps its own time on the partner.
    kept = [m for m in preview.json["moved"] if m["before"]["starts_at"] == m["after"]["starts_at"]]
    assert {m["after"]["local_start"][11:16] for m in kept} == {"08:00"}
    assert {m["after"]["linac_id"] for m in kept} == {seed.linac_ids[1]}
    assert preview.json["returnable"] == []

    applied = client.post(url, json=body, headers=seed.auth())
    assert applied.status_code == 200 and applied.json["kept_time"] == 2


def test_edit_and_delete_with_a_preview(client: FlaskClient, db: Session, seed: Seed) -> None:
    _, later = week_with_a_taken_partner(db, seed)
    wednesday = WEEK + timedelta(days=2)
    created = client.post(
        f"/api/v1/linacs/{seed.linac_ids[0]}/downtimes",
        json={"starts_at": f"{wednesday}T00:00", "ends_at": f"{wednesday}T23:59",
              "kind": "planned", "reason": "service"},
        headers=seed.auth(),
    )  # fmt: skip
    downtime_id = created.json["downtime_id"]
    url = f"/api/v1/downtimes/{downtime_id}"
    assert (
        client.patch(url, json={"reason": "x"}, headers=seed.auth("scheduler")).status_code == 403
    )

    # Extending to Thursday: preview first, then apply; the newly covered fractions move.
    extend = {"ends_at": f"{wednesday + timedelta(days=1)}T23:59"}
    preview = client.patch(url, json={**extend, "preview": True}, headers=seed.auth())
    assert preview.status_code == 200, preview.json
    assert preview.json["preview"] is True and preview.json["downtime_id"] == downtime_id
    assert len(preview.json["moved"]) == 2 and preview.json["kept_time"] == 1
    assert client.get(url, headers=seed.auth("viewer")).json["version"] == 1
    applied = client.patch(url, json=extend, headers=seed.auth())
    assert applied.status_code == 200 and len(applied.json["moved"]) == 2
    shown = client.get(url, headers=seed.auth("viewer")).json
    assert (shown["version"], shown["local_end"][:16]) == (
        2,
        f"{wednesday + timedelta(days=1)}T23:59",
    )

    # Shortening back to Wednesday moves nobody and lists what could return.
    db.expire_all()
    thursday_later = db.scalars(
        sa.select(Fraction.id).where(Fraction.course_id == later, Fraction.number == 4)
    ).one()
    db.rollback()
    shorten = client.patch(url, json={"ends_at": f"{wednesday}T23:59"}, headers=seed.auth())
    assert shorten.status_code == 200, shorten.json
    assert shorten.json["moved"] == [] and shorten.json["kept_time"] == 0
    returnable = {r["fraction_id"]: r for r in shorten.json["returnable"]}
    assert thursday_later in returnable
    back = returnable[thursday_later]
    assert back["original"]["linac_id"] == seed.linac_ids[0]
    assert back["original"]["local_start"][11:16] == "08:00"

    # Deleting: the preview keeps it, the delete removes it; nobody moves back.
    preview = client.delete(url, query_string={"preview": "true"}, headers=seed.auth())
    assert preview.status_code == 200 and preview.json["preview"] is True
    assert len(preview.json["returnable"]) >= 2
    assert client.get(url, headers=seed.auth("viewer")).status_code == 200
    deleted = client.delete(url, headers=seed.auth())
    assert deleted.status_code == 200 and deleted.json["moved"] == []
    gone = client.get(url, headers=seed.auth("viewer"))
    assert gone.status_code == 404 and gone.content_type == PROBLEM
    db.expire_all()
    assert db.scalar(sa.select(sa.func.count()).select_from(Downtime)) == 0


def test_downtimes_across_a_department(client: FlaskClient, db: Session, seed: Seed) -> None:
    one, two = seed.linac_ids
    for linac, day in ((two, 3), (one, 1), (one, 10)):
        start = datetime.combine(WEEK + timedelta(days=day), time(7), NY)
        db.add(
            Downtime(linac_id=linac, starts_at=start.astimezone(UTC),
                     ends_at=(start + timedelta(hours=2)).astimezone(UTC), kind="planned",
                     reason=f"QA {day}")
        )  # fmt: skip
    db.commit()
    url = f"/api/v1/departments/{seed.department_id}/downtimes"
    listed = client.get(url, headers=seed.auth("viewer"))
    assert listed.status_code == 200
    assert [(d["linac_id"], d["reason"]) for d in listed.json] == [
        (one, "QA 1"),
        (two, "QA 3"),
        (one, "QA 10"),
    ]
    week = client.get(
        url, query_string={"start": f"{WEEK}T00:00", "end": f"{WEEK + timedelta(days=7)}T00:00"},
        headers=seed.auth("viewer"),
    )  # fmt: skip
    assert [d["reason"] for d in week.json] == ["QA 1", "QA 3"]
    assert client.get("/api/v1/departments/9999/downtimes", headers=seed.auth()).status_code == 404


def test_bad_downtime_input_is_a_problem_document(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    backwards = {"starts_at": f"{WEEK}T12:00", "ends_at": f"{WEEK}T08:00", "kind": "planned"}
    response = client.post(
        f"/api/v1/linacs/{seed.linac_ids[0]}/downtimes", json=backwards, headers=seed.auth()
    )
    assert response.status_code == 422 and response.content_type == PROBLEM
    assert [e["field"] for e in response.json["errors"]] == ["ends_at"]

    unknown = client.post("/api/v1/linacs/9999/downtimes", json=backwards, headers=seed.auth())
    assert unknown.status_code == 404 and unknown.content_type == PROBLEM

    db.add(
        Downtime(linac_id=seed.linac_ids[0], starts_at=NOW + timedelta(days=20),
                 ends_at=NOW + timedelta(days=21), kind="planned", reason="QA")
    )  # fmt: skip
    db.commit()
    downtime_id = db.scalar(sa.select(Downtime.id))
    db.rollback()
    url = f"/api/v1/downtimes/{downtime_id}"
    edit = client.patch(url, json={"ends_at": "2026-03-01T00:00:00Z"}, headers=seed.auth())
    assert edit.status_code == 422 and edit.content_type == PROBLEM
    assert [e["field"] for e in edit.json["errors"]] == ["ends_at"]
    assert client.patch("/api/v1/downtimes/9999", json={}, headers=seed.auth()).status_code == 404
    assert client.delete("/api/v1/downtimes/9999", headers=seed.auth()).status_code == 404
    typo = client.patch(url, json={"ends": "2026-03-01T00:00"}, headers=seed.auth())
    assert typo.status_code == 422
