"""Gunicorn access log lines without the secrets that some URLs carry.

A patient's link (`/p/<token>`) and a staff calendar feed (`/feeds/linac/<token>.ics`) work
for whoever holds the URL, so a log line with the path would hand a working link to anyone
who can read the logs. The web process is started with `--logger-class
web.access_log.RedactingLogger`; every path keeps its shape with the token replaced.
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

# The token segment right after /p/ or /feeds/linac/, up to the next /, ?, . or space.
_SECRET_SEGMENT = re.compile(r"(/p/|/feeds/linac/)[^/?.\s]+")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _SECRET_SEGMENT.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingLogger(Logger):
    """gunicorn's logger, with secret URL segments removed from every access log field."""

    def atoms(self, resp: Any, req: Any, environ: dict, request_time: Any) -> dict:
        found = super().atoms(resp, req, environ, request_time)
        # Every text field: the request line and path, but also the referer and any header
        # a custom log format may name.
        return {
            key: redact(value) if isinstance(value, str) else value for key, value in found.items()
        }
