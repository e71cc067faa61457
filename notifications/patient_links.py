"""Staff actions on a patient's schedule links: revoke them, or send the patient a fresh one.

Staff never see a working link: every stored and shown copy of a message has its token
masked. When a patient has lost their link, or it had to be revoked, staff send a fresh one:
the confirmation message goes out again and, like every message, is given a new link when it
is sent. Use cases: they add and flush; the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from notifications import outbox, policy
from notifications.models import Reminder
from scheduler import links
from scheduler.errors import NotFound, StateConflict
from scheduler.models import Course, CourseStatus, Patient


def revoke_links(session: Session, patient_id: int, *, now: datetime) -> int:
    """End every live link of the patient at once (a lost phone, a message sent to the wrong
    number); returns how many there were."""
    if session.get(Patient, patient_id) is None:
        raise NotFound(f"patient {patient_id} not found")
    revoked = links.revoke_patient_links(session, patient_id=patient_id, now=now)
    session.flush()
    return revoked


def send_fresh_link(session: Session, course_id: int, *, now: datetime) -> list[Reminder]:
    """Queue the course's confirmation again so the patient gets a new link; returns the
    messages queued (one per channel the patient may be messaged on).

    The course's earlier links are revoked: whoever may hold an old one (the reason staff
    send a fresh link) can no longer use it.
    """
    course = session.get(Course, course_id)
    if course is None:
        raise NotFound(f"course {course_id} not found")
    if course.status in (CourseStatus.CANCELLED, CourseStatus.COMPLETED):
        raise StateConflict(f"course {course_id} is {course.status}: it has no link to send")
    snapshot = outbox.course_snapshot(session, course)
    if not policy.allowed_channels(snapshot.patient):
        raise StateConflict(
            "the patient cannot be messaged: no consent recorded, opted out, or no number "
            "or address"
        )
    # One request per second at most: a double-clicked button queues one message.
    planned = policy.plan_fresh_link(snapshot, now=now, key=now.strftime("%Y%m%dT%H%M%S"))
    if not planned:
        raise StateConflict(f"course {course_id} has no sessions ahead")
    links.revoke_patient_links(session, course_id=course.id, now=now)
    queued = outbox.write(session, course.patient_id, planned)
    session.flush()
    return queued
