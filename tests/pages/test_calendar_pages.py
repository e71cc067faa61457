"""The calendar pages: week (one column per linac), day and linac week views, utilisation.

The department is New York (US Eastern): 2026-03-08 is the spring-forward Sunday, so the
same 09:00 local booking is 14:00 UTC the week before and 13:00 UTC the week after.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, Downtime
from tests.api.conftest import Seed
from tests.committing import records, services
from tests.pages.conftest import SignIn

NY = ZoneInfo("America/New_York")


def book(
    db: Session, seed: Seed, days: list[date], *, linac: int, hour: int = 9, mrn: str = "MRN-7"
) -> int:
    """A booked liver course of a new patient at ``hour`` local on ``days``; its id."""
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": mrn, "given_name": "Ada",
         "family_name": "Lovelace", "date_of_birth": date(1965, 12, 10),
         "email": f"{mrn.lower()}@example.org",
         "email_consent": True},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    placements = [
        services.Placement(n, linac, datetime(d.year, d.month, d.day, hour, tzinfo=NY))
        for n, d in enumerate(days, start=1)
    ]
    # "now" before the course, so a past week can be booked for the test.
    services.book_course(db, course.id, placements, now=datetime(2026, 1, 5, tzinfo=UTC))
    return course.id


def cell(html: str, day: date, linac_id: int) -> str:
    match = re.search(
        rf'<td data-cell="{day.isoformat()}/{linac_id}">(.*?)</td>', html, flags=re.DOTALL
    )
    assert match, f"no cell for {day} / linac {linac_id}"
    return match.group(1)


def util(html: str) -> list[tuple[int, int]]:
    """(booked, open) of each utilisation figure on the page."""
    return [(int(b), int(o)) for b, o in re.findall(r'data-booked="(\d+)" data-open="(\d+)"', html)]


def test_week_shows_fractions_in_their_linac_column_at_local_time_across_dst(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    days = [date(2026, 3, 4), date(2026, 3, 5), date(2026, 3, 6), date(2026, 3, 9),
            date(2026, 3, 10)]  # fmt: skip
    course_id = book(db, seed, days, linac=seed.linac_ids[1])
    signed_in(client, "viewer")

    before = client.get("/calendar/week?start=2026-03-02")
    assert before.status_code == 200
    html = before.get_data(as_text=True)
    wed = cell(html, date(2026, 3, 4), seed.linac_ids[1])
    assert "09:00–10:00" in wed  # the first session is 60 minutes, 14:00 UTC (EST)
    assert "A.L. MRN-7" in wed and "liver5 · fraction 1/5" in wed
    assert f'href="/courses/{course_id}"' in wed
    assert "status-tentative" in wed and "tentative" in wed  # no plan approval yet
    assert "09:00–09:45" in cell(html, date(2026, 3, 5), seed.linac_ids[1])
    assert "MRN-7" not in cell(html, date(2026, 3, 4), seed.linac_ids[0])

    # A mid-week start shows the week from its Monday; after the change 09:00 is 13:00 UTC.
    after = client.get("/calendar/week?start=2026-03-11").get_data(as_text=True)
    mon = cell(after, date(2026, 3, 9), seed.linac_ids[1])
    assert "09:00–09:45" in mon and "fraction 4/5" in mon and "status-booked" in mon
    assert "prev" in after and "/calendar/week?start=2026-03-02" in after
    assert "/calendar/week?start=2026-03-16" in after

    # Day view: the same session in the linac's column, on its 15-minute row (09:00 is row
    # 9 of a grid that starts at 07:00 opening time), three rows long.
    day = client.get("/calendar/day?date=2026-03-09").get_data(as_text=True)
    assert re.search(r'class="blk blk-fraction status-booked rs-9 rl-3" href="/courses/\d+"', day)
    assert "fraction 4/5" in day
    # One audit entry per page, naming the date range only.
    db.expire_all()
    views = db.query(AuditEntry).filter(AuditEntry.subject_type == "calendar").all()
    assert [v.detail["first"] for v in views] == ["2026-03-02", "2026-03-09", "2026-03-09"]
    assert all(v.subject_id is None for v in views)


def test_holidays_closures_and_downtime_are_shown(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    records.update_department(db, seed.department_id, {"holiday_country": "US"})
    records.add_closure(db, seed.department_id, day=date(2026, 11, 27), reason="Staff training")
    db.add(
        Downtime(
            linac_id=seed.linac_ids[0],
            starts_at=datetime(2026, 11, 24, 12, 0, tzinfo=NY),
            ends_at=datetime(2026, 11, 24, 14, 30, tzinfo=NY),
            kind="unplanned",
            reason="MLC fault",
        )
    )
    db.commit()
    signed_in(client, "viewer")
    html = client.get("/calendar/week?start=2026-11-23").get_data(as_text=True)
    assert "Closed: Thanksgiving" in html
    assert "Closed: Staff training" in html
    down = cell(html, date(2026, 11, 24), seed.linac_ids[0])
    assert "blk-downtime" in down and "12:00–14:30" in down and "MLC fault" in down
    assert "blk-downtime" not in cell(html, date(2026, 11, 24), seed.linac_ids[1])
    day = client.get("/calendar/day?date=2026-11-26").get_data(as_text=True)
    assert "Closed: Thanksgiving" in day
    linac = client.get(f"/calendar/linac/{seed.linac_ids[0]}/week?start=2026-11-23")
    assert linac.status_code == 200
    assert "MLC fault" in linac.get_data(as_text=True)


def test_utilisation_is_booked_over_open_sbrt_minutes(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    # A conventional machine: shown, but its minutes are not SBRT minutes.
    records.create_linac(
        db, {"department_id": seed.department_id, "name": "Clinac", "capabilities": ["imrt"]}
    )
    monday = date(2026, 3, 9)
    book(db, seed, [monday + timedelta(days=i) for i in range(5)], linac=seed.linac_ids[0])
    db.add(
        Downtime(
            linac_id=seed.linac_ids[1],
            starts_at=datetime(2026, 3, 9, 6, 0, tzinfo=NY),  # from before opening
            ends_at=datetime(2026, 3, 9, 8, 0, tzinfo=NY),
            kind="planned",
            reason="QA",
        )
    )
    db.commit()
    signed_in(client, "viewer")
    html = client.get("/calendar/week?start=2026-03-09").get_data(as_text=True)
    # Monday: 2 SBRT linacs x 720 min, minus 60 min of downtime inside opening hours; the
    # 60-minute first fraction booked. Tuesday: 45 minutes of 1440. Weekend: closed.
    figures = util(html)
    assert figures[:3] == [(60, 1380), (45, 1440), (45, 1440)]
    assert figures[5:] == [(0, 0), (0, 0)]
    assert "60 of 1380 min booked (4%)" in html
    assert "util-fill w-5" in html
    linac = client.get(f"/calendar/linac/{seed.linac_ids[1]}/week?start=2026-03-09")
    figures = util(linac.get_data(as_text=True))
    assert figures[0] == (0, 3600 - 60)  # the week total, then each day
    assert figures[1] == (0, 660)


@pytest.mark.pinned_dates
def test_calendar_roles_and_bad_input(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn, now: datetime
) -> None:
    assert client.get("/calendar/week").status_code == 302  # to the sign-in page
    signed_in(client, "viewer")
    week = client.get("/calendar/week")
    assert week.status_code == 200
    html = week.get_data(as_text=True)
    # This week holds the department's today: its row is marked and carries the "now" marker.
    local = now.astimezone(NY)
    monday = local.date() - timedelta(days=local.weekday())
    assert f"/calendar/week?start={monday + timedelta(days=7)}" in html  # "next" after it
    assert "badge-today" in html and 'class="now-marker"' in html
    assert client.get("/calendar/week?start=yesterday").status_code == 400
    assert client.get("/calendar/linac/999/week").status_code == 404


@pytest.mark.pinned_dates
@pytest.mark.parametrize("path", ["/calendar/week", "/calendar/day"])
def test_csp_safe_markup(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn, path: str
) -> None:
    signed_in(client, "viewer")
    html = client.get(path).get_data(as_text=True)
    # The policy allows scripts and styles from this origin only: none may be written inline.
    assert "style=" not in html and "<style" not in html
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert all(re.search(r'\bsrc="/static/[^"]+"', tag) for tag in scripts), scripts
    assert not re.search(r"\bon[a-z]+=", html), "inline event handler"
