"""Plain data shared by the reminder policy, the outbox and the templates.

The policy (policy.py) is pure: it sees these snapshots, never ORM rows, so it is tested
without a database. All datetimes are aware UTC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, time


class Kind(enum.StrEnum):
    CONFIRMATION = "confirmation"  # on booking: every fraction, preparation, link
    DAY_BEFORE = "day_before"  # the day before a fraction: preparation instructions
    SAME_DAY = "same_day"  # a short reminder a few hours before a fraction
    CHANGE = "change"  # a fraction moved or was rebooked: before -> after
    CANCELLATION = "cancellation"  # a fraction or the whole course was cancelled


class Channel(enum.StrEnum):
    SMS = "sms"
    EMAIL = "email"


@dataclass(frozen=True)
class PatientSnapshot:
    id: int
    given_name: str
    language: str  # "en" | "es"
    timezone: str  # the patient's zone (the department's when the patient has none)
    phone_e164: str | None
    email: str | None
    sms_allowed: bool  # consent given, not opted out, number not flagged by the provider
    email_allowed: bool


@dataclass(frozen=True)
class FractionSnapshot:
    id: int
    number: int
    version: int
    status: str  # tentative | booked | confirmed | ...
    starts_at: datetime
    ends_at: datetime
    linac_name: str


@dataclass(frozen=True)
class ReminderSettings:
    """The reminder cadence (department's, overridden per protocol) and the sending window.

    Which fraction reminders are on and their offsets; the window is patient local time.
    """

    day_before_minutes_before: int = 24 * 60
    same_day_minutes_before: int = 120
    day_before: bool = True
    same_day: bool = True
    window_start: time = time(8, 0)
    window_end: time = time(21, 0)


@dataclass(frozen=True)
class CourseSnapshot:
    id: int
    patient: PatientSnapshot
    fractions: tuple[FractionSnapshot, ...]  # the active ones, by number
    fraction_count: int
    ready_to_treat: bool  # plan approval and physics QA recorded
    clinic_name: str
    clinic_phone: str | None
    department_timezone: str
    prep_instructions: str
    settings: ReminderSettings = field(default_factory=ReminderSettings)
    # clinic_phone is as patients read it (national format); this is for tel: links (E.164).
    clinic_phone_dial: str | None = None


@dataclass(frozen=True)
class PlannedReminder:
    """One message the outbox should hold.

    ``dedupe_key`` is unique per (fraction or course, kind, version, channel): writing the same
    plan twice can never produce two rows, so never two messages.
    """

    kind: Kind
    channel: Channel
    due_at: datetime
    course_id: int
    fraction_id: int | None
    fraction_version: int | None
    dedupe_key: str
    # Extra facts a template needs that the current rows no longer hold (e.g. the old time
    # in a change notice), as JSON-ready values.
    context: dict[str, object] = field(default_factory=dict)
