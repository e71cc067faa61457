"""What staff do to a message from the message pages: send a failed one again, suppress one,
mark a patient's reply handled.

Use cases in the unit of work of their caller: they flush and never commit. The status changes
are compare-and-set, because the worker may have settled the message meanwhile (reconcile finds
an unknown SMS at the provider); then the person's decision was made on stale information and
is refused rather than applied.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from notifications.models import InboundMessage, Reminder, ReminderStatus
from scheduler.errors import FieldError, InvalidInput, NotFound, StateConflict

PROBLEM_STATUSES = (ReminderStatus.FAILED, ReminderStatus.UNKNOWN)
MAX_REASON_LENGTH = 300
CHANGED_MEANWHILE = "That message changed meanwhile; nothing was done. Check its status."


class ConfirmationNeeded(StateConflict):
    """The message may already have reached the patient: sending it again needs a yes."""


def _reminder(session: Session, reminder_id: int) -> Reminder:
    row = session.get(Reminder, reminder_id)
    if row is None:
        raise NotFound(f"No message with id {reminder_id}.")
    return row


def _change_status(
    session: Session, reminder_id: int, allowed: tuple[str, ...], now: datetime, **values: Any
) -> None:
    """Change the row only if it still has one of the ``allowed`` statuses."""
    changed = session.execute(
        sa.update(Reminder)
        .where(Reminder.id == reminder_id, Reminder.status.in_(allowed))
        .values(**values, lease_until=None, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        raise StateConflict(CHANGED_MEANWHILE)


def retry_message(
    session: Session, reminder_id: int, *, confirmed: bool, now: datetime | None = None
) -> str:
    """Queue a failed or unknown message to be sent again; the status it had is returned.

    An unknown one may already have reached the patient, so it is resent only when the
    person ``confirmed`` that a second copy is acceptable.
    """
    now = now or datetime.now(UTC)
    row = _reminder(session, reminder_id)
    was = row.status
    if was == ReminderStatus.UNKNOWN and not confirmed:
        raise ConfirmationNeeded(
            "This message may already have reached the patient. Tick the confirmation box to "
            "send it again anyway."
        )
    _change_status(
        session,
        reminder_id,
        tuple(PROBLEM_STATUSES),
        now,
        status=ReminderStatus.PENDING,
        status_reason="retry requested by staff",
        next_attempt_at=now,
        send_started_at=None,
    )
    return was


def suppress_message(
    session: Session, reminder_id: int, *, reason: str, now: datetime | None = None
) -> str:
    """Never send this message; the reason stays on the row. The status it had is returned."""
    now = now or datetime.now(UTC)
    row = _reminder(session, reminder_id)
    reason = " ".join((reason or "").split())
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(
            f"Give a reason (1 to {MAX_REASON_LENGTH} characters) to suppress.",
            [FieldError("reason", f"must be 1 to {MAX_REASON_LENGTH} characters")],
        )
    was = row.status
    _change_status(
        session,
        reminder_id,
        (*PROBLEM_STATUSES, ReminderStatus.PENDING),
        now,
        status=ReminderStatus.SUPPRESSED,
        status_reason=f"suppressed by staff: {reason}",
        next_attempt_at=None,
        send_started_at=None,
    )
    return was


def mark_reply_handled(
    session: Session, message_id: int, *, actor_id: int | None, now: datetime | None = None
) -> InboundMessage:
    """Take a patient's reply out of the inbox (handling it twice keeps the first time)."""
    row = session.get(InboundMessage, message_id)
    if row is None:
        raise NotFound(f"No reply with id {message_id}.")
    if row.handled_at is None:
        row.handled_at = now or datetime.now(UTC)
        row.handled_by_id = actor_id
    row.needs_attention = False
    session.flush()
    return row
