"""The worker's and beat's side of logging, request ids and metrics, as Celery signal handlers.

``connect_process`` is called by worker.py for `celery worker` and `celery beat`;
``connect_publishing`` by any process that queues tasks (the web app too), so every task
message carries a request id.
"""

from __future__ import annotations

import logging
import os
import sys
from time import monotonic
from typing import Any

from celery import signals

from config import Settings
from scheduler.observability import request_id
from scheduler.observability.logs import configure_logging
from scheduler.observability.metrics import instruments

log = logging.getLogger(__name__)

# Task id -> (start time, the request-id token to restore), for the task running in this
# process; prerun and postrun always come in pairs on one process.
_running: dict[str, tuple[float, Any]] = {}


def _stamp_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None and not headers.get(request_id.TASK_HEADER):
        # Inside a request or a task: its id. A task queued by no one in particular (a beat
        # tick) starts a new one, which the tasks it queues in turn inherit.
        headers[request_id.TASK_HEADER] = request_id.current() or request_id.new_id()


def connect_publishing() -> None:
    signals.before_task_publish.connect(
        _stamp_request_id, weak=False, dispatch_uid="sbrt-stamp-request-id"
    )


def connect_process(settings: Settings) -> None:
    """Logging for worker and beat, request ids and task metrics for the worker."""
    connect_publishing()
    service = "beat" if "beat" in sys.argv[1:] else "worker"

    def setup_logging(loglevel: Any = None, **_: Any) -> None:
        # Connected, this signal stops Celery from configuring logging its own way.
        level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
        configure_logging(settings.log_format, level or settings.log_level, service=service)

    made: list[str] = []

    def prepare_metrics(**_: Any) -> None:
        # In the worker's main process, before the pool forks: every child then counts in a
        # file of its own in this directory, and the main process serves their sum.
        if settings.worker_metrics_port is not None:
            from scheduler.observability.exposition import prepare_multiprocess_dir

            path = prepare_multiprocess_dir("sbrt-metrics-worker-")
            if path:
                made.append(path)

    def remove_metrics_dir(**_: Any) -> None:
        from scheduler.observability.exposition import remove_multiprocess_dir

        for path in made:
            remove_multiprocess_dir(path)

    def serve_metrics(**_: Any) -> None:
        if settings.worker_metrics_port is None:
            return
        from scheduler.observability.exposition import (
            metrics_wsgi_app,
            scrape_registry,
            serve_in_thread,
        )

        app = metrics_wsgi_app(scrape_registry, settings.metrics_token)
        try:
            serve_in_thread(app, settings.worker_metrics_host, settings.worker_metrics_port)
        except OSError as exc:
            # Sending reminders matters more than being watched: log it and carry on.
            log.error(
                "worker metrics: cannot listen on %s:%s (%s)",
                settings.worker_metrics_host,
                settings.worker_metrics_port,
                exc.strerror or type(exc).__name__,
            )
            return
        log.info(
            "worker metrics on http://%s:%s/metrics",
            settings.worker_metrics_host,
            settings.worker_metrics_port,
        )

    def process_exited(pid: int | None = None, **_: Any) -> None:
        from scheduler.observability.exposition import mark_process_dead

        mark_process_dead(pid or os.getpid())

    signals.setup_logging.connect(setup_logging, weak=False, dispatch_uid="sbrt-logging")
    signals.celeryd_init.connect(prepare_metrics, weak=False, dispatch_uid="sbrt-metrics-dir")
    signals.worker_ready.connect(serve_metrics, weak=False, dispatch_uid="sbrt-metrics-serve")
    signals.worker_shutdown.connect(
        remove_metrics_dir, weak=False, dispatch_uid="sbrt-metrics-remove"
    )
    signals.worker_process_shutdown.connect(
        process_exited, weak=False, dispatch_uid="sbrt-metrics-exit"
    )
    signals.task_prerun.connect(_task_started, weak=False, dispatch_uid="sbrt-task-start")
    signals.task_postrun.connect(_task_finished, weak=False, dispatch_uid="sbrt-task-end")
    signals.task_failure.connect(_task_failed, weak=False, dispatch_uid="sbrt-task-failure")


def _task_started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    incoming = task.request.get(request_id.TASK_HEADER) if task is not None else None
    token = request_id.bind(request_id.accept(incoming))
    _running[task_id or ""] = (monotonic(), token)


def _task_finished(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    started = _running.pop(task_id or "", None)
    if started is None:
        return
    began, token = started
    if task is not None:
        instruments().task_duration.labels(task.name, state or "UNKNOWN").observe(
            monotonic() - began
        )
    request_id.unbind(token)


def _task_failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    name = getattr(sender, "name", None) or "unknown"
    instruments().task_failures.labels(name, type(exception).__name__).inc()
