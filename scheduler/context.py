"""Translate database rows into the engine's plain values (SearchContext, Rules, Calendar).

One query for the linacs' bookings and one for their downtime over the whole window keep
proposals fast however many months of bookings the department holds.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
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


@functools.lru_cache(maxsize=64)
def public_holidays(country: str, subdivision: str | None, year: int) -> dict[date, str]:
    """One year's public holidays; building them is costly and they never change."""
    return dict(holidays.country_holidays(country, subdiv=subdivision, years=year).items())


def department_calendar(
    session: Session, department: Department, first: date, last: date
) -> Calendar:
    """Hours plus every public holiday and local closure between two local dates."""
    closed: dict[date, str] = {}
    if department.holiday_country:
        for year in range(first.year, last.year + 1):
            public = public_holidays(
                department.holiday_country, department.holiday_subdivision, year
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


def busy_intervals(
    session: Session,
    linac_ids: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    patient_id: int | None = None,
    exclude_course_id: int | None = None,
) -> tuple[dict[int, list[Interval]], list[Interval]]:
    """Per linac: active bookings and downtime overlapping [start, end); and the patient's
    active bookings in other courses. Sorted by start.

    One round trip (a UNION ALL) instead of three: a proposal's cost is mostly waiting on the
    database, not the search. A course being (re)placed is left out: its own fractions are
    part of the schedule the engine checks, not obstacles to it.
    """
    active = Fraction.status.in_(ACTIVE_FRACTION_STATUSES)
    overlapping = sa.and_(Fraction.starts_at < end, Fraction.ends_at > start)
    other_course = (
        Fraction.course_id != exclude_course_id if exclude_course_id is not None else sa.true()
    )
    # PostgreSQL returns aware timestamps already; skipping the per-value UTC normalisation
    # of UTCDateTime on these (often a thousand) rows is a measurable share of a proposal.
    raw = session.get_bind().dialect.name == "postgresql"

    def times(model: type[Fraction] | type[Downtime]) -> tuple[Any, Any]:
        if not raw:
            return model.starts_at, model.ends_at
        aware = sa.DateTime(timezone=True)
        return sa.type_coerce(model.starts_at, aware), sa.type_coerce(model.ends_at, aware)

    parts = [
        sa.select(sa.literal(0).label("kind"), Fraction.linac_id, *times(Fraction)).where(
            Fraction.linac_id.in_(linac_ids), active, overlapping, other_course
        ),
        sa.select(sa.literal(0).label("kind"), Downtime.linac_id, *times(Downtime)).where(
            Downtime.linac_id.in_(linac_ids), Downtime.starts_at < end, Downtime.ends_at > start
        ),
    ]
    if patient_id is not None:
        parts.append(
            sa.select(sa.literal(1).label("kind"), Fraction.linac_id, *times(Fraction)).where(
                Fraction.patient_id == patient_id, active, overlapping, other_course
            )
        )
    by_linac: dict[int, list[Interval]] = defaultdict(list)
    patient: list[Interval] = []
    for kind, linac_id, starts_at, ends_at in session.execute(sa.union_all(*parts)).all():
        interval = Interval(starts_at, ends_at)
        (patient if kind else by_linac[linac_id]).append(interval)
    for intervals in (*by_linac.values(), patient):
        intervals.sort(key=lambda i: (i.start, i.end))
    return dict(by_linac), patient


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
    linac_busy, patient = busy_intervals(
        session,
        [spec.id for spec in linacs],
        start,
        end,
        patient_id=patient_id,
        exclude_course_id=exclude_course_id,
    )
    return SearchContext(
        calendar=department_calendar(session, department, first, last),
        linacs=linacs,
        linac_busy=linac_busy,
        patient_busy=patient,
    )
