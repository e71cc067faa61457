"""The what-if pages: admin only, a scenario form that keeps what was typed, runs queued,
simulated, shown, compared and deleted."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from scheduler.models import AuditEntry, SimulationRun, SimulationRunStatus
from scheduler.simulation import execution
from scheduler.simulation.execution import execute_run
from tests.api.conftest import Seed
from tests.pages.conftest import SignIn, csrf_from
from web import SETTINGS_KEY

TEXTAREA = re.compile(r'<textarea id="f-scenario_json"[^>]*>(.*?)</textarea>', re.S)


def _form(client: FlaskClient) -> tuple[str, dict[str, Any]]:
    """The new-scenario form's fields as the page fills them in."""
    html = client.get("/admin/what-if/new").get_data(as_text=True)
    scenario_json = unescape(TEXTAREA.search(html).group(1))
    fields: dict[str, Any] = {
        "csrf_token": csrf_from(html),
        "department_id": re.search(r'name="department_id" value="(\d+)"', html).group(1),
        "scenario_json": scenario_json,
    }
    for name, value in re.findall(
        r'<input id="f-[^"]*" name="([^"]+)" type="[^"]+"[^>]*?value="([^"]*)"', html
    ):
        fields[unescape(name)] = unescape(value)
    fields["policy"] = "online"
    return html, fields


def _simulations(app: Flask) -> Path:
    return app.extensions[SETTINGS_KEY].simulations_path


def _run(db: Session, run_id: int) -> SimulationRun:
    db.expire_all()
    run = db.get(SimulationRun, run_id)
    if run is not None:
        db.expunge(run)  # a snapshot: reading it later must not open a transaction
    db.rollback()  # on SQLite an open read holds the write lock the app needs
    return run


def _run_count(db: Session) -> int:
    count = db.scalar(sa.select(sa.func.count(SimulationRun.id)))
    db.rollback()  # on SQLite an open read holds the write lock the app needs
    return count


def _create(client: FlaskClient, fields: dict[str, Any]) -> int:
    response = client.post("/admin/what-if/new", data=fields)
    assert response.status_code == 302, response.get_data(as_text=True)
    return int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])


@pytest.mark.parametrize("role", ["viewer", "scheduler"])
def test_only_admins_reach_what_if(client: FlaskClient, signed_in: SignIn, role: str) -> None:
    token = signed_in(client, role)
    for path in ("/admin/what-if", "/admin/what-if/new", "/admin/what-if/compare?a=1&b=2"):
        assert client.get(path).status_code == 403, path
    assert client.post("/admin/what-if/new", data={"csrf_token": token}).status_code == 403


def test_signed_out_visitors_are_sent_to_sign_in(client: FlaskClient, seed: Seed) -> None:
    response = client.get("/admin/what-if")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_a_run_needs_the_forms_csrf_token(
    client: FlaskClient, signed_in: SignIn, db: Session
) -> None:
    signed_in(client, "admin")
    _, fields = _form(client)
    response = client.post("/admin/what-if/new", data=fields | {"csrf_token": "forged"})
    assert response.status_code == 400
    assert _run_count(db) == 0


def test_admin_navigation_links_what_if(client: FlaskClient, signed_in: SignIn) -> None:
    signed_in(client, "admin")
    assert 'href="/admin/what-if"' in client.get("/admin").get_data(as_text=True)


def test_the_form_starts_from_the_exported_department(
    client: FlaskClient, signed_in: SignIn
) -> None:
    signed_in(client, "admin")
    html, fields = _form(client)
    scenario = json.loads(fields["scenario_json"])
    assert [linac["name"] for linac in scenario["linacs"]] == ["TrueBeam 1", "TrueBeam 2"]
    assert fields["weeks"] == "56"
    assert fields["warmup_weeks"] == "4"
    assert "TrueBeam 2</option>" in html  # the outage can be given to any linac


def test_errors_are_listed_and_nothing_typed_is_lost(
    client: FlaskClient, signed_in: SignIn, db: Session
) -> None:
    signed_in(client, "admin")
    _, fields = _form(client)
    scenario = json.loads(fields["scenario_json"])
    scenario["linacs"][0]["name"] = ""
    typed = json.dumps(scenario)
    response = client.post(
        "/admin/what-if/new",
        data=fields
        | {
            "name": "Saturdays & more",
            "weeks": "500",
            "saturday_open": "09:00",
            "new_linac_name": "TrueBeam 2",
            "outage_linac": "TrueBeam 2",
            "scenario_json": typed,
        },
    )
    assert response.status_code == 422
    html = unescape(response.get_data(as_text=True))
    assert "Weeks to simulate: must be a whole number from 1 to 104" in html
    assert "Saturday hours: give both the opening and the closing time" in html
    assert "New linac: a linac named 'TrueBeam 2' already exists" in html
    assert "Planned outage: choose the linac, its first day and how many days" in html
    # Everything comes back as typed.
    assert 'value="Saturdays &amp; more"' in response.get_data(as_text=True)
    assert 'value="500"' in html
    assert json.loads(unescape(TEXTAREA.search(response.get_data(as_text=True)).group(1))) == (
        scenario
    )
    assert _run_count(db) == 0

    # Once those are right, the scenario's own check names the bad field.
    response = client.post("/admin/what-if/new", data=fields | {"scenario_json": typed})
    assert response.status_code == 422
    assert "linacs[0].name" in response.get_data(as_text=True)

    response = client.post("/admin/what-if/new", data=fields | {"scenario_json": "{not json"})
    assert response.status_code == 422
    assert "Scenario JSON: not valid JSON" in response.get_data(as_text=True)
    assert "{not json</textarea>" in response.get_data(as_text=True)


