"""A course's patient messages through the API: what state each is in and, if it was not
sent, why (e.g. refused by the last check before sending).

The message text is not included: it can carry a working patient link and words about the
patient's care; staff read it on the message pages.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel, Field

from notifications.models import Reminder
from scheduler import records
from scheduler.models import Role
from web.api.registry import Audit, routes
from web.db import get_session


class MessageOut(BaseModel):
    id: int
    kind: str = Field(description="confirmation, change, cancellation, day_before or same_day")
    channel: str = Field(description="sms or email")
    fraction_id: int | None
    due_at: datetime
    status: str = Field(
        description="pending, claimed, sent, delivered, failed, unknown, suppressed or superseded"
    )
    status_reason: str | None = Field(
        description="Why the message is in this state, e.g. why it failed or was not sent"
    )
    attempts: int
    sent_at: datetime | None
    delivered_at: datetime | None


@routes.operation(
    "GET", "/courses/{course_id}/messages", summary="List a course's patient messages",
    tag="Courses", role=Role.VIEWER.value, response=MessageOut, many=True,
    audit=Audit("view", "course"),
)  # fmt: skip
def list_course_messages(course_id: int):
    """Every message planned for the course, due order, with its status and reason."""
    session = get_session()
    records.get_course(session, course_id)  # an unknown course is a 404, not an empty list
    rows = session.scalars(
        sa.select(Reminder)
        .where(Reminder.course_id == course_id)
        .order_by(Reminder.due_at, Reminder.id)
    )
    return [
        MessageOut(
            id=row.id,
            kind=row.kind,
            channel=row.channel,
            fraction_id=row.fraction_id,
            due_at=row.due_at,
            status=row.status,
            status_reason=row.status_reason,
            attempts=row.attempts,
            sent_at=row.sent_at,
            delivered_at=row.delivered_at,
        )
        for row in rows
    ]
