"""The pages' front door keeps each department's records to its members.

Swept over the app's URL map, so that a page added later is covered without touching this
file: every page naming a department's record in its path answers a member of another
department exactly as it answers an id that does not exist, and no page without ids --
lists, calendars, work queues, the inbox -- shows anything of the other department.
"""

from __future__ import annotations

from tempfile import gettempdir
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from config import load_settings
from tests.access_world import (
    A_MARKERS,
    B_MARKERS,
    PASSWORD,
    OtherDepartment,
    build_other_department,
    clock,  # noqa: F401 - the pinned clock the world is built at
    make_staff,
)
from tests.api.conftest import Seed
from tests.pages.conftest import SignIn, csrf_from
from web import create_app
from web.api.registry import MAX_ID

# Path ids that name a record of one department (or of one of its patients).
DEPARTMENT_IDS = frozenset(
    {"department_id", "linac_id", "closure_id", "downtime_id", "patient_id", "course_id",
     "fraction_id", "reminder_id", "message_id", "resource_id"}
)  # fmt: skip
# Path arguments that name no department's record (users, tokens, shared protocols, message
# templates) or one only admins reach, who see every department (calendar feeds, what-if
# simulation runs).
SHARED_ARGUMENTS = frozenset({"user_id", "token_id", "protocol_id", "feed_id", "kind", "part",
                              "language", "run_id"})  # fmt: skip
# Pages that show nothing of any department: signing in and out, the account, patients' own
# links and feeds (their token is the credential), documentation, static files.
OUTSIDE = ("/static/", "/p/", "/feeds/", "/api/", "/webhooks/", "/login", "/logout", "/healthz",
           "/readyz", "/account/")  # fmt: skip
CALLERS = ("viewer", "scheduler", "nobody")


def _rules() -> list[Any]:
    # Only the URL map is wanted: an app on an in-memory database that is never opened.
    env = {
        "DATABASE_URL": f"sqlite:///{gettempdir()}/never-opened.db",
        "SECRET_KEY": "x" * 40,
        "INSTANCE_DIR": gettempdir(),
    }
    app = create_app(load_settings(env))
    return [
        rule
        for rule in app.url_map.iter_rules()
        if not rule.rule.startswith(OUTSIDE) and rule.rule != "/"
    ]


RULES = _rules()
BY_ID = [
    (rule.rule, method)
    for rule in RULES
    if rule.arguments & DEPARTMENT_IDS
    for method in sorted(rule.methods & {"GET", "POST"})
]
WITHOUT_IDS = [rule.rule for rule in RULES if not rule.arguments and "GET" in rule.methods]


def test_every_path_argument_is_classified() -> None:
    """A page with a new kind of path argument must be named in DEPARTMENT_IDS (and so be
    swept below) or in SHARED_ARGUMENTS."""
    unclassified = {
        (rule.rule, name)
        for rule in RULES
        for name in rule.arguments
        if name not in DEPARTMENT_IDS | SHARED_ARGUMENTS
    }
    assert unclassified == set()


@pytest.fixture
def other(db: Session, seed: Seed) -> OtherDepartment:
    world = build_other_department(db, seed)
    make_staff(db, "scheduler", [], "nobody@example.org")
    db.rollback()
    return world


@pytest.fixture
def as_caller(client: FlaskClient, signed_in: SignIn, other: OtherDepartment):
    def sign_in(caller: str) -> str:
        if caller != "nobody":
            return signed_in(client, caller)
        login = client.get("/login")
        client.post(
            "/login",
            data={"csrf_token": csrf_from(login.get_data(as_text=True)),
                  "email": "nobody@example.org", "password": PASSWORD},
        )  # fmt: skip
        return csrf_from(client.get("/").get_data(as_text=True))

    return sign_in


def _url(rule: str, ids: dict[str, int]) -> str:
    for name, value in ids.items():
        rule = rule.replace(f"<int:{name}>", str(value))
    return rule


