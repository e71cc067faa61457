"""plan_courses on a real database: its plans book through the booking use case as they are."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from scheduler.models import Closure, Course, CourseStatus, Downtime, Fraction
from scheduler.optimiser import CourseRequest, plan_courses
from scheduler.optimiser import planning as planning_module
from scheduler.optimiser.model import Solution
from scheduler.services import Placement
from scheduler.timeutil import local_date
from scheduler.types import PhysicistCover, PlannedFraction, Schedule
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY  # Monday 2 March 2026, 07:00 in New York
TZ = "America/New_York"


def _placements(schedule) -> list[Placement]:
    return [Placement(p.number, p.linac_id, p.start) for p in schedule.fractions]


def _book(session, plans) -> None:
    for course_id, schedule in plans.items():
        services.book_course(session, course_id, _placements(schedule), now=NOW)


def _active(session) -> list[Fraction]:
    return list(
        session.scalars(
            sa.select(Fraction)
            .where(Fraction.status.in_(["tentative", "booked", "confirmed"]))
            .order_by(Fraction.starts_at)
        )
    )


@pytest.fixture
def no_drops(caplog):
    """Fails the test if the safety net dropped any plan (it never should)."""
    caplog.set_level(logging.ERROR, logger="scheduler.optimiser")
    yield
    assert [r.getMessage() for r in caplog.records] == []


def test_a_batch_of_courses_books_without_a_violation(session, no_drops):
    w = f.world(session)
    dept = w["department"]
    lung = f.protocol(session, "lung-peripheral-3fx")
    courses = [
        f.course(session, f.patient(session, dept), w["liver"] if i % 2 else lung) for i in range(6)
    ]
    session.commit()
    requests = [
        CourseRequest(c.id, priority=1 + i % 5, preferred_window=(time(8), time(12)) if i else None)
        for i, c in enumerate(courses)
    ]
    plans = plan_courses(session, dept.id, requests, now=NOW, time_limit_seconds=5)
    assert set(plans) == {c.id for c in courses}
    _book(session, plans)
    booked = session.scalars(sa.select(Course).where(Course.id.in_(plans))).all()
    assert all(c.status == CourseStatus.BOOKED for c in booked)
    assert len(_active(session)) == sum(len(s.fractions) for s in plans.values())


def test_closures_downtime_and_existing_bookings_are_respected(session, no_drops):
    w = f.world(session)
    dept, machines = w["department"], w["linacs"]
    tuesday = date(2026, 3, 3)
    session.add(Closure(department_id=dept.id, day=tuesday, reason="Staff training"))
    down_from, down_to = NOW, NOW + timedelta(days=7)
    for name in ("A", "B"):
        session.add(
            Downtime(
                linac_id=machines[name].id, starts_at=down_from, ends_at=down_to, reason="Service"
            )
        )
    earlier = f.course(session, f.patient(session, dept), w["liver"])
    session.commit()
    proposal = services.propose_schedules(session, earlier.id, now=NOW)
    services.book_course(session, earlier.id, _placements(proposal.schedules[0]), now=NOW)
    existing = {(x.linac_id, x.starts_at, x.ends_at) for x in _active(session)}

    courses = [f.course(session, f.patient(session, dept), w["liver"]) for _ in range(4)]
    session.commit()
    plans = plan_courses(
        session, dept.id, [CourseRequest(c.id) for c in courses], now=NOW, time_limit_seconds=5
    )
    assert set(plans) == {c.id for c in courses}
    for schedule in plans.values():
        for fraction in schedule.fractions:
            assert local_date(fraction.start, TZ) != tuesday
            if fraction.linac_id in (machines["A"].id, machines["B"].id):
                assert fraction.start >= down_to
            for linac_id, starts_at, ends_at in existing:
                assert not (
                    linac_id == fraction.linac_id
                    and fraction.start < ends_at
                    and starts_at < fraction.end
                )
    _book(session, plans)
    assert len(_active(session)) == 5 * 5


def test_the_urgent_course_takes_the_scarce_first_slot(session, no_drops):
    dept = f.department(session, opening_hours={str(d): ["08:00", "09:00"] for d in range(5)})
    machines = f.linacs(session, dept)
    for name in ("B", "C"):
        machines[name].active = False
    spine = f.protocol(session, "spine-1fx")
    routine = f.course(session, f.patient(session, dept), spine)
    urgent = f.course(session, f.patient(session, dept), spine)
    session.commit()
    plans = plan_courses(
        session,
        dept.id,
        [CourseRequest(routine.id, priority=5), CourseRequest(urgent.id, priority=1)],
        now=NOW,
    )
    first = {key: local_date(s.first_start, TZ) for key, s in plans.items()}
    assert first[urgent.id] == date(2026, 3, 2)
    assert first[routine.id] == date(2026, 3, 3)
    _book(session, plans)


def test_courses_that_cannot_be_planned_are_absent(session, no_drops):
    w = f.world(session)
    dept = w["department"]
    proton = f.protocol(session, "spine-3fx", capabilities=["sbrt", "proton"])
    impossible = f.course(session, f.patient(session, dept), proton)
    booked = f.course(session, f.patient(session, dept), w["liver"])
    fine = f.course(session, f.patient(session, dept), w["liver"])
    session.commit()
    proposal = services.propose_schedules(session, booked.id, now=NOW)
    services.book_course(session, booked.id, _placements(proposal.schedules[0]), now=NOW)
    requests = [CourseRequest(c.id) for c in (impossible, booked, fine, fine)]
    plans = plan_courses(session, dept.id, requests, now=NOW)
    assert set(plans) == {fine.id}


def test_a_plan_that_would_break_a_rule_is_dropped_and_logged(session, monkeypatch, caplog):
    w = f.world(session)
    dept = w["department"]
    course = f.course(session, f.patient(session, dept), f.protocol(session, "spine-1fx"))
    session.commit()
    start = NOW - timedelta(days=1)  # in the past: validate reports it
    wrong = Schedule((PlannedFraction(1, w["linacs"]["A"].id, start, start + timedelta(hours=1)),))

    def broken_solve(problem, **kwargs):
        return Solution("OPTIMAL", {course.id: wrong}, (), 0, 0, 0, 0.0)

    monkeypatch.setattr(planning_module, "solve", broken_solve)
    with caplog.at_level(logging.ERROR, logger="scheduler.optimiser"):
        plans = plan_courses(session, dept.id, [CourseRequest(course.id)], now=NOW)
    assert plans == {}
    assert f"dropped the plan of course {course.id}" in caplog.text


def test_a_physicist_roster_limits_supervised_first_fractions(session, monkeypatch, no_drops):
    w = f.world(session)
    dept = w["department"]
    spine = f.protocol(session, "spine-1fx")
    courses = [f.course(session, f.patient(session, dept), spine) for _ in range(3)]
    session.commit()
    # One physicist, 08:00-09:00 local on weekdays: one supervised hour a day, though three
    # SBRT linacs are free. The roster comes with the world the engine reads.
    cover = PhysicistCover(by_weekday={d: ((time(8), time(9), 1),) for d in range(5)})
    real_context = planning_module.search_context

    def with_roster(*args, **kwargs):
        return replace(real_context(*args, **kwargs), physicists=cover)

    monkeypatch.setattr(planning_module, "search_context", with_roster)
    plans = plan_courses(
        session, dept.id, [CourseRequest(c.id, priority=2) for c in courses], now=NOW
    )
    days = sorted(local_date(s.first_start, TZ) for s in plans.values())
    assert days == [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
    for schedule in plans.values():
        local = schedule.first_start.astimezone(ZoneInfo(TZ))
        assert (local.hour, local.minute) == (8, 0)
    _book(session, plans)
