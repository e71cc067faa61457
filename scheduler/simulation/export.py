"""A department as it is today, written out as a simulation scenario.

The what-if pages start from this: the department's hours, holidays and coming closures, its
active linacs, the protocols it uses, and an arrival generator fitted to the last 12 months of
courses, so an admin changes one thing (a linac more, Saturdays open) against a faithful base.
The scenario uses the API's own field names and is validated by `load_scenario` before it is
handed back, so what the page shows is a scenario the simulation accepts.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler import records
from scheduler.models import Course, Linac, Patient, Protocol
from scheduler.simulation import load_scenario
from scheduler.timeutil import zone

# Arrivals are counted over the last 52 weeks and turned into a rate per week.
HISTORY_WEEKS = 52
# The lead time used when the department has no course history to learn it from.
DEFAULT_LEAD_TIME_DAYS = {"min": 3, "mode": 7, "max": 21}
# The protocol fields that shape a schedule; reminder timing plays no part in a simulation.
SCENARIO_PROTOCOL_FIELDS = sorted(
    records.PROTOCOL_FIELDS - records.REMINDER_CADENCE_FIELDS - {"active"}
)


def scenario_from_department(
    session: Session,
    department_id: int,
    *,
    today: date,
    days: int = 392,
    warmup_days: int = 28,
) -> dict[str, Any]:
    """The department `department_id` as a validated scenario starting on the next Monday.

    Reads only. Raises NotFound for an unknown department and ScenarioError should the
    department's own records not make a valid scenario.
    """
    department = records.get_department(session, department_id)
    # Weeks of the simulated period (and its weekly figures) begin on a Monday.
    start = today + timedelta(days=(7 - today.weekday()) % 7)
    end = start + timedelta(days=days)
    history = _history(session, department_id, department.timezone, today=today)
    used_codes = {course["protocol"] for course in history}
    protocols = [
        p
        for p in records.list_protocols(session, include_inactive=True)
        if p.active or p.code in used_codes
    ]
    scenario: dict[str, Any] = {
        "name": f"{department.name} from {start.isoformat()}",
        "start": start.isoformat(),
        "days": days,
        "warmup_days": warmup_days,
        "department": _department(session, department, today=today, end=end),
        "linacs": [
            {
                "name": linac.name,
                "capabilities": list(linac.capabilities or []),
                "beam_group": linac.beam_group,
                "opening_hours": linac.opening_hours,
            }
            for linac in session.scalars(
                sa.select(Linac)
                .where(Linac.department_id == department_id, Linac.active.is_(True))
                .order_by(Linac.id)
            )
        ],
        "protocols": [_protocol(p) for p in protocols],
        "arrivals": arrival_generator(history, [p.code for p in protocols]),
    }
    return load_scenario(scenario)


def _department(session: Session, department: Any, *, today: date, end: date) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": department.name,
        "timezone": department.timezone,
        "opening_hours": dict(department.opening_hours or {}),
        "holiday_country": department.holiday_country,
        "holiday_subdivision": department.holiday_subdivision,
        "closures": [
            {"day": closure.day.isoformat(), "reason": closure.reason}
            for closure in records.list_closures(session, department.id, start=today, end=end)
        ],
    }
    # A department without a roster exports none: supervision does not limit its bookings.
    roster = records.get_physicist_roster(session, department.id)
    if roster["enabled"]:
        values["physicist_roster"] = roster
    return values


def _protocol(protocol: Protocol) -> dict[str, Any]:
    return {field: getattr(protocol, field) for field in SCENARIO_PROTOCOL_FIELDS}


def _history(
    session: Session, department_id: int, timezone: str, *, today: date
) -> list[dict[str, Any]]:
    """The department's courses whose ready date fell in the last 52 weeks (to yesterday)."""
    first = today - timedelta(weeks=HISTORY_WEEKS)
    rows = session.execute(
        sa.select(Course.ready_to_treat_on, Course.created_at, Course.priority, Protocol.code)
        .join(Patient, Patient.id == Course.patient_id)
        .join(Protocol, Protocol.id == Course.protocol_id)
        .where(
            Patient.department_id == department_id,
            Course.ready_to_treat_on >= first,
            Course.ready_to_treat_on < today,
        )
        .order_by(Course.id)
    )
    tz = zone(timezone)
    return [
        {
            "protocol": code,
            "priority": priority,
            # Lead time: from the day the course was entered (the department's local day)
            # to its ready-to-treat date.
            "lead_days": max(0, (ready - created.astimezone(tz).date()).days),
        }
        for ready, created, priority, code in rows
    ]


def arrival_generator(history: list[dict[str, Any]], codes: list[str]) -> dict[str, Any]:
    """The scenario's arrival generator fitted to past courses (protocol, priority, lead_days).

    Courses record no preferred time window, so the preferred-window share is 0. Without
    any history every protocol in `codes` gets a rate of 0, for the admin to set.
    """
    counts = Counter(course["protocol"] for course in history)
    weekly_rate = {code: round(n / HISTORY_WEEKS, 3) for code, n in sorted(counts.items())}
    if not weekly_rate:
        weekly_rate = dict.fromkeys(codes, 0.0)
    leads = [course["lead_days"] for course in history]
    if leads:
        frequency = Counter(leads)
        # The most common lead time; among equally common ones the shortest.
        mode = min(frequency, key=lambda d: (-frequency[d], d))
        lead_time = {"min": min(leads), "mode": mode, "max": max(leads)}
    else:
        lead_time = dict(DEFAULT_LEAD_TIME_DAYS)
    priorities = Counter(str(course["priority"]) for course in history)
    total = sum(priorities.values())
    priority_share = {p: n / total for p, n in sorted(priorities.items())} if total else {"3": 1.0}
    return {
        "weekly_rate": weekly_rate,
        "lead_time_days": lead_time,
        "preferred_window_share": 0.0,
        "priority_share": priority_share,
    }
