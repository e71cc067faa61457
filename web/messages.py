"""Message pages: every patient message with its status, the problem queue and the inbox.

- ``/messages``: the message log, by when each message was or will be sent, filtered by
  status, channel, patient and dates (web/message_log.py). With no Twilio or SMTP settings
  this is where `make run` delivers: the local outbox, where staff can also type a patient's
  SMS reply (web/outbox_replies.py).
- ``/patients/<id>/messages`` and ``/courses/<id>/messages``: one patient's or one course's
  timeline, each message with its status, reason, times and the text the patient got.
- ``/messages/problems`` (admin): failed and unknown messages, with retry and suppress.
- ``/messages/inbox`` (scheduler): patient replies no keyword handled.

Lists of many patients show each by initials and MRN only: these pages sit on shared ward
screens. One patient's timeline names the patient with date of birth and MRN, as every page
about one patient does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Flask, abort, current_app, flash, redirect, render_template, url_for
from flask import request as flask_request
from sqlalchemy.orm import Session, selectinload

from notifications import (
    outbox,
    rendering,
    reply_simulation,
    sandbox,
    staff_actions,
    template_store,
)
from notifications.models import InboundMessage, Reminder, ReminderStatus
from notifications.staff_actions import PROBLEM_STATUSES
from notifications.types import Channel, Kind, PlannedReminder
from scheduler import links
from scheduler.errors import InvalidInput, NotFound, StateConflict
from scheduler.models import Course, Department, Patient, Role
from scheduler.timeutil import format_local
from web import audit, message_log, outbox_replies
from web.auth import session_user_id
from web.db import get_session
from web.ui import done, role_required

bp = Blueprint("messages", __name__)
PAGE_SIZE = 200
# The time all message previews of one page may take together (see _shown).
PREVIEW_SECONDS = 2.0


def _initials(patient: Patient) -> str:
    # Initials and MRN only: enough to recognise, no full name on a shared screen.
    return f"{patient.given_name[:1]}{patient.family_name[:1]} ({patient.mrn})"


def mask_phone(number: str | None) -> str:
    """ "+12125550177" -> "+1•••••••0177": enough to tell two numbers apart, not to dial."""
    if not number:
        return "unknown number"
    if len(number) <= 6:
        return "•" * len(number)
    return number[:2] + "•" * (len(number) - 6) + number[-4:]


def _zones(session: Session) -> dict[int, str]:
    return dict(session.execute(sa.select(Department.id, Department.timezone)).tuples().all())


def _default_zone(zones: dict[int, str]) -> str:
    return zones[min(zones)] if zones else "UTC"


def _preview(
    session: Session, row: Reminder, link: str, overrides: dict[str, str]
) -> tuple[str | None, str]:
    """What the patient would receive if this message went out now."""
    course = session.get(Course, row.course_id)
    assert course is not None  # foreign key
    planned = PlannedReminder(
        kind=Kind(row.kind),
        channel=Channel(row.channel),
        due_at=row.due_at,
        course_id=row.course_id,
        fraction_id=row.fraction_id,
        fraction_version=row.fraction_version,
        dedupe_key=row.dedupe_key,
        context=row.context or {},
    )
    snapshot = outbox.course_snapshot(session, course)
    try:
        context = rendering.message_context(snapshot, planned, link=link)
        message = rendering.render(
            row.kind, row.channel, snapshot.patient.language, context, overrides=overrides
        )
    except sandbox.RenderLimitExceeded as exc:  # an edited template that runs away
        return None, f"(no preview: {exc})"
    except Exception:  # noqa: BLE001 - a message about appointments that no longer exist
        return None, "(no preview: the appointments it refers to have changed)"
    return message.subject, message.text


def _shown(session: Session, rows: Iterable[Reminder]) -> list[dict[str, Any]]:
    """Reminder rows as the timeline templates show them, times in the department zone."""
    settings = current_app.extensions["sbrt.settings"]
    zones = _zones(session)
    overrides: dict[str, str] | None = None
    # Previews of one page share a time limit: a runaway edited template costs the page at
    # most this long, however many of its messages are listed.
    preview_time = sandbox.SharedTimeLimit(PREVIEW_SECONDS)
    shown = []
    for row in rows:
        patient = row.patient
        tz = zones.get(patient.department_id, "UTC")
        # Masked again on the way out: a copy stored before tokens were masked at send time
        # must not put a working link on a shared screen either.
        subject = links.mask_patient_links(row.rendered_subject)
        body, preview = links.mask_patient_links(row.rendered_body), False
        if body is None and row.status in (ReminderStatus.PENDING, ReminderStatus.CLAIMED):
            if overrides is None:
                overrides = template_store.load_overrides(session)
            with preview_time:
                subject, body = _preview(session, row, settings.public_base_url, overrides)
            preview = True

        def local(moment: datetime | None, tz: str = tz) -> str | None:
            return format_local(moment, tz) if moment is not None else None

        shown.append(
            {
                "id": row.id,
                "kind": row.kind.replace("_", " "),
                "channel": "SMS" if row.channel == Channel.SMS else "email",
                "patient": _initials(patient),
                "patient_id": patient.id,
                "course_id": row.course_id,
                "fraction": row.fraction.number if row.fraction is not None else None,
                "due": local(row.due_at),
                "sent": local(row.sent_at),
                "delivered": local(row.delivered_at),
                "updated": local(row.updated_at),
                "status": row.status,
                "reason": row.status_reason,
                "attempts": row.attempts,
                "subject": subject,
                "body": body,
                "preview": preview,
            }
        )
    return shown


def _reminders(where: Any = None, *, newest_first: bool = True) -> sa.Select[tuple[Reminder]]:
    query = sa.select(Reminder).options(
        selectinload(Reminder.patient), selectinload(Reminder.fraction)
    )
    if where is not None:
        query = query.where(where)
    if newest_first:
        return query.order_by(Reminder.due_at.desc(), Reminder.id.desc())
    return query.order_by(Reminder.due_at, Reminder.id)


def _simulating() -> bool:
    """Whether the pages offer to simulate patients' replies (no Twilio settings)."""
    return reply_simulation.allowed(current_app.extensions["sbrt.settings"])


