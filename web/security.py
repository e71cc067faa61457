"""Security headers on every response, and the record of sign-in attempts."""

from __future__ import annotations

import hashlib

from flask import Flask, Response, request
from sqlalchemy.orm import Session

from scheduler.models import LoginAttempt

# Only our own scripts, styles and images; nothing may frame the app or post elsewhere.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Links carry tokens in their path: never leak them to another site.
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _secure_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if not request.path.startswith("/static/"):
        # Pages may show patient data: browsers and proxies must not keep copies.
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _digest(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def record_sign_in(session: Session, email: str, remote_addr: str | None, succeeded: bool) -> None:
    """Keep a record of one checked sign-in (the throttle counts in scheduler.sign_in_throttle)."""
    session.add(
        LoginAttempt(email_digest=_digest(email), remote_addr=remote_addr, succeeded=succeeded)
    )
    session.commit()


def init_app(app: Flask) -> None:
    app.after_request(_secure_headers)
