"""Migration 0011 on both backends: calendar feeds get a last-use column, and feeds that an
inactive user or linac (or no one) holds are revoked, so reactivating one cannot revive them."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from tests.test_migration_reminder_cadence import AT, _alembic, _insert, empty_url  # noqa: F401

BEFORE = "0010-1"  # the revision this one follows, whatever it is once the chain is linked


def test_feeds_of_inactive_owners_or_linacs_are_revoked(empty_url: str) -> None:  # noqa: F811
    cfg = _alembic(empty_url)
    command.upgrade(cfg, BEFORE)
    engine = sa.create_engine(empty_url)
    try:
        with engine.begin() as conn:
            department = _insert(
                conn, "departments", name="D", timezone="America/New_York", opening_hours={},
                created_at=AT,
            )  # fmt: skip
            linacs = {
                active: _insert(
                    conn,
                    "linacs",
                    department_id=department,
                    name=f"L{active}",
                    capabilities=["sbrt"],
                    active=active,
                )  # fmt: skip
                for active in (True, False)
            }
            users = {
                active: _insert(
                    conn,
                    "users",
                    email=f"u{active}@example.org",
                    name="U",
                    role="admin",
                    active=active,
                    created_at=AT,
                )  # fmt: skip
                for active in (True, False)
            }
            cases = {
                "live": (users[True], linacs[True], None),
                "ownerless": (None, linacs[True], None),
                "inactive owner": (users[False], linacs[True], None),
                "inactive linac": (users[True], linacs[False], None),
                "revoked before": (users[False], linacs[True], AT),
            }
            for name, (owner, linac, revoked_at) in cases.items():
                _insert(
                    conn, "calendar_feeds", token_digest=name.ljust(64, "0"), linac_id=linac,
                    name=name, created_by_id=owner, created_at=AT, revoked_at=revoked_at,
                )  # fmt: skip

        command.upgrade(cfg, "0010")
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT name, revoked_at, last_used_at FROM calendar_feeds")
            ).all()
        revoked = {name: revoked_at for name, revoked_at, _ in rows}
        assert revoked["live"] is None
        assert {name for name, at in revoked.items() if at is not None} == {
            "ownerless",
            "inactive owner",
            "inactive linac",
            "revoked before",
        }
        # The first revocation keeps its time (read back as text on SQLite).
        assert str(revoked["revoked before"])[:19] in (str(AT)[:19], AT.isoformat()[:19])
        assert {last_used for _, _, last_used in rows} == {None}

        command.downgrade(cfg, BEFORE)
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("calendar_feeds")}
            still_revoked = conn.execute(
                sa.text("SELECT count(*) FROM calendar_feeds WHERE revoked_at IS NOT NULL")
            ).scalar()
        assert "last_used_at" not in columns
        assert still_revoked == 4  # a revoked feed stays revoked
    finally:
        engine.dispose()
