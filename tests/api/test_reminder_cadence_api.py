"""Reminder cadence per department and per protocol through the API: validated, then applied
to the reminders a booking plans; staff recording consent again plans the reminders ahead."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from notifications.models import Reminder, ReminderStatus
from scheduler.errors import InvalidInput
from scheduler.models import Fraction
from scheduler.services import Placement
from tests.api.conftest import Seed
from tests.committing import records, services

PROBLEM = "application/problem+json"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday; the seeded department is New York's
ZONE = ZoneInfo("America/New_York")


def _fields(response) -> set[str]:
    assert response.mimetype == PROBLEM
    return {error["field"] for error in response.json["errors"]}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"day_before_reminder_minutes": 0}, "day_before_reminder_minutes"),
        ({"day_before_reminder_minutes": -60}, "day_before_reminder_minutes"),
        ({"day_before_reminder_minutes": 3 * 24 * 60}, "day_before_reminder_minutes"),
        ({"day_before_reminder_minutes": "a day"}, "day_before_reminder_minutes"),
        ({"same_day_reminder_minutes": 5}, "same_day_reminder_minutes"),
        ({"same_day_reminder_minutes": 13 * 60}, "same_day_reminder_minutes"),
        ({"same_day_reminder_minutes": 90.5}, "same_day_reminder_minutes"),
        ({"same_day_reminder": "sometimes"}, "same_day_reminder"),
        ({"day_before_reminder": None}, "day_before_reminder"),
        ({"same_day_reminder_minutes": None}, "same_day_reminder_minutes"),
    ],
)
def test_bad_department_cadence_is_422_and_nothing_is_stored(
    client: FlaskClient, seed: Seed, changes: dict, field: str
) -> None:
    url = f"/api/v1/departments/{seed.department_id}"
    response = client.patch(url, json={"name": "Renamed", **changes}, headers=seed.auth())
    assert response.status_code == 422
    assert field in _fields(response)
    stored = client.get(url, headers=seed.auth()).json
    assert stored["name"] == "Demo Radiation Oncology"
    assert (stored["day_before_reminder"], stored["day_before_reminder_minutes"]) == (True, 1440)
    assert (stored["same_day_reminder"], stored["same_day_reminder_minutes"]) == (True, 120)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"day_before_reminder_minutes": 59}, "day_before_reminder_minutes"),
        ({"day_before_reminder_minutes": 7 * 24 * 60}, "day_before_reminder_minutes"),
        ({"same_day_reminder_minutes": 0}, "same_day_reminder_minutes"),
        ({"same_day_reminder_minutes": 24 * 60}, "same_day_reminder_minutes"),
        ({"day_before_reminder": "maybe"}, "day_before_reminder"),
    ],
)
def test_bad_protocol_cadence_is_422(
    client: FlaskClient, seed: Seed, changes: dict, field: str
) -> None:
    url = f"/api/v1/protocols/{seed.protocol_id}"
    response = client.patch(url, json=changes, headers=seed.auth())
    assert response.status_code == 422 and field in _fields(response)
    created = client.post(
        "/api/v1/protocols",
        json={"code": "lung3", "name": "Lung 3 fx", "fractions": 3, **changes},
        headers=seed.auth(),
    )
    assert created.status_code == 422 and field in _fields(created)


def test_the_records_check_the_cadence_whoever_calls_them(db: Session, seed: Seed) -> None:
    with pytest.raises(InvalidInput) as bad:
        records.update_protocol(db, seed.protocol_id, {"same_day_reminder_minutes": 10})
    assert [e.field for e in bad.value.errors] == ["same_day_reminder_minutes"]
    db.rollback()
    with pytest.raises(InvalidInput) as bad:
        records.update_department(db, seed.department_id, {"day_before_reminder": 1})
    assert [e.field for e in bad.value.errors] == ["day_before_reminder"]


def test_a_protocol_follows_its_department_until_it_chooses(
    client: FlaskClient, seed: Seed
) -> None:
    url = f"/api/v1/protocols/{seed.protocol_id}"
    protocol = client.get(url, headers=seed.auth()).json
    assert protocol["same_day_reminder"] is None  # as the department
    chosen = client.patch(
        url,
        json={"same_day_reminder": False, "day_before_reminder_minutes": 20 * 60},
        headers=seed.auth(),
    )
    assert chosen.status_code == 200
    assert chosen.json["same_day_reminder"] is False
    assert chosen.json["day_before_reminder_minutes"] == 20 * 60
    back = client.patch(url, json={"same_day_reminder": None}, headers=seed.auth())
    assert back.status_code == 200 and back.json["same_day_reminder"] is None
    assert back.json["day_before_reminder_minutes"] == 20 * 60


def _book(db: Session, seed: Seed, *, sms_consent: bool = True) -> tuple[int, int]:
    patient = records.create_patient(
        db,
        {
            "department_id": seed.department_id,
            "mrn": "MRN-77",
            "given_name": "Rosa",
            "date_of_birth": date(1949, 8, 14),
            "family_name": "Delgado",
            "phone": "+12125550177",
            "sms_consent": sms_consent,
        },
        now=NOW,
    )
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    proposal = services.propose_schedules(
        db, course.id, earliest=(NOW + timedelta(days=7)).date(), now=NOW
    ).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(db, course.id, placements, now=NOW)
    ids = patient.id, course.id
    db.rollback()
    return ids


def _fraction_reminders(db: Session, patient_id: int) -> list[Reminder]:
    db.expire_all()
    rows = list(
        db.scalars(
            sa.select(Reminder)
            .where(Reminder.patient_id == patient_id, Reminder.fraction_id.is_not(None))
            .order_by(Reminder.due_at)
        )
    )
    for row in rows:
        db.expunge(row)
    db.rollback()
    return rows


def test_department_and_protocol_cadence_apply_to_a_booking(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    department = client.patch(
        f"/api/v1/departments/{seed.department_id}",
        json={"day_before_reminder_minutes": 20 * 60, "same_day_reminder_minutes": 180},
        headers=seed.auth(),
    )
    assert department.status_code == 200
    protocol = client.patch(
        f"/api/v1/protocols/{seed.protocol_id}",
        json={"same_day_reminder": False},
        headers=seed.auth(),
    )
    assert protocol.status_code == 200

    patient_id, _ = _book(db, seed)
    rows = _fraction_reminders(db, patient_id)
    assert {r.kind for r in rows} == {"day_before"}  # the protocol turned same-day off
    assert len(rows) == 5
    starts = dict(
        db.execute(
            sa.select(Fraction.id, Fraction.starts_at).where(Fraction.patient_id == patient_id)
        )
        .tuples()
        .all()
    )
    db.rollback()
    for row in rows:
        session_start = starts[row.fraction_id].astimezone(ZONE).replace(tzinfo=None)
        # The department's 20 h before the session (07:00 -> 11:00 the day before).
        assert row.due_at.astimezone(ZONE).replace(tzinfo=None) == session_start - timedelta(
            hours=20
        )


def test_staff_recording_sms_consent_through_the_api_plans_the_reminders_ahead(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    patient_id, _ = _book(db, seed, sms_consent=False)
    assert _fraction_reminders(db, patient_id) == []
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        response = client.patch(
            f"/api/v1/patients/{patient_id}",
            json={"sms_consent": True},
            headers=seed.auth("scheduler"),
        )
    assert response.status_code == 200, response.json
    rows = _fraction_reminders(db, patient_id)
    assert len(rows) == 5
    assert {(r.channel, r.status) for r in rows} == {("sms", ReminderStatus.PENDING)}
    assert {r.status_reason for r in rows} == {records.REPLANNED_AFTER_CONSENT}


def test_changing_the_cadence_re_plans_the_reminders_still_ahead(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    patient = records.create_patient(
        db,
        {
            "department_id": seed.department_id,
            "mrn": "MRN-78",
            "given_name": "Rosa",
            "date_of_birth": date(1949, 8, 14),
            "family_name": "Delgado",
            "phone": "+12125550178",
            "sms_consent": True,
        },
        now=NOW,
    )
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    # Afternoon sessions, Monday to Friday a week ahead: each gets both reminders.
    monday = datetime(2026, 3, 9, 14, 0, tzinfo=ZONE)
    starts = [monday + timedelta(days=d) for d in range(5)]
    services.book_course(
        db,
        course.id,
        [Placement(n, seed.linac_ids[0], s) for n, s in enumerate(starts, 1)],
        now=NOW,
    )
    patient_id = patient.id
    db.rollback()
    before = _fraction_reminders(db, patient_id)
    assert sorted(r.kind for r in before) == ["day_before"] * 5 + ["same_day"] * 5

    # Wednesday: the first three sessions' reminders are past or sent; the change is for the rest.
    wednesday = datetime(2026, 3, 11, 9, 0, tzinfo=ZONE)
    with time_machine.travel(wednesday, tick=False):
        response = client.patch(
            f"/api/v1/protocols/{seed.protocol_id}",
            json={"same_day_reminder": False, "day_before_reminder_minutes": 20 * 60},
            headers=seed.auth(),
        )
    assert response.status_code == 200
    after = {r.id: r for r in _fraction_reminders(db, patient_id)}
    ahead = [r for r in after.values() if r.due_at > wednesday]
    assert {(r.kind, r.status) for r in ahead} == {
        ("day_before", ReminderStatus.PENDING),
        ("same_day", ReminderStatus.SUPERSEDED),
    }
    for row in ahead:
        if row.kind == "day_before":  # 20 h before 14:00 is 18:00 the day before
            assert row.due_at.astimezone(ZONE).hour == 18
        else:
            assert row.status_reason == "the reminder cadence changed"
    # Reminders whose time had come are not re-planned.
    for row in before:
        if row.due_at <= wednesday:
            assert after[row.id].due_at == row.due_at
            assert after[row.id].status == ReminderStatus.PENDING

    # Back to the department's same-day reminder: the ones taken back return.
    with time_machine.travel(wednesday, tick=False):
        client.patch(
            f"/api/v1/protocols/{seed.protocol_id}",
            json={"same_day_reminder": None},
            headers=seed.auth(),
        )
    again = [r for r in _fraction_reminders(db, patient_id) if r.kind == "same_day"]
    assert {r.status for r in again if r.due_at > wednesday} == {ReminderStatus.PENDING}
