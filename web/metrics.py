"""Prometheus metrics of the web app: request timings, conflicts, bookings, and `/metrics`.

Requests are labelled by their route pattern (`/api/v1/courses/<int:course_id>`), never by
the path, so neither ids nor the tokens of patient links and feeds reach a label. A scrape
also reads the outbox, the heartbeats and the broker's queues (see ``scheduler.observability``).
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from flask import Flask, Response, current_app, g, request
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

import bootstrap
from config import Settings
from scheduler.models import BookingEvent
from scheduler.observability.exposition import render, scrape_registry, token_accepted
from scheduler.observability.metrics import instruments
from scheduler.observability.outbox_collector import OutboxCollector
from scheduler.observability.queue_depth import QueueDepthCollector

COLLECTORS_KEY = "sbrt.metrics_collectors"
# Requests that matched no route: one label value for all of them, whatever was asked.
UNMATCHED = "(unmatched)"
_PENDING_EVENTS = "sbrt_pending_booking_events"
# The Celery queues the workers consume (worker.py); named here so the web app need not
# import the worker module.
QUEUES = ("celery", "ticks")


def init_app(app: Flask, settings: Settings, factory: sessionmaker[Session]) -> None:
    app.extensions[COLLECTORS_KEY] = (
        OutboxCollector(bootstrap.session_factory(settings)),
        QueueDepthCollector(settings.broker_url, QUEUES),
    )
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.add_url_rule("/metrics", "metrics", _metrics)
    _count_committed_booking_events(factory)


def _start_timer() -> None:
    g.metrics_started = perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is None:
        return response
    rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    found = instruments()
    found.http_request_duration.labels(rule, request.method, str(response.status_code)).observe(
        perf_counter() - started
    )
    if response.status_code == 409:
        found.http_conflicts.labels(rule).inc()
    return response


def _metrics() -> Any:
    settings: Settings = current_app.extensions["sbrt.settings"]
    if not token_accepted(request.headers.get("Authorization"), settings.metrics_token):
        return Response(
            "unauthorized\n",
            status=401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    registry = scrape_registry(current_app.extensions[COLLECTORS_KEY])
    body, content_type = render(registry, request.headers.get("Accept"))
    response = Response(body, status=200, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


def _count_committed_booking_events(factory: sessionmaker[Session]) -> None:
    """Count booking events when their transaction commits, not when they are written:
    a booking that loses its race and rolls back was never made."""

    def noted(session: Session, _context: Any, _instances: Any) -> None:
        kinds = [obj.kind for obj in session.new if isinstance(obj, BookingEvent)]
        if kinds:
            session.info.setdefault(_PENDING_EVENTS, []).extend(kinds)

    def committed(session: Session) -> None:
        kinds = session.info.pop(_PENDING_EVENTS, None)
        if kinds:
            counter = instruments().booking_events
            for kind in kinds:
                counter.labels(str(kind)).inc()

    def rolled_back(session: Session) -> None:
        session.info.pop(_PENDING_EVENTS, None)

    event.listen(factory, "before_flush", noted)
    event.listen(factory, "after_commit", committed)
    event.listen(factory, "after_rollback", rolled_back)
