"""One logging setup for the web app, the worker and beat: JSON lines (or text) on stderr.

Every line carries the service that wrote it and the request id it belongs to (see
``request_id``), and passes through ``redaction.redact`` on its way out, so a link or a
contact detail that slipped into a message or a traceback is replaced before it is written.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from scheduler.observability import request_id
from scheduler.observability.redaction import redact

FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(service)s %(request_id)s] %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


class ContextFilter(logging.Filter):
    """Stamps each record with the service and the current request id ("-" outside one)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id.current() or "-"
        record.service = self.service
        return True


def _utc_time(record: logging.LogRecord) -> str:
    # ISO 8601 in UTC whatever the host's zone, so lines from every process sort together.
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class RedactingJsonFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _utc_time(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingTextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _utc_time(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return RedactingJsonFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    if log_format == "text":
        # Records that did not pass a ContextFilter (a handler added elsewhere) still format.
        return RedactingTextFormatter(TEXT_FORMAT, defaults={"service": "-", "request_id": "-"})
    raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}")


def make_handler(log_format: str, service: str, stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(ContextFilter(service))
    handler._sbrt_handler = True  # type: ignore[attr-defined]
    return handler


def configure_logging(log_format: str, level: str, *, service: str) -> None:
    """Send the root logger's records to stderr in this format; safe to call again.

    Only the handler installed here is replaced on a second call, so handlers others added
    (a test's log capture) stay.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_sbrt_handler", False):
            root.removeHandler(handler)
    root.addHandler(make_handler(log_format, service))
    root.setLevel(level.upper())
    # Python's warnings become log records too, in the same format.
    logging.captureWarnings(True)
