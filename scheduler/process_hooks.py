"""What the beat and worker processes record about themselves, through Celery's signals.

- Beat stamps its own `beat` heartbeat each time it has published the heartbeat tick, so its
  liveness is seen without a worker (scheduler.heartbeats).
- A worker records every task that ends in an exception (scheduler.task_failures) for the
  System page.

`connect()` only registers the two process-start hooks; each attaches its handler inside the
process it concerns, so the web process (which also publishes tasks) and tests that run task
functions directly record nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import signals

import bootstrap
from config import load_settings
from scheduler import heartbeats, task_failures

log = logging.getLogger(__name__)

HEARTBEAT_TASK = "scheduler.tasks.record_heartbeat"


def connect() -> None:
    """Register the hooks (idempotent: Celery keys each receiver by its dispatch uid)."""
    signals.beat_init.connect(_on_beat_start, dispatch_uid="sbrt.beat-start", weak=False)
    signals.worker_init.connect(_on_worker_start, dispatch_uid="sbrt.worker-start", weak=False)


def _on_beat_start(**_: Any) -> None:
    signals.after_task_publish.connect(
        _stamp_beat_after_tick, dispatch_uid="sbrt.beat-tick", weak=False
    )


def _on_worker_start(**_: Any) -> None:
    # Connected in the main worker process before the pool forks, so every pool process
    # inherits it.
    signals.task_failure.connect(_record_failure, dispatch_uid="sbrt.task-failure", weak=False)


def _stamp_beat_after_tick(sender: str | None = None, **_: Any) -> None:
    if sender != HEARTBEAT_TASK:
        return
    try:
        with bootstrap.session_factory(load_settings())() as session:
            heartbeats.stamp(session, heartbeats.BEAT, datetime.now(UTC))
            session.commit()
    except Exception as exc:  # noqa: BLE001 - beat must keep scheduling whatever happens here
        log.warning("could not record beat's heartbeat: %s", type(exc).__name__)


def _record_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    if exception is None:
        return
    task_name = getattr(sender, "name", None) or "unknown task"
    try:
        with bootstrap.session_factory(load_settings())() as session:
            task_failures.record(session, task_name, exception, now=datetime.now(UTC))
            session.commit()
    except Exception as exc:  # noqa: BLE001 - recording must never turn one failure into two
        log.warning("could not record the failure of %s: %s", task_name, type(exc).__name__)
