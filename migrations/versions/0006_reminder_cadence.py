"""reminder cadence per department and protocol; the "prep" kind becomes "day_before"

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-05 14:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The offsets every protocol had before departments held a cadence of their own.
OLD_DAY_BEFORE_DEFAULT = 24 * 60
OLD_SAME_DAY_DEFAULT = 120


def upgrade() -> None:
    with op.batch_alter_table("departments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("day_before_reminder", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(
            sa.Column(
                "day_before_reminder_minutes",
                sa.Integer(),
                nullable=False,
                server_default=str(OLD_DAY_BEFORE_DEFAULT),
            )
        )
        batch_op.add_column(
            sa.Column("same_day_reminder", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(
            sa.Column(
                "same_day_reminder_minutes",
                sa.Integer(),
                nullable=False,
                server_default=str(OLD_SAME_DAY_DEFAULT),
            )
        )

    with op.batch_alter_table("protocols", schema=None) as batch_op:
        batch_op.alter_column(
            "prep_reminder_minutes",
            new_column_name="day_before_reminder_minutes",
            existing_type=sa.Integer(),
            nullable=True,
            server_default=None,
        )
        batch_op.alter_column(
            "same_day_reminder_minutes",
            existing_type=sa.Integer(),
            nullable=True,
            server_default=None,
        )
        batch_op.add_column(sa.Column("day_before_reminder", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("same_day_reminder", sa.Boolean(), nullable=True))

    # A protocol offset equal to the old default was never a choice: it now follows its
    # department (whose defaults are the same values), so editing the department applies.
    op.execute(
        "UPDATE protocols SET day_before_reminder_minutes = NULL "
        f"WHERE day_before_reminder_minutes = {OLD_DAY_BEFORE_DEFAULT}"
    )
    op.execute(
        "UPDATE protocols SET same_day_reminder_minutes = NULL "
        f"WHERE same_day_reminder_minutes = {OLD_SAME_DAY_DEFAULT}"
    )

    # Offsets outside today's ranges (scheduler.records) are brought to their edge; the policy
    # keeps a day-before reminder on the day before, so the reminders go out as they did.
    op.execute(
        "UPDATE protocols SET day_before_reminder_minutes = 360 "
        "WHERE day_before_reminder_minutes < 360"
    )
    op.execute(
        "UPDATE protocols SET day_before_reminder_minutes = 2880 "
        "WHERE day_before_reminder_minutes > 2880"
    )

    # The message kind is named for what it is. Outbox rows keep their identity: the dedupe key
    # names the kind, so it is renamed with it and a re-plan still finds the row.
    op.execute(
        "UPDATE reminders SET kind = 'day_before', "
        "dedupe_key = REPLACE(dedupe_key, ':prep:', ':day_before:') WHERE kind = 'prep'"
    )
    op.execute("UPDATE message_templates SET kind = 'day_before' WHERE kind = 'prep'")


def downgrade() -> None:
    op.execute("UPDATE message_templates SET kind = 'prep' WHERE kind = 'day_before'")
    op.execute(
        "UPDATE reminders SET kind = 'prep', "
        "dedupe_key = REPLACE(dedupe_key, ':day_before:', ':prep:') WHERE kind = 'day_before'"
    )
    op.execute(
        "UPDATE protocols SET day_before_reminder_minutes = "
        f"COALESCE(day_before_reminder_minutes, {OLD_DAY_BEFORE_DEFAULT}), "
        f"same_day_reminder_minutes = COALESCE(same_day_reminder_minutes, {OLD_SAME_DAY_DEFAULT})"
    )
    with op.batch_alter_table("protocols", schema=None) as batch_op:
        batch_op.drop_column("same_day_reminder")
        batch_op.drop_column("day_before_reminder")
        batch_op.alter_column(
            "same_day_reminder_minutes",
            existing_type=sa.Integer(),
            nullable=False,
            server_default=str(OLD_SAME_DAY_DEFAULT),
        )
        batch_op.alter_column(
            "day_before_reminder_minutes",
            new_column_name="prep_reminder_minutes",
            existing_type=sa.Integer(),
            nullable=False,
            server_default=str(OLD_DAY_BEFORE_DEFAULT),
        )

    with op.batch_alter_table("departments", schema=None) as batch_op:
        batch_op.drop_column("same_day_reminder_minutes")
        batch_op.drop_column("same_day_reminder")
        batch_op.drop_column("day_before_reminder_minutes")
        batch_op.drop_column("day_before_reminder")
