"""A what-if run queued as the page queues it is simulated by a real Celery worker process."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy.orm import Session

from scheduler import unit_of_work
from scheduler.models import SimulationRun
from scheduler.simulation import run_records
from scheduler.simulation.export import scenario_from_department
from tests.api.conftest import Seed
from tests.whatif.worker_process import celery_worker, tail, worker_environment

FINISH_TIMEOUT = 90.0


@pytest.mark.slow
def test_a_worker_process_simulates_a_queued_run(
    db: Session, seed: Seed, database_url: str, tmp_path: Path
) -> None:
    scenario = scenario_from_department(
        db, seed.department_id, today=date(2027, 3, 10), days=14, warmup_days=0
    )
    scenario["arrivals"]["weekly_rate"] = {"liver5": 3.0}
    run = unit_of_work.run(
        db,
        lambda: run_records.create_run(
            db, name="Worker run", department_id=seed.department_id, created_by_id=None,
            scenario=scenario, seed=3,
        ),
    )  # fmt: skip
    db.rollback()
    broker_url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    simulations = tmp_path / "simulations"
    env = worker_environment(
        database_url=database_url,
        broker_url=broker_url,
        instance_dir=tmp_path,
        simulation_dir=simulations,
    )
    log = tmp_path / "worker.log"
    with celery_worker(env, log) as worker:
        # Sent by name, as the web app sends it.
        Celery("test-producer", broker=broker_url).send_task(
            "scheduler.tasks.run_what_if", args=[run.id]
        )
        deadline = time.monotonic() + FINISH_TIMEOUT
        status = "queued"
        while time.monotonic() < deadline:
            assert worker.poll() is None, f"the worker exited\n{tail(log)}"
            db.expire_all()
            status = db.get(SimulationRun, run.id).status
            db.rollback()
            if status in ("done", "failed"):
                break
            time.sleep(0.5)
    db.expire_all()
    finished = db.get(SimulationRun, run.id)
    assert finished.status == "done", f"{status}: {finished.error}\n{tail(log)}"
    assert finished.days_done == finished.days_total == 14
    assert finished.summary["seed"] == 3
    assert finished.summary["courses"] > 0
    directory = simulations / finished.output_dir
    for name in ("summary.json", "courses.csv", "weekly.csv", "report.html"):
        assert (directory / name).is_file(), name
    assert not list(directory.glob("simulation.db*"))
