"""Staff pages, one blueprint per area."""

from __future__ import annotations

from flask import Flask

from web.views import (
    admin,
    calendar,
    downtime,
    pathway,
    patient_links,
    patients,
    roster,
    system,
    whatif,
)


def init_app(app: Flask) -> None:
    for module in (
        patients,
        calendar,
        downtime,
        admin,
        patient_links,
        pathway,
        roster,
        system,
        whatif,
    ):
        app.register_blueprint(module.bp)
