"""Staff sign-in with a session cookie and CSRF tokens.

Pages are rendered server-side without JavaScript. Every state-changing form carries the
session's CSRF token; web/csrf.py checks it before any view runs.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    redirect,
    render_template,
    render_template_string,
    request,
    session,
    url_for,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from markupsafe import Markup

from config import Settings
from scheduler import access, accounts, sign_in_throttle
from scheduler.errors import InvalidInput
from scheduler.models import User
from web import SETTINGS_KEY, audit, security
from web.db import get_session, transaction

# What the session cookie records of its sign-in, so the server can refuse a copy of it:
# the user's session epoch then, when it was signed in and when it was last used (Unix seconds).
EPOCH_SESSION_KEY = "session_epoch"
SIGNED_IN_SESSION_KEY = "signed_in_at"
SEEN_SESSION_KEY = "seen_at"
# Recording every request would re-send the cookie each time; a minute is precise enough for
# an idle timeout counted in minutes.
SEEN_RESOLUTION_SECONDS = 60

bp = Blueprint("auth", __name__)


class SessionUser(UserMixin):
    """Flask-Login's view of a signed-in staff user."""

    def __init__(self, user: User) -> None:
        self.user = user
        self.id = user.id


def _load_user(user_id: str) -> SessionUser | None:
    if not user_id.isdigit():
        return None
    user = get_session().get(User, int(user_id))
    # A deactivated user's existing sessions stop working at their next request.
    if user is None or not user.active or not _session_still_valid(user):
        # Forget the refused sign-in (and its CSRF token) so the cookie is not tried again.
        session.clear()
        return None
    # Every page, and every API call made with the cookie, sees only the user's departments.
    access.restrict_session(get_session(), user)
    return SessionUser(user)


def _now_seconds() -> float:
    return datetime.now(UTC).timestamp()


def _session_still_valid(user: User) -> bool:
    """Whether this request's session was signed in under the user's current epoch and has
    been neither idle too long nor alive longer than allowed; records its use if so."""
    settings: Settings = current_app.extensions[SETTINGS_KEY]
    epoch = session.get(EPOCH_SESSION_KEY)
    signed_in_at = session.get(SIGNED_IN_SESSION_KEY)
    seen_at = session.get(SEEN_SESSION_KEY)
    # A session without these (signed before they existed, or built from a remember-me
    # cookie) cannot be checked, so it is refused.
    if not isinstance(epoch, int) or epoch != user.session_epoch:
        return False
    if not isinstance(signed_in_at, int | float) or not isinstance(seen_at, int | float):
        return False
    now = _now_seconds()
    if now - signed_in_at > settings.session_max_hours * 3600:
        return False
    if now - seen_at > settings.session_idle_minutes * 60:
        return False
    if now - seen_at >= SEEN_RESOLUTION_SECONDS:
        session[SEEN_SESSION_KEY] = int(now)
    return True


def _stamp_session(user: User) -> None:
    now = int(_now_seconds())
    session[EPOCH_SESSION_KEY] = user.session_epoch
    session[SIGNED_IN_SESSION_KEY] = now
    session[SEEN_SESSION_KEY] = now


def keep_own_session(user: User) -> None:
    """Keep this request's session after the user ended all of theirs (e.g. by changing
    their own password): every other copy stays ended, this one follows the new epoch."""
    signed_in = session_user()
    if signed_in is not None and signed_in.id == user.id:
        session[EPOCH_SESSION_KEY] = user.session_epoch


def session_user() -> User | None:
    """The staff user signed in with the session cookie, if any."""
    return current_user.user if current_user.is_authenticated else None


def session_user_id() -> int | None:
    """The signed-in staff user's id, as the actor of what a page records; None without one."""
    user = session_user()
    return user.id if user is not None else None


