"""Shared pieces of the staff pages: role checks and the navigation.

Pages are server-rendered with little JavaScript: every form posts back, every state change
carries the session's CSRF token, and every route says which role it needs (viewer reads,
scheduler books and moves, admin manages).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, abort, flash, redirect, request, url_for
from flask_login import current_user

from scheduler.models import Role
from web.auth import session_user

F = TypeVar("F", bound=Callable[..., Any])

# Higher roles can do everything lower ones can.
ROLE_RANK = {Role.VIEWER: 0, Role.SCHEDULER: 1, Role.ADMIN: 2}

# (endpoint, label, minimum role); a page that does not exist yet is left out of the menu.
NAVIGATION = [
    ("calendar.week", "Calendar", Role.VIEWER),
    ("patients.index", "Patients", Role.VIEWER),
    ("downtime.index", "Downtime", Role.SCHEDULER),
    ("messages.messages", "Messages", Role.VIEWER),
    ("messages.inbox", "Inbox", Role.SCHEDULER),
    ("admin.index", "Admin", Role.ADMIN),
]


def has_role(role: str) -> bool:
    user = session_user()
    return user is not None and ROLE_RANK[Role(user.role)] >= ROLE_RANK[Role(role)]


def role_required(role: str) -> Callable[[F], F]:
    """Sign-in required (redirect to the login page), then at least ``role`` (else 403).

    The CSRF token of a POST is checked before this, for every route (web/csrf.py).
    """

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            if not has_role(role):
                abort(403)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def done(message: str, endpoint: str, **values: Any) -> Any:
    """Say what changed, then show the page that shows it (post/redirect/get)."""
    flash(message, "success")
    return redirect(url_for(endpoint, **values))


def _navigation() -> list[tuple[str, str, bool]]:
    items = []
    for endpoint, label, role in NAVIGATION:
        try:
            url = url_for(endpoint)
        except Exception:  # noqa: BLE001 - that page is not part of this build
            continue
        if has_role(role):
            items.append((url, label, request.path.startswith(url)))
    return items


def init_app(app: Flask) -> None:
    @app.context_processor
    def _shared() -> dict[str, Any]:
        return {"navigation": _navigation, "current_staff": session_user, "has_role": has_role}
