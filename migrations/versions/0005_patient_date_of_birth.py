"""patient date of birth

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 14:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: patients registered before the date of birth was asked for have none, and
    # inventing one would be worse than showing that it is missing.
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("date_of_birth", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_column("date_of_birth")