def _safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect after sign-in would be a phishing aid.

    Browsers read a backslash as a slash (``/\\evil.example`` is another site) and drop tabs and
    line breaks inside a URL, and a CR/LF cannot go into the Location header at all, so any of
    them, or anything else not printable, sends the user to the start page instead.
    """
    if not target:
        return url_for("worklist.index")
    if "\\" in target or not target.isprintable():
        return url_for("worklist.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("worklist.index")
    return target


def render_page(title: str, body: str, *, error: str | None = None, status: int = 200, **ctx: Any):
    """A page from an inline body template inside the shared layout (for small pages)."""
    # The inner template was rendered with autoescaping on, so its output is safe markup.
    inner = Markup(render_template_string(body, **ctx))
    return render_template("simple.html", title=title, body=inner, error=error), status


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = _safe_next(request.values.get("next"))

    def form(error: str | None = None, status: int = 200, email: str = ""):
        page = render_template("login.html", next_url=next_url, email=email, error=error)
        return page, status

    if request.method == "GET":
        return form()
    email = request.form.get("email", "")
    db = get_session()
    address = request.remote_addr
    # The slot is taken before the password is checked, so parallel guesses cannot pass the
    # limit; an unknown account is counted and refused exactly like a known one.
    verdict = sign_in_throttle.begin_attempt(db, email, address, now=datetime.now(UTC))
    if not verdict.allowed:
        message = _too_many_attempts_message(verdict.retry_after)
        return _too_many_attempts(form(message, 429, email), verdict)
    user = accounts.authenticate(db, email, request.form.get("password", ""))
    security.record_sign_in(db, email, address, user is not None)
    if user is None:
        if verdict.delay_started is None:
            return form("Email or password is wrong.", 401, email)
        # No account is named: the log must not tell which emails are staff accounts. Its
        # own unit of work, since the refusal below answers 401 (which rolls a page back).
        with transaction():
            audit.record(
                "delay",
                "sign_in",
                None,
                actor_id=None,
                minutes=math.ceil(verdict.delay_started / timedelta(minutes=1)),
            )
        # Said now rather than at the next try, so nobody types a right password in vain.
        message = f"Email or password is wrong. {_too_many_attempts_message(verdict.delay_started)}"
        return form(message, 401, email)
    sign_in_throttle.attempt_succeeded(db, email, address)
    # A fresh session (and CSRF token) at sign-in, so a planted cookie cannot be adopted.
    session.clear()
    login_user(SessionUser(user))
    _stamp_session(user)
    return redirect(next_url)


def _too_many_attempts_message(wait: timedelta) -> str:
    minutes = max(1, math.ceil(wait / timedelta(minutes=1)))
    return f"Too many attempts; try again in {minutes} minute{'s' if minutes != 1 else ''}."


def _too_many_attempts(page: tuple[str, int], verdict: sign_in_throttle.AttemptVerdict):
    body, status = page
    return body, status, {"Retry-After": str(math.ceil(verdict.retry_after.total_seconds()))}


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    if request.method == "GET":
        # Signing out is a state change, so it is a POST with a CSRF token, not a link.
        return render_template("signout.html")
    user = session_user()
    if user is not None:
        # Ended on the server, not only forgotten by this browser: a copy of the cookie
        # (and every other session of the user) stops working too.
        audit.record("sign_out", "user", user.id, actor_id=user.id)
        accounts.end_sessions(get_session(), user.id)
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
def change_password():
    user = session_user()
    if user is None:
        return redirect(url_for("auth.login", next=request.path))

    def form(errors: dict[str, list[str]] | None = None, status: int = 200):
        page = render_template(
            "account_password.html", title="Change your password", errors=errors or {}
        )
        return page, status

    if request.method == "GET":
        return form()
    db = get_session()
    new_password = request.form.get("new_password") or ""
    if new_password != (request.form.get("confirm_password") or ""):
        return form({"confirm_password": ["does not match the new password"]}, 422)
    # Guessing the current password from a copied session is password guessing too: it
    # takes a slot of the sign-in throttle before the password is checked.
    address = request.remote_addr
    verdict = sign_in_throttle.begin_attempt(db, user.email, address, now=datetime.now(UTC))
    if not verdict.allowed:
        return form({"_form": [_too_many_attempts_message(verdict.retry_after)]}, 429)
    try:
        accounts.change_own_password(
            db,
            user.id,
            current_password=request.form.get("current_password") or "",
            new_password=new_password,
        )
    except InvalidInput as exc:
        db.rollback()
        if any(e.field == "current_password" for e in exc.errors):
            security.record_sign_in(db, user.email, address, False)
        else:
            sign_in_throttle.attempt_succeeded(db, user.email, address)
        errors: dict[str, list[str]] = {}
        for error in exc.errors:
            errors.setdefault(error.field, []).append(error.message)
        return form(errors, 422)
    sign_in_throttle.attempt_succeeded(db, user.email, address)
    keep_own_session(user)
    audit.record("update", "user", user.id, actor_id=user.id, password="changed")
    flash("Your password is changed; every other session of yours has ended.", "success")
    return redirect(url_for("worklist.index"))


def init_app(app: Flask) -> None:
    manager = LoginManager()
    manager.user_loader(_load_user)
    manager.login_view = "auth.login"
    manager.init_app(app)
    app.register_blueprint(bp)
