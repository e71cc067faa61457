"""What-if planning pages (admin only): copy a department into a scenario, change something,
run it in the background, read its report, compare two runs side by side.

The scenario form offers the changes a department manager asks about (a linac more, Saturdays
open, longer days, a planned outage, more or fewer patients) on top of the exported scenario,
which stays editable as JSON for anything else. A rejected form comes back with everything as
typed and every problem listed; nothing is queued until the scenario is valid.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask import send_file as flask_send_file

from scheduler import records
from scheduler.errors import NotFound
from scheduler.models import Role, SimulationRun, SimulationRunStatus
from scheduler.simulation import ScenarioError, load_scenario
from scheduler.simulation import run_records as runs
from scheduler.simulation.export import scenario_from_department
from scheduler.timeutil import local_date, zone
from web import SETTINGS_KEY, audit, task_queue
from web.auth import session_user_id
from web.db import get_session, transaction
from web.ui import role_required

bp = Blueprint("whatif", __name__)

TASK = "scheduler.tasks.run_what_if"
# The report is a self-contained page of our own making: its inline styles may apply, nothing
# may run, load or be framed.
REPORT_POLICY = "; ".join(
    [
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
REFRESH_SECONDS = 2
MAX_WEEKS = 104
MAX_WARMUP_WEEKS = 12
MAX_EXTRA_MINUTES = 240
MAX_OUTAGE_DAYS = 90
MAX_WEEKLY_RATE = 200.0
POLICY_LABELS = {
    "online": "Online: book each course as it arrives (what the product does today)",
    "batch-daily": "Batch daily: place each day's new courses together with the optimiser",
}
STATUS_LABELS = {
    SimulationRunStatus.QUEUED: "Queued",
    SimulationRunStatus.RUNNING: "Running",
    SimulationRunStatus.DONE: "Done",
    SimulationRunStatus.FAILED: "Failed",
}
RATE_PREFIX = "rate:"
Errors = list[str]


def _settings() -> Any:
    return current_app.extensions[SETTINGS_KEY]


def _run_or_404(run_id: int) -> SimulationRun:
    try:
        return runs.get_run(get_session(), run_id)
    except NotFound:
        abort(404)


def _directory(run: SimulationRun) -> Path:
    return runs.run_directory(run, _settings().simulations_path)


# --- list ---------------------------------------------------------------------------------------


@bp.get("/admin/what-if")
@role_required(Role.ADMIN)
def index():
    all_runs = runs.list_runs(get_session())
    return render_template(
        "whatif/index.html",
        title="What-if planning",
        runs=all_runs,
        finished=[r for r in all_runs if r.status == SimulationRunStatus.DONE],
        status_labels=STATUS_LABELS,
        departments={d.id: d for d in records.list_departments(get_session())},
    )


# --- new scenario -------------------------------------------------------------------------------


@bp.get("/admin/what-if/new")
@role_required(Role.ADMIN)
def new():
    session = get_session()
    departments = records.list_departments(session)
    if not departments:
        flash("There is no department to copy yet.", "error")
        return redirect(url_for("whatif.index"))
    raw = request.args.get("department_id")
    chosen = next((d for d in departments if str(d.id) == raw), None)
    if chosen is None and len(departments) == 1:
        chosen = departments[0]
    if chosen is None:
        return render_template(
            "whatif/pick_department.html", title="New what-if scenario", departments=departments
        )
    today = local_date(datetime.now(UTC), chosen.timezone)
    try:
        base = scenario_from_department(session, chosen.id, today=today)
    except ScenarioError as exc:
        flash("This department cannot be copied: " + "; ".join(exc.errors), "error")
        return redirect(url_for("whatif.index"))
    return _form_page(chosen.id, _initial_values(chosen.name, base), [])


def _initial_values(department_name: str, base: dict[str, Any]) -> dict[str, Any]:
    arrivals = base.get("arrivals")
    rates = dict(arrivals.get("weekly_rate", {})) if isinstance(arrivals, dict) else {}
    if isinstance(arrivals, dict):
        # Every protocol gets a field, so a protocol the department did not use in the past
        # year can be given patients too.
        for protocol in base.get("protocols", []):
            rates.setdefault(protocol if isinstance(protocol, str) else protocol["code"], 0)
    return {
        "name": f"{department_name}: what if",
        "policy": "online",
        "seed": "0",
        "weeks": str(base["days"] // 7),
        "warmup_weeks": str(base.get("warmup_days", 0) // 7),
        "rate_scale": "100",
        "rates": {code: _number_text(rate) for code, rate in rates.items()},
        "scenario_json": json.dumps(base, indent=2, ensure_ascii=False),
    }


def _number_text(value: float) -> str:
    return f"{value:g}"


def _form_page(department_id: int, values: dict[str, Any], errors: Errors, status: int = 200):
    department = records.get_department(get_session(), department_id)
    linac_names = []
    try:
        scenario = json.loads(values.get("scenario_json") or "{}")
        linac_names = [linac.get("name") for linac in scenario.get("linacs", [])]
    except (ValueError, AttributeError, TypeError, RecursionError):
        pass  # the JSON is shown back as typed; its problem is among the errors
    return (
        render_template(
            "whatif/new.html",
            title="New what-if scenario",
            department=department,
            values=values,
            errors=errors,
            policies=POLICY_LABELS,
            linac_names=[n for n in linac_names if isinstance(n, str)],
        ),
        status,
    )


@bp.post("/admin/what-if/new")
@role_required(Role.ADMIN)
def create():
    session = get_session()
    department_id = _int_or_none(request.form.get("department_id"))
    if department_id is None:
        abort(400)
    try:
        records.get_department(session, department_id)
    except NotFound:
        abort(404)
    values = _posted_values()
    errors: Errors = []
    scenario = _scenario_from_form(values, errors)
    seed = _bounded_int(values["seed"] or "0", "Seed", 0, runs.MAX_SEED, errors)
    if errors or scenario is None or seed is None:
        return _form_page(department_id, values, errors, 422)
    try:
        with transaction():
            run = runs.create_run(
                session,
                name=values["name"],
                department_id=department_id,
                created_by_id=session_user_id(),
                scenario=scenario,
                policy=values["policy"],
                seed=seed,
            )
            audit.record("create", "simulation_run", run.id, actor_id=session_user_id())
    except ScenarioError as exc:
        return _form_page(department_id, values, list(exc.errors), 422)
    _queue(run.id)
    return redirect(url_for("whatif.run_page", run_id=run.id))


def _queue(run_id: int) -> None:
    """Hand the committed run to a worker; a broker that cannot be reached fails the run."""
    try:
        task_queue.enqueue(TASK, run_id)
    except Exception as exc:  # noqa: BLE001 - any broker failure is shown on the run
        current_app.logger.exception("could not queue simulation run %s", run_id)
        with transaction() as session:
            run = runs.get_run(session, run_id)
            run.status = SimulationRunStatus.FAILED
            run.error = f"The run could not be queued for a worker: {type(exc).__name__}"
        flash("The run could not be started: the background workers are unreachable.", "error")
    else:
        flash("The run is queued; this page shows its progress.", "success")


def _int_or_none(raw: str | None) -> int | None:
    raw = (raw or "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else None


def _posted_values() -> dict[str, Any]:
    form = request.form
    fields = (
        "name",
        "policy",
        "seed",
        "weeks",
        "warmup_weeks",
        "new_linac_name",
        "new_linac_beam_group",
        "saturday_open",
        "saturday_close",
        "open_earlier",
        "close_later",
        "outage_linac",
        "outage_first_day",
        "outage_days",
        "rate_scale",
        "scenario_json",
    )
    values: dict[str, Any] = {name: (form.get(name) or "").strip() for name in fields}
    for edge in ("saturday_open", "saturday_close"):
        values[edge] = values[edge][:5]  # a time input may send seconds
    values["new_linac_sbrt"] = bool(form.get("new_linac_sbrt"))
    values["rates"] = {
        key[len(RATE_PREFIX) :]: (value or "").strip()
        for key, value in form.items()
        if key.startswith(RATE_PREFIX)
    }
    return values


def _bounded_int(raw: str, label: str, lo: int, hi: int, errors: Errors) -> int | None:
    if raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or not lo <= int(raw) <= hi:
        errors.append(f"{label}: must be a whole number from {lo} to {hi}")
        return None
    return int(raw)


def _number(raw: str, label: str, hi: float, errors: Errors) -> float | None:
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= hi:  # also refuses NaN
        errors.append(f"{label}: must be a number from 0 to {hi:g}")
        return None
    return value


def _scenario_from_form(values: dict[str, Any], errors: Errors) -> dict[str, Any] | None:
    """The advanced JSON with the form's simple changes applied, or None with `errors`."""
    if values["policy"] not in POLICY_LABELS:
        errors.append("Policy: choose one of the listed policies")
    try:
        scenario = json.loads(values["scenario_json"])
    except (ValueError, RecursionError) as exc:
        errors.append(f"Scenario JSON: not valid JSON ({exc})")
        return None
    if not isinstance(scenario, dict):
        errors.append("Scenario JSON: must be a JSON object")
        return None
    if values["name"]:
        # The report is headed by the scenario's name: the run's own.
        scenario["name"] = values["name"]
    weeks = _bounded_int(values["weeks"], "Weeks to simulate", 1, MAX_WEEKS, errors)
    warmup = _bounded_int(values["warmup_weeks"], "Warm-up weeks", 0, MAX_WARMUP_WEEKS, errors)
    if weeks is not None:
        scenario["days"] = weeks * 7
    if warmup is not None:
        scenario["warmup_days"] = warmup * 7
    try:
        _add_linac(scenario, values, errors)
        _extend_hours(scenario, values, errors)
        _open_saturdays(scenario, values, errors)
        _add_outage(scenario, values, errors)
        _set_rates(scenario, values, errors)
    except (AttributeError, TypeError, KeyError, ValueError):
        # The JSON has another shape than a scenario where a change needs to look.
        errors.append(
            "Scenario JSON: the changes above need its department, linacs and arrivals "
            "in the shape of an exported scenario"
        )
    if errors:
        return None
    try:
        return load_scenario(scenario)
    except ScenarioError as exc:
        errors.extend(exc.errors)
        return None


