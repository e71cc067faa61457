"""Hand-made run directories: a few courses on two linacs over two weeks, as the simulation
writes them (summary.json, courses.csv, weekly.csv).

The department is in Sydney (UTC+11 in January), so a morning fraction falls on the previous
UTC day: a wait taken from the UTC date would be a day short.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

SYDNEY = ZoneInfo("Australia/Sydney")
COURSE_HEADER = [
    *("course_id", "protocol", "ready_date", "priority", "fraction_number", "linac"),
    *("starts_at", "ends_at", "status", "arrival_date", "preferred_window", "in_metrics"),
]
WEEKLY_HEADER = ["week_start", "linac", "sbrt_capable", "open_minutes", "booked_minutes"]
LINAC_1 = "TrueBeam <1>"
LINAC_2 = "Halcyon & 2"


def local(day: str, hour: int, minute: int = 0) -> datetime:
    """A Sydney wall-clock time as the UTC instant courses.csv records."""
    return datetime.combine(
        date.fromisoformat(day), datetime.min.time().replace(hour=hour, minute=minute), SYDNEY
    ).astimezone(UTC)


@dataclass
class Fraction:
    course_id: str
    protocol: str
    ready: str
    number: int | None
    linac: str | None
    starts_at: datetime | None
    minutes: int
    status: str
    in_metrics: bool = True
    priority: int = 3
    window: str = ""

    def row(self) -> list[str]:
        ends_at = self.starts_at + timedelta(minutes=self.minutes) if self.starts_at else None
        ready = date.fromisoformat(self.ready)
        return [
            self.course_id,
            self.protocol,
            self.ready,
            str(self.priority),
            "" if self.number is None else str(self.number),
            self.linac or "",
            self.starts_at.isoformat() if self.starts_at else "",
            ends_at.isoformat() if ends_at else "",
            self.status,
            (ready - timedelta(days=3)).isoformat(),
            self.window,
            "1" if self.in_metrics else "0",
        ]


def example_fractions() -> list[Fraction]:
    """Measured waits (Sydney dates): C1 2 days, C2 1 (its missed first fraction counts),
    C3 4 (its cancelled booking does not), C5 2; C0 is in the warm-up; C4 was never booked."""
    return [
        Fraction("C0", "lung-3fx", "2027-01-04", 1, LINAC_1, local("2027-01-05", 9), 60,
                 "completed", in_metrics=False),
        Fraction("C1", "lung-3fx", "2027-01-06", 1, LINAC_1, local("2027-01-08", 8, 30), 45,
                 "completed"),
        Fraction("C1", "lung-3fx", "2027-01-06", 2, LINAC_1, local("2027-01-11", 8, 30), 30,
                 "completed"),
        Fraction("C1", "lung-3fx", "2027-01-06", 3, LINAC_1, local("2027-01-13", 8, 30), 30,
                 "booked"),
        Fraction("C2", "liver-5fx", "2027-01-06", 1, LINAC_2, local("2027-01-07", 10), 60,
                 "missed", priority=2),
        Fraction("C2", "liver-5fx", "2027-01-06", 1, LINAC_2, local("2027-01-08", 10), 60,
                 "completed", priority=2),
        Fraction("C2", "liver-5fx", "2027-01-06", 2, LINAC_2, local("2027-01-12", 10), 30,
                 "booked", priority=2),
        Fraction("C3", "liver-5fx", "2027-01-11", 1, LINAC_1, local("2027-01-11", 14), 60,
                 "cancelled"),
        Fraction("C3", "liver-5fx", "2027-01-11", 1, LINAC_2, local("2027-01-15", 14), 60,
                 "booked"),
        Fraction("C4", "liver-5fx", "2027-01-12", None, None, None, 0, "unbooked"),
        Fraction("C5", "lung-3fx", "2027-01-12", 1, LINAC_2, local("2027-01-14", 9), 45,
                 "booked", window="08:00-12:00"),
    ]  # fmt: skip


def example_weekly() -> list[list[Any]]:
    return [
        ["2027-01-04", LINAC_1, 1, 3000, 135],
        ["2027-01-04", LINAC_2, 1, 3000, 120],
        ["2027-01-11", LINAC_1, 1, 2400, 60],
        ["2027-01-11", LINAC_2, 1, 3000, 195],
    ]


def example_summary(**changes: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "scenario_name": 'Sydney <two linacs> & "friends"',
        "department_timezone": "Australia/Sydney",
        "period": {"start": "2027-01-04", "end": "2027-01-17", "days": 14, "warmup_days": 2},
        "policy": "online",
        "seed": 7,
        "runtime_seconds": 1.25,
        "courses": 5,
        "fractions": 10,
        "missed_fractions": 1,
        "unbooked_courses": 1,
        "booked_first_pass_share": 0.8,
        "wait_days": {"median": 2, "p90": 3.4, "max": 4},
        "mean_wait_days": 2.25,
        "weighted_mean_wait_days": 6.75,
        "wait_days_by_priority": {
            "1": {"courses": 1, "median": 1, "mean": 1.0},
            "3": {"courses": 3, "median": 2, "mean": 2.6667},
        },
        "within_14_days_share": 1.0,
        "within_28_days_share": 1.0,
        "preferred_window_share": 1.0,
        "overall_days_within_protocol_share": 0.75,
        "sbrt_utilisation": 0.0444,
        "overtime_minutes": 0,
        "reschedules_per_course": 0.5,
        "downtime_moves": {"kept_time": 1, "same_day": 0, "other_day": 2, "needs_human": 0},
        "overrides": 0,
    }
    summary.update(changes)
    return summary


@dataclass
class RunFiles:
    """What to write into a run directory; each test changes what it needs."""

    summary: dict[str, Any] = field(default_factory=example_summary)
    fractions: list[Fraction] = field(default_factory=example_fractions)
    weekly: list[list[Any]] = field(default_factory=example_weekly)

    def but(self, **changes: Any) -> RunFiles:
        return replace(self, **changes)

    def write(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(self.summary, indent=2), "utf-8")
        with (out_dir / "courses.csv").open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(COURSE_HEADER)
            writer.writerows(fraction.row() for fraction in self.fractions)
        with (out_dir / "weekly.csv").open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(WEEKLY_HEADER)
            writer.writerows(self.weekly)
        return out_dir
