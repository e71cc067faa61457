"""A what-if run whose worker died is given up: marked failed with a reason, never left
"running" for ever; and a worker that was only slow cannot overwrite that outcome."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from scheduler import unit_of_work
from scheduler.models import SimulationRun, SimulationRunStatus
from scheduler.simulation import execution, run_records
from scheduler.simulation.export import scenario_from_department
from tests.api.conftest import Seed


def _run(db: Session, seed: Seed, name: str) -> int:
    scenario = scenario_from_department(
        db, seed.department_id, today=date(2027, 3, 10), days=14, warmup_days=0
    )
    run = unit_of_work.run(
        db,
        lambda: run_records.create_run(
            db, name=name, department_id=seed.department_id, created_by_id=None,
            scenario=scenario,
        ),
    )  # fmt: skip
    return run.id


def _set(db: Session, run_id: int, **values: Any) -> None:
    db.execute(sa.update(SimulationRun).where(SimulationRun.id == run_id).values(**values))
    db.commit()


def _status(db: Session, run_id: int) -> tuple[str, str | None]:
    db.expire_all()
    run = db.get(SimulationRun, run_id)
    assert run is not None
    answer = (run.status, run.error)
    db.rollback()
    return answer


def test_running_runs_without_progress_for_long_are_failed_and_no_others(
    db: Session, seed: Seed
) -> None:
    now = datetime(2027, 3, 10, 15, 0, tzinfo=UTC)
    long_ago, lately = now - timedelta(minutes=20), now - timedelta(minutes=1)
    stalled = _run(db, seed, "stalled")
    _set(db, stalled, status=SimulationRunStatus.RUNNING, started_at=long_ago,
         progressed_at=long_ago)  # fmt: skip
    moving = _run(db, seed, "moving")
    _set(db, moving, status=SimulationRunStatus.RUNNING, started_at=long_ago,
         progressed_at=lately)  # fmt: skip
    never_progressed = _run(db, seed, "started before progress was recorded")
    _set(db, never_progressed, status=SimulationRunStatus.RUNNING, started_at=long_ago)
    queued = _run(db, seed, "queued")
    done = _run(db, seed, "done")
    _set(db, done, status=SimulationRunStatus.DONE, started_at=long_ago, progressed_at=long_ago)

    failed = execution.fail_abandoned_runs(db, now=now)
    db.commit()

    assert sorted(failed) == sorted([stalled, never_progressed])
    status, error = _status(db, stalled)
    assert status == SimulationRunStatus.FAILED
    assert error is not None and "no progress for 15 minutes" in error and "again" in error
    assert _status(db, never_progressed)[0] == SimulationRunStatus.FAILED
    assert _status(db, moving) == (SimulationRunStatus.RUNNING, None)
    assert _status(db, queued) == (SimulationRunStatus.QUEUED, None)
    assert _status(db, done) == (SimulationRunStatus.DONE, None)
    assert execution.fail_abandoned_runs(db, now=now) == []  # nothing left to give up


@pytest.mark.parametrize("finishes", [False, True], ids=["progress", "finish"])
def test_a_slow_worker_stops_and_leaves_the_failed_outcome_standing(
    db: Session,
    seed: Seed,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    finishes: bool,
) -> None:
    run_id = _run(db, seed, "slow")
    db.rollback()
    reported: list[int] = []

    def simulation_given_up_midway(*_args: Any, progress, **_kwargs: Any) -> dict:  # type: ignore[no-untyped-def]
        # The sweep gives the run up while the simulation is still going...
        later = datetime.now(UTC) + execution.ABANDONED_AFTER + timedelta(minutes=1)
        with session_factory() as session:
            execution.fail_abandoned_runs(session, now=later)
            session.commit()
        if finishes:
            return {"seed": 0, "courses": 1}  # ...and it ends before its next progress step
        progress(7, 14)  # ...and it reports progress: it must stop here
        reported.append(7)
        return {"seed": 0, "courses": 1}

    monkeypatch.setattr(execution, "run_simulation", simulation_given_up_midway)
    outcome = execution.execute_run(session_factory, run_id, tmp_path)

    assert outcome == SimulationRunStatus.FAILED
    assert reported == []
    status, error = _status(db, run_id)
    assert status == SimulationRunStatus.FAILED and error is not None
    run = db.get(SimulationRun, run_id)
    assert run is not None and run.summary is None and run.days_done == 0
    db.rollback()
