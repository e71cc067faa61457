"""Security headers on every response, and throttling of password guessing."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
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

# Failed sign-ins allowed per account and per address within the window.
MAX_FAILURES_PER_ACCOUNT = 5
MAX_FAILURES_PER_ADDRESS = 20
THROTTLE_WINDOW = timedelta(minutes=15)


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


def sign_in_throttled(session: Session, email: str, remote_addr: str | None) -> bool:
    """Too many recent failures for this account or from this address."""
    since = datetime.now(UTC) - THROTTLE_WINDOW
    failures = sa.select(sa.func.count()).where(
        LoginAttempt.succeeded.is_(False), LoginAttempt.at >= since
    )
    by_account = session.scalar(failures.where(LoginAttempt.email_digest == _digest(email)))
    by_address = session.scalar(failures.where(LoginAttempt.remote_addr == remote_addr))
    return by_account >= MAX_FAILURES_PER_ACCOUNT or by_address >= MAX_FAILURES_PER_ADDRESS


def record_sign_in(session: Session, email: str, remote_addr: str | None, succeeded: bool) -> None:
    session.add(
        LoginAttempt(email_digest=_digest(email), remote_addr=remote_addr, succeeded=succeeded)
    )
    session.commit()


def init_app(app: Flask) -> None:
    app.after_request(_secure_headers)
