"""Migration 0006 on both backends: the "prep" kind becomes "day_before" in stored messages and
edited templates, and protocol offsets equal to the old defaults follow their department."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig

from tests.conftest import (
    POSTGRES_ADMIN_URL,
    REPO_ROOT,
    _drop_postgres_database,
    port_open,
    unavailable,
)

AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty database of each backend, for migrating step by step."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    if not port_open(POSTGRES_ADMIN_URL, 5432):
        unavailable(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}")
    name = f"sbrt_migration_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    _drop_postgres_database(url)


def _alembic(url: str) -> AlembicConfig:
    cfg = AlembicConfig(str(REPO_ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["configure_logging"] = False
    return cfg


def _insert(conn: sa.Connection, table: str, **values: object) -> int:
    reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
    return conn.execute(sa.insert(reflected).returning(reflected.c.id), values).scalar_one()


def _seed_before(conn: sa.Connection) -> dict[str, int]:
    department = _insert(
        conn, "departments", name="D", timezone="America/New_York", opening_hours={},
        created_at=AT,
    )  # fmt: skip
    protocols = {}
    cases = (("default", 1440, 120), ("own", 2160, 90), ("week", 10080, 120))
    for code, day_before, same_day in cases:
        protocols[code] = _insert(
            conn, "protocols", code=code, name=code, site="generic", fractions=5,
            min_hours_between=0.0, min_interval_days=1, weekdays=[0, 1, 2, 3, 4],
            first_session_minutes=60, session_minutes=45, capabilities=["sbrt"],
            prep_instructions="", active=True, prep_reminder_minutes=day_before,
            same_day_reminder_minutes=same_day,
        )  # fmt: skip
    patient = _insert(
        conn, "patients", department_id=department, mrn="M1", given_name="A", family_name="B",
        language="en", sms_consent=True, sms_opted_out=False, email_consent=False, created_at=AT,
    )  # fmt: skip
    course = _insert(
        conn, "courses", patient_id=patient, protocol_id=protocols["default"], status="booked",
        priority=3, notes="", created_at=AT, updated_at=AT,
    )  # fmt: skip
    ids = {"department": department, **protocols}
    for kind in ("prep", "same_day"):
        ids[kind] = _insert(
            conn, "reminders", dedupe_key=f"fraction:9:{kind}:v2:sms", kind=kind, channel="sms",
            patient_id=patient, course_id=course, due_at=AT, status="pending", context={},
            attempts=0, created_at=AT, updated_at=AT,
        )  # fmt: skip
    ids["template"] = _insert(
        conn, "message_templates", kind="prep", part="sms", language="en", source="Hi",
        updated_at=AT,
    )  # fmt: skip
    return ids


def test_the_prep_kind_is_renamed_with_its_rows_and_back(empty_url: str) -> None:
    cfg = _alembic(empty_url)
    command.upgrade(cfg, "0006")
    engine = sa.create_engine(empty_url)
    try:
        with engine.begin() as conn:
            ids = _seed_before(conn)

        command.upgrade(cfg, "0007")
        with engine.connect() as conn:
            reminders = dict(conn.execute(sa.text("SELECT kind, dedupe_key FROM reminders")).all())
            assert reminders == {
                "day_before": "fraction:9:day_before:v2:sms",
                "same_day": "fraction:9:same_day:v2:sms",
            }
            assert conn.execute(sa.text("SELECT kind FROM message_templates")).scalar() == (
                "day_before"
            )
            protocols = {
                code: (day_before, same_day)
                for code, day_before, same_day in conn.execute(
                    sa.text(
                        "SELECT code, day_before_reminder_minutes, same_day_reminder_minutes "
                        "FROM protocols"
                    )
                )
            }
            assert protocols == {
                "default": (None, None),  # as the department, which has the same values
                "own": (2160, 90),
                "week": (2880, None),  # brought into today's range
            }
            department = conn.execute(
                sa.text(
                    "SELECT day_before_reminder, day_before_reminder_minutes, "
                    "same_day_reminder, same_day_reminder_minutes FROM departments"
                )
            ).one()
            assert tuple(department) == (True, 1440, True, 120)

        command.downgrade(cfg, "0006")
        with engine.connect() as conn:
            kinds = set(conn.execute(sa.text("SELECT kind FROM reminders")).scalars())
            assert kinds == {"prep", "same_day"}
            keys = set(conn.execute(sa.text("SELECT dedupe_key FROM reminders")).scalars())
            assert "fraction:9:prep:v2:sms" in keys
            assert conn.execute(sa.text("SELECT kind FROM message_templates")).scalar() == "prep"
            minutes = dict(
                conn.execute(sa.text("SELECT code, prep_reminder_minutes FROM protocols")).all()
            )
            assert minutes == {"default": 1440, "own": 2160, "week": 2880}
        assert ids["template"]
    finally:
        engine.dispose()
