"""The admins' System page: the readiness checks of /readyz and recent background failures."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, current_app, render_template

from scheduler import health, task_failures
from scheduler.models import Role
from web import SETTINGS_KEY
from web.db import get_session
from web.ui import role_required

bp = Blueprint("system", __name__)

RECENT_FAILURES_SHOWN = 20


@bp.get("/admin/system")
@role_required(Role.ADMIN)
def index():
    settings = current_app.extensions[SETTINGS_KEY]
    session = get_session()
    report = health.readiness(session, settings, now=datetime.now(UTC))
    database = report.check(health.CheckName.DATABASE)
    failures = []
    if database is not None and database.status != health.Status.FAIL:
        failures = task_failures.recent(session, limit=RECENT_FAILURES_SHOWN)
    return render_template(
        "admin/system.html",
        title="System",
        report=report,
        failures=failures,
        limits={
            "beat": settings.beat_stale_after,
            "worker": settings.worker_stale_after,
            "reminder_lag": settings.reminder_lag_limit,
        },
    )
