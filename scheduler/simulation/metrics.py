"""The figures of a finished run, read back from the simulation database.

Courses whose ready date falls in the warm-up are simulated (they occupy the linacs) but left
out of every figure; utilisation and overtime count the days after the warm-up only.
Waits are calendar days from the ready date to the first session's local date.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from scheduler.context import department_calendar, opening_hours
from scheduler.models import (
    HELD_FRACTION_STATUSES,
    BookingEvent,
    BookingEventKind,
    Course,
    Department,
    Downtime,
    Fraction,
    FractionStatus,
    Linac,
    Protocol,
)
from scheduler.timeutil import local_date, local_window, to_local

if TYPE_CHECKING:
    from scheduler.simulation.runner import Simulation

# Booking events that put one of a patient's sessions somewhere else.
RESCHEDULE_EVENTS = (BookingEventKind.FRACTION_MOVED, BookingEventKind.FRACTION_REBOOKED)
BOOKED_STATUSES = frozenset(HELD_FRACTION_STATUSES)


@dataclass(frozen=True)
class FractionRow:
    number: int
    linac: str
    starts_at: datetime
    ends_at: datetime
    status: str
    override: bool


@dataclass(frozen=True)
class CourseRow:
    """One course's outcome: what courses.csv lists and the figures are computed from."""

    course_id: int
    protocol: str
    ready_date: date
    arrival_date: date
    priority: int
    preferred_window: tuple[Any, Any] | None
    in_metrics: bool
    fractions: tuple[FractionRow, ...]
    first_pass: bool
    reschedules: int
    min_overall_days: int | None
    max_overall_days: int | None
    fraction_count: int


@dataclass(frozen=True)
class WeekRow:
    week_start: date
    linac: str
    sbrt_capable: bool
    open_minutes: int
    booked_minutes: int


@dataclass(frozen=True)
class Result:
    summary: dict[str, Any]
    courses: list[CourseRow]
    weeks: list[WeekRow]
    timezone: str


