"""Authentication and roles: bearer tokens, session sign-in with CSRF, 401 and 403."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import ApiToken
from tests.api.conftest import ADMIN_PASSWORD, Seed
from tests.committing import accounts

PROBLEM = "application/problem+json"


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


def test_missing_token_is_401_problem_with_challenge(client: FlaskClient, seed: Seed) -> None:
    response = client.get("/api/v1/departments")
    assert response.status_code == 401
    assert response.mimetype == PROBLEM
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json["status"] == 401


def test_invalid_and_malformed_tokens_are_401(client: FlaskClient, seed: Seed) -> None:
    for header in ("Bearer sbrt_not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer "):
        response = client.get("/api/v1/departments", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert "WWW-Authenticate" in response.headers


def test_token_works_and_records_last_use(client: FlaskClient, seed: Seed, db: Session) -> None:
    response = client.get("/api/v1/me", headers=seed.auth("viewer"))
    assert response.status_code == 200
    assert response.json["role"] == "viewer"
    db.expire_all()
    assert all(t.last_used_at is not None for t in db.query(ApiToken) if t.name.startswith("view"))


def test_revoked_token_is_401(client: FlaskClient, seed: Seed, db: Session) -> None:
    token = db.query(ApiToken).filter(ApiToken.name == "viewer test token").one()
    accounts.revoke_api_token(db, token.id)
    assert client.get("/api/v1/me", headers=seed.auth("viewer")).status_code == 401


def test_wrong_role_is_403(client: FlaskClient, seed: Seed) -> None:
    body = {"department_id": seed.department_id, "name": "Halcyon", "capabilities": ["imrt"]}
    viewer = client.post("/api/v1/linacs", json=body, headers=seed.auth("viewer"))
    assert viewer.status_code == 403
    assert viewer.mimetype == PROBLEM
    scheduler = client.post("/api/v1/linacs", json=body, headers=seed.auth("scheduler"))
    assert scheduler.status_code == 403
    admin = client.post("/api/v1/linacs", json=body, headers=seed.auth("admin"))
    assert admin.status_code == 201
    # Reading is open to every role.
    assert client.get("/api/v1/linacs", headers=seed.auth("viewer")).status_code == 200


def test_admin_only_user_management(client: FlaskClient, seed: Seed) -> None:
    assert client.get("/api/v1/users", headers=seed.auth("scheduler")).status_code == 403
    created = client.post(
        f"/api/v1/users/{seed.admin_id}/tokens", json={"name": "ehr"}, headers=seed.auth()
    )
    assert created.status_code == 201
    token = created.json["token"]
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json["id"] == seed.admin_id
    revoked = client.post(f"/api/v1/tokens/{created.json['id']}/revoke", headers=seed.auth())
    assert revoked.status_code == 200 and revoked.json["revoked_at"]
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_admin_cannot_demote_self(client: FlaskClient, seed: Seed) -> None:
    response = client.patch(
        f"/api/v1/users/{seed.admin_id}", json={"role": "viewer"}, headers=seed.auth()
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json["errors"]] == ["role"]


def test_session_login_with_csrf(client: FlaskClient, seed: Seed) -> None:
    page = client.get("/login")
    token = _csrf(page.get_data(as_text=True))

    # Without the CSRF field the form is refused, whatever the password.
    refused = client.post("/login", data={"email": "admin@example.org", "password": ADMIN_PASSWORD})
    assert refused.status_code == 400

    wrong = client.post(
        "/login",
        data={"email": "admin@example.org", "password": "wrong-password!", "csrf_token": token},
    )
    assert wrong.status_code == 401

    signed_in = client.post(
        "/login",
        data={"email": "ADMIN@example.org", "password": ADMIN_PASSWORD, "csrf_token": token},
    )
    assert signed_in.status_code == 302

    # The session now authenticates API reads...
    assert client.get("/api/v1/me").json["email"] == "admin@example.org"
    # ...and writes only with the (new, post-sign-in) CSRF token in a header.
    index = client.get("/")
    assert "Signed in as Admin" in index.get_data(as_text=True)
    fresh = _csrf(index.get_data(as_text=True))
    assert fresh != token
    body = {"name": "Linac 3", "department_id": seed.department_id}
    assert client.post("/api/v1/linacs", json=body).status_code == 403
    assert (
        client.post("/api/v1/linacs", json=body, headers={"X-CSRF-Token": token}).status_code == 403
    )
    ok = client.post("/api/v1/linacs", json=body, headers={"X-CSRF-Token": fresh})
    assert ok.status_code == 201

    assert client.post("/logout", data={"csrf_token": fresh}).status_code == 302
    assert client.get("/api/v1/me").status_code == 401


def test_login_redirect_stays_on_site(client: FlaskClient, seed: Seed) -> None:
    token = _csrf(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login",
        data={
            "email": "admin@example.org",
            "password": ADMIN_PASSWORD,
            "csrf_token": token,
            "next": "https://evil.example/",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_unknown_user_and_passwordless_user_cannot_sign_in(db: Session, seed: Seed) -> None:
    assert accounts.authenticate(db, "nobody@example.org", ADMIN_PASSWORD) is None
    # The scheduler in the seed has no password: tokens only.
    assert accounts.authenticate(db, "scheduler@example.org", "") is None
    assert accounts.authenticate(db, "admin@example.org", ADMIN_PASSWORD) is not None
