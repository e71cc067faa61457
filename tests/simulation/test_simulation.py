"""The year simulation end to end on small scenarios: invalid scenarios are refused with
their JSON paths, a seed gives the same files, every booked schedule passes the engine's
validate, the figures are those of a hand-made year, and the CLI and PostgreSQL both work."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bootstrap import make_engine, make_session_factory
from scheduler import rules as rulebook
from scheduler.context import rules_from_protocol, search_context
from scheduler.models import Course, Department, Linac, Patient
from scheduler.simulation import ScenarioError, load_scenario, run_simulation
from scheduler.timeutil import local_date
from scheduler.types import PlannedFraction, Schedule
from tests.conftest import _drop_postgres_database, _postgres_database
from tests.simulation.scenarios import WEEKDAY_HOURS, small
from web.cli import simulate_command

HELD = {"tentative", "booked", "confirmed", "completed"}


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "courses.csv").open() as f:
        return list(csv.DictReader(f))


def test_an_invalid_scenario_names_each_problem_by_its_path_and_writes_nothing(
    tmp_path: Path,
) -> None:
    scenario = small()
    scenario["linacs"][1]["name"] = 7
    scenario["linacs"].append({"name": "TrueBeam 1", "capabilities": ["SBRT"]})
    scenario["protocols"].append("liver-9fx")
    scenario["disruptions"]["downtimes"][0]["linac"] = "Unknown"
    del scenario["department"]["timezone"]
    out = tmp_path / "out"
    with pytest.raises(ScenarioError) as raised:
        run_simulation(scenario, out)
    errors = raised.value.errors
    assert "linacs[1].name: 7 is not of type 'string'" in errors
    assert any(e.startswith("linacs[2].capabilities[0]: 'SBRT' does not match") for e in errors)
    assert "department: 'timezone' is a required property" in errors
    assert not out.exists()

    # Once the shape is right, references between parts are checked before anything runs.
    scenario = small()
    scenario["protocols"].append("liver-9fx")
    scenario["disruptions"]["downtimes"][0]["linac"] = "Unknown"
    scenario["arrivals"]["weekly_rate"]["prostate-5fx"] = 1
    with pytest.raises(ScenarioError) as raised:
        run_simulation(scenario, out)
    errors = raised.value.errors
    assert any(e.startswith("protocols[3]: no shipped protocol 'liver-9fx'") for e in errors)
    assert "disruptions.downtimes[0].linac: no linac named 'Unknown'" in errors
    assert "arrivals.weekly_rate.prostate-5fx: not one of the scenario's protocols" in errors
    assert not out.exists()


def test_a_record_the_services_refuse_is_named_by_its_path(tmp_path: Path) -> None:
    scenario = small()
    scenario["department"]["holiday_country"] = "QQ"
    with pytest.raises(ScenarioError) as raised:
        run_simulation(scenario, tmp_path / "out")
    assert raised.value.errors == [
        "department.holiday_country: must be a supported ISO 3166 country code such as US"
    ]
    assert not (tmp_path / "out").exists()


def test_an_unknown_time_zone_is_refused_before_the_run() -> None:
    scenario = small()
    scenario["department"]["timezone"] = "Mars/Olympus_Mons"
    with pytest.raises(ScenarioError) as raised:
        load_scenario(scenario)
    assert raised.value.errors == [
        "department.timezone: 'Mars/Olympus_Mons' is not an IANA time zone"
    ]


def test_a_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"start": ')
    with pytest.raises(ScenarioError, match="not JSON"):
        load_scenario(path)


def test_defaults_are_filled_and_shipped_protocols_resolved() -> None:
    scenario = load_scenario(small())
    liver = scenario["protocols"][0]
    assert liver["code"] == "liver-5fx" and liver["fractions"] == 5
    assert liver["max_overall_days"] == 15
    assert scenario["disruptions"]["random_downtime"] is None
    assert scenario["arrivals"]["preferred_windows"] == [["08:00", "12:00"], ["13:00", "17:00"]]


def test_a_seed_gives_the_same_year_and_every_booked_schedule_is_valid(tmp_path: Path) -> None:
    first_db = tmp_path / "first.sqlite3"
    first = run_simulation(small(), tmp_path / "a", seed=7, database_url=f"sqlite:///{first_db}")
    second = run_simulation(small(), tmp_path / "b", seed=7)
    assert (tmp_path / "a" / "courses.csv").read_text() == (
        tmp_path / "b" / "courses.csv"
    ).read_text()
    assert (tmp_path / "a" / "weekly.csv").read_text() == (
        tmp_path / "b" / "weekly.csv"
    ).read_text()
    assert {k: v for k, v in first.items() if k != "runtime_seconds"} == {
        k: v for k, v in second.items() if k != "runtime_seconds"
    }
    run_simulation(small(), tmp_path / "c", seed=8)
    assert (tmp_path / "c" / "courses.csv").read_text() != (
        tmp_path / "a" / "courses.csv"
    ).read_text()
    for name in ("summary.json", "courses.csv", "weekly.csv", "report.html"):
        assert (tmp_path / "a" / name).exists()

    rows = _rows(tmp_path / "a")
    assert list(rows[0]) == [
        *("course_id", "protocol", "ready_date", "priority", "fraction_number", "linac"),
        *("starts_at", "ends_at", "status", "arrival_date", "preferred_window", "in_metrics"),
    ]
    assert first["courses"] == len({r["course_id"] for r in rows if r["in_metrics"] == "1"})
    assert first["missed_fractions"] > 0  # the year exercised missed sessions and rebooking
    checked = _validate_from_csv(rows, f"sqlite:///{first_db}")
    assert checked >= first["courses"]


def _validate_from_csv(rows: list[dict[str, str]], url: str) -> int:
    """Every fully booked course's schedule, read from courses.csv, checked by the pure
    engine's validate against the simulation database's other bookings; returns how many."""
    by_course: dict[int, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        if row["status"] in HELD:
            by_course[int(row["course_id"])].append(row)
    engine = make_engine(url)
    checked = 0
    try:
        with make_session_factory(engine)() as session:
            department = session.scalars(sa.select(Department)).one()
            linacs = {linac.name: linac.id for linac in session.scalars(sa.select(Linac))}
            for course_id, held in sorted(by_course.items()):
                course = session.get(Course, course_id)
                rules = rules_from_protocol(course.protocol)
                if len(held) < course.fraction_count:
                    continue  # left for a clinician: validate would only say it is short
                fractions = tuple(
                    sorted(
                        (
                            PlannedFraction(
                                int(r["fraction_number"]),
                                linacs[r["linac"]],
                                datetime.fromisoformat(r["starts_at"]),
                                datetime.fromisoformat(r["ends_at"]),
                            )
                            for r in held
                        ),
                        key=lambda f: f.number,
                    )
                )
                days = [local_date(f.start, department.timezone) for f in fractions]
                patient = session.get(Patient, course.patient_id)
                ctx = search_context(
                    session,
                    department,
                    min(days),
                    max(days),
                    patient_id=patient.id,
                    exclude_course_id=course.id,
                )
                violations = rulebook.validate(Schedule(fractions), rules, ctx)
                assert violations == [], (course_id, violations)
                checked += 1
    finally:
        engine.dispose()
    return checked


def _hand_made() -> dict:
    """One SBRT linac open 08:00-18:00 UTC on weekdays, single-fraction courses, a two-hour
    service on the first Tuesday: every figure can be worked out by hand."""
    return {
        "name": "Hand-made fortnight",
        "start": "2027-01-04",
        "days": 14,
        "warmup_days": 1,
        "department": {"name": "Hand", "timezone": "UTC", "opening_hours": WEEKDAY_HOURS},
        "linacs": [{"name": "Edge", "capabilities": ["sbrt", "cbct"]}],
        "protocols": ["spine-1fx"],
        "arrivals": [
            # In the warm-up: simulated, listed, not measured.
            {"ready": "2027-01-04", "protocol": "spine-1fx", "arrival": "2027-01-04"},
            {"ready": "2027-01-05", "protocol": "spine-1fx", "arrival": "2027-01-04"},
            {
                "ready": "2027-01-06",
                "protocol": "spine-1fx",
                "priority": 2,
                "preferred_window": ["13:00", "17:00"],
                "arrival": "2027-01-04",
            },
            # Ready on a Saturday: treated on Monday, two days later.
            {"ready": "2027-01-09", "protocol": "spine-1fx", "arrival": "2027-01-05"},
        ],
        "disruptions": {
            "downtimes": [
                {
                    "linac": "Edge",
                    "starts_at": "2027-01-05T10:00:00+00:00",
                    "ends_at": "2027-01-05T12:00:00+00:00",
                    "kind": "planned",
                    "reason": "QA",
                }
            ]
        },
    }


def test_the_figures_of_a_hand_made_fortnight(tmp_path: Path) -> None:
    days_done: list[tuple[int, int]] = []
    summary = run_simulation(
        _hand_made(), tmp_path, seed=3, progress=lambda done, total: days_done.append((done, total))
    )
    assert days_done == [(day, 14) for day in range(1, 15)]
    rows = _rows(tmp_path)
    assert [(r["ready_date"], r["in_metrics"], r["status"]) for r in rows] == [
        ("2027-01-04", "0", "completed"),
        ("2027-01-05", "1", "completed"),
        ("2027-01-06", "1", "completed"),
        ("2027-01-09", "1", "completed"),
    ]
    firsts = [datetime.fromisoformat(r["starts_at"]) for r in rows]
    assert [d.date() for d in firsts] == [
        date(2027, 1, 4),
        date(2027, 1, 5),
        date(2027, 1, 6),
        date(2027, 1, 11),
    ]
    assert 13 <= firsts[2].astimezone(UTC).hour < 17  # inside the preferred window
    assert rows[2]["preferred_window"] == "13:00-17:00"
    assert summary["courses"] == 3
    assert summary["unbooked_courses"] == 0
    assert summary["fractions"] == 3
    assert summary["missed_fractions"] == 0
    # Waits 0, 0 and 2 days.
    assert summary["wait_days"] == {"median": 0, "p90": pytest.approx(1.6), "max": 2}
    assert summary["mean_wait_days"] == pytest.approx(2 / 3)
    # Priority 3 waits 0 and 2 days (weight 3), priority 2 waits 0 days (weight 4).
    assert summary["weighted_mean_wait_days"] == pytest.approx((3 * 0 + 4 * 0 + 3 * 2) / 3)
    assert summary["wait_days_by_priority"] == {
        "2": {"courses": 1, "median": 0, "mean": 0},
        "3": {"courses": 2, "median": 1, "mean": 1},
    }
    assert summary["within_14_days_share"] == 1.0
    assert summary["preferred_window_share"] == 1.0
    assert summary["booked_first_pass_share"] == 1.0
    assert summary["overall_days_within_protocol_share"] == 1.0
    # After the warm-up: 9 weekdays of 600 minutes less the 120-minute service; the three
    # measured courses' 60-minute sessions.
    assert summary["sbrt_utilisation"] == pytest.approx(180 / (9 * 600 - 120))
    assert summary["overtime_minutes"] == 0
    assert summary["reschedules_per_course"] == 0
    assert summary["downtime_moves"] == {
        "kept_time": 0,
        "same_day": 0,
        "other_day": 0,
        "needs_human": 0,
    }
    assert summary["period"] == {
        "start": "2027-01-04",
        "end": "2027-01-17",
        "days": 14,
        "warmup_days": 1,
    }
    with (tmp_path / "weekly.csv").open() as f:
        weeks = list(csv.DictReader(f))
    assert weeks == [
        {
            "week_start": "2027-01-04",
            "linac": "Edge",
            "sbrt_capable": "1",
            "open_minutes": str(5 * 600 - 120),
            "booked_minutes": "180",
        },
        {
            "week_start": "2027-01-11",
            "linac": "Edge",
            "sbrt_capable": "1",
            "open_minutes": str(5 * 600),
            "booked_minutes": "60",
        },
    ]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_a_course_no_proposal_fits_is_listed_unbooked(tmp_path: Path) -> None:
    scenario = _hand_made()
    # The only linac is closed for the whole period: nothing can be booked.
    scenario["disruptions"]["downtimes"] = [
        {
            "linac": "Edge",
            "starts_at": "2027-01-01T00:00:00+00:00",
            "ends_at": "2027-04-01T00:00:00+00:00",
            "kind": "planned",
            "reason": "Replacement",
        }
    ]
    summary = run_simulation(scenario, tmp_path)
    rows = _rows(tmp_path)
    assert {r["status"] for r in rows} == {"unbooked"}
    assert all(r["starts_at"] == r["linac"] == r["fraction_number"] == "" for r in rows)
    assert summary["unbooked_courses"] == summary["courses"] == 3
    assert summary["booked_first_pass_share"] == 0
    assert summary["wait_days"]["median"] is None


def test_the_cli_runs_a_scenario_file(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps(_hand_made()))
    result = CliRunner().invoke(
        simulate_command, [str(scenario), "--out", str(tmp_path / "out"), "--seed", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "3 courses measured" in result.output
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["seed"] == 5

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**_hand_made(), "days": 0}))
    result = CliRunner().invoke(simulate_command, [str(broken), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "days: 0 is less than the minimum of 1" in result.output
    assert not (tmp_path / "x").exists()


def test_the_simulate_command_is_registered() -> None:
    from flask import Flask

    from web.cli import init_app

    app = Flask("registration")
    init_app(app)
    assert "simulate" in app.cli.commands


def test_a_postgresql_database_url_gives_the_same_year(tmp_path: Path) -> None:
    url = _postgres_database()
    try:
        on_postgres = run_simulation(small(), tmp_path / "pg", seed=11, database_url=url)
    finally:
        _drop_postgres_database(url)
    on_sqlite = run_simulation(small(), tmp_path / "sqlite", seed=11)
    assert _rows(tmp_path / "pg") == _rows(tmp_path / "sqlite")
    assert on_postgres["wait_days"] == on_sqlite["wait_days"]


@pytest.mark.parametrize("policy", ["batch-daily", "hindsight"])
def test_joint_policies_book_the_optimisers_schedules(tmp_path: Path, policy: str) -> None:
    summary = run_simulation(_hand_made(), tmp_path, policy=policy, solver_seconds=2)
    assert summary["policy"] == policy
    # Every course (the warm-up's too) was booked on the optimiser's own schedule.
    assert summary["optimiser_placed_courses"] == 4
    assert summary["unbooked_courses"] == 0
    # The fortnight is empty enough that placing together cannot beat or lose to online.
    assert summary["wait_days"] == {"median": 0, "p90": pytest.approx(1.6), "max": 2}
    assert summary["preferred_window_share"] == 1.0


def test_batch_daily_books_only_valid_schedules(tmp_path: Path) -> None:
    database = tmp_path / "batch.sqlite3"
    summary = run_simulation(
        small(),
        tmp_path / "out",
        seed=7,
        policy="batch-daily",
        database_url=f"sqlite:///{database}",
        solver_seconds=2,
    )
    assert summary["optimiser_placed_courses"] > 0
    assert (
        _validate_from_csv(_rows(tmp_path / "out"), f"sqlite:///{database}") >= summary["courses"]
    )
