"""The unit of work: one user action is one transaction, owned by whoever starts the action.

Use cases add, change and ``flush`` rows but never commit or roll back; the web request, the
CLI command or the Celery task that runs them opens ``transaction(session)`` around the whole
action. Everything the action writes -- the change, its booking events, its audit entry, the
messages it queues -- therefore commits together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session


@contextmanager
def transaction(session: Session) -> Iterator[Session]:
    """Commit ``session`` when the block ends normally; roll it back when anything is raised."""
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    session.commit()