def percentile(values: list[int], q: float) -> float | None:
    """The q-th percentile by linear interpolation between closest ranks (None if empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def measure(sim: Simulation, *, policy: str, seed: int, runtime_seconds: float) -> Result:
    scenario = sim.scenario
    start = date.fromisoformat(scenario["start"])
    end = start + timedelta(days=scenario["days"] - 1)
    measured_from = start + timedelta(days=scenario["warmup_days"])
    tz = sim.world.timezone
    courses = course_rows(sim, measured_from)
    weeks, open_by_day = week_rows(sim, start, end)
    measured = [c for c in courses if c.in_metrics]
    booked = [c for c in measured if _held(c)]
    waits = [wait_days(c, tz) for c in booked]
    windowed = [c for c in measured if c.preferred_window is not None]
    sbrt = {name for (name, sbrt_capable) in open_by_day if sbrt_capable}
    sbrt_open = sum(
        minutes
        for (name, _), days in open_by_day.items()
        if name in sbrt
        for day, (minutes, _) in days.items()
        if day >= measured_from
    )
    sbrt_booked = sum(
        _minutes(f)
        for c in courses
        for f in c.fractions
        if f.status in BOOKED_STATUSES
        and f.linac in sbrt
        and measured_from <= local_date(f.starts_at, tz) <= end
    )
    summary = {
        "scenario_name": scenario["name"],
        # Dates in the files are the department's local dates; the report reads its zone here.
        "department_timezone": tz,
        "policy": policy,
        "seed": seed,
        "period": {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "days": scenario["days"],
            "warmup_days": scenario["warmup_days"],
        },
        "courses": len(measured),
        "unbooked_courses": len(measured) - len(booked),
        "fractions": sum(1 for c in measured for f in c.fractions if f.status in BOOKED_STATUSES),
        "missed_fractions": sum(
            1 for c in measured for f in c.fractions if f.status == FractionStatus.MISSED
        ),
        "booked_first_pass_share": _share(sum(c.first_pass for c in measured), len(measured)),
        "wait_days": {
            "median": percentile(waits, 50),
            "p90": percentile(waits, 90),
            "max": max(waits) if waits else None,
        },
        # The optimiser's objective: a day of wait weighs 6 - priority (priority 1 is urgent).
        "mean_wait_days": statistics.fmean(waits) if waits else None,
        "weighted_mean_wait_days": (
            statistics.fmean((6 - c.priority) * w for c, w in zip(booked, waits, strict=True))
            if waits
            else None
        ),
        "wait_days_by_priority": _waits_by_priority(booked, waits),
        "within_14_days_share": _share(sum(w <= 14 for w in waits), len(measured)),
        "within_28_days_share": _share(sum(w <= 28 for w in waits), len(measured)),
        "preferred_window_share": _share(
            sum(in_preferred_window(c, tz) for c in windowed), len(windowed)
        ),
        "overall_days_within_protocol_share": _share(
            sum(overall_within_protocol(c, tz) for c in booked), len(booked)
        ),
        "sbrt_utilisation": _share(sbrt_booked, sbrt_open),
        "overtime_minutes": overtime_minutes(courses, open_by_day, tz, measured_from, end),
        "reschedules_per_course": _share(sum(c.reschedules for c in measured), len(measured)),
        "downtime_moves": dict(sim.downtime_moves),
        "overrides": sum(1 for c in measured for f in c.fractions if f.override),
        "optimiser_placed_courses": sim.optimiser_placed,
        "runtime_seconds": round(runtime_seconds, 2),
    }
    return Result(summary, courses, weeks, tz)


def _waits_by_priority(booked: list[CourseRow], waits: list[int]) -> dict[str, dict[str, Any]]:
    """Courses, median and mean wait per priority: what knowing the future buys urgent
    patients shows here rather than in the overall median."""
    by_priority: dict[int, list[int]] = {}
    for course, wait in zip(booked, waits, strict=True):
        by_priority.setdefault(course.priority, []).append(wait)
    return {
        str(priority): {
            "courses": len(days),
            "median": percentile(days, 50),
            "mean": statistics.fmean(days),
        }
        for priority, days in sorted(by_priority.items())
    }


def _held(course: CourseRow) -> list[FractionRow]:
    return [f for f in course.fractions if f.status in BOOKED_STATUSES]


def _minutes(f: FractionRow) -> int:
    return round((f.ends_at - f.starts_at).total_seconds() / 60)


def wait_days(course: CourseRow, tz: str) -> int:
    """Ready date to the local date of the first session booked (delivered, to come or missed)."""
    first = min(f.starts_at for f in course.fractions if f.status != FractionStatus.CANCELLED)
    return (local_date(first, tz) - course.ready_date).days


def in_preferred_window(course: CourseRow, tz: str) -> bool:
    """Every session the patient has starts and ends inside the preferred local window."""
    held = _held(course)
    if not held or course.preferred_window is None:
        return False
    opens, closes = course.preferred_window
    return all(
        opens <= to_local(f.starts_at, tz).time() and to_local(f.ends_at, tz).time() <= closes
        for f in held
    )


def overall_within_protocol(course: CourseRow, tz: str) -> bool:
    """All prescribed sessions held and the first-to-last span (days, inclusive) inside the
    protocol's overall time."""
    held = _held(course)
    if len(held) < course.fraction_count:
        return False
    days = [local_date(f.starts_at, tz) for f in held]
    overall = (max(days) - min(days)).days + 1
    lo = course.min_overall_days or 1
    hi = course.max_overall_days or overall
    return lo <= overall <= hi


def course_rows(sim: Simulation, measured_from: date) -> list[CourseRow]:
    session = sim.session
    linac_names = {v: k for k, v in sim.world.linac_ids.items()}
    fractions: dict[int, list[FractionRow]] = defaultdict(list)
    for f in session.execute(
        sa.select(
            Fraction.course_id,
            Fraction.number,
            Fraction.linac_id,
            Fraction.starts_at,
            Fraction.ends_at,
            Fraction.status,
            Fraction.override_reason,
        ).order_by(Fraction.course_id, Fraction.number, Fraction.starts_at, Fraction.id)
    ):
        fractions[f.course_id].append(
            FractionRow(
                f.number,
                linac_names[f.linac_id],
                f.starts_at.astimezone(UTC),
                f.ends_at.astimezone(UTC),
                str(f.status),
                f.override_reason is not None,
            )
        )
    reschedules: dict[int, int] = dict(
        session.execute(
            sa.select(BookingEvent.course_id, sa.func.count())
            .where(BookingEvent.kind.in_([str(k) for k in RESCHEDULE_EVENTS]))
            .group_by(BookingEvent.course_id)
        ).all()
    )
    protocols = {p.id: p for p in session.scalars(sa.select(Protocol))}
    course_protocol = dict(session.execute(sa.select(Course.id, Course.protocol_id)).all())
    prescribed = dict(session.execute(sa.select(Course.id, Course.prescribed_fractions)).all())
    rows = []
    for state in sorted(sim.courses.values(), key=lambda s: s.course_id):
        a = state.arrival
        protocol = protocols[course_protocol[state.course_id]]
        rows.append(
            CourseRow(
                course_id=state.course_id,
                protocol=a.protocol,
                ready_date=a.ready,
                arrival_date=a.arrival,
                priority=a.priority,
                preferred_window=a.preferred_window,
                in_metrics=a.ready >= measured_from,
                fractions=tuple(fractions.get(state.course_id, ())),
                first_pass=state.first_pass,
                reschedules=reschedules.get(state.course_id, 0),
                min_overall_days=protocol.min_overall_days,
                max_overall_days=protocol.max_overall_days,
                fraction_count=prescribed.get(state.course_id) or protocol.fractions,
            )
        )
    session.rollback()
    return rows


