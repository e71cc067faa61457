"""Migration 0008 on both backends: users get a session epoch, and the tokens of users already
deactivated are revoked, so reactivating them does not bring those tokens back."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from tests.test_migration_reminder_cadence import _alembic, _insert, empty_url  # noqa: F401

AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _user(conn: sa.Connection, email: str, *, active: bool) -> int:
    return _insert(
        conn, "users", email=email, name=email, role="scheduler", active=active, created_at=AT
    )


def _token(conn: sa.Connection, user_id: int, digest: str) -> int:
    return _insert(
        conn, "api_tokens", user_id=user_id, name=digest, token_digest=digest * 64, created_at=AT
    )


def test_tokens_of_deactivated_users_are_revoked(empty_url: str) -> None:  # noqa: F811
    cfg = _alembic(empty_url)
    command.upgrade(cfg, "0007")
    engine = sa.create_engine(empty_url)
    try:
        with engine.begin() as conn:
            active_token = _token(conn, _user(conn, "on@example.org", active=True), "a")
            inactive_token = _token(conn, _user(conn, "off@example.org", active=False), "b")
        command.upgrade(cfg, "0008")
        with engine.connect() as conn:
            revoked = dict(conn.execute(sa.text("SELECT id, revoked_at FROM api_tokens")).all())
            epochs = conn.execute(sa.text("SELECT session_epoch FROM users")).scalars().all()
        assert revoked[active_token] is None
        assert revoked[inactive_token] is not None
        assert epochs == [0, 0]
        command.downgrade(cfg, "0007")
    finally:
        engine.dispose()
