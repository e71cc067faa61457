"""The patient's schedule as an iCalendar file (RFC 5545) attached to emails.

Times are written in the department's IANA zone with a generated VTIMEZONE, so a calendar shows
09:00 on both sides of a DST change; UIDs are stable per fraction and SEQUENCE grows with every
change, so a re-sent file updates the events a calendar already holds instead of duplicating
them. Summaries travel to lock screens and shared calendars: callers keep them free of diagnosis
words ("Appointment – <clinic>").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from icalendar import Calendar, Event, Timezone
from sqlalchemy.orm import Session

from notifications import rendering
from scheduler.models import Course, Fraction, FractionStatus
from scheduler.plain_text import one_line

# Calendar apps rarely show PRODID, but the file is the patient's: name no treatment in it.
PRODID = "-//Clinic scheduler//Appointments//EN"
EventStatus = Literal["CONFIRMED", "TENTATIVE", "CANCELLED"]


@dataclass(frozen=True)
class IcsEvent:
    uid: str  # stable for the fraction, e.g. "fraction-123@clinic.example"
    sequence: int  # the fraction's version: calendars keep the highest one
    start: datetime  # aware UTC
    end: datetime  # aware UTC
    summary: str
    location: str | None = None
    status: EventStatus = "CONFIRMED"


def schedule_ics(
    events: list[IcsEvent], *, tz: str, calendar_name: str, stamp: datetime | None = None
) -> bytes:
    """The events as one VCALENDAR (METHOD:PUBLISH) with a VTIMEZONE for `tz`."""
    zone = ZoneInfo(tz)
    stamp = (stamp or datetime.now(UTC)).astimezone(UTC)
    # Names are checked when typed, but rows stored before that check may still hold a line
    # break or control character; written raw, it would end the property line early.
    calendar_name = one_line(calendar_name)
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("name", calendar_name)
    calendar.add("x-wr-calname", calendar_name)
    calendar.add("x-wr-timezone", tz)
    for item in events:
        for moment in (item.start, item.end):
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValueError(f"event {item.uid}: times must be timezone-aware")
        if item.end <= item.start:
            raise ValueError(f"event {item.uid}: end must be after start")
        event = Event()
        event.add("uid", item.uid)
        event.add("sequence", item.sequence)
        event.add("dtstamp", stamp)
        event.add("dtstart", item.start.astimezone(zone))
        event.add("dtend", item.end.astimezone(zone))
        event.add("summary", one_line(item.summary))
        if item.location:
            event.add("location", one_line(item.location))
        event.add("status", item.status)
        # Patients should see the slot as busy; cancelled ones free it again.
        event.add("transp", "TRANSPARENT" if item.status == "CANCELLED" else "OPAQUE")
        calendar.add_component(event)
    timezone = _vtimezone(tz, zone, events, stamp, needed=bool(calendar.get_missing_tzids()))
    if timezone is not None:
        # VTIMEZONE goes before the events that reference it.
        calendar.subcomponents.insert(0, timezone)
    return calendar.to_ical()


def _vtimezone(
    tz: str, zone: ZoneInfo, events: list[IcsEvent], stamp: datetime, *, needed: bool
) -> Timezone | None:
    if not events:
        # An empty schedule still carries the zone, so the calendar has a component (RFC 5545).
        today = stamp.astimezone(zone).date()
        return Timezone.from_tzid(tz, first_date=today, last_date=today + timedelta(days=366))
    if not needed:
        return None  # times are written with "Z", which needs no VTIMEZONE
    # The zone's rules from just before the first event to a year after the last, so a client
    # expanding the schedule never falls off the end of the VTIMEZONE.
    first = min(e.start for e in events).astimezone(zone).date() - timedelta(days=1)
    last = max(e.end for e in events).astimezone(zone).date() + timedelta(days=366)
    return Timezone.from_tzid(tz, first_date=first, last_date=last)


# Course files: the same event for a fraction wherever it is published (email attachment,
# patient download, staff feed), so calendars update one entry instead of adding another.

# Titles reach lock screens and shared calendars: no diagnosis or treatment words.
SUMMARY = {"en": "Appointment - {clinic}", "es": "Cita - {clinic}"}


def event_status(status: str) -> EventStatus:
    """A fraction status as RFC 5545 sees it: gone ones are CANCELLED, held ones not."""
    if status == FractionStatus.TENTATIVE:
        return "TENTATIVE"
    if status in (FractionStatus.CANCELLED, FractionStatus.MISSED):
        return "CANCELLED"
    return "CONFIRMED"


def uid_host(public_base_url: str) -> str:
    return urlsplit(public_base_url).hostname or "localhost"


def fraction_uid(fraction_id: int, host: str) -> str:
    return f"fraction-{fraction_id}@{host}"


def course_ics(
    session: Session,
    course: Course,
    *,
    host: str,
    tz: str,
    language: str,
    clinic_name: str,
    now: datetime,
) -> bytes:
    """Every fraction of a course, cancelled and missed ones as STATUS:CANCELLED.

    Cancelled sessions stay in the file so a calendar that imported them earlier marks them
    cancelled instead of keeping a stale appointment.
    """
    # The summary reaches lock screens and shared calendars: clinic name without diagnosis
    # words, as in the emailed attachment.
    safe_clinic = rendering.sms_clinic_name(clinic_name, language)
    summary = SUMMARY.get(language[:2], SUMMARY["en"]).format(clinic=safe_clinic)
    fractions = session.scalars(
        sa.select(Fraction)
        .where(Fraction.course_id == course.id)
        .order_by(Fraction.starts_at, Fraction.id)
    ).all()
    events = [
        IcsEvent(
            uid=fraction_uid(f.id, host),
            sequence=f.version,
            start=f.starts_at,
            end=f.ends_at,
            summary=summary,
            location=safe_clinic,
            status=event_status(f.status),
        )
        for f in fractions
    ]
    return schedule_ics(events, tz=tz, calendar_name=summary, stamp=now)
