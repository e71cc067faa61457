"""Celery tasks of the booking domain: thin, and given plain values (never ORM objects)."""

from __future__ import annotations

from datetime import UTC, datetime

from celery import shared_task

import bootstrap
from config import load_settings
from scheduler import heartbeats


@shared_task(name="scheduler.tasks.record_heartbeat", ignore_result=True)
def record_heartbeat() -> None:
    """Stamp the `worker` heartbeat: a worker took this tick from the broker and ran it.

    Beat enqueues it every `dispatch_interval_seconds` and stamps its own `beat` row as it
    does (scheduler.process_hooks); workers also stamp `worker` on their own timer, so this
    is the round trip through the broker on top.
    """
    # The engine is built on first use inside the pool process (never at import) and kept by
    # bootstrap, one per database URL.
    with bootstrap.session_factory(load_settings())() as session:
        heartbeats.stamp(session, heartbeats.WORKER, datetime.now(UTC))
        session.commit()


@shared_task(
    name="scheduler.tasks.run_what_if",
    ignore_result=True,
    # Acknowledged on receipt: a year's simulation can outlast the broker's redelivery time,
    # and a second delivery must not start it again. A run whose worker died stays "running"
    # on its page until the sweep below marks it failed; the admin can then run it anew.
    acks_late=False,
)
def run_what_if(run_id: int) -> str:
    """Simulate the what-if run `run_id` (queued by the admin pages); returns its outcome."""
    # Imported here: the simulation (OR-Tools, matplotlib) loads only in the process that runs one.
    from scheduler.simulation.execution import execute_run

    settings = load_settings()
    return execute_run(bootstrap.session_factory(settings), run_id, settings.simulations_path)


@shared_task(name="scheduler.tasks.fail_abandoned_what_if_runs", ignore_result=True)
def fail_abandoned_what_if_runs() -> int:
    """Mark failed the what-if runs whose worker died mid-run (beat sends this every few
    minutes); returns how many. Their pages then say so instead of "running" for ever."""
    from scheduler.simulation.execution import fail_abandoned_runs

    with bootstrap.session_factory(load_settings())() as session:
        failed = fail_abandoned_runs(session, now=datetime.now(UTC))
        session.commit()
    return len(failed)
