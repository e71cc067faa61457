"""`flask create-department`: the first-run bootstrap makes a department as the admin pages do."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from scheduler.models import Department

# The API tests' app on each backend and a database session.
from tests.api.conftest import app, db  # noqa: F401

NAME = "Riverside Radiation Oncology"


def _invoke(app: Flask, *args: str):  # noqa: F811 - fixture imported above
    # `flask` itself runs every command inside an application context; the runner does not.
    with app.app_context():
        return app.test_cli_runner().invoke(args=["create-department", *args])


def test_create_department_stores_it_with_the_default_hours(
    app: Flask,  # noqa: F811
    db: Session,  # noqa: F811
) -> None:
    result = _invoke(
        app,
        *("--name", NAME, "--timezone", "America/Chicago", "--phone", "+13125550100"),
        *("--holiday-country", "us", "--holiday-subdivision", "IL"),
    )
    assert result.exit_code == 0, result.output
    department = db.scalars(sa.select(Department).where(Department.name == NAME)).one()
    assert result.output.strip() == (
        f"Created department {department.id} {NAME!r} (America/Chicago)."
    )
    assert department.timezone == "America/Chicago"
    assert department.holiday_country == "US" and department.holiday_subdivision == "IL"
    assert department.opening_hours["0"] == ["07:00", "19:00"]


def test_create_department_refuses_invalid_values_and_stores_nothing(
    app: Flask,  # noqa: F811
    db: Session,  # noqa: F811
) -> None:
    result = _invoke(app, "--name", NAME, "--timezone", "localtime", "--phone", "12")
    assert result.exit_code == 1
    assert "timezone" in result.output and "phone" in result.output
    assert db.scalar(sa.select(Department.id).where(Department.name == NAME)) is None


def test_create_department_refuses_a_name_already_taken(
    app: Flask,  # noqa: F811
    db: Session,  # noqa: F811
) -> None:
    args = ("--name", NAME, "--timezone", "America/Chicago", "--phone", "+13125550100")
    assert _invoke(app, *args).exit_code == 0
    again = _invoke(app, *args)
    assert again.exit_code == 1
    assert f"A department named {NAME!r} exists" in again.output
    assert db.scalar(sa.select(sa.func.count()).where(Department.name == NAME)) == 1
