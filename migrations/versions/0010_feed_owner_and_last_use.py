"""calendar feeds: last use recorded; feeds of inactive owners or linacs revoked

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 16:00:00.000000

A feed is tied to the admin who made it and to its linac: it stops for good when either is
deactivated (reactivating does not bring it back). Feeds that already belong to a deactivated
user or linac, or to no one, are revoked here, so that reactivating one later cannot revive
them either. A column addition only: SQLite does it in place.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calendar_feeds", sa.Column("last_used_at", sa.DateTime(timezone=True)))

    feeds = sa.table(
        "calendar_feeds",
        sa.column("revoked_at", sa.DateTime(timezone=True)),
        sa.column("created_by_id", sa.Integer()),
        sa.column("linac_id", sa.Integer()),
    )
    users = sa.table("users", sa.column("id", sa.Integer()), sa.column("active", sa.Boolean()))
    linacs = sa.table("linacs", sa.column("id", sa.Integer()), sa.column("active", sa.Boolean()))
    op.execute(
        feeds.update()
        .where(
            feeds.c.revoked_at.is_(None),
            sa.or_(
                feeds.c.created_by_id.is_(None),
                feeds.c.created_by_id.in_(sa.select(users.c.id).where(users.c.active.is_(False))),
                feeds.c.linac_id.in_(sa.select(linacs.c.id).where(linacs.c.active.is_(False))),
            ),
        )
        .values(revoked_at=datetime.now(UTC))
    )


def downgrade() -> None:
    # The revocations stay: a feed that stopped for a deactivated owner must not come back.
    op.drop_column("calendar_feeds", "last_used_at")
