"""Courses, their schedules and fractions, and linac downtime (the booking use cases)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

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
from web.api.registry import Audit, add_audit_detail, routes
from web.api.security import current_user_id
from web.db import get_session

ADMIN, SCHEDULER, VIEWER = Role.ADMIN.value, Role.SCHEDULER.value, Role.VIEWER.value
# Calendars show a day or a week; a bounded range keeps one request from reading everything.
MAX_LISTING_DAYS = 62


def _placements(
    session: Session, course_id: int, fractions: list[s.PlacementIn]
) -> list[Placement]:
    """Typed local times as instants in the course's department zone, each error naming its
    fraction's field."""
    tz = records.department_timezone_for_course(session, course_id)
    return [
        Placement(
            number=p.number,
            linac_id=p.linac_id,
            starts_at=instant(p.starts_at, tz, field=f"fractions.{i}.starts_at", fold=p.fold),
        )
        for i, p in enumerate(fractions)
    ]


# --- courses --------------------------------------------------------------------------------


@routes.operation(
    "GET", "/courses", summary="List courses", tag="Courses", role=VIEWER, query=s.CourseQuery,
    response=s.CourseOut, many=True,
    audit=Audit("view", "course"),
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
    audit=Audit("create", "course"),
)  # fmt: skip
def create_course(body: s.CourseIn):
    return course_out(records.create_course(get_session(), body.model_dump()))


@routes.operation(
    "GET", "/courses/{course_id}", summary="Get a course with its fractions", tag="Courses",
    role=VIEWER, response=s.CourseOut,
    audit=Audit("view", "course"),
)  # fmt: skip
def get_course(course_id: int):
    return course_out(records.get_course(get_session(), course_id))


@routes.operation(
    "PATCH", "/courses/{course_id}", summary="Update priority, ready-to-treat date or notes",
    tag="Courses", role=SCHEDULER, body=s.CoursePatch, response=s.CourseOut,
    audit=Audit("update", "course"),
)  # fmt: skip
def update_course(course_id: int, body: s.CoursePatch):
    return course_out(
        records.update_course(get_session(), course_id, body.model_dump(exclude_unset=True))
    )


