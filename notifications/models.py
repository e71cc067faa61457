"""The outbox: every patient message is a row before it is a request to a provider."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from scheduler.models import Base, Course, Fraction, Patient, utcnow


class ReminderStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its due time
    CLAIMED = "claimed"  # a dispatcher took it; lease_until says until when
    SENT = "sent"  # the provider accepted it
    DELIVERED = "delivered"  # the provider reported delivery
    FAILED = "failed"  # will not be sent; status_reason says why
    SUPPRESSED = "suppressed"  # deliberately not sent (no consent, opted out, past, by staff)
    SUPERSEDED = "superseded"  # its fraction changed: a newer reminder replaces it
    UNKNOWN = "unknown"  # the provider may have it: reconciled before anything else happens


# Once here a reminder is never sent (again).
FINAL_STATUSES = (
    ReminderStatus.SENT,
    ReminderStatus.DELIVERED,
    ReminderStatus.FAILED,
    ReminderStatus.SUPPRESSED,
    ReminderStatus.SUPERSEDED,
)


class Reminder(Base):
    __tablename__ = "reminders"
    __table_args__ = (
        # The dispatcher's query: due pending rows, and claims whose lease ran out.
        sa.Index("ix_reminders_due", "status", "due_at"),
        sa.Index("ix_reminders_fraction", "fraction_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # (fraction or course, kind, version, channel): the database refuses a second copy.
    dedupe_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    channel: Mapped[str] = mapped_column(sa.String(10))
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    course_id: Mapped[int] = mapped_column(sa.ForeignKey("courses.id"), index=True)
    fraction_id: Mapped[int | None] = mapped_column(sa.ForeignKey("fractions.id"))
    fraction_version: Mapped[int | None]
    due_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(sa.String(12), default=ReminderStatus.PENDING)
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    context: Mapped[dict] = mapped_column(default=dict)
    attempts: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[datetime | None]
    # Set just before the provider is called and cleared once its answer is recorded: a claim
    # that expires with this set may have been sent, so it is reconciled, never re-sent.
    send_started_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    provider_id: Mapped[str | None] = mapped_column(sa.String(320), unique=True)
    provider_status: Mapped[str | None] = mapped_column(sa.String(20))
    # What the patient was sent (or would be), kept for the message timeline and the
    # local outbox page.
    rendered_subject: Mapped[str | None] = mapped_column(sa.Text)
    rendered_body: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    # The request id (see scheduler.observability.request_id) of the web request or tick that
    # planned this message. The send happens later, under a dispatch tick's id; its log line
    # names this one too, so a booking's log lines lead to its messages' sends.
    origin_request_id: Mapped[str | None] = mapped_column(sa.String(128))

    patient: Mapped[Patient] = relationship()
    course: Mapped[Course] = relationship()
    fraction: Mapped[Fraction | None] = relationship()


class InboundMessage(Base):
    """An SMS a patient sent us; ones no keyword handles wait in the schedulers' inbox."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[str] = mapped_column(sa.String(64), unique=True)  # replays: no effect
    from_number: Mapped[str] = mapped_column(sa.String(20))
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    body: Mapped[str] = mapped_column(sa.Text)
    action: Mapped[str] = mapped_column(sa.String(20))  # confirm, opt_out, opt_in, help, inbox
    needs_attention: Mapped[bool] = mapped_column(default=False)
    handled_at: Mapped[datetime | None]
    handled_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProviderEvent(Base):
    """A status callback already applied: a repeated one is recognised and ignored."""

    __tablename__ = "provider_events"
    __table_args__ = (sa.UniqueConstraint("provider_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(20))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class MessageTemplate(Base):
    """An admin's edited version of one shipped template file (kind, channel part, language).

    Absent means the shipped file applies; deleting the row restores it.
    """

    __tablename__ = "message_templates"
    __table_args__ = (sa.UniqueConstraint("kind", "part", "language"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    part: Mapped[str] = mapped_column(sa.String(20))  # sms | email_subject | email_body | ...
    language: Mapped[str] = mapped_column(sa.String(8))
    source: Mapped[str] = mapped_column(sa.Text)
    updated_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
