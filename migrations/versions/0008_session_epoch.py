"""staff sessions can be ended on the server: a per-user session epoch

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 15:50:00.000000

A column addition only, and its drop: SQLite does both in place, whereas a batch copy of the
users table would drop a table other rows still refer to (foreign keys are enforced).
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every session signed before this revision carries no epoch and is refused, so the
    # cookies issued without server-side ending stop working at the upgrade.
    op.add_column(
        "users",
        sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0"),
    )
    # Deactivation now revokes a user's tokens; revoke those of users deactivated before, or
    # reactivating them would bring their old tokens back.
    users = sa.table("users", sa.column("id", sa.Integer()), sa.column("active", sa.Boolean()))
    tokens = sa.table(
        "api_tokens",
        sa.column("user_id", sa.Integer()),
        sa.column("revoked_at", sa.DateTime(timezone=True)),
    )
    inactive = sa.select(users.c.id).where(users.c.active == sa.false())
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        # The form scheduler.models.UTCDateTime stores on SQLite: naive UTC.
        now = now.replace(tzinfo=None)
    op.execute(
        tokens.update()
        .where(tokens.c.revoked_at.is_(None), tokens.c.user_id.in_(inactive))
        .values(revoked_at=now)
    )


def downgrade() -> None:
    op.drop_column("users", "session_epoch")
