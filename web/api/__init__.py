"""The JSON API under /api/v1 and its OpenAPI description under /api."""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import IntegerConverter


def init_app(app: Flask) -> None:
    # Importing the view modules registers their operations with `routes`.
    from web.api import admin, booking, openapi, reference  # noqa: F401
    from web.api.registry import ID_CONVERTER, routes

    app.url_map.converters[ID_CONVERTER] = IntegerConverter
    app.register_blueprint(routes.blueprint())
    app.register_blueprint(openapi.blueprint(routes))