def _add_linac(scenario: dict[str, Any], values: dict[str, Any], errors: Errors) -> None:
    name = values["new_linac_name"]
    if not name:
        if values["new_linac_beam_group"] or values["new_linac_sbrt"]:
            errors.append("New linac: give it a name, or leave its fields empty")
        return
    linacs = scenario.setdefault("linacs", [])
    if any(linac.get("name") == name for linac in linacs):
        errors.append(f"New linac: a linac named {name!r} already exists")
        return
    capabilities = ["cbct"]
    if values["new_linac_sbrt"]:
        # An SBRT linac offers what the department's SBRT linacs offer.
        capabilities = sorted(
            {c for linac in linacs if "sbrt" in linac.get("capabilities", []) for c in
             linac["capabilities"]} | {"sbrt", "cbct"}
        )  # fmt: skip
    linacs.append(
        {
            "name": name,
            "capabilities": capabilities,
            "beam_group": values["new_linac_beam_group"] or None,
            "opening_hours": None,
        }
    )


def _shift(clock: str, minutes: int) -> str:
    moved = datetime.combine(date(2000, 1, 3), time.fromisoformat(clock)) + timedelta(
        minutes=minutes
    )
    if moved.date() != date(2000, 1, 3):
        raise OverflowError
    return moved.strftime("%H:%M")


