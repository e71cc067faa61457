"""mask the patient-link tokens in the stored copies of sent messages

Messages kept on their reminder row held the patient's working link; from now on only the
message handed to the provider does. The tokens already stored are masked here, as the
sender now masks them, so the message pages and a copy of the database hold no working
link (the links themselves stay valid for the patients who received them).

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-05 17:30:00.000000
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same shape and mask as scheduler.links (copied: a migration must not change when the
# application code does).
_LINK = re.compile(r"/p/[A-Za-z0-9]{16}(?![A-Za-z0-9])")
_MASKED = "/p/••••"
_BATCH = 500

_reminders = sa.table(
    "reminders",
    sa.column("id", sa.Integer),
    sa.column("rendered_subject", sa.Text),
    sa.column("rendered_body", sa.Text),
)


def _mask(text: str | None) -> str | None:
    return None if text is None else _LINK.sub(_MASKED, text)


def upgrade() -> None:
    bind = op.get_bind()
    last_id = 0
    while True:
        rows = bind.execute(
            sa.select(_reminders.c.id, _reminders.c.rendered_subject, _reminders.c.rendered_body)
            .where(
                _reminders.c.id > last_id,
                sa.or_(
                    _reminders.c.rendered_body.like("%/p/%"),
                    _reminders.c.rendered_subject.like("%/p/%"),
                ),
            )
            .order_by(_reminders.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        for reminder_id, subject, body in rows:
            masked = {"rendered_subject": _mask(subject), "rendered_body": _mask(body)}
            if masked != {"rendered_subject": subject, "rendered_body": body}:
                bind.execute(
                    sa.update(_reminders).where(_reminders.c.id == reminder_id).values(**masked)
                )
        last_id = rows[-1][0]


def downgrade() -> None:
    # The tokens are gone for good: that is the point. Nothing to undo.
    pass
