"""CSRF protection for every state-changing request, by Flask-WTF's CSRFProtect.

A browser sends the session cookie with requests that other sites make it send, so every
POST, PUT, PATCH and DELETE must carry the session's CSRF token: the ``csrf_token`` form field
(templates call ``csrf_token()``) or the ``X-CSRF-Token`` header. The check runs before any
view, so a new route is covered without doing anything. Two groups of routes opt out, each
where it is registered and for a reason given there: the JSON API (web/api, which checks the
header itself for calls made with the cookie instead of a bearer token) and the Twilio
webhooks (web/webhooks.py, authenticated by Twilio's signature and never by the cookie).
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, make_response, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect, validate_csrf
from wtforms import ValidationError

from scheduler.errors import Forbidden

CSRF_FORM_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

# The patient page speaks to patients, in their two languages, never in staff terms.
PATIENT_FORM_EXPIRED = (
    ("en", "This page has expired. Please open the link in your message again."),
    ("es", "Esta página ha caducado. Vuelva a abrir el enlace de su mensaje."),
)


def exempt(app: Flask, blueprint: Blueprint) -> None:
    """Leave ``blueprint``'s routes out of the app-wide check (say why where it is called)."""
    app.extensions["csrf"].exempt(blueprint)


def require_csrf_header() -> None:
    """For API calls made with the session cookie: the same token, sent as a header."""
    try:
        validate_csrf(request.headers.get(CSRF_HEADER))
    except ValidationError as exc:
        raise Forbidden(f"Missing or wrong CSRF token (send the {CSRF_HEADER} header).") from exc


def _refused(exc: CSRFError) -> Response:
    if request.path.startswith("/p/"):
        body = render_template("patient/message.html", lines=PATIENT_FORM_EXPIRED)
        return make_response(body, 400)
    body = render_template("form_expired.html", title="The form expired")
    return make_response(body, 400)


def init_app(app: Flask) -> None:
    # The token lives in the session and is renewed at sign-in; the session itself ends on the
    # server (idle timeout, absolute lifetime, sign-out), so a second clock on the token would
    # only refuse forms left open for a while inside a valid session.
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    # Over https Flask-WTF also wants a same-origin Referer by default, but every response
    # asks browsers to send none (Referrer-Policy: no-referrer, since patient links carry a
    # token in their path); SameSite=Lax cookies and the token do the work instead.
    app.config.setdefault("WTF_CSRF_SSL_STRICT", False)
    # One instance per app: the tests build many apps, each with its own blueprints to exempt.
    CSRFProtect(app)
    app.register_error_handler(CSRFError, _refused)
