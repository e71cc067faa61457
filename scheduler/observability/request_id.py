"""The request id: one per web request (or periodic tick), on every log line it causes.

A web request takes a sane ``X-Request-ID`` from its caller or gets a fresh one; the id is
returned in the response and travels in the headers of every Celery task the request queues,
so the worker's log lines for that task carry the same id. A task queued outside any request
(beat's ticks) gets an id of its own, which the tasks it queues inherit in turn.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar, Token

HEADER = "X-Request-ID"
# The name under which the id travels in a Celery message's headers.
TASK_HEADER = "sbrt_request_id"
# Ids from callers are echoed into logs and response headers: letters, digits and a few
# separators only, so a caller can neither forge log lines nor inject header content.
_SANE = re.compile(r"[A-Za-z0-9._:-]{8,128}")

_current: ContextVar[str | None] = ContextVar("sbrt_request_id", default=None)


def new_id() -> str:
    return uuid.uuid4().hex


def accept(incoming: str | None) -> str:
    """The caller's id when it is sane, else a new one."""
    if incoming and _SANE.fullmatch(incoming):
        return incoming
    return new_id()


def current() -> str | None:
    return _current.get()


def bind(value: str | None) -> Token[str | None]:
    return _current.set(value)


def unbind(token: Token[str | None]) -> None:
    _current.reset(token)
