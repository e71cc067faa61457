"""The Celery app shared by the worker and beat processes: `celery -A worker worker|beat`.

Importing this module builds the Celery object and nothing else: no database engine, no broker
connection, no SMS or email client. It imports no web code, so the web app and the worker can
never import each other in a circle.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from config import Settings, load_settings_or_exit
from scheduler import process_hooks
from scheduler.observability.celery_signals import connect_process

# Redis redelivers a message that has been taken but not acknowledged once this many seconds
# have passed. Celery's default (1 h) is sized for long ETA/countdown tasks, which we never use:
# reminders wait as rows in the database outbox and only short tasks reach the broker. Ten
# minutes is far longer than any task runs (every provider call has its own timeout), so a
# running task is never handed out twice, yet a message held by a killed worker comes back
# within minutes instead of an hour.
REDIS_VISIBILITY_TIMEOUT_SECONDS = 600
REDIS_SCHEMES = {"redis", "rediss", "redis+socket", "sentinel"}
# The periodic ticks (dispatch, reconcile, heartbeat) travel on a queue of their own. A worker
# takes from its queues in turn, so a tick waits for at most one running task, never behind the
# thousands of sends a busy minute enqueues on the default queue.
DEFAULT_QUEUE = "celery"
TICK_QUEUE = "ticks"
TICK_TASKS = (
    "notifications.dispatch_due_reminders",
    "notifications.reconcile_unknown",
    "scheduler.tasks.record_heartbeat",
    "scheduler.tasks.fail_abandoned_what_if_runs",
)
# How often beat looks for what-if runs whose worker died (they are given up after 15 minutes
# without progress, scheduler.simulation.execution.ABANDONED_AFTER).
ABANDONED_RUNS_SWEEP_SECONDS = 300.0


def make_celery(settings: Settings) -> Celery:
    """Build the Celery app for these settings; connects to nothing until a process starts."""
    app = Celery(
        "sbrt", broker=settings.broker_url, include=["scheduler.tasks", "notifications.tasks"]
    )
    transport_options = {}
    # Only for Redis: kombu's SQLAlchemy transport (the embedded default) passes every transport
    # option on to create_engine(), which rejects this one.
    if settings.broker_url.split(":", 1)[0] in REDIS_SCHEMES:
        transport_options["visibility_timeout"] = REDIS_VISIBILITY_TIMEOUT_SECONDS
    # A periodic tick nobody ran for a while is stale: drop it rather than let a worker that
    # was down work through a backlog of identical ticks. Not shorter than a few seconds: the
    # embedded broker polls, and a tick must survive its trip through the queue.
    tick_expiry = max(2 * settings.dispatch_interval_seconds, 10.0)
    # How often sends left `unknown` (a worker died or the provider's answer was lost) are
    # settled with the provider; tests that kill workers shorten it.
    reconcile_interval = settings.reconcile_interval_seconds
    app.conf.update(
        # No task result is ever read (the database holds every outcome), so keep no backend.
        task_ignore_result=True,
        # Acknowledge after the task has run and give back the message if the worker process
        # dies, so a crash means "run again" rather than "lost"; tasks are idempotent for it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # With late acks every prefetched message is held unacknowledged; take one at a time.
        worker_prefetch_multiplier=1,
        timezone="UTC",
        enable_utc=True,
        # In compose the broker may come up after the worker; keep retrying instead of exiting.
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        # JSON only: a pickle payload from whoever can write to the broker would run code.
        task_serializer="json",
        # Declared here, so a worker started without -Q consumes both queues.
        task_queues=(Queue(DEFAULT_QUEUE), Queue(TICK_QUEUE)),
        task_default_queue=DEFAULT_QUEUE,
        task_routes={name: {"queue": TICK_QUEUE} for name in TICK_TASKS},
        result_serializer="json",
        accept_content=["json"],
        beat_schedule={
            "dispatch-due-reminders": {
                "task": "notifications.dispatch_due_reminders",
                "schedule": settings.dispatch_interval_seconds,
                "options": {"expires": tick_expiry},
            },
            "reconcile-unknown-sends": {
                "task": "notifications.reconcile_unknown",
                "schedule": reconcile_interval,
                "options": {"expires": max(reconcile_interval, 10.0)},
            },
            "record-heartbeat": {
                "task": "scheduler.tasks.record_heartbeat",
                "schedule": settings.dispatch_interval_seconds,
                "options": {"expires": tick_expiry},
            },
            "fail-abandoned-what-if-runs": {
                "task": "scheduler.tasks.fail_abandoned_what_if_runs",
                "schedule": ABANDONED_RUNS_SWEEP_SECONDS,
                "options": {"expires": ABANDONED_RUNS_SWEEP_SECONDS},
            },
        },
    )
    # Beat and workers stamp their own heartbeats; workers record failed tasks (see the module).
    process_hooks.connect(app)
    # Logging (JSON lines with request ids), task metrics and the worker's metrics port; the
    # handlers act only when a worker or beat starts, never at import.
    connect_process(settings)
    return app


# Bad settings end the worker or beat here with one error line, before it connects to anything.
app = make_celery(load_settings_or_exit())
