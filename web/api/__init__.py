"""The JSON API under /api/v1 and its OpenAPI description under /api."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    # Importing the view modules registers their operations with `routes`.
    from web.api import (  # noqa: F401
        admin,
        booking,
        messages,
        openapi,
        patient_links,
        reference,
    )
    from web.api.registry import routes

    app.register_blueprint(routes.blueprint())
    app.register_blueprint(openapi.blueprint(routes))
