"""The simulation's pathway hook on a real database: the scenario's rooms are made once, each
arrival's pathway is booked through the use case, and the ready date comes back."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime

import jsonschema
import pytest
import sqlalchemy as sa

from scheduler import unit_of_work
from scheduler.models import Course, PathwayStep, Resource
from scheduler.simulation.pathway import (
    book_pathway_for_arrival,
    pathway_options,
    pathway_problems,
)
from scheduler.simulation.scenario import scenario_schema
from scheduler.timeutil import local_date
from tests import factories as f

NOW = f.MONDAY  # Monday 2 March 2026, 07:00 in New York
PATHWAY = {
    "resources": [{"name": "CT sim", "kind": "ct_sim"}, {"name": "IR 1", "kind": "ir_room"}],
    "ct_sim_minutes": 120,
    "planning_working_days": 5,
    "fiducials": {"protocols": ["liver-5fx"], "minutes": 60, "days_before_ct": 7},
}
VALIDATOR = jsonschema.Draft202012Validator(scenario_schema()["properties"]["pathway"])


def _book(session, course_id: int, pathway: dict) -> date:
    return unit_of_work.run(
        session,
        lambda: book_pathway_for_arrival(
            session, course_id, pathway, arrival_day=date(2026, 3, 2), now=NOW
        ),
    )


def test_each_arrival_gets_its_pathway_and_ready_date(session):
    w = f.world(session)
    lung = f.protocol(session, "lung-peripheral-3fx")
    dept = w["department"]
    liver_course = f.course(session, f.patient(session, dept), w["liver"], ready=False)
    lung_courses = [f.course(session, f.patient(session, dept), lung, ready=False) for _ in "ab"]
    session.commit()

    liver_ready = _book(session, liver_course.id, PATHWAY)
    # Markers Monday 2 March, CT a week later, five working days of planning.
    assert liver_ready == date(2026, 3, 16)
    first, second = (_book(session, c.id, PATHWAY) for c in lung_courses)
    # No markers for lung; two-hour CT slots from 07:00 on Monday 2 March, back to back.
    assert first == second == date(2026, 3, 9)
    assert session.scalar(sa.select(sa.func.count(Resource.id))) == 2  # made once
    cts = session.scalars(
        sa.select(PathwayStep.starts_at).where(PathwayStep.kind == "ct_sim").order_by("starts_at")
    ).all()
    assert [local_date(t, dept.timezone) for t in cts] == [date(2026, 3, 2)] * 2 + [
        date(2026, 3, 9)
    ]
    assert (cts[1] - cts[0]).total_seconds() == 120 * 60
    assert session.get(Course, liver_course.id).ready_to_treat_on == liver_ready


def test_without_a_fiducials_object_the_protocol_default_applies() -> None:
    plain = {k: v for k, v in PATHWAY.items() if k != "fiducials"}
    assert pathway_options(plain, "liver-5fx").fiducials is None  # the use case decides
    assert pathway_options(PATHWAY, "liver-5fx").fiducials is True
    assert pathway_options(PATHWAY, "lung-peripheral-3fx").fiducials is False
    assert pathway_options(PATHWAY, "liver-5fx").ct_sim_minutes == 120


def test_the_schema_accepts_the_documented_example_and_refuses_bad_ones() -> None:
    VALIDATOR.validate(PATHWAY)
    VALIDATOR.validate(None)
    assert pathway_problems(PATHWAY) == []
    bad = [
        {**PATHWAY, "ct_sim_minutes": 30},
        {**PATHWAY, "resources": [{"name": "IR 1", "kind": "ir_room"}]},  # no CT simulator
        {**PATHWAY, "resources": [{"name": "MR", "kind": "mri"}]},
        {**PATHWAY, "planning_working_days": "five"},
        {**PATHWAY, "colour": "red"},
        {**PATHWAY, "fiducials": {"minutes": 60}},
    ]
    for document in bad:
        assert list(VALIDATOR.iter_errors(document)), document
    no_room = copy.deepcopy(PATHWAY)
    no_room["resources"] = [{"name": "CT sim", "kind": "ct_sim"}] * 2
    assert pathway_problems(no_room) == [
        "pathway.resources[1].name: 'CT sim' is used twice",
        "pathway.fiducials: needs an ir_room among pathway.resources",
    ]


@pytest.mark.parametrize("hours", [{"0": ["09:00"]}, {"7": ["09:00", "10:00"]}])
def test_the_schema_checks_room_hours(hours) -> None:
    document = copy.deepcopy(PATHWAY)
    document["resources"][1]["opening_hours"] = hours
    assert list(VALIDATOR.iter_errors(document))


def test_now_is_respected(session):
    """An arrival known at midday gets no CT slot earlier that morning."""
    w = f.world(session)
    course = f.course(session, f.patient(session, w["department"]), w["liver"], ready=False)
    session.commit()
    noon = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)  # 12:00 in New York
    plain = {"resources": [{"name": "CT sim", "kind": "ct_sim"}], "planning_working_days": 1}
    plain_no_markers = {**plain, "fiducials": {"protocols": []}}
    ready = unit_of_work.run(
        session,
        lambda: book_pathway_for_arrival(
            session, course.id, plain_no_markers, arrival_day=date(2026, 3, 2), now=noon
        ),
    )
    assert ready == date(2026, 3, 3)
    start = session.scalar(sa.select(PathwayStep.starts_at).where(PathwayStep.kind == "ct_sim"))
    assert start == noon
