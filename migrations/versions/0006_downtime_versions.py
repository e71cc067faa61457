"""downtime version and last change, so calendar feeds update an edited downtime

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 14:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("downtimes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("updated_by_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_downtimes_updated_by_id_users"), "users", ["updated_by_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("downtimes", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_downtimes_updated_by_id_users"), type_="foreignkey")
        batch_op.drop_column("updated_by_id")
        batch_op.drop_column("updated_at")
        batch_op.drop_column("version")