@routes.operation(
    "POST", "/courses/{course_id}/proposals", summary="Propose complete schedules",
    tag="Courses", role=SCHEDULER, body=s.ProposalIn, response=s.ProposalOut,
    audit=Audit("propose", "course"),
)  # fmt: skip
def propose_schedules(course_id: int, body: s.ProposalIn):
    """Valid schedules for every fraction, best score first; or why none fits and when one
    would. Each schedule's score says why it ranks where it does: penalty points for the
    wait, the overall time, more than one linac, changing times of day, fractions outside
    the preferred window, uneven gaps and fragmenting a linac's free time. Options differ
    in their first day or in the linacs they use.

    When the schedules start later than the requested date (or there are none), the
    explanation names the cause with a stable code: `linac_downtime` (which linacs are down,
    their dates and reason), `closure` (which holidays or closures bind), `capacity` or
    `patient_busy`, among others. Nothing is booked: send one of the schedules to the
    booking endpoint.
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
    audit=Audit("book", "course"),
)  # fmt: skip
def book_course(course_id: int, body: s.BookingIn):
    """All or nothing. A taken time is a 409 naming it; a broken rule is a 422 listing the
    violations, and the overridable ones may be booked with an ``override_reason``. When the
    patient has another active course overlapping the schedule or within 7 days of it, the
    answer is a 409 of type ``nearby-course-warning`` listing those courses
    (``nearby_courses``); book again with their ids in ``acknowledged_course_ids``.

    With ``{"best": true}`` (optionally ``earliest`` and ``preferred_window``, as for
    proposals) the server books the best option now, in this one request: it proposes, books
    the first proposal, and when a concurrent booking takes that time first it looks again and
    books the next best, up to 6 times. Options that rank equally are spread over concurrent
    requests. When nothing fits the answer is a 409 of type ``no-schedule-available`` whose
    ``explanation`` names the cause (its ``code``, as in proposals) and the earliest start
    that would fit; when other bookings took every option it found, a 409 of type
    ``options-taken`` (ask again)."""
    session = get_session()
    if body.best:
        window = body.preferred_window
        booked = services.book_best_option(
            session,
            course_id,
            earliest=body.earliest,
            preferred_window=None if window is None else (window.start, window.end),
            acknowledged_course_ids=body.acknowledged_course_ids,
            actor_id=current_user_id(),
        )
        # Which way the schedule was chosen, and how contended it was, as ids and counts only.
        add_audit_detail(best_option=True, lost_races=booked.lost_races)
        if body.acknowledged_course_ids:
            add_audit_detail(acknowledged_nearby_courses=body.acknowledged_course_ids)
        return course_out(booked.course)
    assert body.fractions is not None  # BookingIn takes either fractions or best
    placements = _placements(session, course_id, body.fractions)
    course = services.book_course(
        session,
        course_id,
        placements,
        override_reason=body.override_reason,
        acknowledged_course_ids=body.acknowledged_course_ids,
        actor_id=current_user_id(),
    )
    if body.acknowledged_course_ids:
        # A clinical decision worth finding in the audit log as well as in the booking event.
        add_audit_detail(acknowledged_nearby_courses=body.acknowledged_course_ids)
    return course_out(course)


@routes.operation(
    "PUT", "/courses/{course_id}/readiness/{step}", summary="Record a readiness step",
    tag="Courses", role=SCHEDULER, body=s.ReadinessIn, response=s.CourseOut, errors=(409,),
    path_enums={"step": s.READINESS_STEPS},
    audit=Audit("readiness", "course"),
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
    audit=Audit("cancel", "course"),
)  # fmt: skip
def cancel_course(course_id: int, body: s.CancelIn):
    course = services.cancel_course(
        get_session(), course_id, reason=body.reason, actor_id=current_user_id()
    )
    return course_out(course)


@routes.operation(
    "POST", "/courses/{course_id}/rebooking/proposals",
    summary="Propose placements for an incomplete course's missing fractions", tag="Courses",
    role=SCHEDULER, body=s.RebookingProposalIn, response=s.RebookingProposalOut, errors=(409,),
    audit=Audit("propose_rebooking", "course"),
)  # fmt: skip
def propose_rebooking(course_id: int, body: s.RebookingProposalIn):
    """Whole schedules that keep the held fractions and place the missing ones inside the
    protocol's overall time, best first. When there are none the course is flagged for a
    clinician (status ``needs_review``) and ``needs_clinician`` says so. A course missing
    nothing is a 409."""
    result = services.propose_rebooking(get_session(), course_id, count=body.count)
    tz = result.timezone
    return s.RebookingProposalOut(
        course_id=result.course_id,
        timezone=tz,
        missing_fractions=result.missing,
        schedules=[schedule_out(schedule, tz) for schedule in result.schedules],
        needs_clinician=result.needs_clinician,
        reason=result.reason,
    )


@routes.operation(
    "POST", "/courses/{course_id}/rebooking",
    summary="Book an incomplete course's missing fractions", tag="Courses", role=SCHEDULER,
    body=s.RebookingIn, response=s.CourseOut, status=201, errors=(409,),
    audit=Audit("rebook", "course"),
)  # fmt: skip
def rebook_fractions(course_id: int, body: s.RebookingIn):
    """All the missing fractions or none. A taken time is a 409 naming it; a broken rule is a
    422 listing the violations (overridable ones may be booked with an ``override_reason``).
    The patient gets a notice and the usual reminders for each new session."""
    session = get_session()
    placements = _placements(session, course_id, body.fractions)
    course = services.rebook_fractions(
        session,
        course_id,
        placements,
        override_reason=body.override_reason,
        actor_id=current_user_id(),
    )
    return course_out(course)


@routes.operation(
    "PUT", "/courses/{course_id}/prescription",
    summary="Change the number of fractions prescribed", tag="Courses", role=SCHEDULER,
    body=s.PrescriptionIn, response=s.CourseOut, errors=(409,),
    audit=Audit("change_prescription", "course"),
)  # fmt: skip
def change_prescription(course_id: int, body: s.PrescriptionIn):
    """A clinician's decision, with its reason recorded: accept the fractions the course holds
    (an incomplete course is then complete), or restore the protocol's count (the course is
    then incomplete until its missing fractions are rebooked)."""
    course = services.change_prescription(
        get_session(),
        course_id,
        fractions=body.fractions,
        reason=body.reason,
        actor_id=current_user_id(),
    )
    return course_out(course)


@routes.operation(
    "POST", "/courses/{course_id}/reviewed",
    summary="Sign off a course flagged for review", tag="Courses", role=SCHEDULER,
    body=s.ReviewIn, response=s.CourseOut, errors=(409,),
    audit=Audit("update", "course"),
)  # fmt: skip
def mark_reviewed(course_id: int, body: s.ReviewIn):
    """A course a re-plan or a repair flagged (status ``needs_review``) goes back to booked, or
    to incomplete while it is still short of fractions. Its schedule must keep the protocol's
    rules as a booking would: a broken rule is a 422 listing the violations (overridable ones
    are accepted with an ``override_reason``); a fraction still overlapping a downtime, or a
    course not waiting for review, is a 409."""
    course = services.mark_reviewed(
        get_session(),
        course_id,
        override_reason=body.override_reason,
        actor_id=current_user_id(),
    )
    add_audit_detail(reviewed=True, overridden=body.override_reason is not None)
    return course_out(course)


# --- fractions ------------------------------------------------------------------------------


@routes.operation(
    "GET", "/fractions", summary="List booked fractions in a time range", tag="Fractions",
    role=VIEWER, query=s.FractionQuery, response=s.FractionOut, many=True, errors=(404,),
    audit=Audit("view", "fraction"),
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
    audit=Audit("view", "fraction"),
)  # fmt: skip
def get_fraction(fraction_id: int):
    return fraction_out(records.get_fraction(get_session(), fraction_id))


@routes.operation(
    "GET", "/fractions/{fraction_id}/alternatives", summary="Valid new times for one fraction",
    tag="Fractions", role=VIEWER, query=s.AlternativesQuery, response=s.AlternativeOut,
    many=True, errors=(409,),
    audit=Audit("view_alternatives", "fraction"),
)  # fmt: skip
def fraction_alternatives(fraction_id: int, query: s.AlternativesQuery):
    """Placements a move accepts without an override, best first, never the current one.

    Searched around the fraction's own date (earlier and later, never before now) and chosen
    to differ usefully: the same time on a beam-matched partner, then in turn the same time
    on the nearest other days and other times on the same day, then any other valid time. A
    rule the course already breaks (an earlier override) does not hide alternatives; only
    what a move would newly break does."""
    session = get_session()
    fraction = records.get_fraction(session, fraction_id)
    tz = records.department_timezone_for_course(session, fraction.course_id)
    found = services.fraction_alternatives(session, fraction_id, count=query.count)
    return [s.AlternativeOut(**planned_out(p, tz).model_dump(), kind=p.kind) for p in found]


@routes.operation(
    "POST", "/fractions/{fraction_id}/move", summary="Move one fraction", tag="Fractions",
    role=SCHEDULER, body=s.MoveIn, response=s.FractionOut, errors=(409,),
    audit=Audit("move", "fraction"),
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
    audit=Audit("cancel", "fraction"),
)  # fmt: skip
def cancel_fraction(fraction_id: int, body: s.CancelIn):
    cancelled = services.cancel_fraction(
        get_session(), fraction_id, reason=body.reason, actor_id=current_user_id()
    )
    return fraction_out(cancelled)


@routes.operation(
    "POST", "/fractions/{fraction_id}/missed", summary="Record a missed fraction",
    tag="Fractions", role=SCHEDULER, body=s.MissedIn, response=s.MissedOut, errors=(409,),
    audit=Audit("missed", "fraction"),
)  # fmt: skip
def record_missed(fraction_id: int, body: s.MissedIn):
    """Records why (``reason_text`` is required for ``other``) and rebooks it within the
    course's overall time when possible, else flags the course. A machine fault is first
    rebooked at the same time on a beam-matched linac while the session is not over."""
    return missed_out(
        services.record_missed(
            get_session(),
            fraction_id,
            reason=body.reason,
            reason_text=body.reason_text,
            actor_id=current_user_id(),
        )
    )


@routes.operation(
    "POST", "/fractions/{fraction_id}/missed/undo", summary="Undo a missed fraction",
    tag="Fractions", role=SCHEDULER, response=s.FractionOut, errors=(409,),
    audit=Audit("undo_missed", "fraction"),
)  # fmt: skip
def undo_missed(fraction_id: int):
    """Only on the day it was recorded (department time); later it is a 409. The fraction
    gets its status back and a session rebooked in its place is cancelled."""
    session = get_session()
    restored = services.undo_missed(session, fraction_id, actor_id=current_user_id())
    add_audit_detail(course_id=restored.course_id)
    return fraction_out(restored)


@routes.operation(
    "POST", "/fractions/{fraction_id}/completed", summary="Record a delivered fraction",
    tag="Fractions", role=SCHEDULER, response=s.FractionOut, errors=(409,),
    audit=Audit("completed", "fraction"),
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
    audit=Audit("create", "downtime", id_from="downtime_id"),
)  # fmt: skip
def add_downtime(linac_id: int, body: s.DowntimeIn):
    """Re-plans every affected fraction for the whole department: first every fraction whose
    own time is free on a beam-matched linac keeps it, then the rest go where they disturb
    patients least. The report counts how many kept their time, moved the same day, moved to
    another day or need a human, and lists what could not be re-planned. With ``preview``
    nothing is stored: the report shows what would happen."""
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
    return _report_out(report, tz, preview=body.preview)


def _report_out(report: services.DowntimeReport, tz: str, *, preview: bool) -> s.DowntimeReportOut:
    # A preview changes nothing but shows whose sessions would move: audited, marked as such.
    add_audit_detail(preview=preview)
    return s.DowntimeReportOut(
        preview=preview,
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
        kept_time=report.kept_time,
        same_day=report.same_day,
        other_day=report.other_day,
        needs_human=report.needs_human,
        returnable=[
            s.ReturnableFractionOut(
                fraction_id=r.fraction_id,
                course_id=r.course_id,
                number=r.number,
                current=planned_out(r.current, tz),
                original=planned_out(r.original, tz),
            )
            for r in report.returnable
        ],
    )


@routes.operation(
    "GET", "/departments/{department_id}/downtimes", summary="List downtimes across a department",
    tag="Linacs", role=VIEWER, query=s.DowntimeQuery, response=s.DowntimeOut, many=True,
)  # fmt: skip
def list_department_downtimes(department_id: int, query: s.DowntimeQuery):
    """Every linac's downtimes overlapping [start, end), by start. Naive times are in the
    department's zone."""
    session = get_session()
    tz = records.get_department(session, department_id).timezone
    start = None if query.start is None else instant(query.start, tz, field="start")
    end = None if query.end is None else instant(query.end, tz, field="end")
    if start is not None and end is not None and end <= start:
        raise InvalidInput("The range is empty.", [FieldError("end", "must be after start")])
    found = records.list_department_downtimes(session, department_id, start=start, end=end)
    return [downtime_out(d, tz) for d in found]


