"""The audit log: who viewed or changed which patient record, and when.

Called by every page and API endpoint that shows or changes a patient, a course or a
fraction. The entry names the record by type and id only; no personal data is copied into it.
"""

from __future__ import annotations

from typing import Any

from flask import request

from scheduler.models import AuditEntry
from web.db import get_session


def record(
    action: str,
    subject_type: str,
    subject_id: int | None,
    *,
    actor_id: int | None,
    commit: bool = True,
    **detail: Any,
) -> None:
    """Write one entry (``action`` is e.g. "view", "create", "update", "book", "move")."""
    session = get_session()
    session.add(
        AuditEntry(
            actor_id=actor_id,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            detail={"path": request.path, "method": request.method, **detail},
        )
    )
    if commit:
        session.commit()
