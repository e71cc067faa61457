"""plan_courses on a real database: its plans book through the booking use case as they are."""

from __future__ import annotations

from datetime import time

import sqlalchemy as sa

from scheduler.models import Course, CourseStatus, Fraction
from scheduler.optimiser import CourseRequest, plan_courses
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY


def _placements(schedule) -> list[Placement]:
    return [Placement(p.number, p.linac_id, p.start) for p in schedule.fractions]


def _book(session, plans) -> None:
    for course_id, schedule in plans.items():
        services.book_course(session, course_id, _placements(schedule), now=NOW)


def test_a_batch_of_courses_books_without_a_violation(session, caplog):
    w = f.world(session)
    dept = w["department"]
    lung = f.protocol(session, "lung-peripheral-3fx")
    courses = [
        f.course(session, f.patient(session, dept), w["liver"] if i % 2 else lung) for i in range(5)
    ]
    session.commit()
    requests = [
        CourseRequest(
            c.id, priority=1 + i % 5, preferred_window=(time(8), time(12)) if i == 0 else None
        )
        for i, c in enumerate(courses)
    ]
    with caplog.at_level("ERROR", logger="scheduler.optimiser"):
        plans = plan_courses(session, dept.id, requests, now=NOW, time_limit_seconds=5)
    assert not caplog.records  # nothing dropped by the safety net
    assert set(plans) == {c.id for c in courses}
    _book(session, plans)
    booked = session.scalars(sa.select(Course).where(Course.id.in_(plans))).all()
    assert all(c.status == CourseStatus.BOOKED for c in booked)
    assert session.scalar(sa.select(sa.func.count()).select_from(Fraction)) == sum(
        len(s.fractions) for s in plans.values()
    )
