"""The Flask application: JSON API, staff sign-in pages and operational endpoints.

Nothing is built at import time; ``create_app`` builds everything from Settings, so tests and
the CLI can run several differently configured apps in one process.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

import bootstrap
from config import Settings, load_settings

SETTINGS_KEY = "sbrt.settings"


def create_app(settings: Settings | None = None) -> Flask:
    from web import (
        api,
        auth,
        cli,
        csrf,
        db,
        errors,
        health,
        input_guard,
        messages,
        patient,
        ratelimit,
        security,
        ui,
        views,
        webhooks,
    )

    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        REMEMBER_COOKIE_SECURE=settings.session_cookie_secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        # Bodies are small JSON documents; refuse anything large before parsing it.
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    app.extensions[SETTINGS_KEY] = settings
    if settings.trusted_proxies:
        # Behind a TLS-terminating proxy the connection's address is the proxy's: without this,
        # every patient would share one rate limit and every user one sign-in throttle.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )
    db.init_app(app, bootstrap.session_factory(settings))
    errors.init_app(app)
    input_guard.init_app(app)  # before any route: it sets the converter ids are read with
    # Before CSRF: a flood is refused as such before its forms are looked at.
    ratelimit.init_app(app, settings)
    csrf.init_app(app)
    auth.init_app(app)
    ui.init_app(app)
    security.init_app(app)
    api.init_app(app)
    webhooks.init_app(app)
    messages.init_app(app)
    views.init_app(app)
    patient.init_app(app)  # patient link pages and calendar feeds
    cli.init_app(app)
    health.init_app(app)  # /healthz, /readyz and the staff pages' stalled-reminders banner
    return app
