"""The API's front door keeps each department's records to its members.

Swept over the operation registry, so that an operation added later is covered without
touching this file: every operation naming a department's record in its path answers a
member of another department exactly as it answers an id that does not exist (404, or 403
when the caller lacks the role anyway), and every listing leaves the other department out.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from tests.access_world import (
    A_MARKERS,
    B_MARKERS,
    OtherDepartment,
    build_other_department,
    clock,  # noqa: F401 - the pinned clock the world is built at
    make_staff,
)
from tests.api.conftest import Seed
from tests.committing import accounts
from web.api import load_operations
from web.api.registry import DEPARTMENT_RECORDS, MAX_ID, Operation, routes

# Path ids of records that belong to no department: users, their tokens, shared protocols.
SHARED_RECORDS = frozenset({"user_id", "token_id", "protocol_id"})
load_operations()
BY_ID = [op for op in routes.operations if set(op.path_params) & DEPARTMENT_RECORDS.keys()]
READ_BY_ID = [op for op in BY_ID if op.method == "GET"]
LISTINGS = [
    op
    for op in routes.operations
    if op.method == "GET" and not set(op.path_params) and op.path != "/me"
]
# Each caller is a member of department A only (or of none): who must not reach B.
CALLERS = ("viewer", "scheduler", "nobody")
# Query values a listing may require; a listing takes the ones its query model declares.
LISTING_QUERY = {"start": "2026-03-01T00:00:00-05:00", "end": "2026-03-14T00:00:00-05:00"}
# The key naming each listing's own records' id, so that B's rows are recognised by id too.
OWN_ID = {"Patients": "patient_id", "Courses": "course_id", "Fractions": "fraction_id",
          "Linacs": "linac_id", "Departments": "department_id",
          "Resources": "resource_id"}  # fmt: skip


@pytest.fixture
def other(db: Session, seed: Seed) -> OtherDepartment:
    return build_other_department(db, seed)


@pytest.fixture
def tokens(db: Session, seed: Seed, other: OtherDepartment) -> dict[str, str]:
    """Bearer tokens: the seed's viewer and scheduler (members of A), a scheduler of no
    department, and the seed's admin."""
    nobody = make_staff(db, "scheduler", [], "nobody@example.org")
    made = dict(seed.tokens)
    made["nobody"] = accounts.create_api_token(db, nobody, "no department")
    db.rollback()
    return made


def test_every_path_id_is_classified() -> None:
    """A new kind of id in a path must be added to the registry's DEPARTMENT_RECORDS (and so
    be swept below) or be named here as belonging to no department."""
    unclassified = {
        (op.path, name)
        for op in routes.operations
        for name in op.path_params
        if name not in DEPARTMENT_RECORDS and name not in SHARED_RECORDS
        and name not in op.path_enums
    }  # fmt: skip
    assert unclassified == set()


def _url(op: Operation, ids: dict[str, int]) -> str:
    path = op.path
    for name in op.path_params:
        value = op.path_enums[name][0] if name in op.path_enums else ids[name]
        path = path.replace("{" + name + "}", str(value))
    return "/api/v1" + path


def _call(client: FlaskClient, op: Operation, url: str, token: str) -> Any:
    body = {} if op.body is not None else None
    return client.open(
        url, method=op.method, json=body, headers={"Authorization": f"Bearer {token}"}
    )


