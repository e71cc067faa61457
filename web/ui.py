"""Shared pieces of the staff pages: role checks and the navigation.

Pages are server-rendered with little JavaScript: every form posts back, every state change
carries the session's CSRF token, and every route says which role it needs (viewer reads,
scheduler books and moves, admin manages).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, abort, flash, g, redirect, request, url_for
from flask_login import current_user
from sqlalchemy.exc import SQLAlchemyError

from scheduler import worklist
from scheduler.models import Role
from web.auth import session_user
from web.db import get_session

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

# Higher roles can do everything lower ones can.
ROLE_RANK = {Role.VIEWER: 0, Role.SCHEDULER: 1, Role.ADMIN: 2}

# (endpoint, label, minimum role); a page that does not exist yet is left out of the menu.
NAVIGATION = [
    ("worklist.index", "Today", Role.VIEWER),
    ("calendar.week", "Calendar", Role.VIEWER),
    ("patients.index", "Patients", Role.VIEWER),
    ("downtime.index", "Downtime", Role.SCHEDULER),
    ("messages.messages", "Messages", Role.VIEWER),
    ("messages.inbox", "Inbox", Role.SCHEDULER),
    ("admin.index", "Admin", Role.ADMIN),
    ("openapi.docs", "API docs", Role.ADMIN),
]
# What waits behind a menu item, counted for the user's departments: the field of
# scheduler.worklist.AttentionCounts and how a screen reader says it.
NAVIGATION_COUNTS = {
    "downtime.index": ("courses", "courses to review"),
    "messages.messages": ("failed", "failed messages"),
    "messages.inbox": ("replies", "unread replies"),
}


@dataclass(frozen=True)
class NavItem:
    url: str
    label: str
    active: bool
    count: int = 0  # shown when above zero
    count_words: str = ""


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


def _is_current(url: str) -> bool:
    # Every path starts with the home page's "/": it is current only when it is the page.
    return request.path == url if url == "/" else request.path.startswith(url)


def _counts(endpoints: set[str]) -> worklist.AttentionCounts:
    """The counts of the menu items this user sees, queried once per request."""
    if "nav_counts" not in g:
        wanted = {NAVIGATION_COUNTS[e][0] for e in endpoints if e in NAVIGATION_COUNTS}
        try:
            g.nav_counts = worklist.attention_counts(
                get_session(),
                courses="courses" in wanted,
                failed="failed" in wanted,
                replies="replies" in wanted,
            )
        except SQLAlchemyError as exc:
            # An error page after a database failure still shows its menu, without counts.
            log.warning("the menu's counts could not be read: %s", type(exc).__name__)
            g.nav_counts = worklist.AttentionCounts(None, None, None)
    return g.nav_counts


def _navigation() -> list[NavItem]:
    shown: list[tuple[str, str, str]] = []
    for endpoint, label, role in NAVIGATION:
        try:
            url = url_for(endpoint)
        except Exception:  # noqa: BLE001 - that page is not part of this build
            continue
        if has_role(role):
            shown.append((endpoint, url, label))
    counts = _counts({endpoint for endpoint, _, _ in shown}) if shown else None
    items = []
    for endpoint, url, label in shown:
        field, words = NAVIGATION_COUNTS.get(endpoint, ("", ""))
        count = (getattr(counts, field, None) or 0) if field else 0
        items.append(NavItem(url, label, _is_current(url), count, words))
    return items


def init_app(app: Flask) -> None:
    @app.context_processor
    def _shared() -> dict[str, Any]:
        return {"navigation": _navigation, "current_staff": session_user, "has_role": has_role}
