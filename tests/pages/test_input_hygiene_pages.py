"""Text the staff pages refuse with a readable message, keeping what was typed: hidden
characters in names, numbers that cost money, time zones that are not places, lookalike staff
emails. The patient's time zone is picked from a list of places."""

from __future__ import annotations

import re
from datetime import datetime
from html import unescape

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import Downtime, Linac, Patient, User
from tests.api.conftest import ADMIN_PASSWORD, Seed
from tests.pages.conftest import SignIn
from tests.pages.test_downtime_pages import form, future_monday
from tests.pages.test_patients_pages import _html

TIMEZONE_SELECT = re.compile(r'<select id="timezone" name="timezone"[^>]*>(.*?)</select>', re.S)
OPTION = re.compile(r'<option value="([^"]*)"( selected)?>')


def _new_patient(client: FlaskClient, csrf: str, **fields: str):  # noqa: ANN202 - a response
    data = {
        "csrf_token": csrf,
        "mrn": "HYG-1",
        "given_name": "Ana",
        "family_name": "Lopez",
        "date_of_birth": "1961-02-03",
        "phone": "(415) 555-0100",
        "phone_country": "US",
        "email": "ana@example.org",
        "language": "es",
        "timezone": "",
        "sms_consent": "yes",
        **fields,
    }
    return client.post("/patients/new", data=data)


def _zone_options(html: str) -> list[tuple[str, bool]]:
    match = TIMEZONE_SELECT.search(html)
    assert match, "the time zone is not a select"
    return [(value, bool(selected)) for value, selected in OPTION.findall(match.group(1))]


def _no_patient(db: Session) -> None:
    db.rollback()
    count = db.scalar(sa.select(sa.func.count()).select_from(Patient))
    db.rollback()  # SQLite: release the write lock the app's requests need
    assert count == 0


@pytest.mark.parametrize(
    ("field", "typed", "label"),
    [
        ("given_name", "Ana\u202eanA", "Given name"),
        ("family_name", "Lo\u200bpez", "Family name"),
        ("mrn", "HYG\r\n1", "MRN"),
    ],
)
def test_patient_page_refuses_hidden_characters_with_a_message(
    client: FlaskClient, signed_in: SignIn, db: Session, field: str, typed: str, label: str
) -> None:
    csrf = signed_in(client, "scheduler")
    response = _new_patient(client, csrf, **{field: typed})
    assert response.status_code == 422
    text = unescape(_html(response))
    assert "The patient was not saved" in text
    assert re.search(rf'id="{field}-error">[^<]*(character|one line)', text), text
    _no_patient(db)


def test_patient_page_refuses_a_premium_rate_number(
    client: FlaskClient, signed_in: SignIn, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    response = _new_patient(client, csrf, phone="900 555 0100")
    assert response.status_code == 422
    text = unescape(_html(response))
    assert re.search(r'id="phone-error">[^<]*premium-rate number', text), text
    assert 'value="900 555 0100"' in text  # what was typed is kept to correct
    _no_patient(db)


def test_patient_time_zone_is_chosen_from_places(
    client: FlaskClient, signed_in: SignIn, db: Session
) -> None:
    signed_in(client, "scheduler")
    options = _zone_options(_html(client.get("/patients/new")))
    values = [value for value, _ in options]
    assert options[0] == ("", True)  # the department's zone unless one is picked
    assert {"America/Chicago", "Europe/Madrid", "UTC"} <= set(values)
    for not_offered in ("localtime", "Factory", "posixrules", "EST5EDT", "Etc/GMT+5", "US/Eastern"):
        assert not_offered not in values, not_offered
    assert values[1:] == sorted(values[1:])


def test_patient_page_keeps_the_chosen_zone_and_refuses_one_that_is_not_a_place(
    client: FlaskClient, signed_in: SignIn, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    # Another field is wrong: the zone picked stays selected for the second try.
    kept = _new_patient(client, csrf, timezone="America/Chicago", phone="12")
    assert kept.status_code == 422
    assert [v for v, selected in _zone_options(_html(kept)) if selected] == ["America/Chicago"]

    for zone in ("localtime", "Factory"):
        refused = _new_patient(client, csrf, timezone=zone)
        assert refused.status_code == 422
        text = _html(refused)
        assert re.search(r'id="timezone-error">[^<]*IANA time zone', text), text
    _no_patient(db)

    created = _new_patient(client, csrf, timezone="America/Chicago")
    assert created.status_code == 302, _html(created)
    db.rollback()
    assert db.scalar(sa.select(Patient.timezone)) == "America/Chicago"


def test_admin_linac_page_refuses_a_name_with_a_line_feed(
    client: FlaskClient, signed_in: SignIn, db: Session, seed: Seed
) -> None:
    csrf = signed_in(client, "admin")
    response = client.post(
        "/admin/linacs/new",
        data={
            "csrf_token": csrf,
            "department_id": seed.department_id,
            "name": "Halcyon\n3",
            "capabilities": ["sbrt"],
            "active": "on",
            "department_hours": "on",
        },
    )
    assert response.status_code == 422
    assert re.search(r"must be on one line", _html(response))
    db.rollback()
    assert db.scalar(sa.select(sa.func.count()).select_from(Linac)) == 2


def test_admin_users_page_refuses_a_lookalike_email(
    client: FlaskClient, signed_in: SignIn, db: Session
) -> None:
    csrf = signed_in(client, "admin")
    response = client.post(
        "/admin/users",
        data={
            "csrf_token": csrf,
            "name": "Lookalike",
            "email": "\u0430dmin@example.org",  # Cyrillic a
            "role": "admin",
            "password": ADMIN_PASSWORD,
        },
    )
    assert response.status_code == 422
    assert "lookalike characters from other alphabets are refused" in unescape(_html(response))
    db.rollback()
    assert db.scalar(sa.select(User.id).where(User.name == "Lookalike")) is None


def test_downtime_page_refuses_a_reason_with_a_line_break(
    client: FlaskClient, signed_in: SignIn, db: Session, seed: Seed, now: datetime
) -> None:
    csrf = signed_in(client, "scheduler")
    day = future_monday(now)
    values = form(
        seed.linac_ids[0], f"{day}T08:00", f"{day}T12:00", "apply", csrf, reason="Gantry\nfault"
    )
    response = client.post("/downtime/new", data=values)
    assert response.status_code == 400  # this form's status for a field to correct
    assert "The reason must be on one line" in _html(response)
    db.rollback()
    count = db.scalar(sa.select(sa.func.count()).select_from(Downtime))
    db.rollback()
    assert count == 0