def _extend_hours(scenario: dict[str, Any], values: dict[str, Any], errors: Errors) -> None:
    earlier = _bounded_int(values["open_earlier"], "Open earlier by", 0, MAX_EXTRA_MINUTES, errors)
    later = _bounded_int(values["close_later"], "Close later by", 0, MAX_EXTRA_MINUTES, errors)
    if not earlier and not later:
        return
    tables = [scenario["department"]["opening_hours"]]
    tables += [linac["opening_hours"] for linac in scenario["linacs"] if linac.get("opening_hours")]
    try:
        for table in tables:
            for day, (opens, closes) in list(table.items()):
                table[day] = [_shift(opens, -(earlier or 0)), _shift(closes, later or 0)]
    except OverflowError:
        errors.append("Opening hours: the longer day would run past midnight")


def _open_saturdays(scenario: dict[str, Any], values: dict[str, Any], errors: Errors) -> None:
    opens, closes = values["saturday_open"], values["saturday_close"]
    if not opens and not closes:
        return
    if not opens or not closes:
        errors.append("Saturday hours: give both the opening and the closing time")
        return
    try:
        if time.fromisoformat(opens) >= time.fromisoformat(closes):
            errors.append("Saturday hours: closing must be after opening")
            return
    except ValueError:
        errors.append("Saturday hours: give times as HH:MM")
        return
    scenario["department"]["opening_hours"]["5"] = [opens, closes]
    for linac in scenario["linacs"]:
        if linac.get("opening_hours"):
            linac["opening_hours"]["5"] = [opens, closes]


