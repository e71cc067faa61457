"""Builds the database engine and session factory for the web app and the worker alike.

Nothing here runs at import time: callers pass Settings and get objects back.
"""

from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from config import Settings


def make_engine(database_url: str, *, echo: bool = False) -> sa.Engine:
    """An engine with the per-backend settings our guarantees rely on."""
    if database_url.startswith("sqlite"):
        engine = sa.create_engine(
            database_url,
            echo=echo,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=10,
            max_overflow=20,
            hide_parameters=True,
        )
        _serialise_sqlite_writers(engine)
        return engine
    return sa.create_engine(
        database_url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        # Bound values can be patient data: keep them out of error messages and logs.
        hide_parameters=True,
    )


def _serialise_sqlite_writers(engine: sa.Engine) -> None:
    """Make every SQLite transaction take the write lock up front (BEGIN IMMEDIATE).

    SQLite has no exclusion constraints. With the lock taken at BEGIN, the overlap check a
    booking makes and its insert happen with no other writer in between, so the check is as
    good as a constraint. pysqlite's own transaction handling is switched off so that ours
    is the only BEGIN.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@lru_cache(maxsize=8)
def _cached_engine(database_url: str, echo: bool) -> sa.Engine:
    return make_engine(database_url, echo=echo)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    """A process-wide session factory for these settings (one engine per URL)."""
    return make_session_factory(_cached_engine(settings.database_url, settings.sql_echo))