@bp.get("/messages")
@role_required(Role.VIEWER)
def messages():
    session = get_session()
    wanted = message_log.parse_filter(flask_request.args)
    rows = []
    if not wanted.errors:
        rows = list(session.scalars(message_log.log_query(session, wanted, PAGE_SIZE)))
    page = render_template(
        "messages/log.html",
        title="Patient messages",
        rows=_shown(session, rows),
        wanted=wanted,
        statuses=message_log.STATUSES,
        channels=message_log.CHANNELS,
        orders=message_log.ORDERS,
        page_size=PAGE_SIZE,
        simulate_replies=_simulating(),
    )
    # A filter that cannot be read is the caller's mistake, said on the page, not a 500.
    return (page, 400) if wanted.errors else page


@bp.get("/patients/<int:patient_id>/messages")
@role_required(Role.VIEWER)
def patient_timeline(patient_id: int):
    session = get_session()
    patient = session.get(Patient, patient_id)
    if patient is None:
        abort(404)
    rows = list(session.scalars(_reminders(Reminder.patient_id == patient.id, newest_first=False)))
    audit.record("view", "patient", patient.id, actor_id=session_user_id(), page="messages")
    return render_template(
        "messages/timeline.html",
        title=f"Messages for {_initials(patient)}",
        rows=_shown(session, rows),
        timezone=_zones(session).get(patient.department_id, "UTC"),
        patient_id=patient.id,
        course_id=None,
        patient=patient,
        simulate_replies=_simulating(),
    )


@bp.get("/courses/<int:course_id>/messages")
@role_required(Role.VIEWER)
def course_timeline(course_id: int):
    session = get_session()
    course = session.get(Course, course_id)
    if course is None:
        abort(404)
    rows = list(session.scalars(_reminders(Reminder.course_id == course.id, newest_first=False)))
    audit.record("view", "course", course.id, actor_id=session_user_id(), page="messages")
    patient = course.patient
    return render_template(
        "messages/timeline.html",
        title=f"Messages for course {course.id} of {_initials(patient)}",
        rows=_shown(session, rows),
        timezone=_zones(session).get(patient.department_id, "UTC"),
        patient_id=patient.id,
        course_id=course.id,
        patient=patient,
        simulate_replies=_simulating(),
    )


