"""Property-based API tests: schemathesis generates requests from /api/openapi.json and checks
that no response is a server error or contradicts the document (status, media type, body)."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session

from config import Settings
from tests.api.conftest import Seed, seed_reference_data
from tests.committing import records
from web import create_app

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def seeded(db: Session) -> Seed:
    """Reference data plus a patient with a draft course, so ids 1 and 2 exist."""
    seed = seed_reference_data(db)
    for mrn in ("S-1", "S-2"):
        patient = records.create_patient(
            db,
            {"department_id": seed.department_id, "mrn": mrn, "given_name": "Sam",
             "family_name": "Fuzz", "date_of_birth": date(1970, 1, 1),
             "phone": "+14155552671", "sms_consent": True},
        )  # fmt: skip
        records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    return seed


def _document_app() -> Flask:
    """An app used only to read the OpenAPI document, which does not depend on the database
    (the engine for this URL is built but never connected, so no file is created). Each test
    then sends its requests to the app for its own backend, given per call."""
    unused = Path(tempfile.gettempdir()) / "sbrt-openapi-never-opened.db"
    return create_app(
        Settings(database_url=f"sqlite:///{unused}", broker_url="memory://", secret_key="-")
    )


# Revoking a random token id would sooner or later revoke the one this test authenticates with,
# and every later request would be a (correct, but uninformative) 401.
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", _document_app()).exclude(
    operation_id="revoke_token"
)


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(case, app: Flask, seeded: Seed) -> None:
    case.call_and_validate(headers=seeded.auth("admin"), checks=CHECKS, app=app)
