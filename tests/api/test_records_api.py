"""Reference records through the API: validation names fields; errors are problem details."""

from __future__ import annotations

from datetime import date

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

import scheduler.records
from scheduler.context import rules_from_protocol
from scheduler.errors import InvalidInput
from tests.api.conftest import Seed
from tests.committing import records

PROBLEM = "application/problem+json"


def _fields(response) -> set[str]:
    assert response.mimetype == PROBLEM
    return {error["field"] for error in response.json["errors"]}


def _patient(seed: Seed, **changes) -> dict:
    return {
        "department_id": seed.department_id,
        "mrn": "MRN-0001",
        "given_name": "Ana",
        "family_name": "Lopez",
        "date_of_birth": "1961-02-03",
        "phone": "(415) 555-2671",
        "email": "ana@example.org",
        "language": "es",
        **changes,
    }


def test_patient_phone_stored_as_e164_and_consent_dated(client: FlaskClient, seed: Seed) -> None:
    response = client.post(
        "/api/v1/patients", json=_patient(seed, sms_consent=True), headers=seed.auth("scheduler")
    )
    assert response.status_code == 201, response.json
    assert response.json["phone"] == "+14155552671"
    assert response.json["sms_consent_at"] is not None
    patient_id = response.json["id"]

    withdrawn = client.patch(
        f"/api/v1/patients/{patient_id}", json={"sms_consent": False}, headers=seed.auth()
    )
    assert withdrawn.json["sms_consent"] is False
    assert withdrawn.json["sms_consent_at"] is None
    # A non-US number given in E.164 keeps its own country.
    uk = client.patch(
        f"/api/v1/patients/{patient_id}", json={"phone": "+44 20 7946 0018"}, headers=seed.auth()
    )
    assert uk.json["phone"] == "+442079460018"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"phone": "555-0100-99"}, "phone"),
        ({"phone": "+1 415 555"}, "phone"),
        ({"email": "ana@@example"}, "email"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"phone": None, "sms_consent": True}, "sms_consent"),
    ],
)
def test_patient_validation_names_the_field(
    client: FlaskClient, seed: Seed, changes: dict, field: str
) -> None:
    response = client.post(
        "/api/v1/patients", json=_patient(seed, **changes), headers=seed.auth("scheduler")
    )
    assert response.status_code == 422
    assert field in _fields(response)


def test_pydantic_errors_are_422_with_field_paths(client: FlaskClient, seed: Seed) -> None:
    response = client.post(
        "/api/v1/patients", json=_patient(seed, language="fr", shoe_size=9), headers=seed.auth()
    )
    assert response.status_code == 422
    assert {"language", "shoe_size"} <= _fields(response)


def test_duplicate_mrn_is_rejected(client: FlaskClient, seed: Seed) -> None:
    assert (
        client.post("/api/v1/patients", json=_patient(seed), headers=seed.auth()).status_code == 201
    )
    again = client.post("/api/v1/patients", json=_patient(seed), headers=seed.auth())
    assert again.status_code == 422 and "mrn" in _fields(again)


def test_patient_search_by_mrn_and_name(client: FlaskClient, seed: Seed) -> None:
    client.post("/api/v1/patients", json=_patient(seed), headers=seed.auth())
    client.post(
        "/api/v1/patients",
        json=_patient(seed, mrn="X-77", given_name="Bo", family_name="Chen", phone=None),
        headers=seed.auth(),
    )

    def search(q: str) -> list[str]:
        response = client.post(
            "/api/v1/patients/search", json={"query": q}, headers=seed.auth("viewer")
        )
        return [p["mrn"] for p in response.json]

    assert search("mrn-00") == ["MRN-0001"]
    assert search("chen") == ["X-77"]
    assert search("lop ana") == ["MRN-0001"]
    assert search("%") == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"fractions": 6}, "fractions"),
        ({"session_minutes": 20}, "session_minutes"),
        ({"first_session_minutes": 121}, "first_session_minutes"),
        ({"weekdays": [0, 7]}, "weekdays.1"),
    ],
)
def test_protocol_schema_limits(client: FlaskClient, seed: Seed, changes: dict, field: str) -> None:
    body = {"code": "lung3", "name": "Lung 3 fx", "fractions": 3, **changes}
    response = client.post("/api/v1/protocols", json=body, headers=seed.auth())
    assert response.status_code == 422
    assert field in _fields(response)


