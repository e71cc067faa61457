"""Staff per-linac iCalendar feeds: secret-token URL, revocable, minimal data, valid RFC 5545
across a DST change. Runs through HTTP on both database backends."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from icalendar import Calendar
from sqlalchemy.orm import Session

from scheduler.models import CalendarFeed, Course, Fraction, Linac, User
from tests import factories
from tests.committing import accounts, links, services

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DAYS = (date(2026, 3, 4), date(2026, 3, 5), date(2026, 3, 6), date(2026, 3, 9), date(2026, 3, 10))


@pytest.fixture
def travel():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def book(db: Session, *, ready: bool = True) -> tuple[Course, dict[str, Linac]]:
    dept = factories.department(db)
    machines = factories.linacs(db, dept)
    liver = factories.protocol(db)
    patient = factories.patient(db, dept, given_name="Rosa", family_name="Quintero")
    course = factories.course(db, patient, liver, ready=ready)
    db.commit()
    placements = [
        services.Placement(n, machines["A"].id, datetime.combine(day, time(9, 0), NY))
        for n, day in enumerate(DAYS, start=1)
    ]
    return services.book_course(db, course.id, placements, now=NOW), machines


def feed_owner(db: Session) -> int:
    """The admin who makes the feeds of these tests (every feed has an owner)."""
    owner = db.scalar(sa.select(User).where(User.email == "feeds-owner@example.org"))
    if owner is None:
        owner = accounts.create_user(
            db, email="feeds-owner@example.org", name="Feed Owner", role="admin"
        )
    return owner.id


def feed_events(client: FlaskClient, token: str) -> tuple[Calendar, list]:
    response = client.get(f"/feeds/linac/{token}.ics")
    assert response.status_code == 200, response.status_code
    assert response.headers["Content-Type"] == "text/calendar; charset=utf-8"
    calendar = Calendar.from_ical(response.data)
    return calendar, sorted(calendar.walk("VEVENT"), key=lambda e: e.decoded("DTSTART"))


def course_fractions(db: Session, course: Course) -> list[Fraction]:
    db.expire_all()
    rows = list(
        db.scalars(
            sa.select(Fraction).where(Fraction.course_id == course.id).order_by(Fraction.number)
        )
    )
    db.commit()  # SQLite: release the write lock the app's requests need
    return rows


def test_feed_lists_the_linacs_fractions_with_minimal_data(
    client: FlaskClient, db: Session, travel
) -> None:
    course, machines = book(db, ready=False)
    mrn = course.patient.mrn
    token = links.issue_feed_token(
        db, machines["A"].id, "Physics phones", created_by_id=feed_owner(db)
    )
    assert len(token) == 32
    assert db.scalars(sa.select(CalendarFeed.token_digest)).one() == links.token_digest(token)
    db.commit()

    calendar, events = feed_events(client, token)
    assert str(calendar["X-WR-CALNAME"]) == "TrueBeam A"
    assert [str(z["TZID"]) for z in calendar.walk("VTIMEZONE")] == ["America/New_York"]
    assert [str(e["SUMMARY"]) for e in events] == [f"Fraction {n}/5 - {mrn}" for n in range(1, 6)]
    assert [str(e["STATUS"]) for e in events] == ["TENTATIVE"] + ["CONFIRMED"] * 4
    assert {str(e["LOCATION"]) for e in events} == {"TrueBeam A"}
    body = client.get(f"/feeds/linac/{token}.ics").get_data(as_text=True)
    body = "".join(line for line in body.splitlines() if not line.startswith("PRODID"))
    for private in ("Rosa", "Quintero", "R.Q.", "Liver", "liver", "SBRT"):
        assert private not in body

    # Every local time reads 09:00, before and after the DST change, by the file's own zone.
    vtimezone = calendar.walk("VTIMEZONE")[0].to_tz(lookup_tzid=False)
    for event, fraction in zip(events, course_fractions(db, course), strict=True):
        assert str(event["UID"]) == f"fraction-{fraction.id}@127.0.0.1"
        wall = event.decoded("DTSTART").replace(tzinfo=None)
        assert wall.time() == time(9, 0)
        assert wall.replace(tzinfo=vtimezone).astimezone(UTC) == fraction.starts_at
    offsets = [e.decoded("DTSTART").utcoffset() for e in events]
    assert offsets == [timedelta(hours=-5)] * 3 + [timedelta(hours=-4)] * 2

    # Another linac's feed does not show them.
    other = links.issue_feed_token(db, machines["C"].id, "Edge", created_by_id=feed_owner(db))
    _, none = feed_events(client, other)
    assert none == []


def test_feed_follows_moves_and_cancellations(client: FlaskClient, db: Session, travel) -> None:
    course, machines = book(db)
    token_a = links.issue_feed_token(db, machines["A"].id, "A", created_by_id=feed_owner(db))
    token_b = links.issue_feed_token(db, machines["B"].id, "B", created_by_id=feed_owner(db))
    third, fourth, last = course_fractions(db, course)[2:]

    # Same time on the beam-matched twin: leaves A's feed, appears in B's with a new SEQUENCE.
    services.move_fraction(db, last.id, linac_id=machines["B"].id, starts_at=last.starts_at)
    _, on_a = feed_events(client, token_a)
    _, on_b = feed_events(client, token_b)
    assert f"fraction-{last.id}@127.0.0.1" not in {str(e["UID"]) for e in on_a}
    assert [(str(e["UID"]), int(e["SEQUENCE"])) for e in on_b] == [
        (f"fraction-{last.id}@127.0.0.1", 2)
    ]

    # A later time on the same linac: same UID, SEQUENCE up, new start.
    later = datetime.combine(date(2026, 3, 6), time(11, 0), NY)
    services.move_fraction(db, third.id, linac_id=third.linac_id, starts_at=later)
    services.cancel_fraction(db, fourth.id, reason="patient unwell")
    _, events = feed_events(client, token_a)
    by_uid = {str(e["UID"]): e for e in events}
    moved = by_uid[f"fraction-{third.id}@127.0.0.1"]
    assert int(moved["SEQUENCE"]) == 2 and moved.decoded("DTSTART") == later
    cancelled = by_uid[f"fraction-{fourth.id}@127.0.0.1"]
    assert str(cancelled["STATUS"]) == "CANCELLED" and int(cancelled["SEQUENCE"]) == 2


def test_feed_covers_the_next_eight_weeks(client: FlaskClient, db: Session, travel) -> None:
    _course, machines = book(db)
    token = links.issue_feed_token(db, machines["A"].id, "A", created_by_id=feed_owner(db))
    travel.move_to(datetime(2026, 3, 9, 15, 0, tzinfo=UTC))  # after 4-6 March, minus a day
    _, events = feed_events(client, token)
    assert [e.decoded("DTSTART").date() for e in events] == [date(2026, 3, 9), date(2026, 3, 10)]
    travel.move_to(datetime(2026, 1, 1, tzinfo=UTC))  # the course is > 8 weeks ahead
    _, events = feed_events(client, token)
    assert events == []


def test_revoked_or_unknown_feed_is_404(client: FlaskClient, db: Session, travel) -> None:
    _course, machines = book(db)
    token = links.issue_feed_token(db, machines["A"].id, "A", created_by_id=feed_owner(db))
    feed_id = db.scalars(sa.select(CalendarFeed.id)).one()
    db.commit()
    assert client.get(f"/feeds/linac/{token}.ics").status_code == 200

    revoked = links.revoke_feed(db, feed_id, now=NOW)
    assert revoked is not None and revoked.revoked_at == NOW
    assert links.revoke_feed(db, feed_id, now=NOW + timedelta(days=1)).revoked_at == NOW
    assert links.revoke_feed(db, feed_id + 100, now=NOW) is None
    assert client.get(f"/feeds/linac/{token}.ics").status_code == 404
    assert links.resolve_feed_token(db, token) is None
    db.commit()

    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for url in (f"/feeds/linac/{tampered}.ics", "/feeds/linac/short.ics", f"/feeds/linac/{token}"):
        assert client.get(url).status_code == 404
