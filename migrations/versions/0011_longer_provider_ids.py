"""room for an email's Message-ID as the provider id of a sent reminder

An email's Message-ID ends with the sender's domain, and a hospital's can be long: at 64
characters the id of a message the mail server had already accepted could not be stored.
320 holds a 32-character local part with any domain (at most 253 characters).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite does not enforce a VARCHAR length, and rebuilding the outbox table there buys
    # nothing: only PostgreSQL needs the wider column.
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "reminders",
            "provider_id",
            type_=sa.String(320),
            existing_type=sa.String(64),
            existing_nullable=True,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "reminders",
            "provider_id",
            type_=sa.String(64),
            existing_type=sa.String(320),
            existing_nullable=True,
        )
