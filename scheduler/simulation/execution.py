"""Running a what-if run in the background: the simulation, its progress, its outcome.

The worker calls `execute_run` with a session factory for the product database. Every write
here is its own short transaction (start, a progress step, the outcome) so the admin's page
sees progress while the simulation runs, and no lock is held during it. The simulation itself
works on a throwaway SQLite file in the run's directory, never on the product database.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from scheduler.models import SimulationRun, SimulationRunStatus
from scheduler.simulation import ScenarioError, run_simulation
from scheduler.simulation.run_records import run_directory

log = logging.getLogger(__name__)

# Progress is written at most once every this many simulated days (and on the last): often
# enough for the page to move, rarely enough to cost nothing next to the simulation.
PROGRESS_EVERY_DAYS = 7
SIMULATION_DATABASE = "simulation.db"
ERROR_MAX = 2000
# A running run that has written no progress for this long has lost its worker (killed,
# restarted, out of memory): seven simulated days take seconds, even with daily CP-SAT solves.
ABANDONED_AFTER = timedelta(minutes=15)
ABANDONED_ERROR = (
    "The run stopped: it made no progress for {minutes} minutes, so the worker running it was "
    "lost (restarted or stopped). Delete it and run it again."
)


class RunDeleted(Exception):
    """The run's row was deleted while it was simulating: stop and leave nothing behind."""


class RunAbandoned(Exception):
    """The run was given up as abandoned while it was simulating: its outcome stays failed."""


def execute_run(sessions: sessionmaker[Session], run_id: int, simulations_path: Path) -> str:
    """Simulate run `run_id` if it is still queued; returns the status it ended with.

    A run that is not queued (already started by another delivery, finished or deleted) is
    left alone, so a task delivered twice never simulates twice.
    """
    with sessions() as session, session.begin():
        run = session.get(SimulationRun, run_id, with_for_update=True)
        if run is None or run.status != SimulationRunStatus.QUEUED:
            return run.status if run is not None else "deleted"
        run.status = SimulationRunStatus.RUNNING
        run.started_at = run.progressed_at = datetime.now(UTC)
        run.days_done = 0
        scenario, seed, policy = run.scenario, run.seed, run.policy
        out_dir = run_directory(run, simulations_path)

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    database = out_dir / SIMULATION_DATABASE
    last_written = 0

    def progress(done: int, total: int) -> None:
        nonlocal last_written
        if done - last_written < PROGRESS_EVERY_DAYS and done < total:
            return
        last_written = done
        with sessions() as session, session.begin():
            changed = session.execute(
                _while_running(run_id).values(
                    days_done=done, days_total=total, progressed_at=datetime.now(UTC)
                )
            ).rowcount
            if not changed:
                gone = session.get(SimulationRun, run_id) is None
        if not changed:
            raise RunDeleted if gone else RunAbandoned

    try:
        summary = run_simulation(
            scenario,
            out_dir,
            seed=seed,
            policy=policy,
            database_url=f"sqlite:///{database}",
            progress=progress,
        )
    except RunDeleted:
        shutil.rmtree(out_dir, ignore_errors=True)
        return "deleted"
    except RunAbandoned:
        return SimulationRunStatus.FAILED
    except ScenarioError as exc:
        problems = "; ".join(exc.errors)
        return _finish(sessions, run_id, error=f"The scenario is not valid: {problems}")
    except Exception as exc:  # noqa: BLE001 - any failure is the run's outcome, shown to the admin
        log.exception("simulation run %s failed", run_id)
        reason = f"{type(exc).__name__}: {exc}"
        return _finish(sessions, run_id, error=f"The simulation stopped: {reason}")
    finally:
        _remove_database(database)
    return _finish(sessions, run_id, summary=summary)


def _remove_database(database: Path) -> None:
    """The throwaway database served the run only; its files (courses, weekly figures, the
    report) hold everything worth keeping, and a year's database is far larger."""
    for path in (database, *database.parent.glob(database.name + "-*")):
        path.unlink(missing_ok=True)


def _finish(
    sessions: sessionmaker[Session],
    run_id: int,
    *,
    summary: dict | None = None,
    error: str | None = None,
) -> str:
    status = SimulationRunStatus.FAILED if error else SimulationRunStatus.DONE
    values: dict = {"status": status, "finished_at": datetime.now(UTC)}
    if error:
        values["error"] = error[:ERROR_MAX]
    else:
        values["summary"] = summary
        values["days_done"] = SimulationRun.days_total
    with sessions() as session, session.begin():
        changed = session.execute(_while_running(run_id).values(**values)).rowcount
        if not changed:
            # Deleted, or given up as abandoned while it ran (that outcome stands).
            run = session.get(SimulationRun, run_id)
            return run.status if run is not None else "deleted"
    return status


def _while_running(run_id: int) -> sa.Update:
    """An update of run ``run_id`` that applies only while it is still running."""
    return sa.update(SimulationRun).where(
        SimulationRun.id == run_id, SimulationRun.status == SimulationRunStatus.RUNNING
    )


def fail_abandoned_runs(
    session: Session, *, now: datetime, stalled_after: timedelta = ABANDONED_AFTER
) -> list[int]:
    """Mark failed the running runs with no progress for ``stalled_after`` (their worker died:
    nothing else would ever finish them); returns their ids. The caller commits."""
    minutes = round(stalled_after.total_seconds() / 60)
    return list(
        session.scalars(
            sa.update(SimulationRun)
            .where(
                SimulationRun.status == SimulationRunStatus.RUNNING,
                sa.func.coalesce(SimulationRun.progressed_at, SimulationRun.started_at)
                < now - stalled_after,
            )
            .values(
                status=SimulationRunStatus.FAILED,
                finished_at=now,
                error=ABANDONED_ERROR.format(minutes=minutes),
            )
            .returning(SimulationRun.id)
        )
    )
