"""Staff pages: simulate a patient's SMS reply from the local outbox (no Twilio settings).

Two forms post here: one on each SMS in the message log and timelines (the patient replies
to that message), one on a patient's message timeline. Both answer 404 when Twilio is
configured, as if the routes did not exist. The reply runs through the inbound webhook's use
case (notifications/reply_simulation.py) on a session that acts for the service, as the
webhook's does; the staff member's access is checked first, on the request's own session,
which only sees their departments.

The flash message says what the reply did and what the clinic would have texted back; like
every flash message it names the patient by id only and never repeats what was typed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Flask, abort, current_app, flash, redirect, request, url_for

from notifications import reply_simulation
from notifications.models import Reminder
from notifications.replies import InboundResult, ReplyAction
from notifications.types import Channel
from scheduler.errors import InvalidInput
from scheduler.models import Patient, Role
from web import SETTINGS_KEY, audit
from web.auth import session_user_id
from web.db import SESSION_FACTORY_KEY, get_session
from web.ui import role_required

bp = Blueprint("outbox_replies", __name__)


def _back_url(patient_id: int, course_id: int | None) -> str:
    """The page the form was on: the message log, the patient's or the course's timeline."""
    back = request.form.get("back", "")
    if back == "course" and course_id is not None:
        return url_for("messages.course_timeline", course_id=course_id)
    if back == "patient":
        return url_for("messages.patient_timeline", patient_id=patient_id)
    return url_for("messages.messages")


def _require_local_outbox() -> None:
    if not reply_simulation.allowed(current_app.extensions[SETTINGS_KEY]):
        abort(404)


def _outcome(patient_id: int, result: InboundResult) -> str:
    what = {
        ReplyAction.CONFIRM: "confirmed the next session"
        if result.confirmed
        else "asked to confirm, but no session could be confirmed; it waits in the inbox",
        ReplyAction.OPT_OUT: "opted out of SMS; texts not yet sent will not be sent",
        ReplyAction.OPT_IN: "opted back in to SMS; texts for sessions ahead are planned again",
        ReplyAction.HELP: "asked for help",
        ReplyAction.INBOX: "went to the inbox for a person to read",
    }[result.action]
    if result.action is ReplyAction.OPT_OUT and result.needs_attention:
        what += "; it also waits in the inbox"
    text = f"Simulated reply from patient {patient_id}: {what}."
    if result.reply:
        text += f" The clinic answers: “{result.reply}”"
    return text


def _simulate(patient: Patient, course_id: int | None) -> object:
    target = _back_url(patient.id, course_id)
    patient_id, from_number = patient.id, patient.phone_e164
    body = request.form.get("body", "")
    # End the read before the reply's own transaction: on SQLite an open transaction holds the
    # write lock that the reply's session needs.
    get_session().rollback()
    factory = current_app.extensions[SESSION_FACTORY_KEY]
    try:
        with factory() as service_session:
            result = reply_simulation.simulate_reply(
                service_session, from_number=from_number, body=body, now=datetime.now(UTC)
            )
    except InvalidInput as exc:
        problems = "; ".join(f"{e.field} {e.message}" for e in exc.errors)
        flash(f"{exc.detail} The {problems}.", "error")
        return redirect(target)
    audit.record(
        "simulate_reply",
        "patient",
        patient_id,
        actor_id=session_user_id(),
        reply_action=str(result.action),
        inbound_id=result.inbound_id,
    )
    flash(_outcome(patient_id, result), "success")
    return redirect(target)


@bp.post("/messages/<int:reminder_id>/simulate-reply")
@role_required(Role.SCHEDULER)
def reply_to_message(reminder_id: int):
    _require_local_outbox()
    reminder = get_session().get(Reminder, reminder_id)
    if reminder is None:
        abort(404)
    if reminder.channel != Channel.SMS:
        abort(404)  # an email is not answered by text
    return _simulate(reminder.patient, reminder.course_id)


@bp.post("/patients/<int:patient_id>/simulate-reply")
@role_required(Role.SCHEDULER)
def reply_from_patient(patient_id: int):
    _require_local_outbox()
    patient = get_session().get(Patient, patient_id)
    if patient is None:
        abort(404)
    return _simulate(patient, None)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
