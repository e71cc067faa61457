"""The JSON API under /api/v1 and its OpenAPI description under /api."""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import IntegerConverter


def load_operations() -> None:
    """Import every module that declares operations: importing one registers them with
    ``routes``. Tests that sweep over all operations call this too, so none is missed."""
    from web.api import (  # noqa: F401
        admin,
        booking,
        messages,
        pathway,
        patient_links,
        reference,
    )


def init_app(app: Flask) -> None:
    from web import csrf
    from web.api import openapi
    from web.api.registry import ID_CONVERTER, routes

    load_operations()

    app.url_map.converters[ID_CONVERTER] = IntegerConverter
    api = routes.blueprint()
    # Exempt from the app-wide CSRF check: a bearer token is not sent by browsers on their
    # own, so a forged cross-site request cannot carry one; a call made with the session
    # cookie instead must send the CSRF header, checked in web/api/security.py so that it is
    # refused as problem+json (403) like every other API error.
    csrf.exempt(app, api)
    app.register_blueprint(api)
    app.register_blueprint(openapi.blueprint(routes))
