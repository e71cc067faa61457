"""Patient self-service pages reached through a secret link (/p/<token>), and the staff
calendar feeds that share their token handling.

Patients have no account and never sign in: the link's token is their only credential, so every
route resolves it first and answers any failure with one generic page.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    # Imported here so that importing the package builds nothing (the app factory decides).
    from web import feeds
    from web.patient import views

    views.init_app(app)
    feeds.init_app(app)
