"""The real app plus one bench-only route, for gunicorn:
``gunicorn 'bench.app:create_bench_app()'`` with DATABASE_URL pointing at the bench database.

``POST /bench/insert`` is the baseline of the booking benchmark: the same stack (gunicorn,
Flask, bearer-token authentication, the per-request session) doing the least useful work a
write can do, one audit_log row and a commit. Booking throughput is reported relative to it.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, g, jsonify

from config import load_settings
from scheduler.models import AuditEntry, Role
from web import create_app
from web.api.security import authenticate_request
from web.db import get_session


def create_bench_app() -> Flask:
    app = create_app(load_settings())
    app.add_url_rule("/bench/insert", "bench_insert", _insert, methods=["POST"])
    # Authenticated by bearer token like the API routes it stands beside, and exempt from the
    # form CSRF check for the same reason.
    app.extensions["csrf"].exempt(_insert)
    # Time spent inside Flask per request, so the client can tell server work from queueing
    # for a worker (4 sync workers, 8 clients) and from its own overhead.
    app.before_request(_start_timer)
    app.after_request(_server_timing)
    return app


def _start_timer() -> None:
    g.bench_started = time.perf_counter()


def _server_timing(response: Response) -> Response:
    started = g.get("bench_started")
    if started is not None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        response.headers["Server-Timing"] = f"app;dur={elapsed_ms:.2f}"
    return response


def _insert() -> Any:
    # The same role the booking endpoints need, checked the same way.
    user = authenticate_request(Role.SCHEDULER.value)
    session = get_session()
    entry = AuditEntry(actor_id=user.id, action="bench_insert", subject_type="bench", detail={})
    session.add(entry)
    session.commit()
    return jsonify(id=entry.id), 201