def _add_outage(scenario: dict[str, Any], values: dict[str, Any], errors: Errors) -> None:
    linac, first = values["outage_linac"], values["outage_first_day"]
    days = _bounded_int(values["outage_days"], "Outage length", 1, MAX_OUTAGE_DAYS, errors)
    if not linac and not first:
        return
    if not linac or not first or days is None:
        errors.append("Planned outage: choose the linac, its first day and how many days")
        return
    if linac not in {entry.get("name") for entry in scenario["linacs"]}:
        errors.append(f"Planned outage: there is no linac named {linac!r}")
        return
    try:
        first_day = date.fromisoformat(first)
    except ValueError:
        errors.append("Planned outage: give the first day as a date")
        return
    start = date.fromisoformat(scenario["start"])
    if not start <= first_day < start + timedelta(days=int(scenario["days"])):
        errors.append(
            f"Planned outage: the first day must fall in the simulated period "
            f"({start.isoformat()} to {(start + timedelta(days=int(scenario['days']) - 1))})"
        )
        return
    tz = zone(scenario["department"]["timezone"])
    # Whole local days, from the first day's midnight to the midnight after the last.
    starts = datetime.combine(first_day, time(0), tzinfo=tz)
    ends = datetime.combine(first_day + timedelta(days=days), time(0), tzinfo=tz)
    disruptions = scenario.setdefault("disruptions", {})
    disruptions.setdefault("downtimes", []).append(
        {
            "linac": linac,
            "starts_at": starts.isoformat(),
            "ends_at": ends.isoformat(),
            "kind": "planned",
            "reason": f"Planned outage, {days} day(s)",
        }
    )


def _set_rates(scenario: dict[str, Any], values: dict[str, Any], errors: Errors) -> None:
    scale = _number(values["rate_scale"], "Scale all arrival rates (%)", 1000, errors)
    arrivals = scenario.get("arrivals")
    if not isinstance(arrivals, dict):
        # An explicit list of arrivals has no rates to change.
        return
    rates = arrivals.setdefault("weekly_rate", {})
    for code, raw in values["rates"].items():
        rate = _number(raw, f"Weekly arrivals of {code}", MAX_WEEKLY_RATE, errors)
        # A protocol left at no arrivals stays out of the generator.
        if rate is not None and (rate or code in rates):
            rates[code] = rate
    if scale is not None and scale != 100:
        for code in rates:
            rates[code] = round(rates[code] * scale / 100, 3)


