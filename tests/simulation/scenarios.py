"""Small scenarios for the simulation tests: a few weeks, so each run takes seconds."""

from __future__ import annotations

import copy
from typing import Any

WEEKDAY_HOURS = {str(d): ["08:00", "18:00"] for d in range(5)}

# Three weeks of a two-linac department with generated arrivals, missed sessions and a
# planned service day; no unplanned faults, so every schedule it books must stay valid.
SMALL: dict[str, Any] = {
    "name": "Small department, three weeks",
    "start": "2027-03-01",
    "days": 21,
    "warmup_days": 7,
    "department": {
        "name": "Small Radiotherapy",
        "timezone": "America/New_York",
        "opening_hours": WEEKDAY_HOURS,
        "holiday_country": "US",
        "closures": [{"day": "2027-03-10", "reason": "Staff training"}],
    },
    "linacs": [
        {
            "name": "TrueBeam 1",
            "capabilities": ["sbrt", "cbct", "gating", "breath_hold"],
            "beam_group": "truebeam",
        },
        {
            "name": "TrueBeam 2",
            "capabilities": ["sbrt", "cbct", "gating", "breath_hold"],
            "beam_group": "truebeam",
        },
    ],
    "protocols": ["liver-5fx", "lung-peripheral-3fx", "spine-1fx"],
    "arrivals": {
        "weekly_rate": {"liver-5fx": 3, "lung-peripheral-3fx": 4, "spine-1fx": 3},
        "lead_time_days": {"min": 0, "mode": 5, "max": 10},
        "preferred_window_share": 0.3,
        "priority_share": {"1": 0.2, "3": 0.8},
    },
    "disruptions": {
        "missed_fraction_probability": 0.1,
        "downtimes": [
            {
                "linac": "TrueBeam 1",
                "starts_at": "2027-03-16T12:00:00+00:00",
                "ends_at": "2027-03-16T20:00:00+00:00",
                "kind": "planned",
                "reason": "Service",
            }
        ],
    },
}


def small() -> dict[str, Any]:
    return copy.deepcopy(SMALL)
