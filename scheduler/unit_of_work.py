"""The unit of work: one user action is one transaction, owned by whoever starts the action.

Use cases add, change and ``flush`` rows but never commit or roll back; the web request, the
CLI command or the Celery task that runs them opens ``transaction(session)`` around the whole
action. Everything the action writes -- the change, its booking events, its audit entry, the
messages it queues -- therefore commits together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from scheduler.errors import Conflict

R = TypeVar("R")


# PostgreSQL's deadlock and serialisation failures: the database aborted the whole
# transaction, which did nothing and may be run again from the start. Two bookings for one
# patient on two linacs can wait on each other's exclusion checks; PostgreSQL aborts one and
# the retry then sees the winner's rows.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


RACE_RETRIES = 3


class LostRace(Exception):
    """The database aborted this transaction to break a deadlock: run the action again."""


@contextmanager
def transaction(session: Session) -> Iterator[Session]:
    """Commit ``session`` when the block ends normally; roll it back when anything is raised."""
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    session.commit()


@contextmanager
def read_only(session: Session) -> Iterator[Session]:
    """A transaction that only reads: always rolled back, so that on SQLite (where every
    transaction takes the write lock at BEGIN) the lock is released as soon as the reading
    is done rather than when the request ends."""
    try:
        yield session
    finally:
        session.rollback()


def is_lost_race(exc: BaseException) -> bool:
    if isinstance(exc, LostRace):
        return True
    return isinstance(exc, OperationalError) and (
        getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES
    )


def run(session: Session, action: Callable[[], R], *, retries: int = RACE_RETRIES) -> R:
    """Run ``action`` as one transaction, running it again in a fresh transaction when the
    database aborted it to break a deadlock.

    A deadlock or serialisation failure aborts the whole PostgreSQL transaction, so only the
    whole action -- not the statement that failed -- can be retried. The action must
    therefore do nothing outside the database before it returns (no SMS, no enqueueing).
    """
    for attempt in range(retries):
        try:
            with transaction(session):
                return action()
        except Exception as exc:
            if not is_lost_race(exc):
                raise
            if attempt == retries - 1:
                raise Conflict("bookings changed while this one was made; try again") from exc
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