@routes.operation(
    "GET", "/downtimes/{downtime_id}", summary="Get a downtime", tag="Linacs", role=VIEWER,
    response=s.DowntimeOut,
)  # fmt: skip
def get_downtime(downtime_id: int):
    session = get_session()
    downtime = records.get_downtime(session, downtime_id)
    return downtime_out(downtime, records.department_timezone_for_linac(session, downtime.linac_id))


@routes.operation(
    "PATCH", "/downtimes/{downtime_id}", summary="Change a downtime and re-plan",
    tag="Linacs", role=ADMIN, body=s.DowntimePatch, response=s.DowntimeReportOut, errors=(409,),
    audit=Audit("update", "downtime"),
)  # fmt: skip
def update_downtime(downtime_id: int, body: s.DowntimePatch):
    """Fractions the new times newly cover are re-planned like a new downtime's. Shortening
    moves nobody back: ``returnable`` lists the fractions that could return to their own place.
    With ``preview`` nothing is stored."""
    session = get_session()
    downtime = records.get_downtime(session, downtime_id)
    tz = records.department_timezone_for_linac(session, downtime.linac_id)
    starts_at, ends_at = downtime.starts_at, downtime.ends_at
    if body.starts_at is not None:
        starts_at = instant(body.starts_at, tz, field="starts_at", fold=body.starts_at_fold)
    if body.ends_at is not None:
        ends_at = instant(body.ends_at, tz, field="ends_at", fold=body.ends_at_fold)
    report = services.update_downtime(
        session,
        downtime_id,
        starts_at=starts_at,
        ends_at=ends_at,
        kind=body.kind if body.kind is not None else downtime.kind,
        reason=body.reason if body.reason is not None else downtime.reason,
        preview=body.preview,
        actor_id=current_user_id(),
    )
    return _report_out(report, tz, preview=body.preview)


@routes.operation(
    "DELETE", "/downtimes/{downtime_id}", summary="Remove a downtime", tag="Linacs", role=ADMIN,
    query=s.DowntimeDeleteQuery, response=s.DowntimeReportOut,
    audit=Audit("delete", "downtime"),
)  # fmt: skip
def delete_downtime(downtime_id: int, query: s.DowntimeDeleteQuery):
    """Nobody is moved back: ``returnable`` lists the fractions this downtime moved that could
    return to their own place. With ``preview`` nothing is removed."""
    session = get_session()
    downtime = records.get_downtime(session, downtime_id)
    tz = records.department_timezone_for_linac(session, downtime.linac_id)
    report = services.delete_downtime(
        session, downtime_id, preview=query.preview, actor_id=current_user_id()
    )
    return _report_out(report, tz, preview=query.preview)
