"""A second course for the same patient: booking it close to another active course needs an
acknowledgement, which is recorded; the database still forbids overlapping sessions."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
import sqlalchemy as sa

from scheduler.errors import Conflict, NearbyCourseWarning
from scheduler.models import BookingEvent, Course, CourseStatus, Fraction
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY  # Monday 2 March 2026
# 10:00 New York time once daylight saving time has started (8 March 2026).
TEN_AM_EDT = time(14, 0)
THREE_PM_EDT = time(19, 0)


def _at(day: date, clock: time = TEN_AM_EDT) -> datetime:
    return datetime.combine(day, clock, UTC)


def _placements(linac_id: int, days: list[date], clock: time = TEN_AM_EDT) -> list[Placement]:
    return [Placement(n, linac_id, _at(day, clock)) for n, day in enumerate(days, start=1)]


def _weekdays(first: date, count: int) -> list[date]:
    days, day = [], first
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


@pytest.fixture
def setup(session):
    """One patient with a liver course booked Monday 9 to Friday 13 March on linac A, and a
    second draft course (single fraction) for the same patient."""
    w = f.world(session)
    patient = f.patient(session, w["department"])
    first = f.course(session, patient, w["liver"])
    spine = f.protocol(session, "spine-1fx")
    second = f.course(session, patient, spine)
    session.commit()
    linac_a = w["linacs"]["A"].id
    services.book_course(
        session, first.id, _placements(linac_a, _weekdays(date(2026, 3, 9), 5)), now=NOW
    )
    return {"first": first.id, "second": second.id, "linac": linac_a, "world": w}


def _booked_event(session, course_id: int) -> BookingEvent:
    return session.scalars(
        sa.select(BookingEvent).where(
            BookingEvent.course_id == course_id, BookingEvent.kind == "course_booked"
        )
    ).one()


def _nothing_booked(session, course_id: int) -> None:
    session.expire_all()
    assert session.get(Course, course_id).status == CourseStatus.DRAFT
    assert not session.scalars(sa.select(Fraction).where(Fraction.course_id == course_id)).all()
    assert not session.scalars(
        sa.select(BookingEvent).where(BookingEvent.course_id == course_id)
    ).all()


def test_a_course_seven_days_after_another_needs_acknowledging_which_is_recorded(session, setup):
    # Friday 20 March is 7 days after the first course's last session (Friday 13 March).
    placements = _placements(setup["linac"], [date(2026, 3, 20)])

    with pytest.raises(NearbyCourseWarning) as caught:
        services.book_course(session, setup["second"], placements, now=NOW)
    warning = caught.value
    assert warning.status == 409
    assert [n.course_id for n in warning.nearby_courses] == [setup["first"]]
    nearby = warning.nearby_courses[0]
    assert nearby.days_apart == 7
    assert nearby.protocol_code == "liver-5fx" and nearby.status == "booked"
    assert nearby.first_start == "2026-03-09T14:00:00Z"
    assert nearby.last_end == "2026-03-13T14:45:00Z"
    _nothing_booked(session, setup["second"])
    # The same check, before booking, as a read.
    assert services.nearby_courses(session, setup["second"], placements) == warning.nearby_courses

    booked = services.book_course(
        session,
        setup["second"],
        placements,
        acknowledged_course_ids=[setup["first"]],
        now=NOW,
    )
    assert booked.status == CourseStatus.BOOKED
    event = _booked_event(session, setup["second"])
    assert event.payload["nearby_courses_acknowledged"] == [setup["first"]]


def test_a_course_before_another_is_checked_too(session, setup):
    # Monday 2 March (today, later on) is 7 days before the first course starts.
    placements = _placements(setup["linac"], [date(2026, 3, 2)], THREE_PM_EDT)
    with pytest.raises(NearbyCourseWarning) as caught:
        services.book_course(session, setup["second"], placements, now=NOW)
    assert [(n.course_id, n.days_apart) for n in caught.value.nearby_courses] == [
        (setup["first"], 7)
    ]


def test_overlapping_dates_warn_and_overlapping_sessions_stay_impossible(session, setup):
    # Same days as the first course, in the afternoon: the dates overlap, the sessions do not.
    afternoon = _placements(setup["linac"], [date(2026, 3, 11)], THREE_PM_EDT)
    with pytest.raises(NearbyCourseWarning) as caught:
        services.book_course(session, setup["second"], afternoon, now=NOW)
    assert [(n.course_id, n.days_apart) for n in caught.value.nearby_courses] == [
        (setup["first"], 0)
    ]

    # Acknowledging the other course never allows the patient to be in two places at once.
    other_linac = setup["world"]["linacs"]["C"].id
    same_time = _placements(other_linac, [date(2026, 3, 11)])
    with pytest.raises(Conflict):
        services.book_course(
            session,
            setup["second"],
            same_time,
            acknowledged_course_ids=[setup["first"]],
            now=NOW,
        )
    _nothing_booked(session, setup["second"])

    booked = services.book_course(
        session, setup["second"], afternoon, acknowledged_course_ids=[setup["first"]], now=NOW
    )
    assert booked.status == CourseStatus.BOOKED


def test_acknowledging_another_course_does_not_cover_the_nearby_one(session, setup):
    placements = _placements(setup["linac"], [date(2026, 3, 16)])
    with pytest.raises(NearbyCourseWarning):
        services.book_course(
            session, setup["second"], placements, acknowledged_course_ids=[999], now=NOW
        )
    _nothing_booked(session, setup["second"])


def test_a_course_more_than_seven_days_apart_books_without_a_warning(session, setup):
    # Monday 23 March is 10 days after Friday 13 March.
    placements = _placements(setup["linac"], [date(2026, 3, 23)])
    assert services.nearby_courses(session, setup["second"], placements) == []
    booked = services.book_course(session, setup["second"], placements, now=NOW)
    assert booked.status == CourseStatus.BOOKED
    assert _booked_event(session, setup["second"]).payload["nearby_courses_acknowledged"] == []


def test_a_cancelled_course_is_not_a_nearby_course(session, setup):
    services.cancel_course(session, setup["first"], reason="plan changed", now=NOW)
    placements = _placements(setup["linac"], [date(2026, 3, 16)])
    booked = services.book_course(session, setup["second"], placements, now=NOW)
    assert booked.status == CourseStatus.BOOKED


def test_another_patients_course_is_not_a_nearby_course(session, setup):
    w = setup["world"]
    stranger = f.course(
        session, f.patient(session, w["department"]), f.protocol(session, "lung-single")
    )
    session.commit()
    placements = _placements(setup["linac"], [date(2026, 3, 16)])
    booked = services.book_course(session, stranger.id, placements, now=NOW)
    assert booked.status == CourseStatus.BOOKED
