"""course repair: missed reasons, prescription changes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("courses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prescribed_fractions", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("prescription_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("fractions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("missed_reason", sa.String(length=20), nullable=True))
    # Missed fractions recorded before reasons existed were all recorded as not attended.
    op.execute(
        "UPDATE fractions SET missed_reason = 'did_not_attend' "
        "WHERE status = 'missed' AND missed_reason IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("fractions", schema=None) as batch_op:
        batch_op.drop_column("missed_reason")
    with op.batch_alter_table("courses", schema=None) as batch_op:
        batch_op.drop_column("prescription_reason")
        batch_op.drop_column("prescribed_fractions")
