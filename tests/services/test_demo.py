"""The demo department that `make run` loads."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from scheduler.demo import DEMO_PATIENTS, seed_demo
from scheduler.models import Course, CourseStatus, Department, Fraction, Linac, Protocol, User
from scheduler.protocols import DEFAULT_PROTOCOLS
from tests.factories import MONDAY


def test_seed_demo_books_courses_and_is_idempotent(session, settings):
    first = seed_demo(session, settings, now=MONDAY)
    second = seed_demo(session, settings, now=MONDAY)
    assert first == second
    assert any("admin@demo.example" in str(v) for v in first.values())

    count = lambda model: session.scalar(sa.select(sa.func.count()).select_from(model))  # noqa: E731
    assert count(Department) == 1
    assert count(Linac) == 4
    assert count(Protocol) == len(DEFAULT_PROTOCOLS)
    assert count(User) == 2
    courses = session.scalars(sa.select(Course)).all()
    assert len(courses) == len(DEMO_PATIENTS)
    assert all(c.status == CourseStatus.BOOKED for c in courses)
    expected = sum(c.protocol.fractions for c in courses)
    assert count(Fraction) == expected
    dept = session.scalars(sa.select(Department)).one()
    assert dept.timezone == "America/New_York"
    sbrt = [linac for linac in dept.linacs if "sbrt" in linac.capabilities]
    assert len(sbrt) == 3 and len({linac.beam_group for linac in sbrt if linac.beam_group}) == 1


@pytest.mark.pinned_dates
def test_seed_demo_books_every_course_whatever_the_day(session, settings, now: datetime):
    """`make run` loads the demo on whatever day it is run: holidays ahead, a weekend, late at
    night or a DST change must not leave a course unbooked or a fraction in the past."""
    seed_demo(session, settings, now=now)
    courses = session.scalars(sa.select(Course).order_by(Course.id)).all()
    # Ready from tomorrow on, in the department's calendar (late at night UTC is a day ahead).
    tomorrow = now.astimezone(ZoneInfo("America/New_York")).date() + timedelta(days=1)
    assert [c.ready_to_treat_on for c in courses] == [
        tomorrow + timedelta(days=i) for i in range(len(DEMO_PATIENTS))
    ]
    assert len(courses) == len(DEMO_PATIENTS)
    assert all(c.status == CourseStatus.BOOKED for c in courses), [c.status for c in courses]
    starts = session.scalars(sa.select(Fraction.starts_at)).all()
    assert len(starts) == sum(c.protocol.fractions for c in courses)
    assert min(starts) > now
