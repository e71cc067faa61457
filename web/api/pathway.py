"""The pathway before treatment: CT simulators and IR rooms, and a course's pathway steps."""

from __future__ import annotations

from scheduler import records, services
from scheduler.models import PathwayStep, Role
from scheduler.services import CoursePathway, PathwayOptions, ProposedStep, StepChoice
from scheduler.timeutil import to_local
from web.api import schemas as s
from web.api.convert import instant
from web.api.registry import Audit, routes
from web.api.security import current_user_id
from web.db import get_session

ADMIN, SCHEDULER, VIEWER = Role.ADMIN.value, Role.SCHEDULER.value, Role.VIEWER.value


# --- resources ------------------------------------------------------------------------------


@routes.operation(
    "GET", "/resources", summary="List CT simulators and IR rooms", tag="Resources",
    role=VIEWER, query=s.ResourceQuery, response=s.ResourceOut, many=True,
)  # fmt: skip
def list_resources(query: s.ResourceQuery):
    return records.list_resources(get_session(), department_id=query.department_id, kind=query.kind)


@routes.operation(
    "POST", "/resources", summary="Add a CT simulator or IR room", tag="Resources",
    role=ADMIN, body=s.ResourceIn, response=s.ResourceOut, status=201,
    audit=Audit("create", "resource"),
)  # fmt: skip
def create_resource(body: s.ResourceIn):
    return records.create_resource(get_session(), body.model_dump())


@routes.operation(
    "GET", "/resources/{resource_id}", summary="Get a CT simulator or IR room",
    tag="Resources", role=VIEWER, response=s.ResourceOut,
)  # fmt: skip
def get_resource(resource_id: int):
    return records.get_resource(get_session(), resource_id)


@routes.operation(
    "PATCH", "/resources/{resource_id}", summary="Update a CT simulator or IR room",
    tag="Resources", role=ADMIN, body=s.ResourcePatch, response=s.ResourceOut,
    audit=Audit("update", "resource"),
)  # fmt: skip
def update_resource(resource_id: int, body: s.ResourcePatch):
    """Steps already booked on it stay booked; deactivating it only stops new bookings."""
    return records.update_resource(get_session(), resource_id, body.model_dump(exclude_unset=True))


# --- a course's pathway ---------------------------------------------------------------------


def _options(body: s.PathwayOptionsIn) -> PathwayOptions:
    return PathwayOptions(
        ct_sim_minutes=body.ct_sim_minutes,
        planning_working_days=body.planning_working_days,
        fiducials=body.fiducials,
        fiducials_minutes=body.fiducials_minutes,
        fiducials_days_before_ct=body.fiducials_days_before_ct,
    )


def _step_out(step: ProposedStep | PathwayStep, tz: str) -> dict:
    return {
        "kind": step.kind,
        "resource_id": step.resource_id,
        "resource_name": (
            step.resource_name
            if isinstance(step, ProposedStep)
            else (step.resource.name if step.resource is not None else None)
        ),
        "starts_at": step.starts_at,
        "ends_at": step.ends_at,
        "local_start": to_local(step.starts_at, tz) if step.starts_at else None,
        "local_end": to_local(step.ends_at, tz) if step.ends_at else None,
        "working_days": step.working_days,
        "ready_on": step.ready_on,
    }


def pathway_out(pathway: CoursePathway) -> s.PathwayOut:
    tz = pathway.timezone
    return s.PathwayOut(
        course_id=pathway.course.id,
        timezone=tz,
        ready_on=pathway.ready_on,
        ready_to_treat_on=pathway.course.ready_to_treat_on,
        steps=[
            s.PathwayStepOut(id=step.id, status=step.status, **_step_out(step, tz))
            for step in pathway.steps
        ],
    )


@routes.operation(
    "GET", "/courses/{course_id}/pathway", summary="The course's pathway before treatment",
    tag="Pathway", role=VIEWER, response=s.PathwayOut,
)  # fmt: skip
def get_pathway(course_id: int):
    return pathway_out(services.get_pathway(get_session(), course_id))


@routes.operation(
    "POST", "/courses/{course_id}/pathway/proposals",
    summary="Propose the earliest pathway and the ready date it gives", tag="Pathway",
    role=SCHEDULER, body=s.PathwayOptionsIn, response=s.PathwayProposalOut, errors=(409,),
    audit=Audit("propose_pathway", "course"),
)  # fmt: skip
def propose_pathway(course_id: int, body: s.PathwayOptionsIn):
    """Fiducial markers (when wanted) at the earliest free IR room time, the CT simulation at
    the earliest CT simulator time at least `fiducials_days_before_ct` days later, then
    planning for `planning_working_days` department working days: `ready_on` is the last of
    them. Nothing is booked: send the slots to the booking endpoint."""
    result = services.propose_pathway(
        get_session(), course_id, options=_options(body), earliest=body.earliest
    )
    tz = result.timezone
    return s.PathwayProposalOut(
        course_id=result.course_id,
        timezone=tz,
        ready_on=result.ready_on,
        steps=[s.ProposedStepOut(**_step_out(step, tz)) for step in result.steps],
    )


@routes.operation(
    "POST", "/courses/{course_id}/pathway", summary="Book the course's pathway",
    tag="Pathway", role=SCHEDULER, body=s.PathwayBookIn, response=s.PathwayOut, status=201,
    errors=(409,),
    audit=Audit("book_pathway", "course"),
)  # fmt: skip
def book_pathway(course_id: int, body: s.PathwayBookIn):
    """Books the chosen slots (409 if one was taken since the proposal), or the earliest
    pathway when no slot is sent, and sets the course's `ready_to_treat_on` to its ready
    date. Plan approval and physics QA stay the gate for the first fraction. A course with a
    booked pathway is a 409: cancel it first."""
    session = get_session()
    tz = records.department_timezone_for_course(session, course_id)

    def choice(slot: s.StepSlotIn | None, field: str) -> StepChoice | None:
        if slot is None:
            return None
        at = instant(slot.starts_at, tz, field=f"{field}.starts_at", fold=slot.fold)
        return StepChoice(slot.resource_id, at)

    booked = services.book_pathway(
        session,
        course_id,
        options=_options(body),
        ct_sim=choice(body.ct_sim_slot, "ct_sim_slot"),
        fiducials=choice(body.fiducials_slot, "fiducials_slot"),
        earliest=body.earliest,
        actor_id=current_user_id(),
    )
    return pathway_out(booked)


@routes.operation(
    "POST", "/courses/{course_id}/pathway/cancel", summary="Cancel the course's booked pathway",
    tag="Pathway", role=SCHEDULER, response=s.PathwayOut, errors=(409,),
    audit=Audit("cancel_pathway", "course"),
)  # fmt: skip
def cancel_pathway(course_id: int):
    """Frees the rooms; the course keeps its ready-to-treat date until changed or rebooked."""
    return pathway_out(
        services.cancel_pathway(get_session(), course_id, actor_id=current_user_id())
    )
