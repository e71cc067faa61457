"""Readiness of the whole service: would patients' reminders go out right now?

Pure reading, no Flask: the web's /readyz and System page, the container health checks
(`flask health worker|beat`) and the operators' tools all ask `readiness()` and show its
checks. Each check has a status, one figure (a latency or an age) and a short detail written
for an operator; details never carry host names, addresses or credentials, because /readyz is
public.

A check that fails means reminders would not go out (or not on time); a warning means
something needs a look but reminders still flow.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from time import perf_counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from config import Settings
from notifications.models import Reminder
from notifications.outbox import OPEN_STATUSES
from notifications.sending import WINDOW_WAIT_REASON
from scheduler import heartbeats, task_failures

# Task failures within this window make the failures check a warning.
RECENT_FAILURES_WINDOW = timedelta(hours=1)


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


class CheckName(enum.StrEnum):
    DATABASE = "database"
    BROKER = "broker"
    BEAT = "beat"
    WORKER = "worker"
    REMINDER_LAG = "reminder_lag"
    TASK_FAILURES = "task_failures"


# The checks that read the database, with their units: not known when it cannot be read.
_READ_FROM_DATABASE = (
    (CheckName.BEAT, "s"),
    (CheckName.WORKER, "s"),
    (CheckName.REMINDER_LAG, "s"),
    (CheckName.TASK_FAILURES, "count"),
)
# The checks whose failure stops reminders: the banner on staff pages says so.
REMINDER_PATH = frozenset(
    {CheckName.DATABASE, CheckName.BROKER, CheckName.BEAT, CheckName.WORKER, CheckName.REMINDER_LAG}
)


@dataclass(frozen=True)
class Check:
    name: CheckName
    status: Status
    figure: float | None  # in `unit`; None when it could not be measured
    unit: str  # "ms", "s" or "count"
    detail: str

    def as_dict(self) -> dict[str, Any]:
        figure = None if self.figure is None else round(self.figure, 3)
        return {
            "name": str(self.name),
            "status": str(self.status),
            "figure": figure,
            "unit": self.unit,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class HealthReport:
    checked_at: datetime
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """False when reminders would not go out: some check failed."""
        return all(check.status != Status.FAIL for check in self.checks)

    @property
    def reminders_stalled(self) -> bool:
        """A check on the reminders' path failed: what the staff pages' banner warns about."""
        return any(c.status == Status.FAIL and c.name in REMINDER_PATH for c in self.checks)

    def check(self, name: CheckName | str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "fail",
            "reminders_stalled": self.reminders_stalled,
            "checked_at": self.checked_at.isoformat(),
            "checks": {str(c.name): c.as_dict() for c in self.checks},
        }


def readiness(
    session: Session, settings: Settings, *, now: datetime, broker: bool = True
) -> HealthReport:
    """Every check, measured now.

    `broker=False` skips the broker connection (the staff pages' banner: a stopped broker
    shows there as a stale worker anyway). Reads only; after a failed database check the
    session's transaction may be unusable, so the caller rolls back (or closes) it.
    """
    checks = [check_database(session)]
    if broker:
        checks.append(check_broker(settings.broker_url, settings.health_broker_timeout_seconds))
    if checks[0].status == Status.FAIL:
        # Everything else lives in the database: say so rather than guess.
        for name, unit in _READ_FROM_DATABASE:
            checks.append(Check(name, Status.FAIL, None, unit, "not known: database unreachable"))
        return HealthReport(now, tuple(checks))
    try:
        seen = heartbeats.last_seen(session)
        checks.append(check_beat(seen.get(heartbeats.BEAT), settings, now=now))
        checks.append(check_worker(seen.get(heartbeats.WORKER), settings, now=now))
        checks.append(check_reminder_lag(oldest_unsent_due_at(session, now), settings, now=now))
        checks.append(
            check_task_failures(task_failures.count_since(session, now - RECENT_FAILURES_WINDOW))
        )
    except sa.exc.SQLAlchemyError as exc:
        done = {c.name for c in checks}
        for name, unit in _READ_FROM_DATABASE:
            if name not in done:
                detail = f"not known: reading it failed ({type(exc).__name__})"
                checks.append(Check(name, Status.FAIL, None, unit, detail))
    return HealthReport(now, tuple(checks))


def check_database(session: Session) -> Check:
    started = perf_counter()
    try:
        session.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        return Check(
            CheckName.DATABASE, Status.FAIL, None, "ms", f"unreachable ({type(exc).__name__})"
        )
    elapsed_ms = (perf_counter() - started) * 1000
    return Check(CheckName.DATABASE, Status.OK, elapsed_ms, "ms", "answers")


def check_broker(broker_url: str, timeout: float) -> Check:
    """Open a connection to the message broker (Redis, or the embedded SQLite transport)."""
    # Imported here: only a process that checks the broker needs kombu's transports.
    from kombu import Connection

    started = perf_counter()
    try:
        with Connection(broker_url, connect_timeout=timeout) as connection:
            # One attempt, no retry loop: a probe must answer within its own timeout.
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
            # The embedded transport connects lazily; a channel makes it touch its store.
            connection.default_channel  # noqa: B018
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the finding itself
        # The type only: the message would name the host and port.
        return Check(
            CheckName.BROKER, Status.FAIL, None, "ms", f"unreachable ({type(exc).__name__})"
        )
    elapsed_ms = (perf_counter() - started) * 1000
    return Check(CheckName.BROKER, Status.OK, elapsed_ms, "ms", "accepts connections")


def _age(seen: datetime | None, now: datetime) -> float | None:
    # A stamp a little ahead of this host's clock (another host's drift) counts as fresh.
    return None if seen is None else max((now - seen).total_seconds(), 0.0)


def check_beat(seen: datetime | None, settings: Settings, *, now: datetime) -> Check:
    return _heartbeat_check(
        CheckName.BEAT, _age(seen, now), settings.beat_stale_after,
        never="has never ticked", stale="no tick for", fresh="ticked",
    )  # fmt: skip


def check_worker(seen: datetime | None, settings: Settings, *, now: datetime) -> Check:
    return _heartbeat_check(
        CheckName.WORKER, _age(seen, now), settings.worker_stale_after,
        never="no worker has ever run", stale="no worker seen for", fresh="seen",
    )  # fmt: skip


def _heartbeat_check(
    name: CheckName, age: float | None, limit: float, *, never: str, stale: str, fresh: str
) -> Check:
    """A process's heartbeat read against its limit: never stamped or too old fails."""
    if age is None:
        return Check(name, Status.FAIL, None, "s", never)
    if age > limit:
        return Check(name, Status.FAIL, age, "s", f"{stale} {_span(age)} (limit {_span(limit)})")
    return Check(name, Status.OK, age, "s", f"{fresh} {_span(age)} ago")