def test_protocol_consistency_rules(db: Session, seed: Seed) -> None:
    """The use case checks what the schema cannot: rules that contradict each other."""
    base = {"code": "p", "name": "P", "fractions": 5}
    cases = [
        ({"min_interval_days": 3, "max_interval_days": 2}, "max_interval_days"),
        ({"min_overall_days": 10, "max_overall_days": 8}, "max_overall_days"),
        ({"min_interval_days": 2, "max_overall_days": 8}, "max_overall_days"),  # needs 9
        ({"weekdays": [0, 1, 2], "start_weekdays": [4]}, "start_weekdays"),
        ({"min_hours_between": -1}, "min_hours_between"),
        ({"fractions": 0}, "fractions"),
        ({"session_minutes": 20}, "session_minutes"),
        ({"capabilities": ["SBRT"]}, "capabilities"),
        ({"max_interval_days": 1, "min_overall_days": 10}, "min_overall_days"),
    ]
    for changes, field in cases:
        with pytest.raises(InvalidInput) as caught:
            records.create_protocol(db, {**base, **changes})
        assert field in {e.field for e in caught.value.errors}, changes
    ok = records.create_protocol(db, {**base, "min_interval_days": 2, "max_overall_days": 9})
    rules = rules_from_protocol(ok)
    assert rules.fractions == 5 and rules.max_overall_days == 9
    assert rules.weekdays == frozenset(range(5)) and rules.capabilities == frozenset({"sbrt"})


def test_protocol_update_validates_merged_record(client: FlaskClient, seed: Seed) -> None:
    url = f"/api/v1/protocols/{seed.protocol_id}"
    # Fine alone, but with the stored max_overall_days of 15 five fractions 4 days apart
    # cannot fit.
    bad = client.patch(
        url, json={"min_interval_days": 4, "max_interval_days": 4}, headers=seed.auth()
    )
    assert bad.status_code == 422 and "max_overall_days" in _fields(bad)
    good = client.patch(url, json={"session_minutes": 50}, headers=seed.auth())
    assert good.status_code == 200 and good.json["session_minutes"] == 50
    assert good.json["max_overall_days"] == 15


def test_department_timezone_and_hours_validated(client: FlaskClient, seed: Seed) -> None:
    url = f"/api/v1/departments/{seed.department_id}"
    bad_zone = client.patch(url, json={"timezone": "Eastern"}, headers=seed.auth())
    assert bad_zone.status_code == 422 and _fields(bad_zone) == {"timezone"}
    bad_hours = client.patch(
        url, json={"opening_hours": {"0": ["19:00", "07:00"]}}, headers=seed.auth()
    )
    assert bad_hours.status_code == 422 and "opening_hours.0" in _fields(bad_hours)
    ok = client.patch(
        url, json={"opening_hours": {"0": ["08:00", "18:00"], "5": ["08:00", "12:00"]}},
        headers=seed.auth(),
    )  # fmt: skip
    assert ok.status_code == 200 and ok.json["opening_hours"]["5"] == ["08:00", "12:00"]


def test_closures(client: FlaskClient, seed: Seed) -> None:
    url = f"/api/v1/departments/{seed.department_id}/closures"
    body = {"day": "2026-12-24", "reason": "Staff training"}
    assert client.post(url, json=body, headers=seed.auth()).status_code == 201
    again = client.post(url, json=body, headers=seed.auth())
    assert again.status_code == 422 and _fields(again) == {"day"}
    listed = client.get(url + "?start=2026-12-01&end=2026-12-31", headers=seed.auth("viewer"))
    assert [c["day"] for c in listed.json] == ["2026-12-24"]
    removed = client.delete(f"/api/v1/closures/{listed.json[0]['id']}", headers=seed.auth())
    assert removed.status_code == 204


