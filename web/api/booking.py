"""Courses, their schedules and fractions, and linac downtime (the booking use cases)."""

from __future__ import annotations

from datetime import datetime

from scheduler import records, services
from scheduler.errors import FieldError, InvalidInput
from scheduler.models import Role
from scheduler.services import Placement
from web.api import schemas as s
from web.api.convert import (
    course_out,
    downtime_out,
    fraction_out,
    fractions_out,
    instant,
    missed_out,
    planned_out,
    schedule_out,
)
from web.api.registry import routes
from web.api.security import current_user_id
from web.db import get_session

ADMIN, SCHEDULER, VIEWER = Role.ADMIN.value, Role.SCHEDULER.value, Role.VIEWER.value
# Calendars show a day or a week; a bounded range keeps one request from reading everything.
MAX_LISTING_DAYS = 62


# --- courses --------------------------------------------------------------------------------


@routes.operation(
    "GET", "/courses", summary="List courses", tag="Courses", role=VIEWER, query=s.CourseQuery,
    response=s.CourseOut, many=True,
)  # fmt: skip
def list_courses(query: s.CourseQuery):
    found = records.list_courses(
        get_session(),
        patient_id=query.patient_id,
        status=query.status,
        limit=query.limit,
        offset=query.offset,
    )
    return [course_out(course) for course in found]


@routes.operation(
    "POST", "/courses", summary="Create a course for a patient", tag="Courses", role=SCHEDULER,
    body=s.CourseIn, response=s.CourseOut, status=201,
)  # fmt: skip
def create_course(body: s.CourseIn):
    return course_out(records.create_course(get_session(), body.model_dump()))


@routes.operation(
    "GET", "/courses/{course_id}", summary="Get a course with its fractions", tag="Courses",
    role=VIEWER, response=s.CourseOut,
)  # fmt: skip
def get_course(course_id: int):
    return course_out(records.get_course(get_session(), course_id))


@routes.operation(
    "PATCH", "/courses/{course_id}", summary="Update priority, ready-to-treat date or notes",
    tag="Courses", role=SCHEDULER, body=s.CoursePatch, response=s.CourseOut,
)  # fmt: skip
def update_course(course_id: int, body: s.CoursePatch):
    return course_out(
        records.update_course(get_session(), course_id, body.model_dump(exclude_unset=True))
    )


@routes.operation(
    "POST", "/courses/{course_id}/proposals", summary="Propose complete schedules",
    tag="Courses", role=SCHEDULER, body=s.ProposalIn, response=s.ProposalOut,
)  # fmt: skip
def propose_schedules(course_id: int, body: s.ProposalIn):
    """Valid schedules for every fraction, best score first; or why none fits and when one
    would. Each schedule's score says why it ranks where it does: penalty points for the
    wait, the overall time, more than one linac, changing times of day, fractions outside
    the preferred window, uneven gaps and fragmenting a linac's free time. Options differ
    in their first day or in the linacs they use.

    Nothing is booked: send one of the schedules to the booking endpoint.
    """
    window = body.preferred_window
    result = services.propose_schedules(
        get_session(),
        course_id,
        earliest=body.earliest,
        count=body.count,
        preferred_window=None if window is None else (window.start, window.end),
    )
    tz = result.timezone
    return s.ProposalOut(
        timezone=tz,
        schedules=[schedule_out(schedule, tz) for schedule in result.schedules],
        explanation=(
            None
            if result.explanation is None
            else s.ExplanationOut.model_validate(result.explanation, from_attributes=True)
        ),
    )


@routes.operation(
    "POST", "/courses/{course_id}/booking", summary="Book every fraction of a course",
    tag="Courses", role=SCHEDULER, body=s.BookingIn, response=s.CourseOut, status=201,
    errors=(409,),
)  # fmt: skip
def book_course(course_id: int, body: s.BookingIn):
    """All or nothing. A taken time is a 409 naming it; a broken rule is a 422 listing the
    violations, and the overridable ones may be booked with an ``override_reason``."""
    session = get_session()
    tz = records.department_timezone_for_course(session, course_id)
    placements = [
        Placement(
            number=p.number,
            linac_id=p.linac_id,
            starts_at=instant(p.starts_at, tz, field=f"fractions.{i}.starts_at", fold=p.fold),
        )
        for i, p in enumerate(body.fractions)
    ]
    course = services.book_course(
        session,
        course_id,
        placements,
        override_reason=body.override_reason,
        actor_id=current_user_id(),
    )
    return course_out(course)