# --- one run ------------------------------------------------------------------------------------


@bp.get("/admin/what-if/<int:run_id>")
@role_required(Role.ADMIN)
def run_page(run_id: int):
    run = _run_or_404(run_id)
    directory = _directory(run)
    return render_template(
        "whatif/run.html",
        title=f"What-if run: {run.name}",
        run=run,
        status_labels=STATUS_LABELS,
        policies=POLICY_LABELS,
        refresh=REFRESH_SECONDS
        if run.status in (SimulationRunStatus.QUEUED, SimulationRunStatus.RUNNING)
        else None,
        has_report=(directory / "report.html").is_file(),
        has_courses=(directory / "courses.csv").is_file(),
    )


@bp.get("/admin/what-if/<int:run_id>/report.html")
@role_required(Role.ADMIN)
def report(run_id: int):
    response = _run_file(run_id, "report.html", "text/html")
    response.headers["Content-Security-Policy"] = REPORT_POLICY
    return response


@bp.get("/admin/what-if/<int:run_id>/courses.csv")
@role_required(Role.ADMIN)
def courses_csv(run_id: int):
    return _run_file(run_id, "courses.csv", "text/csv", download=f"what-if-{run_id}-courses.csv")


def _run_file(run_id: int, name: str, mimetype: str, download: str | None = None):
    path = _directory(_run_or_404(run_id)) / name
    if not path.is_file():
        abort(404)
    return flask_send_file(
        path, mimetype=mimetype, as_attachment=download is not None, download_name=download
    )


@bp.post("/admin/what-if/<int:run_id>/delete")
@role_required(Role.ADMIN)
def delete(run_id: int):
    run = _run_or_404(run_id)
    name, directory = run.name, _directory(run)
    with transaction() as session:
        runs.delete_run(session, run_id)
        audit.record("delete", "simulation_run", run_id, actor_id=session_user_id())
    # Removed once the row is gone for good; a run still simulating stops at its next step.
    shutil.rmtree(directory, ignore_errors=True)
    flash(f"Run {name!r} and its files were deleted.", "success")
    return redirect(url_for("whatif.index"))


# --- comparison ---------------------------------------------------------------------------------


@bp.get("/admin/what-if/compare")
@role_required(Role.ADMIN)
def compare():
    from scheduler.simulation.report import comparison_html
    from scheduler.simulation.runs import RunFilesError, load_run

    first, second = _int_or_none(request.args.get("a")), _int_or_none(request.args.get("b"))
    problem = None
    chosen: list[SimulationRun] = []
    if first is None or second is None:
        problem = "Choose two finished runs to compare."
    elif first == second:
        problem = "Choose two different runs."
    else:
        for run_id in (first, second):
            try:
                chosen.append(runs.get_run(get_session(), run_id))
            except NotFound:
                problem = f"Run {run_id} does not exist (it may have been deleted)."
                break
        else:
            unfinished = [r.name for r in chosen if r.status != SimulationRunStatus.DONE]
            missing = [r.name for r in chosen if not (_directory(r) / "summary.json").is_file()]
            if unfinished:
                problem = f"Only finished runs can be compared: {', '.join(unfinished)}."
            elif missing:
                problem = f"The files of {', '.join(missing)} are missing."
    if problem:
        flash(problem, "error")
        return redirect(url_for("whatif.index"))
    try:
        # Labelled by the runs' own names: two runs of one department share a scenario name.
        comparison = comparison_html([(run.name, load_run(_directory(run))) for run in chosen])
    except RunFilesError as exc:
        flash(f"The runs' files cannot be read: {exc}", "error")
        return redirect(url_for("whatif.index"))
    stylesheet = Path(current_app.static_folder or "") / "simulation.css"
    return render_template(
        "whatif/compare.html",
        title="Compare what-if runs",
        runs=chosen,
        comparison=comparison,
        has_stylesheet=stylesheet.is_file(),
    )
