"""Who is calling the API: a bearer token, or a signed-in session with its CSRF token."""

from __future__ import annotations

from flask import g, request

from scheduler import accounts
from scheduler.errors import Forbidden, ServiceError
from scheduler.models import User
from web.auth import session_user
from web.csrf import require_csrf_header
from web.db import get_session

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class AuthenticationRequired(ServiceError):
    status = 401
    title = "Authentication required"


def authenticate_request(role: str) -> User:
    """The calling staff user, who must hold ``role``; sets ``g.api_user``."""
    header = request.headers.get("Authorization")
    if header is not None:
        # A request that presents a token is judged by that token alone, never the cookie.
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise AuthenticationRequired("Send 'Authorization: Bearer <token>'.")
        user = accounts.authenticate_token(get_session(), credentials.strip())
        if user is None:
            raise AuthenticationRequired("The bearer token is not valid or was revoked.")
    else:
        user = session_user()
        if user is None:
            raise AuthenticationRequired("Sign in or send a bearer token.")
        if request.method not in SAFE_METHODS:
            require_csrf_header()
    if not accounts.has_role(user, role):
        raise Forbidden(f"This needs the {role} role; you are {user.role}.")
    g.api_user = user
    return user


def current_user_id() -> int:
    """The authenticated caller's id, recorded as the actor of changes."""
    return g.api_user.id
