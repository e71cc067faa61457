"""Managing which departments a user works in: the admin pages, `flask create-user
--department`, the demo staff, and the upgrade that keeps everyone's access."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, Department, User
from tests.api.conftest import Seed
from tests.committing import records
from tests.pages.conftest import SignIn
from tests.test_migration_reminder_cadence import AT, _alembic, _insert, empty_url  # noqa: F401

NEW_PASSWORD = "plum-orbit-kettle-harbor"


@pytest.fixture
def second_department(db: Session) -> int:
    department = records.create_department(
        db, {"name": "Northside Oncology", "timezone": "America/Chicago"}
    )
    return department.id


def _departments_of(db: Session, email: str) -> list[int]:
    ids = db.scalars(sa.select(User).where(User.email == email)).one().department_ids
    db.rollback()  # on SQLite an open transaction holds the lock the app needs
    return ids


def test_an_admin_creates_a_user_in_chosen_departments(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn, second_department: int
) -> None:
    db.rollback()
    csrf = signed_in(client, "admin")
    page = client.get("/admin/users").get_data(as_text=True)
    assert 'name="department_ids"' in page and "Northside Oncology" in page
    created = client.post(
        "/admin/users",
        data={"csrf_token": csrf, "email": "nurse@example.org", "name": "Nurse", "role": "viewer",
              "password": NEW_PASSWORD, "department_ids": [str(second_department)]},
    )  # fmt: skip
    assert created.status_code == 302, created.get_data(as_text=True)
    assert _departments_of(db, "nurse@example.org") == [second_department]
    listing = client.get("/admin/users").get_data(as_text=True)
    assert "Northside Oncology" in listing


def test_an_admin_changes_a_users_departments_and_it_is_audited(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn, second_department: int
) -> None:
    viewer = db.scalars(sa.select(User).where(User.email == "viewer@example.org")).one()
    viewer_id, name = viewer.id, viewer.name
    db.rollback()
    csrf = signed_in(client, "admin")
    url = f"/admin/users/{viewer_id}"
    page = client.get(url).get_data(as_text=True)
    assert f'value="{seed.department_id}" checked' in page
    form = {"csrf_token": csrf, "name": name, "role": "viewer", "active": "on",
            "departments_shown": "1", "department_ids": [str(second_department)]}  # fmt: skip
    assert client.post(url, data=form).status_code == 302
    assert _departments_of(db, "viewer@example.org") == [second_department]
    entry = db.scalars(
        sa.select(AuditEntry).where(AuditEntry.action == "update").order_by(AuditEntry.id.desc())
    ).first()
    assert entry is not None and entry.subject_id == viewer_id
    assert entry.detail["departments"] == [second_department]
    db.rollback()
    # The same form with no department ticked leaves the user in none.
    del form["department_ids"]
    assert client.post(url, data=form).status_code == 302
    assert _departments_of(db, "viewer@example.org") == []
    db.rollback()
    # A department that does not exist is refused, and nothing changes.
    refused = client.post(url, data={**form, "department_ids": ["999999"]})
    assert refused.status_code == 422
    assert "no department 999999" in refused.get_data(as_text=True)
    assert client.post(url, data={**form, "department_ids": ["x"]}).status_code == 400


def test_create_user_command_takes_departments(
    app: Flask, db: Session, seed: Seed, second_department: int
) -> None:
    with app.app_context():
        result = app.test_cli_runner().invoke(
            args=["create-user", "--email", "ops@example.org", "--name", "Ops", "--role",
                  "viewer", "--password", NEW_PASSWORD, "--department", "Northside Oncology",
                  "--department", str(seed.department_id)],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Northside Oncology" in result.output
    assert _departments_of(db, "ops@example.org") == sorted([seed.department_id, second_department])
    db.rollback()
    with app.app_context():
        unknown = app.test_cli_runner().invoke(
            args=["create-user", "--email", "x@example.org", "--name", "X", "--password",
                  NEW_PASSWORD, "--department", "Nowhere"],
        )  # fmt: skip
    assert unknown.exit_code == 1 and "Nowhere" in unknown.output
    assert db.scalar(sa.select(User.id).where(User.email == "x@example.org")) is None


def test_the_demo_staff_work_in_the_demo_department(app: Flask, db: Session) -> None:
    with app.app_context():
        result = app.test_cli_runner().invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    demo = db.scalars(sa.select(Department)).one()
    staff = db.scalars(sa.select(User).order_by(User.id)).all()
    assert [user.department_ids for user in staff] == [[demo.id]] * len(staff)


def test_api_users_carry_their_departments(
    client: FlaskClient, seed: Seed, second_department: int
) -> None:
    created = client.post(
        "/api/v1/users",
        json={"email": "api@example.org", "name": "Api", "role": "scheduler",
              "department_ids": [second_department]},
        headers=seed.auth("admin"),
    )  # fmt: skip
    assert created.status_code == 201, created.json
    assert created.json["department_ids"] == [second_department]
    me = client.get("/api/v1/me", headers=seed.auth("viewer"))
    assert me.json["department_ids"] == [seed.department_id]
    unknown = client.post(
        "/api/v1/users",
        json={"email": "api2@example.org", "name": "Api", "role": "scheduler",
              "department_ids": [999999]},
        headers=seed.auth("admin"),
    )  # fmt: skip
    assert unknown.status_code == 422
    # The refused user was not created.
    assert "api2@example.org" not in client.get("/api/v1/users", headers=seed.auth()).text


def test_upgrade_keeps_every_non_admin_users_access(empty_url: str) -> None:  # noqa: F811
    cfg = _alembic(empty_url)
    command.upgrade(cfg, "0011")
    engine = sa.create_engine(empty_url)
    try:
        with engine.begin() as conn:
            departments = [
                _insert(conn, "departments", name=name, timezone="UTC", opening_hours={},
                        created_at=AT)
                for name in ("One", "Two")
            ]  # fmt: skip
            users = {
                role: _insert(conn, "users", email=f"{role}@example.org", name=role, role=role,
                              active=True, created_at=AT)
                for role in ("admin", "scheduler", "viewer")
            }  # fmt: skip
        command.upgrade(cfg, "0012")
        with engine.connect() as conn:
            members = sa.text("SELECT user_id, department_id FROM department_members")
            rows = set(conn.execute(members).tuples())
        assert rows == {
            (users[role], department)
            for role in ("scheduler", "viewer")
            for department in departments
        }
        command.downgrade(cfg, "0011")
    finally:
        engine.dispose()
