"""Fixtures for the staff page tests: the API tests' app and seed data, plus signing in.

Pages are used through a browser session, so tests sign in through the /login form (with
its CSRF token) exactly as a person would, rather than with an API token.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import User

# The API tests' fixtures: an app per backend, a database session and the reference data.
from tests.api.conftest import ADMIN_PASSWORD, Seed, app, client, db, seed  # noqa: F401

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')

SignIn = Callable[[FlaskClient, str], str]


def csrf_from(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)


@pytest.fixture
def signed_in(db: Session, seed: Seed) -> SignIn:  # noqa: F811 - fixtures imported above
    """``signed_in(client, role)`` signs ``client`` in as the seeded user of ``role`` and
    returns the session's CSRF token for the forms the test posts."""

    def sign_in(client: FlaskClient, role: str) -> str:  # noqa: F811
        user = db.query(User).filter(User.email == f"{role}@example.org").one()
        if user.password_hash is None:
            # The seed gives only the admin a password; the others get the same one. Copying
            # the admin's hash rather than hashing again keeps each test a deliberate
            # argon2 computation shorter.
            admin = db.query(User).filter(User.email == "admin@example.org").one()
            user.password_hash = admin.password_hash
            db.commit()
        email = user.email
        # End the read: on SQLite an open transaction holds the write lock the app needs.
        db.rollback()
        login = client.get("/login")
        response = client.post(
            "/login",
            data={
                "csrf_token": csrf_from(login.get_data(as_text=True)),
                "email": email,
                "password": ADMIN_PASSWORD,
            },
        )
        assert response.status_code == 302, response.get_data(as_text=True)
        # Sign-in starts a fresh session and token; any signed-in page carries the new one.
        return csrf_from(client.get("/").get_data(as_text=True))

    return sign_in