@routes.operation(
    "PUT", "/courses/{course_id}/readiness/{step}", summary="Record a readiness step",
    tag="Courses", role=SCHEDULER, body=s.ReadinessIn, response=s.CourseOut, errors=(409,),
    path_enums={"step": s.READINESS_STEPS},
)  # fmt: skip
def record_readiness(course_id: int, step: str, body: s.ReadinessIn):
    """Plan approval and physics QA together make the first fraction confirmable."""
    session = get_session()
    done_at = body.done_at
    if done_at is not None:
        tz = records.department_timezone_for_course(session, course_id)
        done_at = instant(done_at, tz, field="done_at", fold=body.fold)
    course = services.record_readiness(
        session, course_id, step=step, done_at=done_at, actor_id=current_user_id()
    )
    return course_out(course)


@routes.operation(
    "POST", "/courses/{course_id}/cancel", summary="Cancel a course and its future fractions",
    tag="Courses", role=SCHEDULER, body=s.CancelIn, response=s.CourseOut, errors=(409,),
)  # fmt: skip
def cancel_course(course_id: int, body: s.CancelIn):
    course = services.cancel_course(
        get_session(), course_id, reason=body.reason, actor_id=current_user_id()
    )
    return course_out(course)


# --- fractions ------------------------------------------------------------------------------


@routes.operation(
    "GET", "/fractions", summary="List booked fractions in a time range", tag="Fractions",
    role=VIEWER, query=s.FractionQuery, response=s.FractionOut, many=True, errors=(404,),
)  # fmt: skip
def list_fractions(query: s.FractionQuery):
    """Active fractions overlapping [start, end). Naive times are in the zone of the given
    linac's or department's department; without either, send times with an offset."""
    session = get_session()
    tz = "UTC"
    if query.linac_id is not None:
        tz = records.department_timezone_for_linac(session, query.linac_id)
    elif query.department_id is not None:
        tz = records.get_department(session, query.department_id).timezone
    start = instant(query.start, tz, field="start", fold=query.start_fold)
    end = instant(query.end, tz, field="end", fold=query.end_fold)
    _check_range(start, end)
    found = services.list_fractions(
        session, start=start, end=end, linac_id=query.linac_id, department_id=query.department_id
    )
    return fractions_out(found)


def _check_range(start: datetime, end: datetime) -> None:
    if end <= start:
        raise InvalidInput("The range is empty.", [FieldError("end", "must be after start")])
    if (end - start).days > MAX_LISTING_DAYS:
        raise InvalidInput(
            "The range is too long.",
            [FieldError("end", f"must be at most {MAX_LISTING_DAYS} days after start")],
        )


@routes.operation(
    "GET", "/fractions/{fraction_id}", summary="Get a fraction", tag="Fractions", role=VIEWER,
    response=s.FractionOut,
)  # fmt: skip
def get_fraction(fraction_id: int):
    return fraction_out(records.get_fraction(get_session(), fraction_id))


@routes.operation(
    "GET", "/fractions/{fraction_id}/alternatives", summary="Valid new times for one fraction",
    tag="Fractions", role=VIEWER, query=s.AlternativesQuery, response=s.PlannedFractionOut,
    many=True, errors=(409,),
)  # fmt: skip
def fraction_alternatives(fraction_id: int, query: s.AlternativesQuery):
    """Placements that keep every rule with the neighbouring fractions, best first."""
    session = get_session()
    fraction = records.get_fraction(session, fraction_id)
    tz = records.department_timezone_for_course(session, fraction.course_id)
    found = services.fraction_alternatives(session, fraction_id, count=query.count)
    return [planned_out(p, tz) for p in found]


