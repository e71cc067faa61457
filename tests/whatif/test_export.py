"""A department exported as a what-if scenario: its records, and arrivals fitted to its history."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy.orm import Session

from scheduler.models import Course
from scheduler.simulation import load_scenario
from scheduler.simulation.export import scenario_from_department
from scheduler.timeutil import zone
from tests.api.conftest import Seed
from tests.committing import records

TODAY = date(2027, 3, 10)  # a Wednesday: the scenario starts on the Monday after
TZ = zone("America/New_York")


def _course(
    db: Session,
    seed: Seed,
    patient_id: int,
    protocol_id: int,
    *,
    ready: date,
    lead: int,
    priority: int = 3,
) -> None:
    course = records.create_course(
        db,
        {"patient_id": patient_id, "protocol_id": protocol_id, "priority": priority,
         "ready_to_treat_on": ready},
    )  # fmt: skip
    # Entered `lead` local days before it was ready, late in the evening: the local date
    # counts, not the UTC one (already the next day at 23:30 in New York).
    entered = datetime.combine(ready - timedelta(days=lead), time(23, 30), tzinfo=TZ)
    db.get(Course, course.id).created_at = entered.astimezone(UTC)
    db.commit()


def test_export_fits_rates_and_lead_times_to_the_last_52_weeks(db: Session, seed: Seed) -> None:
    dept = seed.department_id
    records.add_closure(db, dept, day=date(2027, 7, 5), reason="Building work")
    records.add_closure(db, dept, day=date(2027, 1, 4), reason="Already past")
    sbrt3 = records.create_protocol(
        db, {"code": "lung3", "name": "Lung 3 fx", "site": "lung", "fractions": 3}
    ).id
    retired = records.create_protocol(
        db, {"code": "old1", "name": "Old single fraction", "fractions": 1}
    ).id
    other = records.create_department(
        db, {"name": "Elsewhere", "timezone": "UTC", "opening_hours": {"0": ["08:00", "16:00"]}}
    )
    patient = records.create_patient(
        db, {"department_id": dept, "mrn": "EX-1", "given_name": "A", "family_name": "B",
             "date_of_birth": date(1950, 1, 1)},
    ).id  # fmt: skip
    stranger = records.create_patient(
        db, {"department_id": other.id, "mrn": "EX-2", "given_name": "C", "family_name": "D",
             "date_of_birth": date(1950, 1, 1)},
    ).id  # fmt: skip
    first_day = TODAY - timedelta(weeks=52)
    # In the window: four liver courses (lead times 2, 5, 5, 9), two lung, one old protocol.
    _course(db, seed, patient, seed.protocol_id, ready=first_day, lead=2, priority=1)
    _course(db, seed, patient, seed.protocol_id, ready=date(2026, 9, 1), lead=5)
    _course(db, seed, patient, seed.protocol_id, ready=date(2026, 12, 1), lead=5, priority=2)
    _course(db, seed, patient, seed.protocol_id, ready=TODAY - timedelta(days=1), lead=9)
    _course(db, seed, patient, sbrt3, ready=date(2026, 6, 1), lead=5)
    _course(db, seed, patient, sbrt3, ready=date(2026, 11, 1), lead=5)
    _course(db, seed, patient, retired, ready=date(2026, 10, 1), lead=5)
    # Outside it: too old, not ready yet, no ready date, another department's.
    _course(db, seed, patient, seed.protocol_id, ready=first_day - timedelta(days=1), lead=40)
    _course(db, seed, patient, seed.protocol_id, ready=TODAY, lead=40)
    records.create_course(db, {"patient_id": patient, "protocol_id": sbrt3})
    _course(db, seed, stranger, sbrt3, ready=date(2026, 11, 1), lead=40)
    records.update_protocol(db, retired, {"active": False})
    records.create_linac(
        db, {"department_id": dept, "name": "Retired linac", "capabilities": ["cbct"],
             "active": False},
    )  # fmt: skip
    records.create_linac(
        db, {"department_id": dept, "name": "Late linac", "capabilities": ["cbct"],
             "opening_hours": {"0": ["10:00", "20:00"]}},
    )  # fmt: skip

    scenario = scenario_from_department(db, dept, today=TODAY, days=28, warmup_days=7)

    assert scenario["start"] == "2027-03-15"
    assert (scenario["days"], scenario["warmup_days"]) == (28, 7)
    department = scenario["department"]
    assert department["name"] == "Demo Radiation Oncology"
    assert department["timezone"] == "America/New_York"
    assert department["opening_hours"] == {str(d): ["07:00", "19:00"] for d in range(5)}
    # A closure already past and one after the four weeks are not the period's.
    assert department["closures"] == []
    assert [linac["name"] for linac in scenario["linacs"]] == [
        "TrueBeam 1",
        "TrueBeam 2",
        "Late linac",
    ]
    assert scenario["linacs"][0]["beam_group"] == "truebeam"
    assert sorted(scenario["linacs"][0]["capabilities"]) == ["cbct", "gating", "sbrt"]
    assert scenario["linacs"][2]["opening_hours"] == {"0": ["10:00", "20:00"]}
    protocols = {p["code"]: p for p in scenario["protocols"] if isinstance(p, dict)}
    # Active protocols, and a retired one the department still used in the year.
    assert set(protocols) == {"liver5", "lung3", "old1"}
    assert protocols["liver5"]["fractions"] == 5
    assert protocols["liver5"]["max_overall_days"] == 15
    assert "active" not in protocols["liver5"]

    arrivals = scenario["arrivals"]
    assert arrivals["weekly_rate"] == {
        "liver5": pytest.approx(4 / 52, abs=1e-3),
        "lung3": pytest.approx(2 / 52, abs=1e-3),
        "old1": pytest.approx(1 / 52, abs=1e-3),
    }
    assert arrivals["lead_time_days"] == {"min": 2, "mode": 5, "max": 9}
    assert arrivals["preferred_window_share"] == 0
    assert arrivals["priority_share"] == {
        "1": pytest.approx(1 / 7),
        "2": pytest.approx(1 / 7),
        "3": pytest.approx(5 / 7),
    }
    # What comes back is what the simulation accepts as it is.
    assert load_scenario(scenario) == scenario


def test_export_includes_closures_inside_the_period(db: Session, seed: Seed) -> None:
    records.add_closure(db, seed.department_id, day=date(2027, 3, 20), reason="Training")
    records.add_closure(db, seed.department_id, day=date(2028, 6, 1), reason="Too late")
    scenario = scenario_from_department(db, seed.department_id, today=TODAY, days=28, warmup_days=0)
    assert scenario["department"]["closures"] == [{"day": "2027-03-20", "reason": "Training"}]


def test_export_without_history_uses_default_lead_time(db: Session, seed: Seed) -> None:
    scenario = scenario_from_department(db, seed.department_id, today=TODAY)
    assert scenario["start"] == "2027-03-15"
    assert scenario["days"] == 392
    assert scenario["arrivals"]["weekly_rate"] == {"liver5": 0}
    assert scenario["arrivals"]["lead_time_days"] == {"min": 3, "mode": 7, "max": 21}
    assert scenario["arrivals"]["priority_share"] == {"3": 1.0}


def test_export_carries_the_departments_physicist_roster(
    db: Session, seed: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduler import records as plain_records

    roster = {
        "enabled": True,
        "every_fraction": False,
        "blocks": [{"weekday": 0, "start": "08:00", "end": "17:00", "physicists": 2}],
        "exceptions": [],
    }
    asked = []

    def get_physicist_roster(session: Session, department_id: int) -> dict:
        asked.append(department_id)
        return roster

    monkeypatch.setattr(plain_records, "get_physicist_roster", get_physicist_roster, raising=False)
    scenario = scenario_from_department(db, seed.department_id, today=TODAY)
    assert asked == [seed.department_id]
    assert scenario["department"]["physicist_roster"] == roster
    # A department that keeps no roster needs no physicist cover in the simulation.
    roster = {"enabled": False, "every_fraction": False, "blocks": [], "exceptions": []}
    scenario = scenario_from_department(db, seed.department_id, today=TODAY)
    assert scenario["department"]["physicist_roster"] is None
