"""The year simulation with the resources beyond the linac: a physicist roster limits where
supervised fractions go, and a pathway before treatment gives each course its ready date."""

from __future__ import annotations

import csv
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from scheduler.simulation import ScenarioError, load_scenario, run_simulation
from tests.simulation.scenarios import small

HELD = {"tentative", "booked", "confirmed", "completed"}
# One physicist, mornings only: every first fraction (supervised) must start and end there,
# never two at once.
ROSTER = {
    "every_fraction": False,
    "blocks": [{"weekday": d, "start": "08:00", "end": "12:00", "physicists": 1} for d in range(5)],
    "exceptions": [],
}
PATHWAY = {
    "resources": [{"name": "CT sim", "kind": "ct_sim"}, {"name": "IR 1", "kind": "ir_room"}],
    "ct_sim_minutes": 90,
    "planning_working_days": 5,
    "fiducials": {"protocols": ["liver-5fx"], "minutes": 60, "days_before_ct": 7},
}


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "courses.csv").open() as f:
        return list(csv.DictReader(f))


def test_supervised_fractions_stay_inside_the_roster_and_never_overlap(tmp_path: Path) -> None:
    scenario = small()
    scenario["department"]["physicist_roster"] = ROSTER
    scenario["disruptions"]["downtimes"] = []
    run_simulation(scenario, tmp_path, seed=5)
    firsts = [r for r in _rows(tmp_path) if r["fraction_number"] == "1" and r["status"] in HELD]
    assert len(firsts) >= 10
    zone = ZoneInfo(scenario["department"]["timezone"])
    spans = []
    for row in firsts:
        start = datetime.fromisoformat(row["starts_at"]).astimezone(zone)
        end = datetime.fromisoformat(row["ends_at"]).astimezone(zone)
        assert start.weekday() < 5
        assert (start.hour, start.minute) >= (8, 0), row
        assert (end.hour, end.minute) <= (12, 0), row
        spans.append((start, end))
    spans.sort()
    for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        assert next_start >= end, "two supervised sessions at once with one physicist"


def test_without_the_roster_first_fractions_break_its_limits(tmp_path: Path) -> None:
    # The contrast that shows the roster above is what kept them in the mornings, one at a time.
    scenario = small()
    scenario["disruptions"]["downtimes"] = []
    run_simulation(scenario, tmp_path, seed=5)
    zone = ZoneInfo(scenario["department"]["timezone"])
    spans = sorted(
        (
            datetime.fromisoformat(r["starts_at"]).astimezone(zone),
            datetime.fromisoformat(r["ends_at"]).astimezone(zone),
        )
        for r in _rows(tmp_path)
        if r["fraction_number"] == "1" and r["status"] in HELD
    )
    outside = [s for s, e in spans if (s.hour, s.minute) < (8, 0) or (e.hour, e.minute) > (12, 0)]
    at_once = [a for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    assert outside or at_once


def test_a_roster_the_records_refuse_is_named_by_its_path(tmp_path: Path) -> None:
    scenario = small()
    scenario["department"]["physicist_roster"] = {
        "blocks": [{"weekday": 9, "start": "08:00", "end": "12:00", "physicists": 1}]
    }
    with pytest.raises(ScenarioError) as caught:
        run_simulation(scenario, tmp_path, seed=1)
    assert any(e.startswith("department.physicist_roster") for e in caught.value.errors)


def _working_days_after(day: date, count: int) -> date:
    while count:
        day += timedelta(days=1)
        if day.weekday() < 5:
            count -= 1
    return day


def test_the_pathway_gives_each_course_its_ready_date(tmp_path: Path) -> None:
    scenario = small()
    scenario["pathway"] = PATHWAY
    # No holidays or closures in this period, so working days are Monday to Friday.
    scenario["department"]["closures"] = []
    scenario["department"]["holiday_country"] = None
    run_simulation(scenario, tmp_path, seed=2)
    rows = _rows(tmp_path)
    courses = {r["course_id"]: r for r in rows}
    assert len(courses) >= 10
    for row in courses.values():
        arrival = date.fromisoformat(row["arrival_date"])
        ready = date.fromisoformat(row["ready_date"])
        # CT simulation on or after the arrival (a week later for liver markers), then five
        # working days of planning.
        earliest = arrival + timedelta(days=7 if row["protocol"] == "liver-5fx" else 0)
        assert ready >= _working_days_after(earliest, 5), row
    for row in rows:
        if row["status"] in HELD and row["fraction_number"] == "1":
            started = datetime.fromisoformat(row["starts_at"]).date()
            assert started >= date.fromisoformat(row["ready_date"])


def test_a_pathway_with_markers_but_no_room_is_refused() -> None:
    scenario = small()
    scenario["pathway"] = {**PATHWAY, "resources": [{"name": "CT sim", "kind": "ct_sim"}]}
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario)
    assert "pathway.fiducials: needs an ir_room among pathway.resources" in caught.value.errors


def test_the_report_counts_waits_in_the_department_time_zone(tmp_path: Path) -> None:
    scenario = small()
    run_simulation(scenario, tmp_path, seed=1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["department_timezone"] == "America/New_York"
    assert "America/New_York" in (tmp_path / "report.html").read_text()
