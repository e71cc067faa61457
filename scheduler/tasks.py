"""Celery tasks of the booking domain: thin, and given plain values (never ORM objects)."""

from __future__ import annotations

from datetime import UTC, datetime

from celery import shared_task
from sqlalchemy.dialects import postgresql, sqlite

import bootstrap
from config import load_settings
from scheduler.models import WorkerHeartbeat

# Each backend's INSERT ... ON CONFLICT construct (the only two databases we support).
_UPSERT_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}

BEAT_TICK = "beat-tick"


@shared_task(name="scheduler.tasks.record_heartbeat", ignore_result=True)
def record_heartbeat(name: str = BEAT_TICK) -> None:
    """Stamp the `worker_heartbeats` row `name` with the current time.

    Beat enqueues this every `dispatch_interval_seconds` and a worker runs it, so a fresh row
    shows admins that beat and at least one worker are alive and share the broker; a stale one
    means one of them is down. The reminder dispatcher joins this same beat schedule.
    """
    # The engine is built on first use inside the pool process (never at import) and kept by
    # bootstrap, one per database URL.
    with bootstrap.session_factory(load_settings())() as session:
        insert = _UPSERT_INSERT[session.get_bind().dialect.name]
        # An upsert, not read-then-insert: two ticks running at once must not collide on the
        # primary key the first time the row is written.
        stmt = insert(WorkerHeartbeat).values(name=name, last_seen_at=datetime.now(UTC))
        stmt = stmt.on_conflict_do_update(
            index_elements=[WorkerHeartbeat.name],
            set_={"last_seen_at": stmt.excluded.last_seen_at},
        )
        session.execute(stmt)
        session.commit()


@shared_task(
    name="scheduler.tasks.run_what_if",
    ignore_result=True,
    # Acknowledged on receipt: a year's simulation can outlast the broker's redelivery time,
    # and a second delivery must not start it again. A run whose worker died stays "running"
    # on its page, where an admin can delete it and run it anew.
    acks_late=False,
)
def run_what_if(run_id: int) -> str:
    """Simulate the what-if run `run_id` (queued by the admin pages); returns its outcome."""
    # Imported here: the simulation (OR-Tools, matplotlib) loads only in the process that runs one.
    from scheduler.simulation.execution import execute_run

    settings = load_settings()
    return execute_run(bootstrap.session_factory(settings), run_id, settings.simulations_path)
