"""physicist rosters: who supervises SBRT sessions, and when

A department may keep a roster of the medical physicists present to supervise SBRT sessions:
blocks per weekday and local time with a count, and dated exceptions that replace a day's
blocks. Existing departments keep no roster, so their booking is not limited by it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 20:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("departments") as batch:
        batch.add_column(
            sa.Column(
                "physicist_roster_enabled", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch.add_column(
            sa.Column(
                "physicist_every_fraction", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    op.create_table(
        "physicist_roster_blocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "department_id",
            sa.Integer(),
            sa.ForeignKey(
                "departments.id", name="fk_physicist_roster_blocks_department_id_departments"
            ),
            nullable=False,
        ),
        sa.Column("weekday", sa.Integer(), nullable=False),
        sa.Column("starts", sa.String(5), nullable=False),
        sa.Column("ends", sa.String(5), nullable=False),
        sa.Column("physicists", sa.Integer(), nullable=False),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday_range"),
        sa.CheckConstraint("physicists >= 0", name="physicists_count"),
        sa.PrimaryKeyConstraint("id", name="pk_physicist_roster_blocks"),
    )
    op.create_index(
        "ix_physicist_roster_blocks_department_id", "physicist_roster_blocks", ["department_id"]
    )
    op.create_table(
        "physicist_roster_exceptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "department_id",
            sa.Integer(),
            sa.ForeignKey(
                "departments.id", name="fk_physicist_roster_exceptions_department_id_departments"
            ),
            nullable=False,
        ),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("starts", sa.String(5), nullable=False),
        sa.Column("ends", sa.String(5), nullable=False),
        sa.Column("physicists", sa.Integer(), nullable=False),
        sa.CheckConstraint("physicists >= 0", name="physicists_count"),
        sa.PrimaryKeyConstraint("id", name="pk_physicist_roster_exceptions"),
    )
    op.create_index(
        "ix_physicist_roster_exceptions_department_id",
        "physicist_roster_exceptions",
        ["department_id"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_physicist_roster_exceptions_department_id", table_name="physicist_roster_exceptions"
    )
    op.drop_table("physicist_roster_exceptions")
    op.drop_index("ix_physicist_roster_blocks_department_id", table_name="physicist_roster_blocks")
    op.drop_table("physicist_roster_blocks")
    with op.batch_alter_table("departments") as batch:
        batch.drop_column("physicist_every_fraction")
        batch.drop_column("physicist_roster_enabled")
