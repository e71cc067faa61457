"""Staff actions on patients' schedule links: revoke them, or send a fresh one."""

from __future__ import annotations

from datetime import UTC, datetime

from notifications import patient_links
from scheduler.models import Role
from web.api.registry import Audit, add_audit_detail, routes
from web.api.schemas import Output
from web.db import get_session

SCHEDULER = Role.SCHEDULER.value


class QueuedMessageOut(Output):
    id: int
    channel: str
    due_at: datetime


class FreshLinkOut(Output):
    course_id: int
    messages: list[QueuedMessageOut]


class LinksRevokedOut(Output):
    patient_id: int
    revoked: int


@routes.operation(
    "POST", "/courses/{course_id}/fresh-link", summary="Send the patient a fresh schedule link",
    tag="Courses", role=SCHEDULER, response=FreshLinkOut, errors=(409,),
    audit=Audit("send_fresh_link", "course"),
)  # fmt: skip
def send_fresh_link(course_id: int):
    """Queues the course's confirmation again on every channel the patient may be messaged
    on; each message gets a new link when it is sent. The course's earlier links stop
    working. A course cancelled, completed or with no sessions ahead, or a patient who
    cannot be messaged, is a 409. Links are never shown: the token exists only in the
    message the patient receives."""
    queued = patient_links.send_fresh_link(get_session(), course_id, now=datetime.now(UTC))
    add_audit_detail(reminder_ids=[row.id for row in queued])
    return FreshLinkOut(
        course_id=course_id,
        messages=[QueuedMessageOut.model_validate(row) for row in queued],
    )


@routes.operation(
    "POST", "/patients/{patient_id}/links/revoke", summary="Revoke a patient's schedule links",
    tag="Patients", role=SCHEDULER, response=LinksRevokedOut,
    audit=Audit("revoke_links", "patient"),
)  # fmt: skip
def revoke_patient_links(patient_id: int):
    """Every link sent to the patient stops working at once (a lost phone, a message sent to
    the wrong number); ``revoked`` says how many were still live."""
    revoked = patient_links.revoke_links(get_session(), patient_id, now=datetime.now(UTC))
    add_audit_detail(revoked=revoked)
    return LinksRevokedOut(patient_id=patient_id, revoked=revoked)