def _request(client: FlaskClient, method: str, url: str, csrf: str) -> Any:
    if method == "POST":
        return client.post(url, data={"csrf_token": csrf})
    return client.get(url)


def _shown(response: Any) -> list[str]:
    return [marker for marker in B_MARKERS if marker in response.get_data(as_text=True)]


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("rule", "method"), BY_ID)
def test_another_departments_record_is_not_found(
    client: FlaskClient, app: Flask, other: OtherDepartment, as_caller: Any, rule: str,
    method: str, caller: str,
) -> None:  # fmt: skip
    csrf = as_caller(caller)
    missing = {name: MAX_ID for name in other.ids}
    absent = _request(client, method, _url(rule, missing), csrf)
    theirs = _request(client, method, _url(rule, other.ids), csrf)
    assert absent.status_code in (403, 404)
    # Not even the status tells B's record apart from one that does not exist.
    assert theirs.status_code == absent.status_code, theirs.get_data(as_text=True)[:2000]
    assert _shown(theirs) == []


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("rule", WITHOUT_IDS)
def test_pages_show_nothing_of_another_department(
    client: FlaskClient, other: OtherDepartment, as_caller: Any, rule: str, caller: str
) -> None:
    as_caller(caller)
    page = client.get(rule)
    assert page.status_code < 500
    assert _shown(page) == []


@pytest.mark.parametrize(
    "url",
    ["/calendar/week", "/calendar/day", "/messages/inbox", "/messages/problems",
     "/downtime", "/admin/linacs"],
)  # fmt: skip
def test_an_admin_sees_every_department(
    client: FlaskClient, other: OtherDepartment, signed_in: SignIn, url: str
) -> None:
    signed_in(client, "admin")
    department = other.ids["department_id"] if url.startswith("/calendar") else None
    page = client.get(url, query_string={"department": department} if department else {})
    assert page.status_code == 200
    # The control for the sweep above: B's records are there to be left out.
    assert _shown(page) != []


@pytest.mark.parametrize("caller", ("viewer", "scheduler"))
def test_members_see_their_own_department(
    client: FlaskClient, other: OtherDepartment, as_caller: Any, caller: str
) -> None:
    csrf = as_caller(caller)
    found = client.post("/patients", data={"csrf_token": csrf, "q": "ALPHA"})
    assert all(marker in found.get_data(as_text=True) for marker in A_MARKERS)
    assert client.get(f"/courses/{other.a_course_id}").status_code == 200


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("url", ["/calendar/week", "/calendar/day"])
def test_calendars_of_another_department_are_not_found(
    client: FlaskClient, other: OtherDepartment, as_caller: Any, url: str, caller: str
) -> None:
    as_caller(caller)
    theirs = client.get(url, query_string={"department": other.ids["department_id"]})
    absent = client.get(url, query_string={"department": MAX_ID})
    assert theirs.status_code == absent.status_code == 404
    assert _shown(theirs) == []


@pytest.mark.parametrize("caller", CALLERS)
def test_search_finds_nothing_of_another_department(
    client: FlaskClient, other: OtherDepartment, as_caller: Any, caller: str
) -> None:
    csrf = as_caller(caller)
    found = client.post("/patients", data={"csrf_token": csrf, "q": "BRAVO"})
    assert found.status_code == 200
    assert _shown(found) == []


def test_an_admin_finds_every_departments_patients(
    client: FlaskClient, other: OtherDepartment, signed_in: SignIn
) -> None:
    csrf = signed_in(client, "admin")
    found = client.post("/patients", data={"csrf_token": csrf, "q": "BRAVO"})
    assert _shown(found) != []


def test_a_user_of_no_department_is_told_why_the_calendar_is_empty(
    client: FlaskClient, other: OtherDepartment, as_caller: Any
) -> None:
    as_caller("nobody")
    page = client.get("/calendar/week")
    assert page.status_code == 404
    assert "not a member of any department" in page.get_data(as_text=True)