def test_the_simple_changes_shape_the_queued_scenario(
    client: FlaskClient, signed_in: SignIn, db: Session, seed: Seed
) -> None:
    signed_in(client, "admin")
    _, fields = _form(client)
    start = date.fromisoformat(json.loads(fields["scenario_json"])["start"])
    rate_field = next(name for name in fields if name.startswith("rate:"))
    run_id = _create(
        client,
        fields
        | {
            "name": "More capacity",
            "weeks": "4",
            "warmup_weeks": "1",
            "seed": "7",
            "policy": "batch-daily",
            "new_linac_name": "Halcyon",
            "new_linac_sbrt": "on",
            "new_linac_beam_group": "",
            "saturday_open": "08:00",
            "saturday_close": "13:00",
            "open_earlier": "30",
            "close_later": "60",
            "outage_linac": "TrueBeam 2",
            "outage_first_day": (start + timedelta(days=7)).isoformat(),
            "outage_days": "14",
            rate_field: "3",
            "rate_scale": "200",
        },
    )
    run = _run(db, run_id)
    assert (run.name, run.status, run.seed, run.policy) == (
        "More capacity",
        "queued",
        7,
        "batch-daily",
    )
    assert run.department_id == seed.department_id
    assert run.days_total == 28
    scenario = run.scenario
    assert scenario["name"] == "More capacity"
    assert (scenario["days"], scenario["warmup_days"]) == (28, 7)
    halcyon = scenario["linacs"][-1]
    assert halcyon["name"] == "Halcyon"
    assert "sbrt" in halcyon["capabilities"] and "gating" in halcyon["capabilities"]
    hours = scenario["department"]["opening_hours"]
    assert hours["0"] == ["06:30", "20:00"]
    assert hours["5"] == ["08:00", "13:00"]
    (outage,) = scenario["disruptions"]["downtimes"]
    assert outage["linac"] == "TrueBeam 2"
    assert outage["starts_at"].startswith((start + timedelta(days=7)).isoformat() + "T00:00:00-")
    assert outage["ends_at"].startswith((start + timedelta(days=21)).isoformat() + "T00:00:00-")
    assert scenario["arrivals"]["weekly_rate"] == {"liver5": 6.0}
    entry = db.scalar(sa.select(AuditEntry).where(AuditEntry.subject_type == "simulation_run"))
    assert (entry.action, entry.subject_id) == ("create", run_id)
    db.rollback()

    page = client.get(f"/admin/what-if/{run_id}").get_data(as_text=True)
    assert "Queued" in page
    assert '<meta http-equiv="refresh" content="2">' in page
    assert "0 of 28 days" in page
    listing = client.get("/admin/what-if").get_data(as_text=True)
    assert "More capacity" in listing and "Queued" in listing


def test_an_outage_outside_the_period_is_refused(client: FlaskClient, signed_in: SignIn) -> None:
    signed_in(client, "admin")
    _, fields = _form(client)
    start = date.fromisoformat(json.loads(fields["scenario_json"])["start"])
    response = client.post(
        "/admin/what-if/new",
        data=fields
        | {"weeks": "4", "outage_linac": "TrueBeam 1", "outage_days": "3",
           "outage_first_day": (start + timedelta(days=28)).isoformat()},
    )  # fmt: skip
    assert response.status_code == 422
    assert "the first day must fall in the simulated period" in response.get_data(as_text=True)


def _small_run(client: FlaskClient, name: str, **changes: str) -> int:
    _, fields = _form(client)
    return _create(client, fields | {"name": name, "weeks": "2", "warmup_weeks": "0"} | changes)


