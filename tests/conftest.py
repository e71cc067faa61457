"""Shared fixtures: every database test runs on SQLite and, when reachable, PostgreSQL.

A service that cannot be reached is a skip on a developer's machine and a failure when
REQUIRE_SERVICES=1 (CI), so nothing silently goes untested there.

Tests whose outcome could depend on the day they run are marked ``pinned_dates``: each runs
on the real clock and under every instant in PINNED_INSTANTS (on PostgreSQL: under
POSTGRESQL_INSTANTS), with the process clock moved there (see ``_pinned_clock``), and builds
its data around the ``now`` fixture.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.orm import Session, sessionmaker

import notifications.models  # noqa: F401  (registers the outbox tables for cleaning)
from bootstrap import make_engine, make_session_factory
from config import Settings, load_settings
from scheduler.models import Base

pytest_plugins = ["tests.fakes.fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@dataclass(frozen=True)
class PinnedInstant:
    """A moment a date-sensitive test is run at; ``at`` None means the real clock."""

    name: str
    at: datetime | None

    def __str__(self) -> str:
        return self.name


NEW_YORK = ZoneInfo("America/New_York")  # the zone of every test and demo department
TODAY = PinnedInstant("today", None)
# Days on which date arithmetic goes wrong: a daylight-saving change between now and next
# week's sessions, holidays closing the clinic in the weeks ahead, a year end at an hour when
# the UTC date is already tomorrow, and a weekend evening after quiet hours (08:00-21:00).
PINNED_INSTANTS = (
    TODAY,
    # The Monday of the week in which New York springs forward (Sunday 14 March 2027), early
    # morning: the clinic (07:00-19:00) has not opened yet.
    PinnedInstant("dst-week", datetime(2027, 3, 8, 6, 30, tzinfo=NEW_YORK)),
    # Christmas week: next week holds New Year's Day, so a course of five spans two weeks.
    PinnedInstant("christmas-week", datetime(2026, 12, 21, 9, 0, tzinfo=NEW_YORK)),
    # 31 December at 22:30 local is 1 January in UTC.
    PinnedInstant("new-years-eve", datetime(2026, 12, 31, 22, 30, tzinfo=NEW_YORK)),
    # A Saturday night, hours before New York falls back (Sunday 7 November 2027).
    PinnedInstant("saturday-night", datetime(2027, 11, 6, 22, 30, tzinfo=NEW_YORK)),
)


# A weekday morning inside every message window and opening hours, for tests about what is
# sent or shown "now" rather than about dates: at night a due reminder rightly waits for the
# patient's window, which such a test would misread. Use ``@at_clinic_hours``.
CLINIC_HOURS = PinnedInstant("clinic-hours", datetime(2026, 12, 8, 10, 0, tzinfo=NEW_YORK))
at_clinic_hours = pytest.mark.parametrize("pinned_instant", [CLINIC_HOURS], ids=str)


# The date arithmetic is Python's, the same on both backends: PostgreSQL repeats a pinned
# test on the real clock and on the instant whose UTC date is already tomorrow (the one most
# likely to trip a query on dates), which keeps the suite's added time to a few minutes.
POSTGRESQL_INSTANTS = ("today", "new-years-eve")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pinned_dates(postgresql=POSTGRESQL_INSTANTS): run on the real clock and under each "
        "of PINNED_INSTANTS on SQLite, and under the named ones on PostgreSQL",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("pinned_dates") is None:
        return
    metafunc.parametrize("pinned_instant", PINNED_INSTANTS, ids=str)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop the PostgreSQL runs of a ``pinned_dates`` test under instants it does not name."""
    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("pinned_dates")
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            marker is not None
            and params.get("database_url") == "postgresql"
            and params["pinned_instant"].name
            not in marker.kwargs.get("postgresql", POSTGRESQL_INSTANTS)
        ):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def pinned_instant() -> PinnedInstant:
    """The instant a ``pinned_dates`` test runs at (parametrised); others: the real clock."""
    return TODAY


@pytest.fixture(autouse=True)
def _pinned_clock(pinned_instant: PinnedInstant) -> Iterator[None]:
    """Move the whole process clock (every thread, so a live server's too) to the pinned
    instant, still ticking so timeouts and "a moment later" behave as in real life.

    Autouse fixtures are set up first, so seed data made by other fixtures is made at the
    pinned time as well. Only the Python clock moves: nothing in the schema takes its time
    from the database server (no server-side now() defaults), which time-machine cannot move.
    """
    if pinned_instant.at is None:
        yield
        return
    # As a UTC instant: given a zone, time-machine would also move the process's local zone,
    # hiding any code that wrongly takes "today" from the server's zone.
    with time_machine.travel(pinned_instant.at.astimezone(UTC), tick=True):
        yield


@pytest.fixture
def now(_pinned_clock: None) -> datetime:
    """The moment the test starts, in UTC: the pinned instant, or the real time."""
    return datetime.now(UTC).replace(microsecond=0)


def services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip, or fail under REQUIRE_SERVICES=1."""
    if services_required():
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


def port_open(url: str, default_port: int) -> bool:
    parsed = urlparse(url.replace("+psycopg", ""))
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def migrate(database_url: str) -> None:
    cfg = AlembicConfig(str(REPO_ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["configure_logging"] = False
    command.upgrade(cfg, "head")


def _postgres_database() -> str:
    """A fresh, migrated PostgreSQL database for this test session (dropped afterwards)."""
    if not port_open(POSTGRES_ADMIN_URL, 5432):
        unavailable(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}")
    name = f"sbrt_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    return url


def _drop_postgres_database(url: str) -> None:
    name = sa.make_url(url).database
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def _migrated_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    urls: dict[str, str] = {}
    yield urls
    if "postgresql" in urls:
        _drop_postgres_database(urls["postgresql"])


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest,
    _migrated_urls: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """A migrated database URL (one per backend per session); tables are emptied per test."""
    backend = request.param
    if backend not in _migrated_urls:
        if backend == "sqlite":
            path = tmp_path_factory.mktemp("sqlite") / "test.db"
            url = f"sqlite:///{path}"
            migrate(url)
        else:
            url = _postgres_database()
        _migrated_urls[backend] = url
    return _migrated_urls[backend]


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(database_url)
    _empty_tables(engine)
    yield engine
    engine.dispose()


def _empty_tables(engine: sa.Engine) -> None:
    """Start each test from an empty schema (services commit, so rollback is not enough)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture
def session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        {
            "DATABASE_URL": database_url,
            "BROKER_URL": "memory://",
            "SECRET_KEY": "test-secret-key-not-for-production",
            "INSTANCE_DIR": str(tmp_path),
        }
    )


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not port_open(REDIS_URL, 6379):
        unavailable(f"Redis not reachable at {REDIS_URL}")
    return REDIS_URL