def test_linac_capabilities_and_unique_name(client: FlaskClient, seed: Seed) -> None:
    body = {"department_id": seed.department_id, "name": "TrueBeam 1", "capabilities": ["sbrt"]}
    clash = client.post("/api/v1/linacs", json=body, headers=seed.auth())
    assert clash.status_code == 422 and _fields(clash) == {"name"}
    caps = client.post(
        "/api/v1/linacs", json={**body, "name": "Edge", "capabilities": ["Breath Hold"]},
        headers=seed.auth(),
    )  # fmt: skip
    assert caps.status_code == 422 and "capabilities.0" in _fields(caps)


def test_not_found_and_bad_ids(client: FlaskClient, seed: Seed) -> None:
    for url in ("/api/v1/patients/999", "/api/v1/patients/99999999999", "/api/v1/patients/x"):
        response = client.get(url, headers=seed.auth())
        assert response.status_code == 404 and response.mimetype == PROBLEM, url
    # Unknown pages outside the API stay HTML.
    assert client.get("/nowhere").mimetype == "text/html"


def test_wrong_method_and_media_type(client: FlaskClient, seed: Seed) -> None:
    response = client.delete("/api/v1/patients", headers=seed.auth())
    assert response.status_code == 405 and response.mimetype == PROBLEM
    assert "POST" in response.headers["Allow"]
    form = client.post("/api/v1/patients", data={"mrn": "1"}, headers=seed.auth())
    assert form.status_code == 415 and form.mimetype == PROBLEM
    broken = client.post(
        "/api/v1/patients", data="{", content_type="application/json", headers=seed.auth()
    )
    assert broken.status_code == 422 and broken.mimetype == PROBLEM


def test_unexpected_error_is_a_bare_500(client: FlaskClient, seed: Seed, app, monkeypatch) -> None:
    def explode(*_args, **_kwargs):
        raise RuntimeError("patient Ana Lopez +14155552671")

    monkeypatch.setattr(scheduler.records, "list_departments", explode)
    response = client.get("/api/v1/departments", headers=seed.auth())
    assert response.status_code == 500 and response.mimetype == PROBLEM
    assert "Ana" not in response.get_data(as_text=True)


def test_course_creation_checks_references(client: FlaskClient, seed: Seed) -> None:
    bad = client.post(
        "/api/v1/courses", json={"patient_id": 12345, "protocol_id": seed.protocol_id,
                                 "priority": 9}, headers=seed.auth("scheduler"),
    )  # fmt: skip
    assert bad.status_code == 422 and {"priority"} <= _fields(bad)
    missing = client.post(
        "/api/v1/courses", json={"patient_id": 12345, "protocol_id": seed.protocol_id},
        headers=seed.auth("scheduler"),
    )  # fmt: skip
    assert missing.status_code == 422 and _fields(missing) == {"patient_id"}


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_ready_date_must_be_plausible(client: FlaskClient, seed: Seed) -> None:
    patient = client.post("/api/v1/patients", json=_patient(seed), headers=seed.auth()).json
    response = client.post(
        "/api/v1/courses",
        json={"patient_id": patient["id"], "protocol_id": seed.protocol_id,
              "ready_to_treat_on": date(1900, 1, 1).isoformat()},
        headers=seed.auth("scheduler"),
    )  # fmt: skip
    assert response.status_code == 422 and "ready_to_treat_on" in _fields(response)


def test_text_a_database_cannot_store_is_a_422_not_a_500(client, seed):
    url = f"/api/v1/users/{seed.admin_id}/tokens"
    response = client.post(url, json={"name": "Tok\x00en"}, headers=seed.auth())
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert [e["field"] for e in response.get_json()["errors"]] == ["name"]
    # An unpaired surrogate is not even valid JSON text for the parser: still a 422.
    response = client.post(url, json={"name": "\ud9e5half"}, headers=seed.auth())
    assert response.status_code == 422
