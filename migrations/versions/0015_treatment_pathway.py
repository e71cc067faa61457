"""the pathway before treatment: CT simulators, IR rooms and a course's pathway steps

A department's resources other than linacs (CT simulators, interventional radiology rooms)
and the steps booked on them before a course can start (fiducial markers, CT simulation,
planning in working days). On PostgreSQL an exclusion constraint keeps two booked steps
from overlapping on one resource; SQLite gets the same guarantee from serialised writers
plus the use case's overlap check, as fractions do.

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-05 20:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE_STEP = "status = 'booked'"


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("opening_hours", sa.JSON(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
            name=op.f("fk_resources_department_id_departments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resources")),
        sa.UniqueConstraint("department_id", "name", name=op.f("uq_resources_department_id")),
    )
    op.create_index(op.f("ix_resources_department_id"), "resources", ["department_id"])
    op.create_table(
        "pathway_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("resource_id", sa.Integer(), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("working_days", sa.Integer(), nullable=True),
        sa.Column("ready_on", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_pathway_steps_positive_length")),
        sa.ForeignKeyConstraint(
            ["course_id"], ["courses.id"], name=op.f("fk_pathway_steps_course_id_courses")
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["resources.id"],
            name=op.f("fk_pathway_steps_resource_id_resources"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pathway_steps")),
    )
    op.create_index(op.f("ix_pathway_steps_course_id"), "pathway_steps", ["course_id"])
    op.create_index("ix_pathway_steps_resource_time", "pathway_steps", ["resource_id", "starts_at"])
    if op.get_bind().dialect.name == "postgresql":
        # Already there since the fractions' constraints (0001); stated again for a reader.
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE pathway_steps ADD CONSTRAINT ex_pathway_steps_resource_overlap "
            "EXCLUDE USING gist (resource_id WITH =, tstzrange(starts_at, ends_at, '[)') "
            f"WITH &&) WHERE ({ACTIVE_STEP} AND resource_id IS NOT NULL)"
        )


def downgrade() -> None:
    op.drop_index("ix_pathway_steps_resource_time", table_name="pathway_steps")
    op.drop_index(op.f("ix_pathway_steps_course_id"), table_name="pathway_steps")
    op.drop_table("pathway_steps")
    op.drop_index(op.f("ix_resources_department_id"), table_name="resources")
    op.drop_table("resources")
