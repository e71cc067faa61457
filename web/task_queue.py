"""Handing background work to the Celery workers from a web request.

The web app only sends messages by task name: it never imports the tasks (nor the worker
module, whose Celery app reads the environment when imported). The producer is built from the
app's Settings on first use and kept for the app's life.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from flask import current_app

from web import SETTINGS_KEY

PRODUCER_KEY = "sbrt.task_producer"


def _producer() -> Celery:
    producer = current_app.extensions.get(PRODUCER_KEY)
    if producer is None:
        settings = current_app.extensions[SETTINGS_KEY]
        producer = Celery("sbrt-web", broker=settings.broker_url)
        producer.conf.update(task_serializer="json", accept_content=["json"])
        current_app.extensions[PRODUCER_KEY] = producer
    return producer


def enqueue(task_name: str, *args: Any) -> None:
    """Queue `task_name(*args)` for a worker; call only after the rows it reads are committed."""
    _producer().send_task(task_name, args=list(args))
