"""Staff actions on a patient's schedule links: revoke them, or send the patient a fresh one.

Staff never see a working link (every copy of a message has its token masked), so these are
what they do instead of reading one out or forwarding an old message.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, flash, redirect, url_for

from notifications import patient_links
from scheduler.errors import StateConflict
from scheduler.models import Role
from web import audit
from web.db import get_session, transaction
from web.ui import done, role_required
from web.views.patients import _course_or_404, _patient_or_404, _staff

bp = Blueprint("patient_links", __name__)


@bp.post("/courses/<int:course_id>/fresh-link")
@role_required(Role.SCHEDULER)
def send_fresh_link(course_id: int):
    db = get_session()
    _course_or_404(db, course_id)
    actor_id = _staff().id
    try:
        with transaction():
            queued = patient_links.send_fresh_link(db, course_id, now=datetime.now(UTC))
            audit.record(
                "send_fresh_link",
                "course",
                course_id,
                actor_id=actor_id,
                reminder_ids=[row.id for row in queued],
            )
    except StateConflict as exc:
        flash(f"No link was sent: {exc.detail}.", "error")
        return redirect(url_for("patients.course", course_id=course_id))
    if not queued:
        message = "A fresh link was already queued a moment ago."
    else:
        channels = " and ".join("SMS" if row.channel == "sms" else "email" for row in queued)
        message = (
            f"A fresh link is queued by {channels}; the course's earlier links no longer work."
        )
    return done(message, "patients.course", course_id=course_id)


@bp.post("/patients/<int:patient_id>/links/revoke")
@role_required(Role.SCHEDULER)
def revoke_links(patient_id: int):
    db = get_session()
    _patient_or_404(db, patient_id)
    actor_id = _staff().id
    with transaction():
        revoked = patient_links.revoke_links(db, patient_id, now=datetime.now(UTC))
        audit.record("revoke_links", "patient", patient_id, actor_id=actor_id, revoked=revoked)
    if revoked:
        message = f"{revoked} link{'s' if revoked != 1 else ''} revoked: they no longer work."
    else:
        message = "The patient had no working links."
    return done(message, "patients.show", patient_id=patient_id)
