"""Security headers on every response and throttled password guessing."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.api.conftest import ADMIN_PASSWORD, Seed
from tests.api.test_auth import _csrf


def test_every_response_carries_the_security_headers(client: FlaskClient, seed: Seed) -> None:
    for path in ("/", "/login", "/api/v1/me", "/healthz", "/no-such-page"):
        headers = client.get(path).headers
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-store"


def test_repeated_wrong_passwords_are_throttled_even_with_the_right_one(
    client: FlaskClient, seed: Seed
) -> None:
    token = _csrf(client.get("/login").get_data(as_text=True))
    form = {"email": "admin@example.org", "csrf_token": token}
    for _ in range(5):
        assert client.post("/login", data=form | {"password": "wrong-guess!"}).status_code == 401
    throttled = client.post("/login", data=form | {"password": ADMIN_PASSWORD})
    assert throttled.status_code == 429
    assert "Too many attempts; try again in 1 minute." in throttled.get_data(as_text=True)
    # Another account is not locked out by those guesses.
    other = client.post(
        "/login", data={"email": "viewer@example.org", "csrf_token": token, "password": "x" * 12}
    )
    assert other.status_code == 401
