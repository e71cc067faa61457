"""The per-request database session: opened on first use, closed when the request ends.

A page request is one user action and so one unit of work: whatever its use cases flushed and
its audit entry are committed together after the view returned a successful answer (below
400: a page, a redirect), and rolled back when it answered with an error or raised. A view
that refuses an action and still redirects (a flashed error) rolls back itself, and a view
may end its unit of work earlier with ``with transaction():`` (e.g. to release SQLite's
write lock before rendering a long page). API operations commit their own unit of work (see
``web.api.registry``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, Response, current_app, g, request
from sqlalchemy.orm import Session, sessionmaker

from scheduler import unit_of_work

SESSION_FACTORY_KEY = "sbrt.session_factory"


def init_app(app: Flask, factory: sessionmaker[Session]) -> None:
    app.extensions[SESSION_FACTORY_KEY] = factory
    app.after_request(_end_page_action)
    app.teardown_appcontext(_close_session)


def get_session() -> Session:
    """This request's Session; its owner commits it, teardown closes (and so rolls back) it."""
    if "db_session" not in g:
        g.db_session = current_app.extensions[SESSION_FACTORY_KEY]()
    return g.db_session


def _end_page_action(response: Response) -> Response:
    session = g.get("db_session")
    if session is None or request.blueprint == "api":
        return response
    if response.status_code < 400:
        session.commit()
    else:
        session.rollback()
    return response


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


@contextmanager
def transaction() -> Iterator[Session]:
    """This request's unit of work: the action's writes and its audit entry commit together."""
    with unit_of_work.transaction(get_session()) as session:
        yield session
