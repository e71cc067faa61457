"""The pathway before treatment in a simulated year: each arrival's fiducials, CT simulation
and planning booked through the real use case, giving the course its ready-to-treat date.

A scenario's ``pathway`` object (its JSON Schema is the scenario schema's ``pathway``)::

    {
      "resources": [
        {"name": "CT sim", "kind": "ct_sim"},
        {"name": "IR 1", "kind": "ir_room", "opening_hours": {"0": ["09:00", "13:00"]}}
      ],
      "ct_sim_minutes": 90,
      "planning_working_days": 5,
      "fiducials": {"protocols": ["liver-5fx"], "minutes": 60, "days_before_ct": 7}
    }

``resources`` are the department's CT simulators and IR rooms (``opening_hours`` as the API's
resource input; absent or null: the department's hours). ``fiducials`` names the protocols
whose courses have markers placed; absent or null, the protocols' own default applies (liver
protocols have them). The ready date is the CT day plus the planning working days of the
department (weekends, public holidays and closures skipped).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler import records, services
from scheduler.models import Course, Patient, Protocol, Resource
from scheduler.services import PathwayOptions


def pathway_problems(pathway: dict[str, Any]) -> list[str]:
    """What the schema cannot say: fiducials need an IR room, and names are unique."""
    problems = []
    names = [r["name"] for r in pathway["resources"]]
    for i, name in enumerate(names):
        if name in names[:i]:
            problems.append(f"pathway.resources[{i}].name: {name!r} is used twice")
    fiducials = pathway.get("fiducials")
    wants_room = bool(fiducials and fiducials["protocols"])
    if wants_room and not any(r["kind"] == "ir_room" for r in pathway["resources"]):
        problems.append("pathway.fiducials: needs an ir_room among pathway.resources")
    return problems


def pathway_options(pathway: dict[str, Any], protocol_code: str) -> PathwayOptions:
    """The use case's options for a course of ``protocol_code`` under this pathway."""
    fiducials = pathway.get("fiducials")
    defaults = PathwayOptions()
    return PathwayOptions(
        ct_sim_minutes=pathway.get("ct_sim_minutes", defaults.ct_sim_minutes),
        planning_working_days=pathway.get("planning_working_days", defaults.planning_working_days),
        fiducials=None if fiducials is None else protocol_code in fiducials["protocols"],
        fiducials_minutes=(fiducials or {}).get("minutes", defaults.fiducials_minutes),
        fiducials_days_before_ct=(fiducials or {}).get(
            "days_before_ct", defaults.fiducials_days_before_ct
        ),
    )


def ensure_resources(session: Session, department_id: int, pathway: dict[str, Any]) -> None:
    """Create the scenario's CT simulators and IR rooms the department does not have yet."""
    have = set(
        session.scalars(sa.select(Resource.name).where(Resource.department_id == department_id))
    )
    for spec in pathway["resources"]:
        if spec["name"] not in have:
            records.create_resource(
                session,
                {
                    "department_id": department_id,
                    "kind": spec["kind"],
                    "name": spec["name"],
                    "opening_hours": spec.get("opening_hours"),
                },
            )


def book_pathway_for_arrival(
    session: Session,
    course_id: int,
    pathway: dict[str, Any],
    *,
    arrival_day: date,
    now: datetime,
) -> date:
    """Book the course's pathway from its arrival day on; its ready-to-treat date.

    One step of the caller's unit of work (flushes only). The course's ``ready_to_treat_on``
    is set to the returned date, which the caller then books the treatment from.
    """
    department_id, protocol_code = session.execute(
        sa.select(Patient.department_id, Protocol.code)
        .join(Course, Course.patient_id == Patient.id)
        .join(Protocol, Protocol.id == Course.protocol_id)
        .where(Course.id == course_id)
    ).one()
    ensure_resources(session, department_id, pathway)
    booked = services.book_pathway(
        session,
        course_id,
        options=pathway_options(pathway, protocol_code),
        earliest=arrival_day,
        now=now,
    )
    assert booked.ready_on is not None  # a booked pathway always ends in planning
    return booked.ready_on
