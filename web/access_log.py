"""Gunicorn's log lines without the secrets some URLs carry, in the app's log format.

A patient's link (`/p/<token>`) and a staff calendar feed (`/feeds/linac/<token>.ics`) work
for whoever holds the URL, so a log line with the path would hand a working link to anyone
who can read the logs; a query string's values can be a patient's name. The web process is
started with this logger class (see web/gunicorn_conf.py); every path keeps its shape with
the token and the query values replaced. With LOG_FORMAT=json (the default) gunicorn's own
lines and the access lines are JSON objects like the app's, each access line carrying the
request id the app answered with.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger

from scheduler.observability import request_id
from scheduler.observability.logs import ContextFilter, formatter
from scheduler.observability.redaction import REDACTED, redact_url

__all__ = ["REDACTED", "RedactingLogger", "redact"]


def redact(text: str) -> str:
    return redact_url(text)


class RedactingLogger(Logger):
    """gunicorn's logger, with secret URL segments removed from every access log field."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        # Read from the environment as the app reads it (config.load_settings); a bad value
        # is reported by the app when it starts.
        log_format = (os.environ.get("LOG_FORMAT") or "json").strip().lower()
        if log_format not in ("json", "text"):
            return
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(formatter(log_format))
                handler.addFilter(ContextFilter("web"))

    def atoms(self, resp: Any, req: Any, environ: dict, request_time: Any) -> dict:
        found = super().atoms(resp, req, environ, request_time)
        # Every text field: the request line and path, but also the referer and any header
        # a custom log format may name.
        return {
            key: redact(value) if isinstance(value, str) else value for key, value in found.items()
        }

    def access(self, resp: Any, req: Any, environ: dict, request_time: Any) -> None:
        # The request has ended, so its id is read back from the answer for this one line.
        answered = next(
            (
                value
                for name, value in getattr(resp, "headers", None) or []
                if name.lower() == request_id.HEADER.lower()
            ),
            None,
        )
        token = request_id.bind(answered)
        try:
            super().access(resp, req, environ, request_time)
        finally:
            request_id.unbind(token)
