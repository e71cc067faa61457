"""reminder cadence per department and protocol; the "prep" kind becomes "day_before"

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 14:45:00.000000

Only column additions, renames and drops: SQLite does each in place, whereas a batch copy of
the table would drop a table other rows still refer to (foreign keys are enforced).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The offsets every protocol had before departments held a cadence of their own.
OLD_DAY_BEFORE_DEFAULT = 24 * 60
OLD_SAME_DAY_DEFAULT = 120
# Today's range of a day-before offset (scheduler.records.DAY_BEFORE_MINUTES).
DAY_BEFORE_RANGE = (6 * 60, 48 * 60)


def upgrade() -> None:
    for name, default in (
        ("day_before_reminder", sa.true()),
        ("day_before_reminder_minutes", str(OLD_DAY_BEFORE_DEFAULT)),
        ("same_day_reminder", sa.true()),
        ("same_day_reminder_minutes", str(OLD_SAME_DAY_DEFAULT)),
    ):
        kind = sa.Boolean() if name.endswith("_reminder") else sa.Integer()
        op.add_column("departments", sa.Column(name, kind, nullable=False, server_default=default))

    # A protocol's offset becomes optional (null: as the department). An offset equal to the
    # old default was never a choice, so it follows the department, whose defaults are the
    # same values; one outside today's range is brought to its edge (the policy keeps a
    # day-before reminder on the day before, so the reminders go out as they did).
    lo, hi = DAY_BEFORE_RANGE
    op.add_column("protocols", sa.Column("day_before_reminder_minutes", sa.Integer()))
    op.execute(
        "UPDATE protocols SET day_before_reminder_minutes = CASE "
        f"WHEN prep_reminder_minutes = {OLD_DAY_BEFORE_DEFAULT} THEN NULL "
        f"WHEN prep_reminder_minutes < {lo} THEN {lo} "
        f"WHEN prep_reminder_minutes > {hi} THEN {hi} "
        "ELSE prep_reminder_minutes END"
    )
    op.drop_column("protocols", "prep_reminder_minutes")
    op.alter_column(
        "protocols", "same_day_reminder_minutes", new_column_name="old_same_day_minutes"
    )
    op.add_column("protocols", sa.Column("same_day_reminder_minutes", sa.Integer()))
    op.execute(
        "UPDATE protocols SET same_day_reminder_minutes = old_same_day_minutes "
        f"WHERE old_same_day_minutes <> {OLD_SAME_DAY_DEFAULT}"
    )
    op.drop_column("protocols", "old_same_day_minutes")
    op.add_column("protocols", sa.Column("day_before_reminder", sa.Boolean()))
    op.add_column("protocols", sa.Column("same_day_reminder", sa.Boolean()))

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

    op.drop_column("protocols", "same_day_reminder")
    op.drop_column("protocols", "day_before_reminder")
    op.alter_column(
        "protocols", "same_day_reminder_minutes", new_column_name="new_same_day_minutes"
    )
    op.add_column(
        "protocols",
        sa.Column(
            "same_day_reminder_minutes",
            sa.Integer(),
            nullable=False,
            server_default=str(OLD_SAME_DAY_DEFAULT),
        ),
    )
    op.execute(
        "UPDATE protocols SET same_day_reminder_minutes = new_same_day_minutes "
        "WHERE new_same_day_minutes IS NOT NULL"
    )
    op.drop_column("protocols", "new_same_day_minutes")
    op.add_column(
        "protocols",
        sa.Column(
            "prep_reminder_minutes",
            sa.Integer(),
            nullable=False,
            server_default=str(OLD_DAY_BEFORE_DEFAULT),
        ),
    )
    op.execute(
        "UPDATE protocols SET prep_reminder_minutes = day_before_reminder_minutes "
        "WHERE day_before_reminder_minutes IS NOT NULL"
    )
    op.drop_column("protocols", "day_before_reminder_minutes")

    for name in (
        "same_day_reminder_minutes",
        "same_day_reminder",
        "day_before_reminder_minutes",
        "day_before_reminder",
    ):
        op.drop_column("departments", name)
