"""The audit log: who viewed or changed which patient record, and when.

Called by every page that shows or changes a patient, a course or a fraction, and centrally for
every API operation (see ``web.api.registry``). The entry names the record by type and id only
and the front door the action came through ("web" or "api"); no personal data (names, phone
numbers, message text) is copied into it.

``record`` only adds the entry to the request's session: it is written in the transaction of the
action it describes, so the change and its entry are stored together or not at all. Pages that
only read patient data open a ``transaction()`` for their "view" entry too.
"""

from __future__ import annotations

from typing import Any

from flask import request

from scheduler.models import AuditEntry
from web.db import get_session

WEB = "web"
API = "api"


def front_door() -> str:
    """Which way the action came in: the JSON API or the staff pages."""
    return API if request.blueprint == "api" else WEB


def record(
    action: str,
    subject_type: str,
    subject_id: int | None,
    *,
    actor_id: int | None,
    **detail: Any,
) -> None:
    """Add one entry (``action`` is e.g. "view", "create", "update", "book", "move") to the
    current transaction; the caller's unit of work commits it with the action."""
    session = get_session()
    session.add(
        AuditEntry(
            actor_id=actor_id,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            detail={
                "path": request.path,
                "method": request.method,
                "via": front_door(),
                **detail,
            },
        )
    )
