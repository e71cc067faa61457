"""A department's message window (the local hours patient messages may go out) is a record
field like any other: checked in the records layer, settable through the API, refused with
422 problem details naming the field, and nothing stored from a refused request."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from notifications.models import Reminder, ReminderStatus
from notifications.policy import in_message_window
from scheduler.errors import InvalidInput
from scheduler.services import Placement
from tests.api.conftest import Seed
from tests.committing import records, services

PROBLEM = "application/problem+json"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"message_window_start": "25:00"}, "message_window_start"),
        ({"message_window_start": "8am"}, "message_window_start"),
        ({"message_window_end": "21:00:00"}, "message_window_end"),
        ({"message_window_start": None}, "message_window_start"),
        ({"message_window_start": "22:00"}, "message_window_end"),
        ({"message_window_start": "10:00", "message_window_end": "10:00"}, "message_window_end"),
        # Over midnight would let messages out at night.
        ({"message_window_start": "20:00", "message_window_end": "07:00"}, "message_window_end"),
    ],
)
def test_a_bad_window_is_422_and_nothing_is_stored(
    client: FlaskClient, seed: Seed, changes: dict, field: str
) -> None:
    url = f"/api/v1/departments/{seed.department_id}"
    response = client.patch(url, json={"name": "Renamed", **changes}, headers=seed.auth())
    assert response.status_code == 422
    assert response.mimetype == PROBLEM
    assert field in {error["field"] for error in response.json["errors"]}
    stored = client.get(url, headers=seed.auth()).json
    assert stored["name"] == "Demo Radiation Oncology"
    assert (stored["message_window_start"], stored["message_window_end"]) == ("08:00", "21:00")


def test_the_window_is_set_read_and_defaulted_through_the_api(
    client: FlaskClient, seed: Seed
) -> None:
    url = f"/api/v1/departments/{seed.department_id}"
    changed = client.patch(
        url,
        json={"message_window_start": "09:30", "message_window_end": "19:45"},
        headers=seed.auth(),
    )
    assert changed.status_code == 200, changed.json
    stored = client.get(url, headers=seed.auth()).json
    assert (stored["message_window_start"], stored["message_window_end"]) == ("09:30", "19:45")
    assert (
        client.patch(
            url, json={"message_window_end": "20:00"}, headers=seed.auth("scheduler")
        ).status_code
        == 403
    )

    created = client.post(
        "/api/v1/departments",
        json={"name": "Second site", "timezone": "America/Chicago"},
        headers=seed.auth(),
    )
    assert created.status_code == 201, created.json
    assert (created.json["message_window_start"], created.json["message_window_end"]) == (
        "08:00",
        "21:00",
    )
    refused = client.post(
        "/api/v1/departments",
        json={"name": "Third", "timezone": "America/Chicago", "message_window_end": "07:00"},
        headers=seed.auth(),
    )
    assert refused.status_code == 422 and refused.mimetype == PROBLEM
    schema = client.get("/api/openapi.json").json["components"]["schemas"]
    assert "message_window_start" in schema["DepartmentPatch"]["properties"]
    assert "message_window_end" in schema["DepartmentOut"]["required"]


def test_the_records_layer_refuses_a_bad_window_whoever_calls_it(db: Session, seed: Seed) -> None:
    with pytest.raises(InvalidInput) as refused:
        records.update_department(
            db,
            seed.department_id,
            {"message_window_start": "18:00", "message_window_end": "09:00"},
        )
    assert [e.field for e in refused.value.errors] == ["message_window_end"]
    db.rollback()


def test_a_new_window_re_plans_the_reminders_still_ahead(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    zone = ZoneInfo("America/New_York")
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": "MW-1", "given_name": "Rosa",
         "family_name": "Delgado", "date_of_birth": date(1949, 8, 14),
         "phone": "+12125550179", "sms_consent": True},
        now=now,
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    # Sessions at 09:00 a week ahead: each day-before reminder is due at 09:00 the day before.
    monday = datetime(2026, 3, 9, 9, 0, tzinfo=zone)
    services.book_course(
        db,
        course.id,
        [Placement(n, seed.linac_ids[0], monday + timedelta(days=n - 1)) for n in range(1, 6)],
        now=now,
    )
    patient_id = patient.id
    db.rollback()

    def open_reminders() -> list[Reminder]:
        db.expire_all()
        rows = list(
            db.scalars(
                sa.select(Reminder).where(
                    Reminder.patient_id == patient_id,
                    Reminder.status == ReminderStatus.PENDING,
                    Reminder.fraction_id.is_not(None),
                )
            )
        )
        for row in rows:
            db.expunge(row)  # read after the transaction ends, without starting another
        db.rollback()
        return rows

    def inside(rows: list[Reminder], start: time, end: time) -> bool:
        return all(
            in_message_window(r.due_at, tz="America/New_York", window_start=start, window_end=end)
            for r in rows
        )

    assert not inside(open_reminders(), time(10, 0), time(20, 0))
    with time_machine.travel(now, tick=False):
        changed = client.patch(
            f"/api/v1/departments/{seed.department_id}",
            json={"message_window_start": "10:00", "message_window_end": "20:00"},
            headers=seed.auth(),
        )
    assert changed.status_code == 200, changed.json
    after = open_reminders()
    assert after and inside(after, time(10, 0), time(20, 0))
