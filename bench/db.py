"""A throw-away database per run: created, migrated with alembic, dropped at the end.

The same few lines as tests/conftest.py, reimplemented so the benchmark does not import the
test suite (and pytest) just to create a database.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "bench" / "out"  # `make clean` removes it; .gitignore skips it
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)


def migrate(database_url: str) -> None:
    cfg = AlembicConfig(str(REPO_ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["configure_logging"] = False
    command.upgrade(cfg, "head")


def create_postgres_database() -> str:
    """A fresh, migrated PostgreSQL database with a unique name; returns its URL."""
    name = f"sbrt_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    return url


def drop_postgres_database(url: str) -> None:
    name = sa.make_url(url).database
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            # FORCE: a gunicorn worker that was killed may leave a connection behind.
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def create_sqlite_database() -> tuple[str, Path]:
    """A fresh, migrated SQLite file under bench/out; returns its URL and path."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"bench_{uuid.uuid4().hex[:10]}.db"
    url = f"sqlite:///{path}"
    migrate(url)
    return url, path


def drop_sqlite_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


ACTIVE = "('tentative', 'booked', 'confirmed')"


def overlap_counts(engine: sa.Engine) -> dict[str, int]:
    """Pairs of active fractions that overlap on one linac, and for one patient.

    Independent of the exclusion constraints (and of SQLite's serialised writers): a plain
    self-join over the whole table, so a bug in either guarantee shows up as a non-zero count.
    Of two overlapping sessions the later one (ties: the higher id) starts inside the earlier
    one, so each overlapping pair is counted once, and the join is an index range scan on
    (linac_id, starts_at) or (patient_id, starts_at) instead of a quadratic comparison.
    """
    out = {}
    for key in ("linac_id", "patient_id"):
        sql = (
            f"SELECT count(*) FROM fractions a JOIN fractions b ON b.{key} = a.{key} "
            "AND b.starts_at >= a.starts_at AND b.starts_at < a.ends_at "
            "AND (b.starts_at > a.starts_at OR b.id > a.id) "
            f"WHERE a.status IN {ACTIVE} AND b.status IN {ACTIVE}"
        )
        with engine.connect() as conn:
            out[key] = int(conn.exec_driver_sql(sql).scalar_one())
    return out
