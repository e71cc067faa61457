"""Per-address rate limits, counted by Flask-Limiter.

The patient link pages and the calendar feeds each have one limit per client address, shared by
every URL under them. They are not what stops guessing (link and feed tokens are long secrets);
they keep one client from hammering the lookup and the database.

Where the counts live (RATE_LIMIT_STORAGE_URI): with Redis (by default the broker's, when the
broker is Redis) every web process counts in one place, so the limit is the limit. On the
embedded default (``memory://``) each process counts in its own memory: exact for the single
web process of `make run`, N times too lenient with N processes, and forgotten at a restart;
that is acceptable there and not worth a Redis server for. Should Redis be unreachable the
request is let through (and the error logged): a patient opening their schedule matters more
than the limit.

The address is the client's as the app sees it: behind a reverse proxy TRUSTED_PROXIES makes it
the address the proxy reports rather than the proxy's own. (Sign-in guessing is throttled
separately, per account and address, in scheduler/sign_in_throttle.py.)
"""

from __future__ import annotations

import math
import time

from flask import Blueprint, Flask, Response, current_app, make_response, render_template, request
from flask_limiter import Limiter, RateLimitExceeded

from config import Settings
from web.errors import problem, wants_problem_json

LIMITER_KEY = "sbrt.limiter"
# A limit check must never hold a request for long: give up on Redis quickly.
REDIS_TIMEOUT_SECONDS = 0.5
# Keys of this product in a Redis it may share with the broker.
KEY_PREFIX = "sbrt-ratelimit"


def _client_address() -> str:
    return request.remote_addr or "unknown"


def limit_blueprint(app: Flask, blueprint: Blueprint, per_minute: int) -> None:
    """One count per address for every route of ``blueprint``, at most ``per_minute``."""
    limiter: Limiter = app.extensions[LIMITER_KEY]
    limiter.shared_limit(f"{per_minute}/minute", scope=blueprint.name)(blueprint)


def _retry_after(limiter: Limiter) -> int:
    current = limiter.current_limit
    if current is None:
        return 60
    # reset_at is rounded up to a whole second; never ask for more than one window.
    window = current.limit.get_expiry()
    return max(1, min(window, math.ceil(current.reset_at - time.time())))


def _too_many(exc: RateLimitExceeded) -> Response:
    headers = {"Retry-After": str(_retry_after(current_app.extensions[LIMITER_KEY]))}
    if wants_problem_json():
        return problem(
            429,
            "Too many requests",
            "Too many requests from this address; wait before trying again.",
            headers=headers,
        )
    if request.path.startswith("/p/"):
        from web.patient.text import TOO_MANY_REQUESTS

        body = render_template("patient/message.html", lines=TOO_MANY_REQUESTS)
        response = make_response(body, 429)
    elif request.path.startswith("/feeds/"):
        # Calendar apps show a plain body, if anything.
        response = Response("Too many requests.\n", status=429, mimetype="text/plain")
    else:
        response = make_response(render_template("too_many_requests.html"), 429)
    response.headers.update(headers)
    return response


def init_app(app: Flask, settings: Settings) -> None:
    uri = settings.rate_limit_storage_uri
    options: dict[str, str | int] = {}
    if uri.split(":", 1)[0] in ("redis", "rediss"):
        options = {
            "socket_timeout": REDIS_TIMEOUT_SECONDS,  # type: ignore[dict-item]
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,  # type: ignore[dict-item]
        }
    limiter = Limiter(
        _client_address,
        app=app,
        storage_uri=uri,
        storage_options=options,
        # One counter per address and window (INCR with expiry in Redis): cheap, and letting a
        # client reach twice the limit across a window's edge is fine for a limit that only
        # keeps hammering down.
        strategy="fixed-window",
        swallow_errors=True,
        # Retry-After is set on refusals below; other responses carry no counters.
        headers_enabled=False,
        key_prefix=KEY_PREFIX,
    )
    app.extensions[LIMITER_KEY] = limiter
    app.register_error_handler(RateLimitExceeded, _too_many)