OpenDays = dict[tuple[str, bool], dict[date, tuple[int, tuple[datetime, datetime] | None]]]


def week_rows(sim: Simulation, start: date, end: date) -> tuple[list[WeekRow], OpenDays]:
    """Open and booked minutes per (Monday, linac), and each linac's open minutes and opening
    window per day (open minutes: opening hours on days the department treats, less
    downtime)."""
    session = sim.session
    department = session.get(Department, sim.world.department_id)
    tz = department.timezone
    calendar = department_calendar(session, department, start, end)
    linacs = list(session.scalars(sa.select(Linac).where(Linac.department_id == department.id)))
    downtime: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for d in session.scalars(sa.select(Downtime).order_by(Downtime.starts_at)):
        downtime[d.linac_id].append((d.starts_at.astimezone(UTC), d.ends_at.astimezone(UTC)))
    downtime = {linac_id: _merged(spans) for linac_id, spans in downtime.items()}
    booked: dict[tuple[int, date], int] = defaultdict(int)
    for f in session.execute(
        sa.select(Fraction.linac_id, Fraction.starts_at, Fraction.ends_at).where(
            Fraction.status.in_([str(s) for s in BOOKED_STATUSES])
        )
    ):
        day = local_date(f.starts_at, tz)
        booked[(f.linac_id, day)] += round((f.ends_at - f.starts_at).total_seconds() / 60)
    session.rollback()
    open_by_day: OpenDays = {}
    weeks: dict[tuple[date, int], list[int]] = {}
    department_hours = calendar.hours
    for linac in linacs:
        hours = opening_hours(linac.opening_hours) or department_hours
        sbrt = "sbrt" in linac.capabilities
        days: dict[date, tuple[int, tuple[datetime, datetime] | None]] = {}
        day = start
        while day <= end:
            window = None if day in calendar.closed_dates else hours.window(day.weekday())
            minutes = 0
            bounds = None
            if window is not None:
                bounds = local_window(day, window[0], window[1], tz)
                minutes = _minutes_between(*bounds) - sum(
                    _overlap(bounds, d) for d in downtime.get(linac.id, ())
                )
            days[day] = (minutes, bounds)
            monday = day - timedelta(days=day.weekday())
            totals = weeks.setdefault((monday, linac.id), [0, 0])
            totals[0] += minutes
            totals[1] += booked.get((linac.id, day), 0)
            day += timedelta(days=1)
        open_by_day[(linac.name, sbrt)] = days
    names = {linac.id: linac for linac in linacs}
    rows = [
        WeekRow(
            monday,
            names[linac_id].name,
            "sbrt" in names[linac_id].capabilities,
            open_minutes,
            booked_minutes,
        )
        for (monday, linac_id), (open_minutes, booked_minutes) in sorted(weeks.items())
    ]
    return rows, open_by_day


def _merged(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Overlapping downtimes as one span each, so no minute is taken off twice."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _minutes_between(start: datetime, end: datetime) -> int:
    return round((end - start).total_seconds() / 60)


def _overlap(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> int:
    start, end = max(a[0], b[0]), min(a[1], b[1])
    return _minutes_between(start, end) if end > start else 0


def overtime_minutes(
    courses: list[CourseRow], open_by_day: OpenDays, tz: str, first: date, last: date
) -> int:
    """Minutes of sessions outside their linac's opening hours (only an override books them
    there), on the days after the warm-up."""
    windows = {name: days for (name, _), days in open_by_day.items()}
    total = 0
    for course in courses:
        for f in _held(course):
            day = local_date(f.starts_at, tz)
            if not first <= day <= last:
                continue
            bounds = windows[f.linac].get(day, (0, None))[1]
            inside = _overlap(bounds, (f.starts_at, f.ends_at)) if bounds else 0
            total += _minutes(f) - inside
    return total
