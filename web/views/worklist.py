"""The staff home page: the day's worklist, and the two actions taken from it.

``/`` lists, for every department the user may see: today's sessions per linac in time order
(a scheduler records each completed or missed once it has started), tomorrow's tentative
sessions whose course is not ready to treat, the courses needing review or short of
fractions, failed messages, unread patient replies (schedulers) and the system's health.
Like the calendars it sits on shared screens, so patients are shown by initials and MRN.

Both actions go through the same use cases as the course page and the API, and come back here
with what happened, a missed session's rebooking included.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from notifications import outbox
from scheduler import health, services, worklist
from scheduler.errors import Conflict, InvalidInput, StateConflict
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    MISSED_REASON_LABELS,
    Course,
    CourseStatus,
    FractionStatus,
    MissedReason,
    Role,
)
from scheduler.timeutil import format_local, to_local
from web import SETTINGS_KEY, audit
from web.auth import session_user_id
from web.db import get_session
from web.messages import mask_phone
from web.ui import done, has_role, role_required

# The course page's loader (one authorisation path for every page that acts on a fraction)
# and its wording of a session's time and of the messages an action queued.
from web.views.patients import _fraction_or_404, _queued_summary, _span

bp = Blueprint("worklist", __name__)
log = logging.getLogger(__name__)

READINESS_NAMES = {
    "plan_approved_at": "plan approval",
    "physics_qa_at": "physics QA",
}


def _health() -> health.HealthReport | None:
    """The readiness checks, or None when they cannot be worked out.

    Without the broker check, as the stalled-reminders banner does: connecting to the broker
    could hold the page for its timeout, and a stopped broker shows as a silent worker. In a
    savepoint, so that the page's own unit of work is left as it was.
    """
    session = get_session()
    settings = current_app.extensions[SETTINGS_KEY]
    try:
        savepoint = session.begin_nested()
        try:
            return health.readiness(session, settings, now=datetime.now(UTC), broker=False)
        finally:
            savepoint.rollback()
    except Exception as exc:  # noqa: BLE001 - the panel must never break the worklist
        log.warning("the worklist's health panel could not be worked out: %s", type(exc).__name__)
        return None


def _missing_readiness(course: Course) -> list[str]:
    """What stands between a tentative first fraction and treatment."""
    return [name for column, name in READINESS_NAMES.items() if getattr(course, column) is None]


@bp.get("/")
@role_required(Role.VIEWER)
def index():
    session = get_session()
    now = datetime.now(UTC)
    found = worklist.load_worklist(session, now, with_replies=has_role(Role.SCHEDULER))
    zones = {day.department.id: day.department.timezone for day in found.days}
    fallback = next(iter(zones.values()), "UTC")

    def local(moment: datetime, department_id: int | None = None) -> str:
        return format_local(moment, zones.get(department_id, fallback))

    def clock(moment: datetime, department_id: int) -> str:
        return f"{to_local(moment, zones[department_id]):%H:%M}"

    todays = [f for day in found.days for ld in day.linacs for f in ld.fractions]
    summary = {
        "sessions": len(todays),
        "completed": sum(f.status == FractionStatus.COMPLETED for f in todays),
        "to_come": sum(f.status in ACTIVE_FRACTION_STATUSES for f in todays),
        "not_ready": sum(len(day.not_ready_tomorrow) for day in found.days),
    }
    # One entry for the page, like the calendars: it shows many patients at once.
    audit.record(
        "view",
        "worklist",
        None,
        actor_id=session_user_id(),
        fractions=[f.id for f in todays],
        courses=[c.id for c in found.courses],
    )
    return render_template(
        "worklist/index.html",
        title="Today",
        worklist=found,
        now=now,
        local=local,
        clock=clock,
        label=worklist.patient_label,
        missing_readiness=_missing_readiness,
        reasons=MISSED_REASON_LABELS,
        actionable=ACTIVE_FRACTION_STATUSES,
        has_departments=bool(found.days),
        summary=summary,
        health=_health(),
        mask_phone=mask_phone,
    )


def _back(message: str, category: str = "error"):  # type: ignore[no-untyped-def]
    """Nothing was recorded: say why on the worklist."""
    get_session().rollback()  # the redirect would otherwise commit what was flushed
    flash(message, category)
    return redirect(url_for("worklist.index"))


@bp.post("/worklist/fractions/<int:fraction_id>/completed")
@role_required(Role.SCHEDULER)
def completed(fraction_id: int):
    db = get_session()
    fraction = _fraction_or_404(db, fraction_id)
    course_id, number = fraction.course_id, fraction.number
    when = _span(fraction.starts_at, fraction.ends_at, fraction.course.patient.department.timezone)
    try:
        services.record_completed(db, fraction_id, actor_id=session_user_id())
    except StateConflict as exc:
        return _back(f"Nothing was recorded: {exc.detail}.")
    audit.record(
        "completed", "fraction", fraction_id, actor_id=session_user_id(), course_id=course_id
    )
    message = f"Fraction {number} of course {course_id} ({when}) recorded as completed."
    if fraction.course.status == CourseStatus.COMPLETED:
        message += f" Course {course_id} is complete."
    return done(message, "worklist.index")


@bp.post("/worklist/fractions/<int:fraction_id>/missed")
@role_required(Role.SCHEDULER)
def missed(fraction_id: int):
    db = get_session()
    fraction = _fraction_or_404(db, fraction_id)
    course_id, number = fraction.course_id, fraction.number
    reason = request.form.get("reason", "")
    reason_text = request.form.get("reason_text", "").strip()
    if reason not in MISSED_REASON_LABELS:
        return _back(f"Nothing was recorded for fraction {number}: choose why it was missed.")
    if request.form.get("confirm") != "yes":
        return _back(
            f"Nothing was recorded for fraction {number}: confirm that the patient was not "
            "treated in this session."
        )
    tz = fraction.course.patient.department.timezone
    names = {linac.id: linac.name for linac in fraction.course.patient.department.linacs}
    queued = outbox.collect(db)
    try:
        result = services.record_missed(
            db,
            fraction_id,
            reason=reason,
            reason_text=reason_text or None,
            actor_id=session_user_id(),
        )
    except InvalidInput as exc:
        why = "; ".join(e.message for e in exc.errors) or exc.detail
        return _back(f"Nothing was recorded for fraction {number}: {why}.")
    except (StateConflict, Conflict) as exc:
        return _back(f"Nothing was recorded: {exc.detail}.")
    audit.record(
        "missed",
        "fraction",
        fraction_id,
        actor_id=session_user_id(),
        course_id=course_id,
        reason=reason,
    )
    if result.rebooked is not None:
        r = result.rebooked
        outcome = f"Rebooked for {_span(r.starts_at, r.ends_at, tz)} on {names.get(r.linac_id)}."
    else:
        outcome = "It could not be rebooked within the protocol's rules: the course needs review."
    label = MISSED_REASON_LABELS[MissedReason(reason)]
    return done(
        f"Fraction {number} of course {course_id} recorded as missed ({label}). {outcome} "
        f"{_queued_summary(db, course_id, queued)}",
        "worklist.index",
    )
