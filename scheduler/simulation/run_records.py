"""What-if runs as records: ask for one, list them, read one, forget one.

Use cases in the project's style: the session first, flush only; the page that calls them
commits, and queues the run's task only after that commit so the worker finds the row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler.errors import NotFound
from scheduler.models import SimulationRun, SimulationRunStatus
from scheduler.simulation import ScenarioError, load_scenario

POLICIES = ("online", "batch-daily")
NAME_MAX = 200
MAX_SEED = 2**31 - 1


def create_run(
    session: Session,
    *,
    name: str,
    department_id: int | None,
    created_by_id: int | None,
    scenario: dict[str, Any],
    policy: str = "online",
    seed: int = 0,
) -> SimulationRun:
    """A queued run of `scenario`; raises ScenarioError naming each bad field."""
    errors = []
    name = (name or "").strip()
    if not name:
        errors.append("name: is required")
    elif len(name) > NAME_MAX:
        errors.append(f"name: must be at most {NAME_MAX} characters")
    if policy not in POLICIES:
        errors.append(f"policy: must be one of {', '.join(POLICIES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        errors.append(f"seed: must be a whole number from 0 to {MAX_SEED}")
    try:
        scenario = load_scenario(scenario)
    except ScenarioError as exc:
        errors.extend(exc.errors)
    if errors:
        raise ScenarioError(errors)
    run = SimulationRun(
        name=name,
        department_id=department_id,
        created_by_id=created_by_id,
        scenario=scenario,
        policy=policy,
        seed=seed,
        status=SimulationRunStatus.QUEUED,
        days_total=int(scenario["days"]),
    )
    session.add(run)
    session.flush()
    run.output_dir = f"run-{run.id}"
    session.flush()
    return run


def list_runs(session: Session) -> list[SimulationRun]:
    """Every run, newest first."""
    return list(session.scalars(sa.select(SimulationRun).order_by(SimulationRun.id.desc())))


def get_run(session: Session, run_id: int) -> SimulationRun:
    run = session.get(SimulationRun, run_id)
    if run is None:
        raise NotFound(f"simulation run {run_id} not found")
    return run


def run_directory(run: SimulationRun, simulations_path: Path) -> Path:
    """Where the run's files are (whether or not it has written any yet)."""
    return simulations_path / (run.output_dir or f"run-{run.id}")


def delete_run(session: Session, run_id: int) -> str | None:
    """Forget a run; returns its directory name, for the caller to remove once committed.

    A run still simulating notices at its next progress report and stops.
    """
    run = get_run(session, run_id)
    directory = run.output_dir
    session.delete(run)
    session.flush()
    return directory
