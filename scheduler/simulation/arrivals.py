"""The courses a scenario brings, and its random downtime, drawn once before the clock runs.

Everything random about a run is drawn from the one ``random.Random(seed)`` in a fixed order,
so a seed always gives the same year.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.context import opening_hours

# Ready-to-treat dates of generated courses fall on working days, as plans are approved then.
WORKING_DAYS = frozenset(range(5))


@dataclass(frozen=True)
class Arrival:
    """A course as the scenario gives it: when it is known, when it is ready, what it needs."""

    number: int
    protocol: str
    ready: date
    arrival: date
    priority: int
    preferred_window: tuple[time, time] | None


@dataclass(frozen=True)
class PlannedDowntime:
    """A downtime and the moment the department learns of it."""

    linac: str
    starts_at: datetime
    ends_at: datetime
    kind: str
    reason: str
    known_at: datetime


def _window(value: list[str] | None) -> tuple[time, time] | None:
    return None if value is None else (time.fromisoformat(value[0]), time.fromisoformat(value[1]))


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: exact, and mean is at most a few courses per day here."""
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _triangular(rng: random.Random, t: dict[str, float]) -> float:
    return rng.triangular(t["min"], t["max"], t["mode"])


def arrivals(scenario: dict[str, Any], rng: random.Random) -> list[Arrival]:
    """Every course of the period, by ready date (explicit ones in the scenario's order)."""
    start = date.fromisoformat(scenario["start"])
    spec = scenario["arrivals"]
    if isinstance(spec, list):
        found = [
            Arrival(
                i + 1,
                item["protocol"],
                date.fromisoformat(item["ready"]),
                date.fromisoformat(item["arrival"]),
                item["priority"],
                _window(item["preferred_window"]),
            )
            for i, item in enumerate(spec)
        ]
        return sorted(found, key=lambda a: (a.ready, a.number))
    priorities = sorted(spec["priority_share"].items())
    levels = [int(level) for level, _ in priorities]
    weights = [share for _, share in priorities]
    windows = [_window(w) for w in spec["preferred_windows"]]
    found = []
    for offset in range(scenario["days"]):
        ready = start + timedelta(days=offset)
        if ready.weekday() not in WORKING_DAYS:
            continue
        for code, weekly in sorted(spec["weekly_rate"].items()):
            for _ in range(_poisson(rng, weekly / len(WORKING_DAYS))):
                lead = round(_triangular(rng, spec["lead_time_days"]))
                priority = rng.choices(levels, weights)[0]
                window = None
                if windows and rng.random() < spec["preferred_window_share"]:
                    window = rng.choice(windows)
                arrival = max(ready - timedelta(days=lead), start)
                found.append(Arrival(len(found) + 1, code, ready, arrival, priority, window))
    return found


def downtimes(scenario: dict[str, Any], rng: random.Random) -> list[PlannedDowntime]:
    """The scenario's downtimes and its random ones, in the order they become known.

    A planned downtime is known two weeks ahead (or from the start), an unplanned one when it
    begins. A random one strikes a linac on a day it is open, inside its opening hours.
    """
    start = date.fromisoformat(scenario["start"])
    first_moment = datetime.combine(start, time.min, ZoneInfo(scenario["department"]["timezone"]))
    found = []
    for d in scenario["disruptions"]["downtimes"]:
        starts_at = datetime.fromisoformat(d["starts_at"]).astimezone(UTC)
        ends_at = datetime.fromisoformat(d["ends_at"]).astimezone(UTC)
        known = starts_at if d["kind"] == "unplanned" else starts_at - timedelta(days=14)
        found.append(
            PlannedDowntime(
                d["linac"],
                starts_at,
                ends_at,
                d["kind"],
                d["reason"] or f"{d['kind']} downtime",
                max(known, first_moment.astimezone(UTC)),
            )
        )
    random_spec = scenario["disruptions"]["random_downtime"]
    if random_spec is not None and random_spec["rate_per_linac_day"] > 0:
        found += _random_downtimes(scenario, random_spec, rng)
    return sorted(found, key=lambda d: (d.known_at, d.starts_at, d.linac))


def _random_downtimes(
    scenario: dict[str, Any], spec: dict[str, Any], rng: random.Random
) -> list[PlannedDowntime]:
    tz = ZoneInfo(scenario["department"]["timezone"])
    start = date.fromisoformat(scenario["start"])
    department_hours = opening_hours(
        scenario["department"].get("opening_hours")
        or {str(d): ["07:00", "19:00"] for d in range(5)}
    )
    found = []
    for offset in range(scenario["days"]):
        day = start + timedelta(days=offset)
        for linac in scenario["linacs"]:
            hours = opening_hours(linac["opening_hours"]) or department_hours
            window = hours.window(day.weekday()) if hours else None
            if window is None or rng.random() >= spec["rate_per_linac_day"]:
                continue
            opens = datetime.combine(day, window[0], tz)
            closes = datetime.combine(day, window[1], tz)
            quarters = max(int((closes - opens).total_seconds() // 900), 1)
            begins = opens + timedelta(minutes=15 * rng.randrange(quarters))
            hours_down = max(_triangular(rng, spec["hours"]), 0.25)
            ends = begins + timedelta(minutes=15 * max(round(hours_down * 4), 1))
            begins_utc = begins.astimezone(UTC)
            found.append(
                PlannedDowntime(
                    linac["name"],
                    begins_utc,
                    ends.astimezone(UTC),
                    "unplanned",
                    "Unplanned fault",
                    begins_utc,
                )
            )
    return found
