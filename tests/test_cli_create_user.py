"""`flask create-user` refuses an easily guessed password as the pages and the API do."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from flask import Flask
from sqlalchemy.orm import Session

import scheduler.accounts
from scheduler.models import User

# The API tests' app on each backend and a database session.
from tests.api.conftest import app, db  # noqa: F401
from tests.committing import accounts

EMAIL = "operator.okonkwo@example.org"


@pytest.fixture(autouse=True)
def _fast_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Argon2 at production cost takes most of a second per hash; this is about the rules.
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(scheduler.accounts, "_hasher", lambda: cheap)


def _create_user(app: Flask, password: str):  # noqa: F811 - fixture imported above
    # `flask` itself runs every command inside an application context; the runner does not.
    with app.app_context():
        return app.test_cli_runner().invoke(
            args=["create-user", "--email", EMAIL, "--name", "Operator", "--password", password]
        )


@pytest.mark.parametrize("password", ["aaaaaaaaaaaa", "123456789012", " " * 12, EMAIL])
def test_create_user_refuses_a_weak_password(
    app: Flask,  # noqa: F811
    db: Session,  # noqa: F811
    password: str,
) -> None:
    result = _create_user(app, password)
    assert result.exit_code == 1
    assert "The user is not valid. password " in result.output
    assert db.scalar(sa.select(User.id).where(User.email == EMAIL)) is None


def test_create_user_accepts_a_strong_password(app: Flask, db: Session) -> None:  # noqa: F811
    result = _create_user(app, "plum-orbit-kettle-harbor")
    assert result.exit_code == 0, result.output
    assert accounts.authenticate(db, EMAIL, "plum-orbit-kettle-harbor") is not None
