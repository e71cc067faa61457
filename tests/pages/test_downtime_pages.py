"""The downtime pages: preview stores nothing, apply re-plans and queues change notices, the
work queue keeps what could not be placed until a scheduler marks it reviewed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from notifications.models import Reminder
from scheduler.models import Course, CourseStatus, Downtime, Fraction
from tests.api.conftest import Seed
from tests.committing import records, services
from tests.pages.conftest import SignIn

NY = ZoneInfo("America/New_York")


def future_monday(now: datetime | None = None) -> date:
    """A Monday two to three weeks ahead: re-plans never place anything in the past."""
    today = (now or datetime.now(UTC)).astimezone(NY).date()
    return today + timedelta(days=(7 - today.weekday()) % 7 + 14)


def book_week(db: Session, seed: Seed, monday: date, linac: int) -> int:
    """A liver course of a patient with email consent, Mon-Fri 09:00 local on ``linac``."""
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": "DT-1", "given_name": "Grace",
         "family_name": "Hopper", "date_of_birth": date(1956, 12, 9),
         "email": "dt-1@example.org", "email_consent": True},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    placements = [
        services.Placement(n + 1, linac, datetime.combine(monday + timedelta(days=n),
                                                          datetime.min.time(), NY).replace(hour=9))
        for n in range(5)
    ]  # fmt: skip
    services.book_course(db, course.id, placements)
    return course.id


def form(linac: int, starts: str, ends: str, action: str, csrf: str, **extra: str) -> dict:
    return {"csrf_token": csrf, "linac_id": str(linac), "starts_local": starts,
            "ends_local": ends, "kind": "unplanned", "reason": "Gantry fault",
            "action": action, **extra}  # fmt: skip


def change_notices(db: Session) -> int:
    db.expire_all()
    count = db.scalar(sa.select(sa.func.count()).where(Reminder.kind == "change"))
    # End the read: on SQLite every transaction holds the write lock (BEGIN IMMEDIATE).
    db.rollback()
    return count


@pytest.mark.pinned_dates
def test_preview_stores_nothing_and_apply_moves_and_queues_notices(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn, now: datetime
) -> None:
    monday = future_monday(now)
    wednesday = monday + timedelta(days=2)
    course_id = book_week(db, seed, monday, seed.linac_ids[0])
    csrf = signed_in(client, "scheduler")
    values = form(seed.linac_ids[0], f"{wednesday}T08:00", f"{wednesday}T12:00", "preview", csrf)

    preview = client.post("/downtime/new", data=values)
    assert preview.status_code == 200
    html = preview.get_data(as_text=True)
    assert "1 fraction would move" in html and "0 fractions cannot be re-planned" in html
    # Same time on the beam-matched partner; before and after in local time.
    assert f"TrueBeam 1 {wednesday:%a} {wednesday.day} {wednesday:%b %Y} 09:00" in html
    assert f"TrueBeam 2 {wednesday:%a} {wednesday.day} {wednesday:%b %Y} 09:00" in html
    assert f'href="/courses/{course_id}"' in html and 'value="apply"' in html
    db.expire_all()
    assert db.scalar(sa.select(sa.func.count()).select_from(Downtime)) == 0
    third = db.scalars(sa.select(Fraction).where(Fraction.number == 3)).one()
    assert third.linac_id == seed.linac_ids[0] and third.version == 1
    assert change_notices(db) == 0  # ends the test's read transaction too

    applied = client.post("/downtime/new", data={**values, "action": "apply"})
    assert applied.status_code == 302 and applied.headers["Location"].endswith("/downtime")
    page = client.get("/downtime").get_data(as_text=True)
    notices = change_notices(db)
    assert notices == 1  # one channel: email
    assert "1 fraction moved, 0 need a human; 1 change notice queued." in page
    assert "Gantry fault" in page  # listed under upcoming downtime
    third = db.scalars(sa.select(Fraction).where(Fraction.number == 3)).one()
    assert third.linac_id == seed.linac_ids[1] and third.version == 2


@pytest.mark.pinned_dates
def test_unplaceable_course_stays_on_the_work_queue_until_reviewed(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn, now: datetime
) -> None:
    monday = future_monday(now)
    wednesday, thursday = monday + timedelta(days=2), monday + timedelta(days=3)
    course_id = book_week(db, seed, monday, seed.linac_ids[0])
    # The partner is down all Wednesday too, and fraction 3 must fall between Tue and Thu.
    db.add(
        Downtime(
            linac_id=seed.linac_ids[1],
            starts_at=datetime.combine(wednesday, datetime.min.time(), NY).astimezone(UTC),
            ends_at=datetime.combine(thursday, datetime.min.time(), NY).astimezone(UTC),
            kind="planned",
            reason="Service",
        )
    )
    db.commit()
    csrf = signed_in(client, "scheduler")
    values = form(seed.linac_ids[0], f"{wednesday}T00:00", f"{thursday}T00:00", "apply", csrf)
    client.post("/downtime/new", data=values)
    queue = client.get("/downtime").get_data(as_text=True)
    assert "0 fractions moved, 1 need a human; 0 change notices queued." in queue
    assert "linac TrueBeam 1 downtime: fractions could not be re-planned" in queue
    assert f'href="/courses/{course_id}"' in queue and "liver5 fraction 3/5" in queue

    # Still overlapping: refused, and the course stays on the queue.
    action = f"/downtime/courses/{course_id}/reviewed"
    client.post(action, data={"csrf_token": csrf})
    queue = client.get("/downtime").get_data(as_text=True)
    assert "fraction 3 still overlaps a downtime" in queue
    db.expire_all()
    assert db.get(Course, course_id).status == CourseStatus.NEEDS_REVIEW
    db.rollback()

    # Once the downtime is gone (say it was cancelled) the scheduler can sign it off.
    db.execute(sa.delete(Downtime).where(Downtime.linac_id == seed.linac_ids[0]))
    db.commit()
    client.post(action, data={"csrf_token": csrf})
    queue = client.get("/downtime").get_data(as_text=True)
    assert f"Course {course_id} marked reviewed" in queue
    db.expire_all()
    course = db.get(Course, course_id)
    assert course.status == CourseStatus.BOOKED and course.review_reason is None


def test_local_times_in_dst_gaps_and_overlaps(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    csrf = signed_in(client, "scheduler")
    linac = seed.linac_ids[0]
    # 14 March 2027: clocks go from 02:00 to 03:00 in New York.
    gap = client.post(
        "/downtime/new", data=form(linac, "2027-03-14T02:30", "2027-03-14T04:00", "preview", csrf)
    )
    assert gap.status_code == 400
    assert "2027-03-14 02:30 does not exist in America/New_York" in gap.get_data(as_text=True)
    # 7 November 2027: 01:30 happens twice; the page asks which one.
    values = form(linac, "2027-11-07T01:30", "2027-11-07T03:00", "preview", csrf)
    twice = client.post("/downtime/new", data=values)
    assert twice.status_code == 400
    html = twice.get_data(as_text=True)
    assert "occurs twice" in html and 'name="starts_fold"' in html
    chosen = client.post("/downtime/new", data={**values, "starts_fold": "1"})
    assert chosen.status_code == 200
    assert "Sun 7 Nov 2027 01:30 EST" in chosen.get_data(as_text=True)


def test_roles_and_csrf(client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn) -> None:
    csrf = signed_in(client, "viewer")
    values = form(seed.linac_ids[0], "2027-01-05T08:00", "2027-01-05T09:00", "apply", csrf)
    assert client.post("/downtime/new", data=values).status_code == 403
    assert client.get("/downtime").status_code == 403
    assert client.post("/downtime/courses/1/reviewed", data={"csrf_token": csrf}).status_code == 403
    client.post("/logout", data={"csrf_token": csrf})
    csrf = signed_in(client, "scheduler")
    page = client.get("/downtime/new")
    assert page.status_code == 200 and 'name="starts_local"' in page.get_data(as_text=True)
    assert client.post("/downtime/new", data={**values, "csrf_token": "wrong"}).status_code == 400
    db.expire_all()
    assert db.scalar(sa.select(sa.func.count()).select_from(Downtime)) == 0
