"""Operational endpoints and the staff pages' stalled-reminders banner.

- `/healthz`: the process is alive and serving (no database, nothing else): for a load
  balancer or a container's liveness probe.
- `/readyz`: every check of scheduler.health as JSON, 503 when reminders would not go out.
  Both are public, so they show statuses and figures only: no host names, no credentials.
- The banner: on every staff page, a warning when reminders are stalled. Worked out at most
  once per BANNER_CACHE_SECONDS per process, inside a savepoint of the page's own session,
  and never allowed to break the page it sits on.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app, jsonify

from scheduler import health
from web import SETTINGS_KEY
from web.auth import session_user
from web.db import get_session

log = logging.getLogger(__name__)

BANNER_CACHE_SECONDS = 10.0

_banner_lock = threading.Lock()
_banner_cache: dict[str, tuple[float, bool]] = {}


def init_app(app: Flask) -> None:
    app.add_url_rule("/healthz", "healthz", healthz)
    app.add_url_rule("/readyz", "readyz", readyz)

    @app.context_processor
    def _banner() -> dict[str, Any]:
        return {"reminders_stalled": reminders_stalled}


def healthz() -> Any:
    return jsonify(status="ok")


def readyz() -> Any:
    settings = current_app.extensions[SETTINGS_KEY]
    report = health.readiness(get_session(), settings, now=datetime.now(UTC))
    response = jsonify(report.as_dict())
    response.status_code = 200 if report.ok else 503
    # A probe's answer is about this instant: no cache along the way may keep it.
    response.headers["Cache-Control"] = "no-store"
    return response


def reminders_stalled() -> bool:
    """For the banner: are reminders stalled? False whenever it cannot be told."""
    if session_user() is None:
        return False
    key = current_app.extensions[SETTINGS_KEY].database_url
    now = time.monotonic()
    with _banner_lock:
        cached = _banner_cache.get(key)
    if cached is not None and now - cached[0] < BANNER_CACHE_SECONDS:
        return cached[1]
    stalled = _measure_stalled()
    if stalled is None:
        return False
    with _banner_lock:
        _banner_cache[key] = (now, stalled)
    return stalled


def _measure_stalled() -> bool | None:
    settings = current_app.extensions[SETTINGS_KEY]
    session = get_session()
    try:
        # A savepoint: whatever happens here, the page's own unit of work is left as it was.
        savepoint = session.begin_nested()
        try:
            report = health.readiness(session, settings, now=datetime.now(UTC), broker=False)
        finally:
            savepoint.rollback()
    except Exception as exc:  # noqa: BLE001 - a banner must never break the page under it
        log.warning("the reminders banner could not be worked out: %s", type(exc).__name__)
        return None
    database = report.check(health.CheckName.DATABASE)
    if database is not None and database.status == health.Status.FAIL:
        return None  # the page itself will say the database is down; no guess about reminders
    return report.reminders_stalled


def forget_banner_cache() -> None:
    """Drop every cached banner answer (tests that change the state it reflects)."""
    with _banner_lock:
        _banner_cache.clear()