def _leaks(value: Any, ids: dict[str, int], own_id: str | None) -> list[str]:
    """Where ``value`` (a JSON answer) mentions one of B's records."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            named = own_id if key == "id" else key
            if named in ids and item == ids[named]:
                found.append(f"{key}={item}")
            found += _leaks(item, ids, own_id)
    elif isinstance(value, list):
        for item in value:
            found += _leaks(item, ids, own_id)
    elif isinstance(value, str):
        found += [marker for marker in B_MARKERS if marker in value]
    return found


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("op", BY_ID, ids=lambda op: f"{op.method} {op.path}")
def test_another_departments_record_is_not_found(
    client: FlaskClient, other: OtherDepartment, tokens: dict[str, str], op: Operation,
    caller: str,
) -> None:  # fmt: skip
    token = tokens[caller]
    missing = {name: MAX_ID for name in other.ids}
    absent = _call(client, op, _url(op, missing), token)
    theirs = _call(client, op, _url(op, other.ids), token)
    assert absent.status_code in (403, 404)
    # Not even the status tells B's record apart from one that does not exist.
    assert theirs.status_code == absent.status_code, theirs.get_data(as_text=True)
    assert not [m for m in B_MARKERS if m in theirs.get_data(as_text=True)]


@pytest.mark.parametrize("op", READ_BY_ID, ids=lambda op: f"{op.method} {op.path}")
def test_an_admin_reaches_every_departments_records(
    client: FlaskClient, other: OtherDepartment, tokens: dict[str, str], op: Operation
) -> None:
    answer = _call(client, op, _url(op, other.ids), tokens["admin"])
    assert answer.status_code == 200, answer.get_data(as_text=True)


def _listing(client: FlaskClient, op: Operation, token: str) -> Any:
    query = {k: v for k, v in LISTING_QUERY.items() if op.query and k in op.query.model_fields}
    answer = client.get(
        "/api/v1" + op.path, query_string=query, headers={"Authorization": f"Bearer {token}"}
    )
    return answer


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("op", LISTINGS, ids=lambda op: f"{op.method} {op.path}")
def test_listings_leave_out_other_departments(
    client: FlaskClient, other: OtherDepartment, tokens: dict[str, str], op: Operation,
    caller: str,
) -> None:  # fmt: skip
    answer = _listing(client, op, tokens[caller])
    if op.role == "admin":
        assert answer.status_code == 403
        return
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert _leaks(answer.json, other.ids, OWN_ID.get(op.tag)) == []
    if caller == "nobody" and op.tag != "Protocols":
        # A member of no department sees nothing of any department.
        assert answer.json == []


@pytest.mark.parametrize("op", LISTINGS, ids=lambda op: f"{op.method} {op.path}")
def test_an_admin_lists_every_department(
    client: FlaskClient, other: OtherDepartment, tokens: dict[str, str], op: Operation
) -> None:
    answer = _listing(client, op, tokens["admin"])
    assert answer.status_code == 200
    if op.tag in OWN_ID:
        # The control for the listing test above: B's records are there to be left out.
        assert _leaks(answer.json, other.ids, OWN_ID[op.tag]) != []


def test_members_of_a_see_their_own_records(
    client: FlaskClient, other: OtherDepartment, tokens: dict[str, str]
) -> None:
    auth = {"Authorization": f"Bearer {tokens['viewer']}"}
    patients = client.get("/api/v1/patients", headers=auth).get_data(as_text=True)
    assert all(marker in patients for marker in A_MARKERS)
    course = client.get(f"/api/v1/courses/{other.a_course_id}", headers=auth)
    assert course.status_code == 200


@pytest.mark.parametrize("caller", CALLERS)
def test_search_finds_nothing_of_another_department(
    client: FlaskClient, other: OtherDepartment, tokens: dict[str, str], caller: str
) -> None:
    def search(token: str) -> Any:
        return client.post(
            "/api/v1/patients/search",
            json={"query": "BRAVO"},
            headers={"Authorization": f"Bearer {token}"},
        )

    assert search(tokens["admin"]).json != []
    assert search(tokens[caller]).json == []


@pytest.mark.parametrize("caller", ("viewer", "scheduler"))
@pytest.mark.parametrize("field", ("linac_id", "department_id"))
def test_filters_naming_another_department_are_not_found(
    client: FlaskClient, other: OtherDepartment, tokens: dict[str, str], caller: str, field: str
) -> None:
    def listing(value: int) -> Any:
        return client.get(
            "/api/v1/fractions",
            query_string={**LISTING_QUERY, field: value},
            headers={"Authorization": f"Bearer {tokens[caller]}"},
        )

    assert listing(other.ids[field]).status_code == listing(MAX_ID).status_code == 404


@pytest.mark.parametrize(
    ("path", "field", "extra"),
    [
        ("/api/v1/courses", "patient_id", {"protocol_id": None}),
        ("/api/v1/patients", "department_id",
         {"mrn": "NEW-1", "given_name": "New", "family_name": "Patient",
          "date_of_birth": "1960-01-01"}),
    ],
)  # fmt: skip
def test_a_scheduler_cannot_create_records_in_another_department(
    client: FlaskClient, seed: Seed, other: OtherDepartment, tokens: dict[str, str],
    path: str, field: str, extra: dict[str, Any],
) -> None:  # fmt: skip
    body = {k: (seed.protocol_id if v is None else v) for k, v in extra.items()}
    auth = {"Authorization": f"Bearer {tokens['scheduler']}"}
    missing = client.post(path, json={**body, field: MAX_ID}, headers=auth)
    theirs = client.post(path, json={**body, field: other.ids[field]}, headers=auth)
    assert missing.status_code in (404, 422)
    # The answers differ only in the id they repeat back.
    repeated = missing.get_data(as_text=True).replace(str(MAX_ID), str(other.ids[field]))
    assert (theirs.status_code, theirs.get_data(as_text=True)) == (missing.status_code, repeated)


def test_membership_changes_take_effect_at_the_next_request(
    client: FlaskClient, db: Session, seed: Seed, other: OtherDepartment, tokens: dict[str, str]
) -> None:
    auth = {"Authorization": f"Bearer {tokens['viewer']}"}
    url = f"/api/v1/patients/{other.ids['patient_id']}"
    assert client.get(url, headers=auth).status_code == 404
    viewer = db.query(accounts.User).filter_by(email="viewer@example.org").one().id
    db.rollback()
    changed = client.patch(
        f"/api/v1/users/{viewer}",
        json={"department_ids": [seed.department_id, other.ids["department_id"]]},
        headers=seed.auth("admin"),
    )
    assert changed.status_code == 200, changed.json
    assert changed.json["department_ids"] == [seed.department_id, other.ids["department_id"]]
    assert client.get(url, headers=auth).status_code == 200
    unknown = client.patch(
        f"/api/v1/users/{viewer}", json={"department_ids": [MAX_ID]}, headers=seed.auth("admin")
    )
    assert unknown.status_code == 422