@routes.operation(
    "POST", "/fractions/{fraction_id}/move", summary="Move one fraction", tag="Fractions",
    role=SCHEDULER, body=s.MoveIn, response=s.FractionOut, errors=(409,),
)  # fmt: skip
def move_fraction(fraction_id: int, body: s.MoveIn):
    """Keeps every rule with the neighbouring fractions unless an override reason is given
    for the overridable ones (spacing and overall time)."""
    session = get_session()
    fraction = records.get_fraction(session, fraction_id)
    tz = records.department_timezone_for_course(session, fraction.course_id)
    moved = services.move_fraction(
        session,
        fraction_id,
        linac_id=body.linac_id,
        starts_at=instant(body.starts_at, tz, field="starts_at", fold=body.fold),
        override_reason=body.override_reason,
        actor_id=current_user_id(),
    )
    return fraction_out(moved)


@routes.operation(
    "POST", "/fractions/{fraction_id}/cancel", summary="Cancel one fraction", tag="Fractions",
    role=SCHEDULER, body=s.CancelIn, response=s.FractionOut, errors=(409,),
)  # fmt: skip
def cancel_fraction(fraction_id: int, body: s.CancelIn):
    cancelled = services.cancel_fraction(
        get_session(), fraction_id, reason=body.reason, actor_id=current_user_id()
    )
    return fraction_out(cancelled)


@routes.operation(
    "POST", "/fractions/{fraction_id}/missed", summary="Record a missed fraction",
    tag="Fractions", role=SCHEDULER, response=s.MissedOut, errors=(409,),
)  # fmt: skip
def record_missed(fraction_id: int):
    """Rebooks it within the course's overall time when possible, else flags the course."""
    return missed_out(
        services.record_missed(get_session(), fraction_id, actor_id=current_user_id())
    )


@routes.operation(
    "POST", "/fractions/{fraction_id}/completed", summary="Record a delivered fraction",
    tag="Fractions", role=SCHEDULER, response=s.FractionOut, errors=(409,),
)  # fmt: skip
def record_completed(fraction_id: int):
    return fraction_out(
        services.record_completed(get_session(), fraction_id, actor_id=current_user_id())
    )


# --- downtime -------------------------------------------------------------------------------


@routes.operation(
    "GET", "/linacs/{linac_id}/downtimes", summary="List a linac's downtimes", tag="Linacs",
    role=VIEWER, query=s.DowntimeQuery, response=s.DowntimeOut, many=True,
)  # fmt: skip
def list_downtimes(linac_id: int, query: s.DowntimeQuery):
    session = get_session()
    tz = records.department_timezone_for_linac(session, linac_id)
    start = None if query.start is None else instant(query.start, tz, field="start")
    end = None if query.end is None else instant(query.end, tz, field="end")
    found = records.list_downtimes(session, linac_id, start=start, end=end)
    return [downtime_out(d, tz) for d in found]


@routes.operation(
    "POST", "/linacs/{linac_id}/downtimes", summary="Record downtime and re-plan",
    tag="Linacs", role=ADMIN, body=s.DowntimeIn, response=s.DowntimeReportOut, errors=(409,),
)  # fmt: skip
def add_downtime(linac_id: int, body: s.DowntimeIn):
    """Re-plans every affected fraction (beam-matched linacs first) and lists what could not
    be re-planned. With ``preview`` nothing is stored: the report shows what would happen."""
    session = get_session()
    tz = records.department_timezone_for_linac(session, linac_id)
    report = services.add_downtime(
        session,
        linac_id,
        starts_at=instant(body.starts_at, tz, field="starts_at", fold=body.starts_at_fold),
        ends_at=instant(body.ends_at, tz, field="ends_at", fold=body.ends_at_fold),
        kind=body.kind,
        reason=body.reason,
        preview=body.preview,
        actor_id=current_user_id(),
    )
    return s.DowntimeReportOut(
        preview=body.preview,
        downtime_id=report.downtime_id,
        timezone=tz,
        moved=[
            s.MovedFractionOut(
                fraction_id=m.fraction_id,
                course_id=m.course_id,
                number=m.number,
                before=planned_out(m.before, tz),
                after=planned_out(m.after, tz),
            )
            for m in report.moved
        ],
        unplaceable=[
            s.UnplaceableFractionOut.model_validate(u, from_attributes=True)
            for u in report.unplaceable
        ],
    )
