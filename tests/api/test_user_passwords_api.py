"""The users API refuses easily guessed passwords with a 422 problem naming the field."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

import scheduler.accounts
from scheduler.models import User
from tests.api.conftest import Seed
from tests.committing import accounts

EMAIL = "integration.okonkwo@example.org"
STRONG = "plum-orbit-kettle-harbor"
WEAK = {
    "aaaaaaaaaaaa": "is too easy to guess",
    "123456789012": "is too easy to guess",
    " " * 12: "cannot be only spaces",
    EMAIL: "cannot be or contain the email address",
}


@pytest.fixture(autouse=True)
def _fast_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Argon2 at production cost takes most of a second per hash; these tests are about which
    # passwords are allowed, not about hashing.
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(scheduler.accounts, "_hasher", lambda: cheap)


def _assert_password_problem(response, problem: str) -> None:
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert [e["field"] for e in response.json["errors"]] == ["password"]
    assert response.json["errors"][0]["message"].startswith(problem)


@pytest.mark.parametrize("password", list(WEAK))
def test_creating_a_user_with_a_weak_password_is_422(
    client: FlaskClient, seed: Seed, db: Session, password: str
) -> None:
    response = client.post(
        "/api/v1/users",
        json={"email": EMAIL, "name": "EHR Okonkwo", "role": "viewer", "password": password},
        headers=seed.auth(),
    )
    _assert_password_problem(response, WEAK[password])
    assert db.scalar(sa.select(User.id).where(User.email == EMAIL)) is None


@pytest.mark.parametrize("password", list(WEAK))
def test_changing_to_a_weak_password_is_422_and_keeps_the_old_one(
    client: FlaskClient, seed: Seed, db: Session, password: str
) -> None:
    created = client.post(
        "/api/v1/users",
        json={"email": EMAIL, "name": "EHR Okonkwo", "role": "viewer", "password": STRONG},
        headers=seed.auth(),
    )
    assert created.status_code == 201
    response = client.patch(
        f"/api/v1/users/{created.json['id']}",
        json={"name": "Renamed", "password": password},
        headers=seed.auth(),
    )
    _assert_password_problem(response, WEAK[password])
    assert accounts.authenticate(db, EMAIL, STRONG).name == "EHR Okonkwo"


def test_a_strong_password_is_accepted(client: FlaskClient, seed: Seed, db: Session) -> None:
    response = client.post(
        "/api/v1/users",
        json={"email": EMAIL, "name": "EHR Okonkwo", "role": "viewer", "password": STRONG},
        headers=seed.auth(),
    )
    assert response.status_code == 201
    assert accounts.authenticate(db, EMAIL, STRONG).id == response.json["id"]


def test_the_openapi_document_states_the_password_rules(client: FlaskClient) -> None:
    schemas = client.get("/api/openapi.json").json["components"]["schemas"]
    for name in ("UserIn", "UserPatch"):
        assert "hard to guess" in str(schemas[name]["properties"]["password"]), name
