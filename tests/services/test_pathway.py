"""The pathway before treatment on a real database (SQLite and PostgreSQL): resources,
working-day arithmetic, proposing, booking and cancelling a course's pathway."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from scheduler.errors import Conflict, InvalidInput, StateConflict
from scheduler.models import (
    BookingEvent,
    Closure,
    CourseStatus,
    PathwayStep,
    PathwayStepKind,
    PathwayStepStatus,
)
from scheduler.services import PathwayOptions, StepChoice
from scheduler.timeutil import local_date, local_minutes
from tests import factories as f
from tests.committing import records, services

NOW = f.MONDAY  # Monday 2 March 2026, 07:00 in New York
TZ = "America/New_York"


def _world(session, *, ir: bool = True) -> dict:
    w = f.world(session)
    dept = w["department"]
    w["ct"] = records.create_resource(
        session, {"department_id": dept.id, "kind": "ct_sim", "name": "CT sim"}
    )
    if ir:
        # The IR room keeps its own, shorter hours.
        w["ir"] = records.create_resource(
            session,
            {
                "department_id": dept.id,
                "kind": "ir_room",
                "name": "IR 1",
                "opening_hours": {str(d): ["09:00", "13:00"] for d in range(5)},
            },
        )
    w["lung"] = f.protocol(session, "lung-peripheral-3fx")
    session.commit()
    return w


def _course(session, w, protocol="liver"):
    course = f.course(session, f.patient(session, w["department"]), w[protocol], ready=False)
    session.commit()
    return course


def test_planning_days_skip_a_weekend_a_public_holiday_and_a_closure(session):
    w = _world(session)
    dept = w["department"]
    # Thursday 21 May 2026; Monday 25 May is Memorial Day (US); Tuesday 26 a local closure.
    session.add(Closure(department_id=dept.id, day=date(2026, 5, 26), reason="Training"))
    session.commit()
    thursday = date(2026, 5, 21)
    ready = [services.planning_ready_on(session, dept, thursday, n) for n in (1, 2, 3)]
    assert ready == [date(2026, 5, 22), date(2026, 5, 27), date(2026, 5, 28)]
    # Without the closure, Tuesday counts again; the holiday still does not.
    session.execute(sa.delete(Closure))
    session.commit()
    assert services.planning_ready_on(session, dept, thursday, 2) == date(2026, 5, 26)
    # A long plan runs past the first stretch of calendar read: 30 working days skip
    # Memorial Day, Juneteenth (Friday 19 June) and Independence Day observed (Friday 3 July).
    assert services.planning_ready_on(session, dept, thursday, 30) == date(2026, 7, 7)


def test_liver_pathway_places_fiducials_days_before_the_ct_and_books_the_ready_date(session):
    w = _world(session)
    course = _course(session, w)

    proposal = services.propose_pathway(session, course.id, now=NOW)
    fiducials, ct, planning = proposal.steps
    assert [s.kind for s in proposal.steps] == ["fiducials", "ct_sim", "planning"]
    # Earliest IR time: today at the room's own opening, 09:00 local.
    assert fiducials.resource_id == w["ir"].id
    assert local_date(fiducials.starts_at, TZ) == date(2026, 3, 2)
    assert local_minutes(fiducials.starts_at, TZ) == 9 * 60
    assert fiducials.ends_at - fiducials.starts_at == timedelta(minutes=60)
    # CT a week later at the department's opening, 90 minutes by default.
    assert ct.resource_id == w["ct"].id
    assert local_date(ct.starts_at, TZ) == date(2026, 3, 9)
    assert local_minutes(ct.starts_at, TZ) == 7 * 60
    assert ct.ends_at - ct.starts_at == timedelta(minutes=90)
    # Planning: five working days after Monday 9 March.
    assert planning.working_days == 5
    assert proposal.ready_on == planning.ready_on == date(2026, 3, 16)

    booked = services.book_pathway(session, course.id, now=NOW, actor_id=None)
    assert booked.ready_on == date(2026, 3, 16)
    session.expire_all()
    steps = session.scalars(sa.select(PathwayStep).order_by(PathwayStep.id)).all()
    assert [(s.kind, s.status) for s in steps] == [
        ("fiducials", "booked"),
        ("ct_sim", "booked"),
        ("planning", "booked"),
    ]
    assert steps[1].starts_at == ct.starts_at
    assert session.get(type(course), course.id).ready_to_treat_on == date(2026, 3, 16)
    events = session.scalars(sa.select(BookingEvent)).all()
    assert [e.kind for e in events] == ["pathway_booked"]
    assert events[0].payload["ready_on"] == "2026-03-16"
    assert len(events[0].payload["steps"]) == 3

    # Treatment proposals start no earlier than the ready date; readiness stays the gate.
    result = services.propose_schedules(session, course.id, now=NOW)
    assert result.schedules
    assert all(local_date(s.first_start, TZ) >= date(2026, 3, 16) for s in result.schedules)
    assert session.get(type(course), course.id).ready_to_treat is False


def test_other_protocols_have_no_fiducials_unless_asked(session):
    w = _world(session)
    lung = _course(session, w, "lung")
    proposal = services.propose_pathway(session, lung.id, now=NOW)
    assert [s.kind for s in proposal.steps] == ["ct_sim", "planning"]
    assert local_date(proposal.steps[0].starts_at, TZ) == date(2026, 3, 2)
    asked = services.propose_pathway(
        session,
        lung.id,
        options=PathwayOptions(fiducials=True, fiducials_days_before_ct=3, ct_sim_minutes=60),
        now=NOW,
    )
    assert [s.kind for s in asked.steps] == ["fiducials", "ct_sim", "planning"]
    assert local_date(asked.steps[1].starts_at, TZ) == date(2026, 3, 5)
    assert asked.steps[1].ends_at - asked.steps[1].starts_at == timedelta(minutes=60)
    liver = _course(session, w)
    without = services.propose_pathway(
        session, liver.id, options=PathwayOptions(fiducials=False), now=NOW
    )
    assert [s.kind for s in without.steps] == ["ct_sim", "planning"]


def test_booked_steps_are_busy_for_the_next_course(session):
    w = _world(session)
    options = PathwayOptions(fiducials=False)
    first = services.book_pathway(session, _course(session, w, "lung").id, options=options, now=NOW)
    second = services.book_pathway(
        session, _course(session, w, "lung").id, options=options, now=NOW
    )
    ct_first = next(s for s in first.steps if s.kind == "ct_sim")
    ct_second = next(s for s in second.steps if s.kind == "ct_sim")
    assert ct_second.starts_at == ct_first.ends_at  # the next quarter hour after 08:30


def test_a_taken_room_time_is_a_conflict_and_nothing_is_written(session):
    w = _world(session)
    options = PathwayOptions(fiducials=False)
    first = services.book_pathway(session, _course(session, w, "lung").id, options=options, now=NOW)
    ct = next(s for s in first.steps if s.kind == "ct_sim")
    other = _course(session, w, "lung")
    overlapping = StepChoice(w["ct"].id, ct.starts_at + timedelta(minutes=30))
    with pytest.raises(Conflict, match="CT sim is booked"):
        services.book_pathway(session, other.id, options=options, ct_sim=overlapping, now=NOW)
    assert session.scalar(sa.select(sa.func.count(PathwayStep.id))) == 2
    assert session.get(type(other), other.id).ready_to_treat_on is None
    # Right after it is free.
    fine = services.book_pathway(
        session, other.id, options=options, ct_sim=StepChoice(w["ct"].id, ct.ends_at), now=NOW
    )
    assert fine.ready_on is not None


# SQLite has no exclusion constraints (its writers are serialised), so this is PostgreSQL's.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_database_refuses_overlapping_booked_steps_on_postgresql(session):
    w = _world(session)
    course = _course(session, w, "lung")
    start = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)

    def step(minutes_later: int, status: str = "booked") -> PathwayStep:
        at = start + timedelta(minutes=minutes_later)
        return PathwayStep(
            course_id=course.id,
            kind=PathwayStepKind.CT_SIM,
            resource_id=w["ct"].id,
            starts_at=at,
            ends_at=at + timedelta(minutes=60),
            status=status,
        )

    session.add_all([step(0), step(30, PathwayStepStatus.CANCELLED), step(60)])
    session.commit()  # cancelled and back-to-back steps do not clash
    session.add(step(30))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


def test_cancelling_frees_the_room_and_allows_booking_again(session):
    w = _world(session)
    course = _course(session, w)
    booked = services.book_pathway(session, course.id, now=NOW)
    first_starts = [s.starts_at for s in booked.booked]
    with pytest.raises(StateConflict, match="already has a booked pathway"):
        services.book_pathway(session, course.id, now=NOW)
    cancelled = services.cancel_pathway(session, course.id, now=NOW)
    assert {s.status for s in cancelled.steps} == {"cancelled"}
    assert cancelled.ready_on is None
    with pytest.raises(StateConflict, match="no booked pathway"):
        services.cancel_pathway(session, course.id, now=NOW)
    again = services.book_pathway(session, course.id, now=NOW)
    assert [s.starts_at for s in again.booked] == first_starts
    kinds = session.scalars(sa.select(BookingEvent.kind).order_by(BookingEvent.id)).all()
    assert kinds == ["pathway_booked", "pathway_cancelled", "pathway_booked"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (PathwayOptions(ct_sim_minutes=30), "ct_sim_minutes"),
        (PathwayOptions(ct_sim_minutes=121), "ct_sim_minutes"),
        (PathwayOptions(planning_working_days=0), "planning_working_days"),
        (PathwayOptions(fiducials_minutes=True), "fiducials_minutes"),
        (PathwayOptions(fiducials_days_before_ct=0), "fiducials_days_before_ct"),
    ],
)
def test_bad_options_name_their_field(session, options, field):
    w = _world(session)
    course = _course(session, w)
    with pytest.raises(InvalidInput) as raised:
        services.propose_pathway(session, course.id, options=options, now=NOW)
    assert [e.field for e in raised.value.errors] == [field]


def test_bad_choices_and_states_are_refused(session):
    w = _world(session, ir=False)
    course = _course(session, w)
    # A liver course wants fiducials, and the department has no IR room.
    with pytest.raises(InvalidInput, match="no active interventional radiology room"):
        services.propose_pathway(session, course.id, now=NOW)
    options = PathwayOptions(fiducials=False)
    monday_7am = datetime(2026, 3, 9, 11, 0, tzinfo=UTC)  # EDT since the 8th
    cases = [
        (StepChoice(w["ct"].id, monday_7am - timedelta(days=14)), "in the past"),
        (StepChoice(w["ct"].id, monday_7am - timedelta(minutes=15)), "outside CT sim's hours"),
        (StepChoice(w["ct"].id, monday_7am - timedelta(days=1)), "closed that weekday"),
        (StepChoice(w["ct"].id, datetime(2026, 5, 25, 13, 0, tzinfo=UTC)), "closed that day"),
        (StepChoice(99999, monday_7am), "no such resource"),
    ]
    for choice, problem in cases:
        with pytest.raises(InvalidInput) as raised:
            services.book_pathway(session, course.id, options=options, ct_sim=choice, now=NOW)
        assert problem in raised.value.errors[0].message
    with pytest.raises(InvalidInput, match="not valid"):
        services.book_pathway(
            session, course.id, ct_sim=StepChoice(w["ct"].id, monday_7am), now=NOW
        )
    assert session.scalar(sa.select(sa.func.count(PathwayStep.id))) == 0
    course.status = CourseStatus.CANCELLED
    session.commit()
    with pytest.raises(StateConflict):
        services.propose_pathway(session, course.id, options=options, now=NOW)


def test_resources_are_department_records_with_checked_fields(session):
    w = _world(session)
    dept = w["department"]
    assert [r.name for r in records.list_resources(session, department_id=dept.id)] == [
        "CT sim",
        "IR 1",
    ]
    assert [r.name for r in records.list_resources(session, kind="ir_room")] == ["IR 1"]
    changed = records.update_resource(
        session, w["ct"].id, {"name": "CT sim 1", "opening_hours": {"5": ["08:00", "12:00"]}}
    )
    assert changed.opening_hours == {"5": ["08:00", "12:00"]}
    bad = [
        ({"department_id": dept.id, "kind": "mri", "name": "MR"}, "kind"),
        ({"department_id": dept.id, "kind": "ct_sim", "name": "IR 1"}, "name"),
        ({"department_id": dept.id, "kind": "ct_sim", "name": " "}, "name"),
        ({"department_id": 424242, "kind": "ct_sim", "name": "X"}, "department_id"),
        (
            {"department_id": dept.id, "kind": "ct_sim", "name": "X", "opening_hours": {"0": []}},
            "opening_hours.0",
        ),
        ({"department_id": dept.id, "kind": "ct_sim", "name": "X", "colour": "red"}, "colour"),
    ]
    for values, field in bad:
        with pytest.raises(InvalidInput) as raised:
            records.create_resource(session, values)
        assert field in [e.field for e in raised.value.errors], values
    with pytest.raises(InvalidInput) as raised:
        records.update_resource(session, w["ct"].id, {"kind": "ir_room"})
    assert [e.field for e in raised.value.errors] == ["kind"]


def test_readiness_marks_the_matching_steps_done(session):
    w = _world(session)
    course = _course(session, w)
    services.book_pathway(session, course.id, now=NOW)
    done_at = NOW + timedelta(days=7)
    for step in ("fiducials_placed", "ct_simulation"):
        services.record_readiness(session, course.id, step=step, done_at=done_at, now=done_at)
    statuses = dict(session.execute(sa.select(PathwayStep.kind, PathwayStep.status)).all())
    assert statuses == {"fiducials": "done", "ct_sim": "done", "planning": "booked"}
    services.record_readiness(session, course.id, step="ct_simulation", done_at=None, now=done_at)
    statuses = dict(session.execute(sa.select(PathwayStep.kind, PathwayStep.status)).all())
    assert statuses == {"fiducials": "done", "ct_sim": "booked", "planning": "booked"}
    services.record_readiness(
        session, course.id, step="plan_approved", done_at=done_at, now=done_at
    )
    statuses = dict(session.execute(sa.select(PathwayStep.kind, PathwayStep.status)).all())
    assert statuses["planning"] == "done"
