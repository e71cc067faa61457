"""Editing and removing a downtime on its pages: each previews first (nothing stored), then
applies; shortening and removing list the fractions that could return, moving nobody."""

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
from tests.pages.conftest import SignIn

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
WEEK = date(2026, 3, 16)
WEDNESDAY, THURSDAY = WEEK + timedelta(days=2), WEEK + timedelta(days=3)


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def book_and_take_wednesday(db: Session, seed: Seed) -> tuple[int, int]:
    """A course Mon-Fri 08:00 on TrueBeam 1, and TrueBeam 1 down all Wednesday."""
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": "ED-1", "given_name": "Ada",
         "family_name": "Lovelace", "date_of_birth": date(1951, 12, 10)},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    course_id, linac = course.id, seed.linac_ids[0]
    placements = [
        services.Placement(n + 1, linac, datetime.combine(WEEK + timedelta(days=n), time(8), NY))
        for n in range(5)
    ]
    services.book_course(db, course_id, placements)
    report = services.add_downtime(
        db,
        linac,
        starts_at=datetime.combine(WEDNESDAY, time(0), NY),
        ends_at=datetime.combine(THURSDAY, time(0), NY),
        kind="planned",
        reason="Service",
    )
    db.rollback()
    assert report.downtime_id is not None
    return course_id, report.downtime_id


def placed(db: Session, course_id: int) -> dict[int, tuple[int, datetime]]:
    db.expire_all()
    rows = db.scalars(sa.select(Fraction).where(Fraction.course_id == course_id))
    found = {x.number: (x.linac_id, x.starts_at) for x in rows if x.is_active}
    db.rollback()  # SQLite: release the write lock the app's requests need
    return found


def stored_end(db: Session, downtime_id: int) -> datetime | None:
    db.expire_all()
    row = db.get(Downtime, downtime_id)
    end = None if row is None else row.ends_at
    db.rollback()
    return end


def edit_form(csrf: str, ends: str, action: str) -> dict[str, str]:
    return {"csrf_token": csrf, "starts_local": f"{WEDNESDAY}T00:00", "ends_local": ends,
            "starts_fold": "0", "ends_fold": "0", "kind": "planned",
            "reason": "Service runs over", "action": action}  # fmt: skip


def test_extend_then_shorten_with_previews(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    course_id, downtime_id = book_and_take_wednesday(db, seed)
    one, two = seed.linac_ids
    csrf = signed_in(client, "scheduler")
    url = f"/downtime/{downtime_id}/edit"
    assert f'href="{url}"' in client.get("/downtime").get_data(as_text=True)
    page = client.get(url).get_data(as_text=True)
    assert f'value="{WEDNESDAY}T00:00"' in page and f'value="{THURSDAY}T00:00"' in page
    before = placed(db, course_id)
    assert before[3][0] == two and before[4][0] == one

    friday = f"{THURSDAY + timedelta(days=1)}T00:00"
    preview = client.post(url, data=edit_form(csrf, friday, "preview"))
    assert preview.status_code == 200
    html = preview.get_data(as_text=True)
    assert "1 fraction would move" in html
    assert "1 keeps its own time" in html and "0 need a human" in html
    assert f'action="{url}"' in html
    assert placed(db, course_id) == before
    assert stored_end(db, downtime_id) == datetime.combine(THURSDAY, time(0), NY)

    applied = client.post(url, data=edit_form(csrf, friday, "apply"))
    assert applied.status_code == 302
    flashed = client.get("/downtime").get_data(as_text=True)
    assert "Downtime updated: 1 fraction moved, 0 need a human" in flashed
    assert "Own time kept: 1; moved the same day: 0; moved to another day: 0." in flashed
    after = placed(db, course_id)
    assert after[4] == (two, before[4][1])
    assert stored_end(db, downtime_id) == datetime.combine(
        THURSDAY + timedelta(days=1), time(0), NY
    )

    # Back to Wednesday only: nobody moves, and Thursday's fraction could return.
    wednesday_end = f"{THURSDAY}T00:00"
    preview = client.post(url, data=edit_form(csrf, wednesday_end, "preview"))
    html = preview.get_data(as_text=True)
    assert "0 fractions would move" in html
    assert "1 fraction could return to their own place" in html
    assert f"TrueBeam 1 {THURSDAY:%a} {THURSDAY.day} {THURSDAY:%b %Y} 08:00" in html
    applied = client.post(url, data=edit_form(csrf, wednesday_end, "apply"))
    assert applied.status_code == 302
    flashed = client.get("/downtime").get_data(as_text=True)
    assert "1 fraction could return to their own place; nobody was moved back." in flashed
    assert placed(db, course_id) == after


def test_remove_with_a_preview(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    course_id, downtime_id = book_and_take_wednesday(db, seed)
    csrf = signed_in(client, "scheduler")
    before = placed(db, course_id)
    url = f"/downtime/{downtime_id}/delete"

    preview = client.get(url)
    assert preview.status_code == 200
    html = preview.get_data(as_text=True)
    assert "Nothing has been removed yet" in html
    assert "1 fraction could return to their own place" in html
    assert stored_end(db, downtime_id) is not None

    removed = client.post(url, data={"csrf_token": csrf, "action": "apply"})
    assert removed.status_code == 302
    flashed = client.get("/downtime").get_data(as_text=True)
    assert "Downtime removed; nobody was moved back. 1 fraction could return" in flashed
    assert stored_end(db, downtime_id) is None
    assert placed(db, course_id) == before


def test_bad_edits_are_explained_and_change_nothing(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    _, downtime_id = book_and_take_wednesday(db, seed)
    csrf = signed_in(client, "scheduler")
    url = f"/downtime/{downtime_id}/edit"
    backwards = client.post(
        url, data=edit_form(csrf, f"{WEDNESDAY - timedelta(days=1)}T00:00", "apply")
    )
    assert backwards.status_code == 400
    assert "The end must be after the start." in backwards.get_data(as_text=True)
    garbled = client.post(url, data=edit_form(csrf, "next week", "preview"))
    assert garbled.status_code == 400
    assert "Enter a date and time such as" in garbled.get_data(as_text=True)
    assert stored_end(db, downtime_id) == datetime.combine(THURSDAY, time(0), NY)
    assert client.get("/downtime/9999/edit").status_code == 404
    assert client.get("/downtime/9999/delete").status_code == 404
    client.post("/logout", data={"csrf_token": csrf})
    csrf = signed_in(client, "viewer")
    assert client.post(url, data=edit_form(csrf, f"{THURSDAY}T00:00", "apply")).status_code == 403