def test_a_run_is_simulated_shown_compared_and_deleted(
    app: Flask, client: FlaskClient, signed_in: SignIn, db: Session, session_factory: sessionmaker
) -> None:
    signed_in(client, "admin")
    base = _small_run(client, "As today")
    more = _small_run(client, "One more linac", new_linac_name="Extra", new_linac_sbrt="on")
    for run_id in (base, more):
        assert execute_run(session_factory, run_id, _simulations(app)) == "done"
    run = _run(db, more)
    assert run.status == SimulationRunStatus.DONE
    assert run.days_done == run.days_total == 14
    assert run.started_at <= run.finished_at
    assert run.summary["courses"] >= 0
    directory = _simulations(app) / run.output_dir
    assert (directory / "summary.json").is_file()
    # The throwaway database served the run only.
    assert not list(directory.glob("simulation.db*"))

    page = client.get(f"/admin/what-if/{more}").get_data(as_text=True)
    assert "Done" in page and "http-equiv" not in page
    report = client.get(f"/admin/what-if/{more}/report.html")
    assert report.status_code == 200
    assert report.headers["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )
    courses = client.get(f"/admin/what-if/{more}/courses.csv")
    assert courses.status_code == 200
    assert courses.get_data(as_text=True).startswith("course_id,protocol,ready_date,priority")
    assert "attachment" in courses.headers["Content-Disposition"]

    listing = client.get("/admin/what-if").get_data(as_text=True)
    assert "median wait" in listing
    comparison = client.get(f"/admin/what-if/compare?a={base}&b={more}")
    assert comparison.status_code == 200
    html = comparison.get_data(as_text=True)
    assert "As today" in html and "One more linac" in html

    token = csrf_from(page)
    response = client.post(f"/admin/what-if/{more}/delete", data={"csrf_token": token})
    assert response.status_code == 302
    assert _run(db, more) is None
    assert not directory.exists()
    assert client.get(f"/admin/what-if/{more}").status_code == 404
    response = client.get(f"/admin/what-if/compare?a={base}&b={more}", follow_redirects=True)
    assert f"Run {more} does not exist" in response.get_data(as_text=True)


def test_unfinished_runs_are_not_compared(client: FlaskClient, signed_in: SignIn) -> None:
    signed_in(client, "admin")
    first, second = _small_run(client, "A"), _small_run(client, "B")
    response = client.get(f"/admin/what-if/compare?a={first}&b={second}", follow_redirects=True)
    assert "Only finished runs can be compared: A, B." in response.get_data(as_text=True)


def test_progress_is_written_every_few_days_in_its_own_transactions(
    app: Flask,
    client: FlaskClient,
    signed_in: SignIn,
    db: Session,
    session_factory: sessionmaker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed_in(client, "admin")
    run_id = _small_run(client, "Watched", weeks="3")
    seen = []

    def simulate(scenario, out_dir, *, progress, **_: Any):  # type: ignore[no-untyped-def]
        with session_factory() as other:
            seen.append(other.get(SimulationRun, run_id).status)
        for day in range(1, 22):
            progress(day, 21)
            with session_factory() as other:
                seen.append(other.get(SimulationRun, run_id).days_done)
        (Path(out_dir) / "summary.json").write_text("{}")
        return {"courses": 0}

    monkeypatch.setattr(execution, "run_simulation", simulate)
    assert execute_run(session_factory, run_id, _simulations(app)) == "done"
    assert seen == ["running"] + [0] * 6 + [7] * 7 + [14] * 7 + [21]
    # A second delivery of the same task does nothing.
    assert execute_run(session_factory, run_id, _simulations(app)) == "done"


def test_a_failing_simulation_fails_the_run_readably(
    app: Flask,
    client: FlaskClient,
    signed_in: SignIn,
    db: Session,
    session_factory: sessionmaker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed_in(client, "admin")
    run_id = _small_run(client, "Doomed")

    def simulate(*_: Any, **__: Any) -> dict:
        raise RuntimeError("no linac can take protocol liver5")

    monkeypatch.setattr(execution, "run_simulation", simulate)
    assert execute_run(session_factory, run_id, _simulations(app)) == "failed"
    run = _run(db, run_id)
    assert run.error == "The simulation stopped: RuntimeError: no linac can take protocol liver5"
    page = client.get(f"/admin/what-if/{run_id}").get_data(as_text=True)
    assert "Failed" in page and "no linac can take protocol liver5" in page


def test_a_run_deleted_while_simulating_stops(
    app: Flask,
    client: FlaskClient,
    signed_in: SignIn,
    db: Session,
    session_factory: sessionmaker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = signed_in(client, "admin")
    run_id = _small_run(client, "Abandoned")
    days = []

    def simulate(scenario, out_dir, *, progress, **_: Any):  # type: ignore[no-untyped-def]
        (Path(out_dir) / "partial.csv").write_text("x")
        for day in range(1, 15):
            if day == 8:
                response = client.post(
                    f"/admin/what-if/{run_id}/delete", data={"csrf_token": token}
                )
                assert response.status_code == 302
            progress(day, 14)
            days.append(day)
        return {}

    monkeypatch.setattr(execution, "run_simulation", simulate)
    assert execute_run(session_factory, run_id, _simulations(app)) == "deleted"
    assert days == list(range(1, 14))  # stopped at the first progress step after the delete
    assert not (_simulations(app) / f"run-{run_id}").exists()
