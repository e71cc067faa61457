"""Translate database rows into the engine's plain values (SearchContext, Rules, Calendar).

One query for the linacs' bookings and one for their downtime over the whole window keep
proposals fast however many months of bookings the department holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    Closure,
    Department,
    Downtime,
    Fraction,
    Linac,
    Protocol,
)
from scheduler.types import Calendar, Interval, LinacSpec, OpeningHours, Rules, SearchContext


def rules_from_protocol(protocol: Protocol) -> Rules:
    return Rules(
        fractions=protocol.fractions,
        min_hours_between=float(protocol.min_hours_between or 0),
        min_interval_days=protocol.min_interval_days,
        max_interval_days=protocol.max_interval_days,
        min_overall_days=protocol.min_overall_days,
        max_overall_days=protocol.max_overall_days,
        weekdays=frozenset(protocol.weekdays),
        start_weekdays=(
            frozenset(protocol.start_weekdays) if protocol.start_weekdays is not None else None
        ),
        first_session_minutes=protocol.first_session_minutes,
        session_minutes=protocol.session_minutes,
        capabilities=frozenset(protocol.capabilities),
    )


def opening_hours(spec: dict | None) -> OpeningHours | None:
    """{"0": ["07:00", "19:00"], ...} -> OpeningHours (None stays None)."""
    if spec is None:
        return None
    return OpeningHours(
        {
            int(day): (time.fromisoformat(opens), time.fromisoformat(closes))
            for day, (opens, closes) in spec.items()
        }
    )


def department_calendar(
    session: Session, department: Department, first: date, last: date
) -> Calendar:
    """Hours plus every public holiday and local closure between two local dates."""
    closed: dict[date, str] = {}
    if department.holiday_country:
        public = holidays.country_holidays(
            department.holiday_country,
            subdiv=department.holiday_subdivision,
            years=range(first.year, last.year + 1),
        )
        closed.update({day: name for day, name in public.items() if first <= day <= last})
    closures = session.scalars(
        sa.select(Closure).where(
            Closure.department_id == department.id, Closure.day >= first, Closure.day <= last
        )
    )
    closed.update({c.day: c.reason for c in closures})
    return Calendar(
        timezone=department.timezone,
        hours=opening_hours(department.opening_hours) or OpeningHours({}),
        closed_dates=frozenset(closed),
        closed_reasons=closed,
    )


def linac_specs(linacs: Iterable[Linac]) -> tuple[LinacSpec, ...]:
    return tuple(
        LinacSpec(
            id=linac.id,
            name=linac.name,
            capabilities=frozenset(linac.capabilities),
            beam_group=linac.beam_group,
            hours=opening_hours(linac.opening_hours),
        )
        for linac in linacs
        if linac.active
    )


def local_day_bounds(tz: str, first: date, last: date) -> tuple[datetime, datetime]:
    """UTC instants covering local days first..last inclusive."""
    zone = ZoneInfo(tz)
    start = datetime.combine(first, time.min, zone).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, zone).astimezone(UTC)
    return start, end


def busy_by_linac(
    session: Session,
    linac_ids: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    exclude_course_id: int | None = None,
) -> dict[int, list[Interval]]:
    """Active bookings and downtime per linac overlapping [start, end), sorted by start.

    A course being (re)placed is left out: its own fractions are part of the schedule the
    engine checks, not obstacles to it.
    """
    busy: dict[int, list[Interval]] = defaultdict(list)
    booked = sa.select(Fraction.linac_id, Fraction.starts_at, Fraction.ends_at).where(
        Fraction.linac_id.in_(linac_ids),
        Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
        Fraction.starts_at < end,
        Fraction.ends_at > start,
    )
    if exclude_course_id is not None:
        booked = booked.where(Fraction.course_id != exclude_course_id)
    for linac_id, starts_at, ends_at in session.execute(booked):
        busy[linac_id].append(Interval(starts_at, ends_at))
    down = session.execute(
        sa.select(Downtime.linac_id, Downtime.starts_at, Downtime.ends_at).where(
            Downtime.linac_id.in_(linac_ids), Downtime.starts_at < end, Downtime.ends_at > start
        )
    )
    for linac_id, starts_at, ends_at in down:
        busy[linac_id].append(Interval(starts_at, ends_at))
    for intervals in busy.values():
        intervals.sort(key=lambda i: (i.start, i.end))
    return dict(busy)


def patient_busy(
    session: Session,
    patient_id: int,
    start: datetime,
    end: datetime,
    *,
    exclude_course_id: int | None = None,
) -> list[Interval]:
    """The patient's active bookings in other courses overlapping [start, end)."""
    query = sa.select(Fraction.starts_at, Fraction.ends_at).where(
        Fraction.patient_id == patient_id,
        Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
        Fraction.starts_at < end,
        Fraction.ends_at > start,
    )
    if exclude_course_id is not None:
        query = query.where(Fraction.course_id != exclude_course_id)
    return sorted((Interval(s, e) for s, e in session.execute(query)), key=lambda i: i.start)


def search_context(
    session: Session,
    department: Department,
    first: date,
    last: date,
    *,
    patient_id: int | None = None,
    exclude_course_id: int | None = None,
) -> SearchContext:
    """Everything the engine needs about local days first..last for one department."""
    linacs = linac_specs(department.linacs)
    start, end = local_day_bounds(department.timezone, first, last)
    return SearchContext(
        calendar=department_calendar(session, department, first, last),
        linacs=linacs,
        linac_busy=busy_by_linac(
            session,
            [spec.id for spec in linacs],
            start,
            end,
            exclude_course_id=exclude_course_id,
        ),
        patient_busy=(
            patient_busy(session, patient_id, start, end, exclude_course_id=exclude_course_id)
            if patient_id is not None
            else ()
        ),
    )
