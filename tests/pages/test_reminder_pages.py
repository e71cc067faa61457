"""Reminder pages: the cadence on the department and protocol forms, and the message
timeline showing the reminders a START planned again."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from notifications import outbox, replies
from notifications.models import Reminder
from scheduler.models import Department, Protocol
from scheduler.services import Placement
from tests.api.conftest import Seed
from tests.committing import records, services
from tests.pages.test_messages_pages import _fast_password_hashes, sign_in  # noqa: F401

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday; the seeded department is New York's
PHONE = "+12125550177"


def _department_form(seed: Seed, csrf: str, **changes: str) -> dict[str, str]:
    hours = {
        f"{edge}_{d}": t for d in range(5) for edge, t in (("open", "07:00"), ("close", "19:00"))
    }
    return {
        "csrf_token": csrf,
        "name": "Demo Radiation Oncology",
        "phone": "",
        "message_window_start": "08:00",
        "message_window_end": "21:00",
        "day_before_reminder": "on",
        "day_before_reminder_minutes": "1440",
        "same_day_reminder": "on",
        "same_day_reminder_minutes": "120",
        **hours,
        **changes,
    }


def _cadence(db: Session, model, row_id: int) -> tuple:
    row = db.execute(
        sa.select(
            model.day_before_reminder,
            model.day_before_reminder_minutes,
            model.same_day_reminder,
            model.same_day_reminder_minutes,
        ).where(model.id == row_id)
    ).one()
    db.rollback()  # never hold a transaction while the app runs (see sign_in)
    return tuple(row)


def test_department_cadence_form_rejects_bad_offsets_and_saves_good_ones(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    csrf = sign_in(client, db, "admin")
    url = f"/admin/departments/{seed.department_id}"
    page = client.get(url).get_data(as_text=True)
    assert "Day-before reminder" in page and "Same-day reminder" in page

    for changes, message in (
        ({"same_day_reminder_minutes": "5"}, "must be at least 15"),
        ({"day_before_reminder_minutes": "4000"}, "must be at most 2880"),
        ({"day_before_reminder_minutes": "a day"}, "must be a whole number"),
        ({"same_day_reminder": "sometimes"}, "choose on or off"),
    ):
        bad = client.post(url, data=_department_form(seed, csrf, name="Renamed", **changes))
        html = bad.get_data(as_text=True)
        assert bad.status_code == 422, changes
        assert message in html and "nothing was saved" in html
        assert 'value="Renamed"' in html  # what was typed stays
    assert _cadence(db, Department, seed.department_id) == (True, 1440, True, 120)
    assert db.scalar(sa.select(Department.name)) == "Demo Radiation Oncology"
    db.rollback()

    good = client.post(
        url,
        data=_department_form(
            seed, csrf, same_day_reminder="off", day_before_reminder_minutes="1200"
        ),
    )
    assert good.status_code == 302
    assert _cadence(db, Department, seed.department_id) == (True, 1200, False, 120)
    shown = client.get(url).get_data(as_text=True)
    assert '<option value="off" selected>' in shown and 'value="1200"' in shown


def test_protocol_cadence_form_follows_the_department_when_left_empty(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    csrf = sign_in(client, db, "admin")
    url = f"/admin/protocols/{seed.protocol_id}"
    page = client.get(url).get_data(as_text=True)
    assert "As the department" in page
    form = {
        "csrf_token": csrf,
        "code": "liver5",
        "name": "Liver 5 fx",
        "site": "liver",
        "fractions": "5",
        "min_hours_between": "0",
        "min_interval_days": "1",
        "max_interval_days": "3",
        "min_overall_days": "5",
        "max_overall_days": "15",
        "first_session_minutes": "60",
        "session_minutes": "45",
        "weekdays": ["0", "1", "2", "3", "4"],
        "capabilities": ["sbrt"],
        "active": "on",
        "prep_instructions": "",
        "day_before_reminder": "",
        "day_before_reminder_minutes": "",
        "same_day_reminder": "off",
        "same_day_reminder_minutes": "",
    }
    bad = client.post(url, data={**form, "same_day_reminder_minutes": "800"})
    assert bad.status_code == 422 and "must be at most 720" in bad.get_data(as_text=True)
    assert _cadence(db, Protocol, seed.protocol_id) == (None, None, None, None)

    assert client.post(url, data=form).status_code == 302
    assert _cadence(db, Protocol, seed.protocol_id) == (None, None, False, None)


def test_the_timeline_shows_reminders_planned_again_after_start(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    patient = records.create_patient(
        db,
        {
            "department_id": seed.department_id,
            "mrn": "MRN-52",
            "given_name": "Rosa",
            "date_of_birth": date(1949, 8, 14),
            "family_name": "Delgado",
            "phone": PHONE,
            "sms_consent": True,
        },
        now=NOW,
    )
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    proposal = services.propose_schedules(
        db, course.id, earliest=(NOW + timedelta(days=7)).date(), now=NOW
    ).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(db, course.id, placements, now=NOW)
    first_due = db.scalar(
        sa.select(sa.func.min(Reminder.due_at)).where(
            Reminder.patient_id == patient.id, Reminder.kind == "day_before"
        )
    )
    patient_id = patient.id
    replies.handle_inbound(
        db, provider_id="SM1", from_number=PHONE, body="STOP", now=NOW + timedelta(hours=1)
    )
    replies.handle_inbound(
        db,
        provider_id="SM2",
        from_number=PHONE,
        body="START",
        now=first_due + timedelta(minutes=1),
    )
    db.rollback()

    sign_in(client, db, "viewer")
    html = client.get(f"/patients/{patient_id}/messages").get_data(as_text=True)
    assert html.count(replies.REPLANNED_AFTER_START) == 4  # the sessions still ahead
    assert f"Reason: {outbox.OPTED_OUT_REASON}" in html  # the first one's time had passed
    assert "<strong>day before</strong>" in html and "<strong>prep</strong>" not in html
