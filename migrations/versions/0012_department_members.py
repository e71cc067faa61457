"""staff belong to departments: department_members

Schedulers and viewers now see only the patients, schedules, messages and feeds of the
departments they belong to (admins administer the whole installation). So that nobody loses
access on upgrade, every existing non-admin user becomes a member of every existing
department; admins narrow that afterwards on each user's admin page or through the API.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "department_members",
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "department_id",
            sa.Integer(),
            sa.ForeignKey("departments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    op.create_index("ix_department_members_department_id", "department_members", ["department_id"])
    op.execute(
        "INSERT INTO department_members (user_id, department_id) "
        "SELECT users.id, departments.id FROM users CROSS JOIN departments "
        "WHERE users.role <> 'admin'"
    )


def downgrade() -> None:
    op.drop_index("ix_department_members_department_id", table_name="department_members")
    op.drop_table("department_members")