@bp.get("/messages/problems")
@role_required(Role.ADMIN)
def problems():
    session = get_session()
    rows = list(
        session.scalars(
            sa.select(Reminder)
            .options(selectinload(Reminder.patient), selectinload(Reminder.fraction))
            .where(Reminder.status.in_(PROBLEM_STATUSES))
            .order_by(Reminder.updated_at.desc(), Reminder.id.desc())
            .limit(PAGE_SIZE)
        )
    )
    return render_template(
        "messages/problems.html", title="Failed and unknown messages", rows=_shown(session, rows)
    )


@bp.post("/messages/<int:reminder_id>/retry")
@role_required(Role.ADMIN)
def retry(reminder_id: int):
    session = get_session()
    try:
        was = staff_actions.retry_message(
            session, reminder_id, confirmed=flask_request.form.get("confirm") == "yes"
        )
    except NotFound:
        abort(404)
    except StateConflict as exc:
        session.rollback()  # refused: nothing of it is kept, though the page redirects
        flash(exc.detail, "error")
        return redirect(url_for("messages.problems"))
    audit.record("retry", "reminder", reminder_id, actor_id=session_user_id(), was=was)
    return done(f"Message {reminder_id} queued to be sent again.", "messages.problems")


@bp.post("/messages/<int:reminder_id>/suppress")
@role_required(Role.ADMIN)
def suppress(reminder_id: int):
    session = get_session()
    try:
        was = staff_actions.suppress_message(
            session, reminder_id, reason=flask_request.form.get("reason", "")
        )
    except NotFound:
        abort(404)
    except (InvalidInput, StateConflict) as exc:
        session.rollback()  # refused: nothing of it is kept, though the page redirects
        flash(exc.detail, "error")
        return redirect(url_for("messages.problems"))
    # The reason is free text that may name the patient: it stays on the row, not the log.
    audit.record("suppress", "reminder", reminder_id, actor_id=session_user_id(), was=was)
    return done(f"Message {reminder_id} suppressed; it will not be sent.", "messages.problems")


@bp.get("/messages/inbox")
@role_required(Role.SCHEDULER)
def inbox():
    session = get_session()
    rows = list(
        session.scalars(
            sa.select(InboundMessage)
            .where(InboundMessage.needs_attention.is_(True), InboundMessage.handled_at.is_(None))
            .order_by(InboundMessage.received_at, InboundMessage.id)
            .limit(PAGE_SIZE)
        )
    )
    patient_ids = {r.patient_id for r in rows if r.patient_id is not None}
    patients = (
        {p.id: p for p in session.scalars(sa.select(Patient).where(Patient.id.in_(patient_ids)))}
        if patient_ids
        else {}
    )
    zones = _zones(session)
    fallback = _default_zone(zones)
    shown = []
    for row in rows:
        patient = patients.get(row.patient_id) if row.patient_id is not None else None
        tz = zones.get(patient.department_id, fallback) if patient else fallback
        shown.append(
            {
                "id": row.id,
                "phone": mask_phone(row.from_number),
                "patient": _initials(patient) if patient else None,
                "patient_id": patient.id if patient else None,
                "body": row.body,
                "received": format_local(row.received_at, tz),
                "action": row.action.replace("_", " "),
            }
        )
    return render_template("messages/inbox.html", title="Inbox: replies to read", rows=shown)


@bp.post("/messages/inbox/<int:message_id>/handled")
@role_required(Role.SCHEDULER)
def mark_handled(message_id: int):
    try:
        row = staff_actions.mark_reply_handled(
            get_session(), message_id, actor_id=session_user_id()
        )
    except NotFound:
        abort(404)
    audit.record("handle", "inbound_message", row.id, actor_id=session_user_id())
    return done("Reply marked as handled.", "messages.inbox")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    outbox_replies.init_app(app)
