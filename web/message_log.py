"""The message log's filters and order: which patient messages ``/messages`` lists, and how.

Messages are ordered by when they were or will be sent: the sent time once a message went
out, else the time it is due. Filters come from the query string (status, channel, patient
id, a date range, the order), so a filtered view can be bookmarked and shared. The patient is
named by id, never by name or MRN: no personal data goes into a URL.

Dates are local days in each patient's department zone, so "from 9 March" means from
midnight of 9 March where the patient is treated, whichever zone the viewer is in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from notifications.models import Reminder, ReminderStatus
from notifications.types import Channel
from scheduler.context import local_day_bounds
from scheduler.models import Department, Patient
from web import params

NEWEST_FIRST = "newest"
OLDEST_FIRST = "oldest"
ORDERS = {NEWEST_FIRST: "Latest first", OLDEST_FIRST: "Earliest first"}
STATUSES = tuple(status.value for status in ReminderStatus)
CHANNELS = {Channel.SMS.value: "SMS", Channel.EMAIL.value: "email"}


def sent_or_due() -> sa.ColumnElement:
    """When a message was or will be sent: its sent time, else its due time."""
    return sa.func.coalesce(Reminder.sent_at, Reminder.due_at)


@dataclass(frozen=True)
class LogFilter:
    """A parsed query string; ``errors`` holds one readable sentence per bad value."""

    status: str | None = None
    channel: str | None = None
    patient_id: int | None = None
    first: date | None = None  # local day, inclusive
    last: date | None = None  # local day, inclusive
    order: str = NEWEST_FIRST
    errors: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return any(
            value is not None
            for value in (self.status, self.channel, self.patient_id, self.first, self.last)
        )

    def query_args(self, **changes: object) -> dict[str, object]:
        """The query string of this filter (``changes`` applied), leaving out defaults."""
        values: dict[str, object] = {
            "status": self.status,
            "channel": self.channel,
            "patient": self.patient_id,
            "from": self.first.isoformat() if self.first else None,
            "to": self.last.isoformat() if self.last else None,
            "sort": self.order if self.order != NEWEST_FIRST else None,
        }
        values.update(changes)
        return {key: value for key, value in values.items() if value not in (None, "")}


def _choice(args: Mapping[str, str], name: str, allowed: Mapping[str, str] | tuple[str, ...],
            label: str, errors: list[str]) -> str | None:  # fmt: skip
    value = args.get(name, "").strip()
    if not value:
        return None
    if value not in allowed:
        errors.append(f"{label} must be one of {', '.join(allowed)}.")
        return None
    return value


def _day(args: Mapping[str, str], name: str, label: str, errors: list[str]) -> date | None:
    value = args.get(name, "").strip()
    if not value:
        return None
    try:
        return params.parse_date(value)
    except ValueError:
        errors.append(
            f"{label} must be a date such as 2026-03-09, "
            f"between {params.MIN_YEAR} and {params.MAX_YEAR}."
        )
        return None


def parse_filter(args: Mapping[str, str]) -> LogFilter:
    errors: list[str] = []
    status = _choice(args, "status", STATUSES, "Status", errors)
    channel = _choice(args, "channel", CHANNELS, "Channel", errors)
    order = _choice(args, "sort", ORDERS, "Order", errors) or NEWEST_FIRST
    patient_id = None
    raw_patient = args.get("patient", "").strip()
    if raw_patient:
        patient_id = params.int_or_none(raw_patient, low=1)
        if patient_id is None:
            errors.append("Patient must be a patient's number (the id in its page's address).")
    first = _day(args, "from", "From", errors)
    last = _day(args, "to", "To", errors)
    if first and last and last < first:
        errors.append("To must not be before From.")
    return LogFilter(status, channel, patient_id, first, last, order, errors)


def _within_days(session: Session, first: date | None, last: date | None) -> sa.ColumnElement:
    """sent_or_due() inside [first, last] local days of each patient's department."""
    when = sent_or_due()
    clauses = []
    for department_id, tz in session.execute(sa.select(Department.id, Department.timezone)):
        lo = local_day_bounds(tz, first, first)[0] if first else None
        hi = local_day_bounds(tz, last, last)[1] if last else None
        bounds = [Patient.department_id == department_id]
        if lo is not None:
            bounds.append(when >= lo)
        if hi is not None:
            bounds.append(when < hi)
        clauses.append(sa.and_(*bounds))
    return sa.or_(*clauses) if clauses else sa.false()


def log_query(session: Session, wanted: LogFilter, limit: int) -> sa.Select[tuple[Reminder]]:
    """The messages ``wanted`` asks for, in its order, at most ``limit`` of them."""
    query = (
        sa.select(Reminder)
        .join(Patient, Patient.id == Reminder.patient_id)
        .options(selectinload(Reminder.patient), selectinload(Reminder.fraction))
    )
    if wanted.status:
        query = query.where(Reminder.status == wanted.status)
    if wanted.channel:
        query = query.where(Reminder.channel == wanted.channel)
    if wanted.patient_id is not None:
        query = query.where(Reminder.patient_id == wanted.patient_id)
    if wanted.first or wanted.last:
        query = query.where(_within_days(session, wanted.first, wanted.last))
    when = sent_or_due()
    if wanted.order == OLDEST_FIRST:
        query = query.order_by(when, Reminder.id)
    else:
        query = query.order_by(when.desc(), Reminder.id.desc())
    return query.limit(limit)