def oldest_unsent_due_at(session: Session, now: datetime) -> datetime | None:
    """When the longest-waiting reminder that is due and not yet sent fell due.

    Waiting for a retry counts as waiting: a provider that keeps failing shows as a growing
    lag. One held until the patient's message window opens does not: it is on time for the
    window (otherwise every night's early reminders would read as a stalled service).
    `unknown` sends are excluded (the provider may have them; reconciling settles them).
    """
    # Through the table, not the mapped class: a web session narrowed to one user's
    # departments (scheduler.access) must still see every department's outbox here. Health is
    # about the whole service, and the answer names no record.
    reminders = Reminder.__table__
    waiting_for_window = sa.and_(
        reminders.c.status_reason == WINDOW_WAIT_REASON, reminders.c.next_attempt_at > now
    )
    query = sa.select(sa.func.min(reminders.c.due_at)).where(
        reminders.c.status.in_(OPEN_STATUSES),
        reminders.c.due_at <= now,
        sa.not_(sa.func.coalesce(waiting_for_window, False)),
    )
    value = session.scalar(query)
    if value is None:
        return None
    # min() over the column comes back without its type's conversion on SQLite.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def check_reminder_lag(due_at: datetime | None, settings: Settings, *, now: datetime) -> Check:
    if due_at is None:
        return Check(CheckName.REMINDER_LAG, Status.OK, 0.0, "s", "no due reminder is waiting")
    lag = _age(due_at, now) or 0.0
    limit = settings.reminder_lag_limit
    if lag > limit:
        detail = f"oldest due reminder unsent for {_span(lag)} (limit {_span(limit)})"
        return Check(CheckName.REMINDER_LAG, Status.FAIL, lag, "s", detail)
    # A few dispatch rounds without sending it: worth a look before it becomes an outage.
    if lag > 3 * settings.dispatch_interval_seconds:
        detail = f"oldest due reminder waiting {_span(lag)} (limit {_span(limit)})"
        return Check(CheckName.REMINDER_LAG, Status.WARN, lag, "s", detail)
    return Check(CheckName.REMINDER_LAG, Status.OK, lag, "s", f"oldest due reminder {_span(lag)}")


def check_task_failures(count: int) -> Check:
    window = _span(RECENT_FAILURES_WINDOW.total_seconds())
    if count:
        noun = "failure" if count == 1 else "failures"
        detail = f"{count} task {noun} in the last {window}"
        return Check(CheckName.TASK_FAILURES, Status.WARN, float(count), "count", detail)
    return Check(CheckName.TASK_FAILURES, Status.OK, 0.0, "count", f"none in the last {window}")


def _span(seconds: float) -> str:
    """A short human duration: 42 s, 5 min, 3 h 10 min, 2 d 4 h."""
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
