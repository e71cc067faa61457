"""The messages page: every patient message as the patient sees it, with its status.

With no Twilio or SMTP settings this is where `make run` delivers (the local outbox); with
them it is the delivery log. Staff only.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app
from flask_login import login_required
from sqlalchemy.orm import selectinload

from notifications import outbox, rendering
from notifications.models import Reminder
from notifications.types import Channel, Kind, PlannedReminder
from scheduler.models import Course, Department
from scheduler.timeutil import format_local
from web.auth import render_page
from web.db import get_session

bp = Blueprint("messages", __name__)
PAGE_SIZE = 200

MESSAGES = """<p>The latest {{ rows|length }} patient messages, newest first. Times are
{{ timezone }}. Messages not yet sent show what the patient would receive now.</p>
{% for m in rows %}
<article style="border-top:1px solid #ccc;padding:.5rem 0">
<p><strong>{{ m.kind }}</strong> by {{ m.channel }} to {{ m.patient }} ·
due {{ m.due }} · <span>{{ m.status }}</span>{% if m.reason %} ({{ m.reason }}){% endif %}</p>
{% if m.subject %}<p><em>{{ m.subject }}</em></p>{% endif %}
<pre style="white-space:pre-wrap;font-family:inherit;background:#f6f6f6;padding:.5rem">
{{- m.body }}</pre>
</article>
{% else %}<p>No messages yet.</p>{% endfor %}"""


def _preview(session: Any, row: Reminder, link: str) -> tuple[str | None, str]:
    """What the patient would receive if this message went out now."""
    course = session.get(Course, row.course_id)
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
        message = rendering.render(row.kind, row.channel, snapshot.patient.language, context)
    except Exception:  # a message about appointments that no longer exist has no preview
        return None, "(no preview: the appointments it refers to have changed)"
    return message.subject, message.text


@bp.get("/messages")
@login_required
def messages():
    session = get_session()
    settings = current_app.extensions["sbrt.settings"]
    rows = list(
        session.scalars(
            sa.select(Reminder)
            .options(selectinload(Reminder.patient))
            .order_by(Reminder.due_at.desc(), Reminder.id.desc())
            .limit(PAGE_SIZE)
        )
    )
    department = session.scalars(sa.select(Department).order_by(Department.id)).first()
    tz = department.timezone if department else "UTC"
    shown = []
    for row in rows:
        subject, body = row.rendered_subject, row.rendered_body
        if body is None:
            subject, body = _preview(session, row, settings.public_base_url)
        patient = row.patient
        shown.append(
            {
                "kind": row.kind.replace("_", " "),
                "channel": row.channel.upper() if row.channel == "sms" else row.channel,
                # Initials and MRN only: enough to recognise, no full name on a shared screen.
                "patient": f"{patient.given_name[:1]}{patient.family_name[:1]} ({patient.mrn})",
                "due": format_local(row.due_at, tz),
                "status": row.status,
                "reason": row.status_reason,
                "subject": subject,
                "body": body,
            }
        )
    return render_page("Patient messages", MESSAGES, rows=shown, timezone=tz)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
