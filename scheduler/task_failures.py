"""Background task failures, kept so admins can see them on the System page.

A task's arguments are ids and its exception messages can quote what it was working on (an
SMTP server echoing an address, a provider error naming a number), so only the task's name,
the exception's type and its message with anything that looks like contact details or a
token masked are stored, cut short; old rows are pruned as new ones arrive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler.models import TaskFailure

MESSAGE_LIMIT = 300
KEEP_FOR = timedelta(days=30)

# Order matters: whole addresses and tokens first (both can hold digits), then phone
# numbers, then whatever is quoted.
_MASKS = (
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "[email]"),
    # Long runs of URL-safe symbols with a digit among them: link tokens, API keys, SIDs (a
    # long plain word such as an exception's class name is left alone).
    (re.compile(r"(?=[A-Za-z_\-]*\d)[A-Za-z0-9_\-]{20,}"), "[token]"),
    # Phone numbers in any common spelling: 7 or more digits with separators between them.
    (re.compile(r"\+?\d[\d\s().-]{5,}\d"), "[number]"),
    # Quoted values are what messages usually echo from their input (names included).
    (re.compile(r"'[^']*'|\"[^\"]*\""), "[value]"),
)


@dataclass(frozen=True)
class RecentFailure:
    task_name: str
    exception_type: str
    message: str
    failed_at: datetime


def mask(message: str) -> str:
    """The message with contact details, tokens and quoted values replaced, cut short."""
    for pattern, replacement in _MASKS:
        message = pattern.sub(replacement, message)
    message = " ".join(message.split())
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 1] + "…"
    return message


def record(session: Session, task_name: str, exc: BaseException, *, now: datetime) -> None:
    """Add one failure and prune the ones older than KEEP_FOR; flushes, the caller commits."""
    session.execute(sa.delete(TaskFailure).where(TaskFailure.failed_at < now - KEEP_FOR))
    session.add(
        TaskFailure(
            task_name=task_name[:200],
            exception_type=type(exc).__qualname__[:200],
            message=mask(str(exc)),
            failed_at=now,
        )
    )
    session.flush()


def recent(session: Session, *, limit: int = 20) -> list[RecentFailure]:
    """The newest failures first."""
    query = (
        sa.select(TaskFailure)
        .order_by(TaskFailure.failed_at.desc(), TaskFailure.id.desc())
        .limit(limit)
    )
    rows = session.scalars(query)
    return [RecentFailure(r.task_name, r.exception_type, r.message, r.failed_at) for r in rows]


def count_since(session: Session, since: datetime) -> int:
    query = (
        sa.select(sa.func.count()).select_from(TaskFailure).where(TaskFailure.failed_at >= since)
    )
    return session.scalar(query) or 0
