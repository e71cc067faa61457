"""Celery tasks of the reminder pipeline: thin, given ids, never ORM objects.

Beat runs `dispatch_due_reminders` every DISPATCH_INTERVAL_SECONDS; it claims due rows in the
outbox and enqueues one short `send_reminder` per id. Nothing waits in the broker with an ETA.
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
    """Claim every due reminder (in batches) and enqueue a send task for each."""
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
        for reminder_id in ids:
            send_reminder.delay(reminder_id)
        total += len(ids)
        if len(ids) < DISPATCH_BATCH:
            return total


@shared_task(
    name="notifications.send_reminder",
    ignore_result=True,
    acks_late=True,  # idempotent: the status guard makes a redelivered id a no-op
)
def send_reminder(reminder_id: int) -> str | None:
    settings = _settings()
    return sending.send_reminder(
        _sessions(),
        reminder_id,
        _channels(),
        link=settings.public_base_url,
        public_base_url=settings.public_base_url,
    )


@shared_task(name="notifications.reconcile_unknown", ignore_result=True)
def reconcile_unknown() -> int:
    return sending.reconcile_unknown(_sessions(), _channels(), now=datetime.now(UTC))
