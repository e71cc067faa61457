"""The Prometheus instruments of the web app and the worker, made on first use.

Under gunicorn and in the prefork worker each process counts in files of its own under
``PROMETHEUS_MULTIPROC_DIR`` and a scrape sums them (prometheus-client's multiprocess
mode). prometheus-client decides between that and plain in-memory counting from the
environment when it is first imported, so nothing here imports it at module level: the
gunicorn configuration and the worker's start-up set the directory first.

Labels hold codes only (route patterns, statuses, channels, task names, provider codes),
never ids, paths or anything about a patient.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "sbrt_"
# Provider error codes become label values: Twilio's numeric codes and our short words
# ("timeout", "connection"); anything else is folded into one value so a strange answer
# cannot grow the number of series without bound.
_CODE = re.compile(r"[A-Za-z0-9_.-]{1,24}")


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


@dataclass(frozen=True)
class Instruments:
    http_request_duration: Any
    http_conflicts: Any
    booking_events: Any
    reminder_sends: Any
    provider_errors: Any
    provider_request_duration: Any
    task_duration: Any
    task_failures: Any

    def collectors(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]


@cache
def instruments() -> Instruments:
    """The process's instruments; the first call fixes in-memory or multiprocess counting."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, values

    if multiprocess_dir() and not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus-client was imported before the directory was set (a library did): pick
        # the multiprocess value class now, before any instrument exists.
        values.ValueClass = values.get_value_class()
    # A registry of our own: the instruments are collected explicitly by each scrape (see
    # exposition.py), never through the library's global default registry.
    registry = CollectorRegistry(auto_describe=True)
    return Instruments(
        http_request_duration=Histogram(
            PREFIX + "http_request_duration_seconds",
            "Time to answer a web request, by route pattern, method and status",
            ["route", "method", "status"],
            registry=registry,
        ),
        http_conflicts=Counter(
            PREFIX + "http_conflicts",
            "409 answers (a time taken by a concurrent booking, a record in a state that does"
            " not allow the action), by route pattern",
            ["route"],
            registry=registry,
        ),
        booking_events=Counter(
            PREFIX + "booking_events",
            "Committed booking changes by kind (course_booked: courses booked)",
            ["kind"],
            registry=registry,
        ),
        reminder_sends=Counter(
            PREFIX + "reminder_sends",
            "Messages handed to a provider, by channel and outcome",
            ["channel", "outcome"],
            registry=registry,
        ),
        provider_errors=Counter(
            PREFIX + "provider_errors",
            "Provider answers other than acceptance, by channel and provider error code",
            ["channel", "code"],
            registry=registry,
        ),
        provider_request_duration=Histogram(
            PREFIX + "provider_request_duration_seconds",
            "Time a provider took to answer one send, by channel",
            ["channel"],
            registry=registry,
        ),
        task_duration=Histogram(
            PREFIX + "task_duration_seconds",
            "Run time of Celery tasks, by task name and final state",
            ["task", "state"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
            registry=registry,
        ),
        task_failures=Counter(
            PREFIX + "task_failures",
            "Celery tasks that raised, by task name and exception type",
            ["task", "exception"],
            registry=registry,
        ),
    )


def error_code_label(code: str | None) -> str:
    if not code:
        return "none"
    return code if _CODE.fullmatch(code) else "other"


def record_send(channel: str, outcome: str, error_code: str | None, seconds: float) -> None:
    """One provider call: its outcome, its error code when not accepted, and its duration."""
    found = instruments()
    found.reminder_sends.labels(channel, outcome).inc()
    found.provider_request_duration.labels(channel).observe(seconds)
    if outcome != "accepted":
        found.provider_errors.labels(channel, error_code_label(error_code)).inc()
