"""Every state-changing page route refuses a request without the session's CSRF token.

The routes are read from the app's URL map, so a route added later is checked without
editing this file; only the JSON API and the Twilio webhooks are exempt, each for its own
reason (web/api/__init__.py, web/webhooks.py), and a new exemption fails the last test here.
"""

from __future__ import annotations

import tempfile

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule
from werkzeug.routing.converters import NumberConverter

from config import load_settings
from tests.pages.conftest import SignIn, csrf_from
from web import create_app

CHANGING = ("POST", "PUT", "PATCH", "DELETE")
# Routes under these blueprints are exempt from the app-wide check, with reasons in the code.
EXEMPT_BLUEPRINTS = {"api", "twilio_webhooks"}
# Clearly not tokens: missing, empty, made up, and a real token's shape with a wrong signature.
BAD_TOKENS = (None, "", "not-a-token", "IjAwMDAi.aaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbb")


def _app_for_listing() -> Flask:
    # Only its URL map is read: no request reaches a database.
    with tempfile.TemporaryDirectory() as instance:
        settings = load_settings(
            {
                "SECRET_KEY": "listing-only",
                "DATABASE_URL": f"sqlite:///{instance}/x.db",
                "INSTANCE_DIR": instance,
            }
        )
        return create_app(settings)


def _blueprint(rule: Rule) -> str:
    return rule.endpoint.rpartition(".")[0]


def _changing_rules() -> list[tuple[Rule, str]]:
    app = _app_for_listing()
    found = []
    for rule in app.url_map.iter_rules():
        for method in CHANGING:
            if method in (rule.methods or set()):
                found.append((rule, method))
    return found


def _path(app: Flask, rule: Rule) -> str:
    # Any value of the right type: the check must refuse before the view looks anything up.
    values = {}
    for name in rule.arguments & set(rule._converters):  # noqa: SLF001
        converter = rule._converters[name]  # noqa: SLF001
        values[name] = 1 if isinstance(converter, NumberConverter) else "x"
    return app.url_map.bind("localhost").build(rule.endpoint, values)


PROTECTED = [
    pytest.param(rule.rule, rule.endpoint, method, id=f"{method} {rule.rule}")
    for rule, method in _changing_rules()
    if _blueprint(rule) not in EXEMPT_BLUEPRINTS
]


def test_there_are_routes_to_check() -> None:
    # Guards against a listing that silently finds nothing.
    assert len(PROTECTED) > 30


@pytest.mark.parametrize(("rule", "endpoint", "method"), PROTECTED)
def test_a_change_without_a_valid_csrf_token_is_refused(
    app: Flask, client: FlaskClient, signed_in: SignIn, rule: str, endpoint: str, method: str
) -> None:
    # Signed in as admin, so only the token stands between the request and the view.
    signed_in(client, "admin")
    url_rule = next(
        r for r in app.url_map.iter_rules() if r.endpoint == endpoint and r.rule == rule
    )
    path = _path(app, url_rule)
    for token in BAD_TOKENS:
        data = {} if token is None else {"csrf_token": token}
        response = client.open(path, method=method, data=data)
        assert response.status_code == 400, (path, token, response.status_code)
        body = response.get_data(as_text=True)
        assert "The form expired" in body or "open the link in your message again" in body
        # Nor does the header form of a wrong token get it through.
        header = client.open(path, method=method, data={}, headers={"X-CSRF-Token": "nope"})
        assert header.status_code == 400


def test_a_valid_token_gets_past_the_check(client: FlaskClient, signed_in: SignIn) -> None:
    """The refusals above are the check's, not something every POST would get anyway."""
    token = signed_in(client, "admin")
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302
    # The header is accepted as well as the field.
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login",
        data={"email": "nobody@example.org", "password": "x" * 12},
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 401


def test_only_the_api_and_the_webhooks_are_exempt() -> None:
    app = _app_for_listing()
    csrf = app.extensions["csrf"]
    assert {bp.name for bp in csrf._exempt_blueprints} == EXEMPT_BLUEPRINTS  # noqa: SLF001
    assert not csrf._exempt_views  # noqa: SLF001 - no single view opts out
    assert app.config["WTF_CSRF_ENABLED"] is not False
