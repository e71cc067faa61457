"""The audit page for admins: filters that combine (user, record, action, local days), a
CSV export of what they select that carries no personal data, and 403 for everyone else."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, User
from tests.api.conftest import Seed
from tests.committing import records
from tests.pages.conftest import SignIn

# Local days in New York (the seeded department's zone): 23:30 on 2 March there is already
# 3 March in UTC, so a filter on UTC dates would put it on the wrong day.
LATE_ON_2_MARCH = datetime(2026, 3, 3, 4, 30, tzinfo=UTC)
ON_5_MARCH = datetime(2026, 3, 5, 15, 0, tzinfo=UTC)


def _user_id(db: Session, role: str) -> int:
    user_id = db.scalar(sa.select(User.id).where(User.email == f"{role}@example.org"))
    db.rollback()
    return user_id


def _entries(db: Session, seed: Seed) -> dict[str, int]:
    """Four entries that differ in one respect each from the first; ids by name."""
    scheduler = _user_id(db, "scheduler")
    rows = {
        "scheduler-course-7-move-2mar": AuditEntry(
            actor_id=scheduler, action="move", subject_type="course", subject_id=7,
            detail={"path": "/fractions/70/move", "method": "POST"}, at=LATE_ON_2_MARCH),
        "scheduler-course-7-move-5mar": AuditEntry(
            actor_id=scheduler, action="move", subject_type="course", subject_id=7,
            detail={"path": "/fractions/71/move", "method": "POST"}, at=ON_5_MARCH),
        "scheduler-course-8-view-2mar": AuditEntry(
            actor_id=scheduler, action="view", subject_type="course", subject_id=8,
            detail={"path": "/courses/8", "method": "GET"}, at=LATE_ON_2_MARCH),
        "admin-course-7-move-2mar": AuditEntry(
            actor_id=seed.admin_id, action="move", subject_type="course", subject_id=7,
            detail={"path": "/fractions/72/move", "method": "POST"}, at=LATE_ON_2_MARCH),
        "scheduler-patient-7-view-2mar": AuditEntry(
            actor_id=scheduler, action="view", subject_type="patient", subject_id=7,
            detail={"path": "/patients/7", "method": "GET"}, at=LATE_ON_2_MARCH),
    }  # fmt: skip
    db.add_all(rows.values())
    db.commit()
    ids = {name: row.id for name, row in rows.items()}
    db.rollback()
    return ids


def _export(client: FlaskClient, **query: str) -> list[dict[str, str]]:
    response = client.get("/admin/audit.csv", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def _seeded(rows: list[dict[str, str]], ids: dict[str, int]) -> set[str]:
    by_id = {str(i): name for name, i in ids.items()}
    return {by_id[r["id"]] for r in rows if r["id"] in by_id}


def test_filters_combine_on_the_page_and_in_the_export(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    ids = _entries(db, seed)
    scheduler = str(_user_id(db, "scheduler"))
    signed_in(client, "admin")

    assert _seeded(_export(client), ids) == set(ids)
    assert _seeded(_export(client, user=scheduler), ids) == set(ids) - {"admin-course-7-move-2mar"}
    assert _seeded(
        _export(client, user=scheduler, record_type="course", record_id="7", action="move"), ids
    ) == {"scheduler-course-7-move-2mar", "scheduler-course-7-move-5mar"}
    # Both ends are local days, included.
    assert _seeded(
        _export(client, user=scheduler, record_type="course", record_id="7",
                action="move", **{"from": "2026-03-02", "to": "2026-03-02"}), ids
    ) == {"scheduler-course-7-move-2mar"}  # fmt: skip
    assert _seeded(_export(client, **{"from": "2026-03-03", "to": "2026-03-05"}), ids) == {
        "scheduler-course-7-move-5mar"
    }
    assert _seeded(_export(client, record_type="patient", record_id="7"), ids) == {
        "scheduler-patient-7-view-2mar"
    }

    page = client.get(
        "/admin/audit",
        query_string={"user": scheduler, "record_type": "course", "action": "view"},
    )
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/courses/8" in html
    assert "/fractions/70/move" not in html and "/patients/7" not in html
    assert "/fractions/72/move" not in html
    # The export link and the pager keep the filters.
    assert f"/admin/audit.csv?user={scheduler}&amp;record_type=course&amp;action=view" in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"record_id": "abc"}, "The record id must be a whole number"),
        ({"record_id": "99999999999"}, "The record id must be a whole number"),
        ({"user": "²"}, "The user must be a whole number"),
        ({"from": "9999-12-31"}, "The first day must be a date"),
        ({"to": "0001-01-01"}, "The last day must be a date"),
        ({"from": "2026-03-05", "to": "2026-03-02"}, "The last day must not be before"),
        ({"record_type": "no_such_type"}, "Choose a record type from the list."),
    ],
)
def test_bad_filters_are_explained_not_a_server_error(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn, query: dict, message: str
) -> None:
    _entries(db, seed)
    signed_in(client, "admin")
    page = client.get("/admin/audit", query_string=query)
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert message in html and "Nothing was searched" in html
    assert client.get("/admin/audit.csv", query_string=query).status_code == 400


def test_a_control_character_in_a_filter_is_refused_before_the_page(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    # Refused for every page before any view runs (web/input_guard.py), the export included.
    _entries(db, seed)
    signed_in(client, "admin")
    for path in ("/admin/audit", "/admin/audit.csv"):
        page = client.get(path, query_string={"action": "x\x00y"})
        assert page.status_code == 400
        assert "control character (U+0000)" in page.get_data(as_text=True)


def test_the_export_carries_no_personal_data_and_is_itself_audited(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": "AUD-4471", "given_name": "Zebediah",
         "family_name": "Quuxworth", "date_of_birth": date(1950, 4, 1),
         "phone": "+12025550143", "sms_consent": True, "email": "zq@example.org"},
    )  # fmt: skip
    patient_id = patient.id
    db.rollback()
    signed_in(client, "admin")
    # Pages that show and change the patient write their entries the usual way...
    assert client.get(f"/patients/{patient_id}").status_code == 200
    # ...and an entry whose detail someone filled with free text is exported without it.
    db.add(
        AuditEntry(
            actor_id=seed.admin_id, action="update", subject_type="patient",
            subject_id=patient_id,
            detail={"path": f"/patients/{patient_id}", "method": "POST",
                    "note": "Zebediah Quuxworth +12025550143", "fields": [1, 2],
                    "nested": {"name": "Zebediah"}},
        )
    )  # fmt: skip
    db.commit()
    response = client.get("/admin/audit.csv", query_string={"record_type": "patient"})
    text = response.get_data(as_text=True)
    for personal in ("Zebediah", "Quuxworth", "AUD-4471", "2025550143", "zq@example.org"):
        assert personal not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["record_id"] for r in rows} == {str(patient_id)}
    noted = next(r for r in rows if "note" in json.loads(r["detail"]))
    assert json.loads(noted["detail"]) == {
        "fields": [1, 2],
        "nested": "[withheld]",
        "note": "[withheld]",
    }
    assert noted["path"] == f"/patients/{patient_id}" and noted["method"] == "POST"

    db.expire_all()
    export = db.scalars(sa.select(AuditEntry).where(AuditEntry.action == "export")).one()
    assert export.subject_type == "audit_log" and export.actor_id == seed.admin_id
    assert export.detail["filter_record_type"] == "patient"
    db.rollback()


@pytest.mark.parametrize("role", ["scheduler", "viewer"])
def test_only_admins_see_or_export_the_log(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn, role: str
) -> None:
    assert client.get("/admin/audit.csv").status_code in (302, 401)  # signed out
    signed_in(client, role)
    assert client.get("/admin/audit").status_code == 403
    assert client.get("/admin/audit", query_string={"user": "1"}).status_code == 403
    assert client.get("/admin/audit.csv").status_code == 403
    assert db.scalar(sa.select(sa.func.count()).where(AuditEntry.action == "export")) == 0
    db.rollback()
