"""The physicist roster page and the calendar's physicist line: editing, bad input shown
line by line with nothing lost, uncovered bookings listed, supervised sessions marked."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry
from tests.api.conftest import Seed
from tests.committing import records, services
from tests.pages.conftest import SignIn

NY = ZoneInfo("America/New_York")
WEEK = date(2026, 3, 16)  # a Monday


def url(seed: Seed) -> str:
    return f"/departments/{seed.department_id}/physicist-roster"


def post(client: FlaskClient, seed: Seed, csrf: str, **fields: str):
    data = {"csrf_token": csrf, "blocks": "", "exceptions": ""} | fields
    return client.post(url(seed), data=data)


def book(db: Session, seed: Seed, hour: int, mrn: str, monday: date = WEEK) -> int:
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": mrn, "given_name": "Ada",
         "family_name": "Lovelace", "date_of_birth": date(1965, 12, 10)},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    placements = [
        services.Placement(
            n,
            seed.linac_ids[0],
            datetime(monday.year, monday.month, monday.day + n - 1, hour, tzinfo=NY),
        )
        for n in range(1, 6)
    ]
    # "now" before the course, so a past week can be booked for the test.
    now = datetime(monday.year, 1, 2, tzinfo=UTC)
    services.book_course(db, course.id, placements, now=now)
    return course.id


def test_a_scheduler_saves_a_roster_and_sees_it_again(
    client: FlaskClient, seed: Seed, signed_in: SignIn, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    page = client.get(url(seed))
    assert page.status_code == 200
    assert "Keep a physicist roster" in page.get_data(as_text=True)
    saved = post(
        client,
        seed,
        csrf,
        enabled="on",
        blocks="Mon 08:00-12:00 2\ntuesday 8:00–17:00 ×1\n",
        exceptions="2026-03-16 08:00-17:00 0",
    )
    assert saved.status_code == 302, saved.get_data(as_text=True)[:2000]
    db.expire_all()
    got = records.get_physicist_roster(db, seed.department_id)
    assert got["enabled"] is True
    assert got["blocks"] == [
        {"weekday": 0, "start": "08:00", "end": "12:00", "physicists": 2},
        {"weekday": 1, "start": "08:00", "end": "17:00", "physicists": 1},
    ]
    assert got["exceptions"][0]["physicists"] == 0
    db.rollback()
    html = client.get(url(seed)).get_data(as_text=True)
    assert "Mon 08:00-12:00 2" in html
    assert "2026-03-16 08:00-17:00 0" in html
    assert db.query(AuditEntry).filter_by(subject_type="physicist_roster").count() == 1
    db.rollback()


def test_bad_lines_are_named_and_nothing_typed_is_lost(
    client: FlaskClient, seed: Seed, signed_in: SignIn, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    typed = "Mon 08:00-12:00 2\nFunday 08:00-12:00 1\nsometime"
    response = post(client, seed, csrf, enabled="on", blocks=typed)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "line 2: “Funday” is not a weekday" in html
    assert "line 3: write it as" in html
    assert typed in html
    assert records.get_physicist_roster(db, seed.department_id)["enabled"] is False
    db.rollback()


def test_overlapping_blocks_name_both_lines(
    client: FlaskClient, seed: Seed, signed_in: SignIn, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    typed = "Mon 08:00-12:00 2\n\nMon 11:00-13:00 1\nMon 14:00-13:00 1"
    response = post(client, seed, csrf, enabled="on", blocks=typed)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "line 3: overlaps line 1 (Monday 08:00–12:00)" in html
    assert "line 4: end must be after the start" in html
    assert records.get_physicist_roster(db, seed.department_id)["enabled"] is False
    db.rollback()


def test_saving_lists_the_bookings_left_uncovered(
    client: FlaskClient, seed: Seed, signed_in: SignIn, db: Session
) -> None:
    # A course in the future (the page judges from now), treated at 14:00.
    course_id = book(db, seed, 14, "MRN-UNCOVERED", monday=date(2099, 3, 16))
    csrf = signed_in(client, "scheduler")
    response = post(client, seed, csrf, enabled="on", blocks="Mon 08:00-12:00 1")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Booked sessions now without a physicist" in html
    assert f"/courses/{course_id}" in html
    assert "fraction 1" in html


def test_removing_the_roster(
    client: FlaskClient, seed: Seed, signed_in: SignIn, db: Session
) -> None:
    records.set_physicist_roster(
        db,
        seed.department_id,
        {"blocks": [{"weekday": 0, "start": "08:00", "end": "12:00", "physicists": 1}]},
    )
    csrf = signed_in(client, "scheduler")
    # Unticked with blocks still typed: refused, so a slip does not wipe the roster.
    refused = post(client, seed, csrf, blocks="Mon 08:00-12:00 1")
    assert refused.status_code == 422
    assert records.get_physicist_roster(db, seed.department_id)["enabled"] is True
    db.rollback()
    removed = post(client, seed, csrf)
    assert removed.status_code == 302
    db.expire_all()
    assert records.get_physicist_roster(db, seed.department_id)["enabled"] is False
    db.rollback()


def test_a_viewer_reads_but_cannot_change_it(
    client: FlaskClient, seed: Seed, signed_in: SignIn
) -> None:
    csrf = signed_in(client, "viewer")
    page = client.get(url(seed))
    assert page.status_code == 200
    assert "Save roster" not in page.get_data(as_text=True)
    assert post(client, seed, csrf, enabled="on").status_code == 403


def test_calendar_shows_cover_and_marks_supervised_fractions(
    client: FlaskClient, seed: Seed, signed_in: SignIn, db: Session
) -> None:
    book(db, seed, 9, "MRN-COVERED")
    signed_in(client, "viewer")
    # Without a roster the calendar is as before.
    plain = client.get(f"/calendar/week?start={WEEK.isoformat()}").get_data(as_text=True)
    assert "Physicists:" not in plain
    assert "supervised" not in plain
    records.set_physicist_roster(
        db,
        seed.department_id,
        {
            "blocks": [
                {"weekday": d, "start": "08:00", "end": "17:00", "physicists": 2} for d in range(5)
            ]
        },
        now=datetime(2026, 1, 5, tzinfo=UTC),
    )
    week = client.get(f"/calendar/week?start={WEEK.isoformat()}").get_data(as_text=True)
    assert "Physicists: 08:00–17:00 ×2 · 1 supervised" in week
    assert "Physicists: 08:00–17:00 ×2 · 0 supervised" in week
    assert week.count(' supervised" href=') == 1  # fraction 1 only
    day = client.get(f"/calendar/day?date={WEEK.isoformat()}").get_data(as_text=True)
    assert "Physicists: 08:00–17:00 ×2 · 1 supervised" in day
    linac = client.get(
        f"/calendar/linac/{seed.linac_ids[0]}/week?start={WEEK.isoformat()}"
    ).get_data(as_text=True)
    assert "Physicists: 08:00–17:00 ×2 · 1 supervised" in linac
    assert "physicist</span>" in linac  # the block's note
    assert "no cover" not in linac
