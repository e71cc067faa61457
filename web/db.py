"""The per-request database session: opened on first use, closed when the request ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app, g
from sqlalchemy.orm import Session, sessionmaker

from scheduler import access, unit_of_work

SESSION_FACTORY_KEY = "sbrt.session_factory"


def init_app(app: Flask, factory: sessionmaker[Session]) -> None:
    # Once a request knows its staff user, its queries see only that user's departments.
    access.install(factory)
    app.extensions[SESSION_FACTORY_KEY] = factory
    app.teardown_appcontext(_close_session)


def get_session() -> Session:
    """This request's Session; use cases commit it, teardown closes (and so rolls back) it."""
    if "db_session" not in g:
        g.db_session = current_app.extensions[SESSION_FACTORY_KEY]()
    return g.db_session


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


@contextmanager
def transaction() -> Iterator[Session]:
    """This request's unit of work: the action's writes and its audit entry commit together."""
    with unit_of_work.transaction(get_session()) as session:
        yield session
