"""Staff sign-in with a session cookie, CSRF tokens, and the small index page.

Pages are rendered server-side without JavaScript. Every state-changing form (and every API
call made with the session cookie rather than a bearer token) must carry the session's CSRF
token, because a browser sends the cookie with requests other sites make it send.
"""

from __future__ import annotations

import hmac
import math
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    redirect,
    render_template,
    render_template_string,
    request,
    session,
    url_for,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from markupsafe import Markup

from scheduler import accounts, sign_in_throttle
from scheduler.errors import Forbidden
from scheduler.models import User
from web import audit, security
from web.db import get_session

CSRF_SESSION_KEY = "csrf_token"
CSRF_FORM_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

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
    return SessionUser(user) if user is not None and user.active else None


def session_user() -> User | None:
    """The staff user signed in with the session cookie, if any."""
    return current_user.user if current_user.is_authenticated else None


def csrf_token() -> str:
    if CSRF_SESSION_KEY not in session:
        session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
    return session[CSRF_SESSION_KEY]


def csrf_valid(value: str | None) -> bool:
    expected = session.get(CSRF_SESSION_KEY)
    return bool(value and expected and hmac.compare_digest(value, expected))


def require_csrf(value: str | None) -> None:
    if not csrf_valid(value):
        raise Forbidden(f"Missing or wrong CSRF token (send the {CSRF_HEADER} header).")


def _safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect after sign-in would be a phishing aid."""
    if not target:
        return url_for("auth.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("auth.index")
    return target


def render_page(title: str, body: str, *, error: str | None = None, status: int = 200, **ctx: Any):
    """A page from an inline body template inside the shared layout (for small pages)."""
    # The inner template was rendered with autoescaping on, so its output is safe markup.
    inner = Markup(render_template_string(body, **ctx))
    return render_template("simple.html", title=title, body=inner, error=error), status


@bp.get("/")
def index():
    return render_template("index.html", title="SBRT scheduler")


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = _safe_next(request.values.get("next"))

    def form(error: str | None = None, status: int = 200, email: str = ""):
        page = render_template("login.html", next_url=next_url, email=email, error=error)
        return page, status

    if request.method == "GET":
        return form()
    email = request.form.get("email", "")
    if not csrf_valid(request.form.get(CSRF_FORM_FIELD)):
        return form("The form expired; please try again.", 400, email)
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
        # No account is named: the log must not tell which emails are staff accounts.
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
    if not csrf_valid(request.form.get(CSRF_FORM_FIELD)):
        return render_template("signout.html", error="The form expired; try again."), 400
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    manager = LoginManager()
    manager.user_loader(_load_user)
    manager.login_view = "auth.login"
    manager.init_app(app)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.register_blueprint(bp)
