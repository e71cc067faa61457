"""Celery tasks of the reminder pipeline: thin, given ids, never ORM objects.

Beat runs `dispatch_due_reminders` every DISPATCH_INTERVAL_SECONDS; it claims due rows in the
outbox and enqueues short `send_reminders` tasks, each with a batch of ids. Nothing waits in the
broker with an ETA. The ticks travel on a queue of their own (see worker.py), so a tick is never
stuck behind the sends of the one before it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import cache

from celery import shared_task

import bootstrap
from config import Settings, load_settings
from notifications import outbox, sending
from notifications.channels import factory

log = logging.getLogger(__name__)
DISPATCH_BATCH = 500
# Ids per send task. A batch shares its queries and one task's overhead (a message through the
# broker, its acknowledgement), so per-message cost falls steeply up to a few dozen; beyond
# that the gain is small while a killed worker leaves more sends to reconcile.
SEND_BATCH = 25


@cache
def _settings() -> Settings:
    return load_settings()


@cache
def _channels() -> sending.Channels:
    """Built on first use inside the worker process (never at import) and kept."""
    settings = _settings()
    return sending.Channels(
        sms=factory.sms_channel(settings), email=factory.email_channel(settings)
    )


def _sessions():  # type: ignore[no-untyped-def]
    return bootstrap.session_factory(_settings())


@shared_task(name="notifications.dispatch_due_reminders", ignore_result=True)
def dispatch_due_reminders() -> int:
    """Claim every due reminder and enqueue send tasks for them, SEND_BATCH ids each."""
    total = 0
    while True:
        with _sessions()() as session:
            ids = outbox.claim_due(
                session,
                now=datetime.now(UTC),
                limit=DISPATCH_BATCH,
                lease=timedelta(seconds=_settings().reminder_lease_seconds),
            )
        # Enqueued only after the claim committed: a task never sees an unclaimed row.
        for first in range(0, len(ids), SEND_BATCH):
            send_reminders.delay(ids[first : first + SEND_BATCH])
        total += len(ids)
        if len(ids) < DISPATCH_BATCH:
            return total


@shared_task(
    name="notifications.send_reminders",
    ignore_result=True,
    acks_late=True,  # idempotent: the status guard makes redelivered ids a no-op
)
def send_reminders(reminder_ids: list[int]) -> int:
    """Send a batch of claimed reminders; returns how many were handed to a provider."""
    settings = _settings()
    statuses = sending.send_batch(
        _sessions(),
        reminder_ids,
        _channels(),
        public_base_url=settings.public_base_url,
        lease=timedelta(seconds=settings.reminder_lease_seconds),
        link_grace=timedelta(days=settings.patient_link_days_after_last_fraction),
    )
    return len(statuses)


@shared_task(name="notifications.send_reminder", ignore_result=True, acks_late=True)
def send_reminder(reminder_id: int) -> int:
    """One id: kept so that messages enqueued by an earlier version are still consumed."""
    return send_reminders(reminder_ids=[reminder_id])


@shared_task(name="notifications.reconcile_unknown", ignore_result=True)
def reconcile_unknown() -> int:
    return sending.reconcile_unknown(_sessions(), _channels(), now=datetime.now(UTC))
