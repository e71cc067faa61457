"""Figures read from the database at scrape time: the outbox by state, reminder lag, heartbeats.

They describe shared state rather than one process's work, so they are computed by whichever
web process answers the scrape instead of being counted in each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from notifications.models import Reminder, ReminderStatus
from scheduler.health import oldest_unsent_due_at
from scheduler.models import WorkerHeartbeat
from scheduler.observability.metrics import PREFIX

log = logging.getLogger(__name__)

OUTBOX = PREFIX + "outbox_reminders"
LAG = PREFIX + "reminder_lag_seconds"
HEARTBEAT_AGE = PREFIX + "heartbeat_age_seconds"
DATABASE_UP = PREFIX + "metrics_database_up"
OUTBOX_HELP = "Reminders in the outbox by status"
LAG_HELP = "Seconds the oldest due, unsent reminder has waited"
HEARTBEAT_HELP = (
    "Seconds since each process kind last stamped its heartbeat (beat: beat published its"
    " tick; worker: a worker connected to the broker)"
)
DATABASE_UP_HELP = "1 when the figures read from the database are current"


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive values; every stored time is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class OutboxCollector(Collector):
    """Reminders by status, the age of the oldest due unsent one, and each heartbeat's age."""

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self.sessions = sessions

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(OUTBOX, OUTBOX_HELP, labels=["status"])
        yield GaugeMetricFamily(LAG, LAG_HELP)
        yield GaugeMetricFamily(HEARTBEAT_AGE, HEARTBEAT_HELP, labels=["name"])
        yield GaugeMetricFamily(DATABASE_UP, DATABASE_UP_HELP)

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        up = GaugeMetricFamily(DATABASE_UP, DATABASE_UP_HELP)
        try:
            with self.sessions() as session:
                counts = dict(
                    session.execute(
                        sa.select(Reminder.status, sa.func.count()).group_by(Reminder.status)
                    )
                    .tuples()
                    .all()
                )
                oldest = oldest_unsent_due_at(session, now)
                beats = session.execute(
                    sa.select(WorkerHeartbeat.name, WorkerHeartbeat.last_seen_at)
                ).all()
                session.rollback()
        except sa.exc.SQLAlchemyError as exc:
            # The scrape still answers (request and send figures are worth having), and the
            # gap is visible; the error's text may quote values, so only its type is logged.
            log.warning("metrics: the database could not be read (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        outbox = GaugeMetricFamily(OUTBOX, OUTBOX_HELP, labels=["status"])
        for status in ReminderStatus:
            outbox.add_metric([status.value], counts.get(status.value, 0))
        yield outbox
        lag = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        yield GaugeMetricFamily(LAG, LAG_HELP, lag)
        ages = GaugeMetricFamily(HEARTBEAT_AGE, HEARTBEAT_HELP, labels=["name"])
        for name, seen in beats:
            ages.add_metric([name], max(0.0, (now - _aware(seen)).total_seconds()))
        yield ages
        up.add_metric([], 1)
        yield up
