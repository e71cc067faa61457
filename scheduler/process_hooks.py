"""What the beat and worker processes record about themselves, through Celery's hooks.

- Beat stamps its own `beat` heartbeat each time it has published the heartbeat tick, so its
  liveness is seen without a worker (scheduler.heartbeats).
- A worker stamps its own `worker` heartbeat every DISPATCH_INTERVAL_SECONDS while it is
  connected to the broker (a consumer bootstep), so its liveness is seen without beat.
- A worker records every task that ends in an exception (scheduler.task_failures) for the
  System page.

`connect()` only registers the process-start hooks and the bootstep; each attaches its work
inside the process it concerns, so the web process (which also publishes tasks) and tests that
run task functions directly record nothing.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from celery import Celery, bootsteps, signals

import bootstrap
from config import load_settings
from scheduler import heartbeats, task_failures

log = logging.getLogger(__name__)

HEARTBEAT_TASK = "scheduler.tasks.record_heartbeat"


def connect(app: Celery) -> None:
    """Register the hooks (idempotent: Celery keys each receiver by its dispatch uid)."""
    signals.beat_init.connect(_on_beat_start, dispatch_uid="sbrt.beat-start", weak=False)
    signals.worker_init.connect(_on_worker_start, dispatch_uid="sbrt.worker-start", weak=False)
    app.steps["consumer"].add(WorkerHeartbeat)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Stamps `worker` from a thread of the main worker process while it has a broker connection.

    A consumer step: Celery stops it when the broker connection is lost and starts it again once
    reconnected, so a fresh stamp means "running and connected". The stamps use an engine of
    their own, disposed after each one, so that no database connection of this process is
    inherited by pool processes forked later.
    """

    requires = ("celery.worker.consumer.connection:Connection",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        self.stop(parent)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_stamp_worker_until, args=(self._stop,), name="worker-heartbeat", daemon=True
        )
        self._thread.start()

    def stop(self, parent: Any) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._stop = self._thread = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def _stamp_worker_until(stop: threading.Event) -> None:
    settings = load_settings()
    while not stop.is_set():
        try:
            engine = bootstrap.make_engine(settings.database_url)
            try:
                with bootstrap.make_session_factory(engine)() as session:
                    heartbeats.stamp(session, heartbeats.WORKER, datetime.now(UTC))
                    session.commit()
            finally:
                engine.dispose()
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("could not record the worker's heartbeat: %s", type(exc).__name__)
        stop.wait(settings.dispatch_interval_seconds)


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
