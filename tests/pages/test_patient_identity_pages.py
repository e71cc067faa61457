"""Patient identity on the staff pages (name, date of birth and MRN together), the course
page's layout and readiness form, and the warning before booking a second course close to
another one of the same patient. The clock is set, so nothing depends on the day it runs."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, BookingEvent, Course, Department, Fraction, Patient
from tests import factories
from tests.api.conftest import Seed
from tests.pages.conftest import SignIn
from tests.pages.test_patients_pages import _forms, _html, _id_from

# Monday 2 March 2026, 07:00 in New York.
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CSS = Path(__file__).resolve().parents[2] / "web" / "static" / "app.css"
IDENTITY = re.compile(r'<h1[^>]*>(.*?)</h1>|<p class="identity"[^>]*>(.*?)</p>', re.DOTALL)


@pytest.fixture(autouse=True)
def _clock():
    with time_machine.travel(NOW, tick=False):
        yield


def _new_patient(client: FlaskClient, csrf: str, mrn: str, **fields: str):
    return client.post(
        "/patients/new",
        data={
            "csrf_token": csrf,
            "mrn": mrn,
            "given_name": "Ana",
            "family_name": "Lopez",
            "date_of_birth": "1961-02-03",
            "phone": "",
            "phone_country": "US",
            "email": f"{mrn.lower()}@example.org",
            "language": "en",
            "timezone": "",
            "email_consent": "yes",
            **fields,
        },
    )


def _patient(client: FlaskClient, csrf: str, mrn: str) -> int:
    response = _new_patient(client, csrf, mrn)
    assert response.status_code == 302, _html(response)
    return _id_from(response.headers["Location"], "/patients")


def _course(client: FlaskClient, csrf: str, patient_id: int, seed: Seed) -> int:
    response = client.post(
        f"/patients/{patient_id}/courses/new",
        data={"csrf_token": csrf, "protocol_id": str(seed.protocol_id), "priority": "3"},
    )
    assert response.status_code == 302, _html(response)
    return _id_from(response.headers["Location"], "/courses")


def _first_option(client: FlaskClient, course_id: int, earliest: str):
    page = client.get(f"/courses/{course_id}/propose", query_string={"earliest": earliest})
    assert page.status_code == 200, _html(page)
    return _forms(_html(page), f"/courses/{course_id}/book")[0]


def _book(client: FlaskClient, course_id: int, earliest: str) -> None:
    booked = client.post(
        f"/courses/{course_id}/book", data=_first_option(client, course_id, earliest)
    )
    assert booked.status_code == 302, _html(booked)


def _identity(html: str) -> str:
    """The text of the element naming the patient (the heading or the identity line)."""
    for heading, line in IDENTITY.findall(html):
        inner = heading or line
        if "MRN" in inner:
            return re.sub(r"<[^>]+>", "", inner)
    raise AssertionError("no element names the patient")


def _css_rules(selector_part: str) -> list[str]:
    """The declaration blocks of every CSS rule whose selector list includes ``selector_part``."""
    css = re.sub(r"/\*.*?\*/", "", CSS.read_text(), flags=re.DOTALL)
    return [
        body
        for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", css)
        if selector_part in [s.strip() for s in selectors.split(",")]
    ]


def _background(selector: str) -> str:
    values = [
        m.group(1).strip()
        for body in _css_rules(selector)
        for m in [re.search(r"background:\s*([^;]+)", body)]
        if m
    ]
    assert values, f"no background for {selector}"
    return values[0]


# --- the date of birth on the new patient form -------------------------------------------


def test_new_patient_form_requires_a_sensible_date_of_birth(
    client: FlaskClient, signed_in: SignIn, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    form = _html(client.get("/patients/new"))
    assert 'for="date_of_birth"' in form and 'type="date"' in form

    for typed, message in (
        ("", "Date of birth is required"),
        ("2026-03-03", "Date of birth must not be in the future"),
        ("1889-07-01", "Date of birth must be on or after 1900-01-01"),
        ("1961-02-30", "Date of birth must be a date (YYYY-MM-DD)"),
    ):
        refused = _new_patient(client, csrf, "DOB-1", date_of_birth=typed)
        assert refused.status_code == 422, typed
        html = _html(refused)
        assert f'id="date_of_birth-error">{message}' in html, typed
        assert 'aria-describedby="date_of_birth-hint date_of_birth-error"' in html
        # What was typed stays on the form.
        assert f'name="date_of_birth" type="date" value="{typed}"' in html
        assert 'value="DOB-1"' in html and 'value="Lopez"' in html
    assert db.scalar(sa.select(sa.func.count()).select_from(Patient)) == 0
    db.rollback()  # on SQLite an open read holds the write lock the app's next request needs

    patient_id = _patient(client, csrf, "DOB-1")
    db.expire_all()
    assert db.get(Patient, patient_id).date_of_birth.isoformat() == "1961-02-03"


# --- name, date of birth and MRN together ------------------------------------------------


def test_every_page_about_one_patient_names_them_with_date_of_birth_and_mrn(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    patient_id = _patient(client, csrf, "ID-1")
    course_id = _course(client, csrf, patient_id, seed)
    _book(client, course_id, "2026-03-09")
    fraction_id = db.scalar(
        sa.select(Fraction.id).where(Fraction.course_id == course_id, Fraction.number == 2)
    )
    db.rollback()

    for url in (
        f"/patients/{patient_id}",
        f"/patients/{patient_id}/courses/new",
        f"/courses/{course_id}",
        f"/courses/{course_id}/propose",
        f"/courses/{course_id}/cancel",
        f"/fractions/{fraction_id}/move",
        f"/fractions/{fraction_id}/cancel",
        f"/fractions/{fraction_id}/missed",
        f"/courses/{course_id}/rebook",
        f"/patients/{patient_id}/messages",
        f"/courses/{course_id}/messages",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        shown = _identity(_html(response))
        assert "Lopez, Ana" in shown, url
        assert "DOB 3 Feb 1961" in shown, url
        assert "MRN ID-1" in shown, url

    found = _html(client.post("/patients", data={"csrf_token": csrf, "q": "ID-1"}))
    assert re.search(r"Lopez, Ana</a></td>\s*<td><time datetime=\"1961-02-03\">3 Feb 1961", found)

    # Calendars (shared screens) keep to initials and MRN.
    week = _html(client.get("/calendar/week?start=2026-03-09"))
    assert "A.L. ID-1" in week
    assert "Lopez" not in week and "1961" not in week
    day = _html(client.get("/calendar/day?date=2026-03-09"))
    assert "ID-1" in day and "Lopez" not in day and "1961" not in day


def test_a_patient_registered_without_a_date_of_birth_shows_it_is_missing(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    legacy = factories.patient(
        db, db.get(Department, seed.department_id), mrn="OLD-1", date_of_birth=None
    )
    db.commit()
    signed_in(client, "viewer")
    page = _html(client.get(f"/patients/{legacy.id}"))
    assert "DOB not recorded" in _identity(page) and "MRN OLD-1" in _identity(page)
    assert f"/patients/{legacy.id}/date-of-birth" not in page  # a viewer cannot add it


def test_a_scheduler_records_a_missing_date_of_birth_on_the_patient_page(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    legacy = factories.patient(
        db, db.get(Department, seed.department_id), mrn="OLD-2", date_of_birth=None
    )
    db.commit()
    csrf = signed_in(client, "scheduler")
    action = f"/patients/{legacy.id}/date-of-birth"
    assert len(_forms(_html(client.get(f"/patients/{legacy.id}")), action)) == 1

    future = client.post(action, data={"csrf_token": csrf, "date_of_birth": "2026-03-03"})
    assert future.status_code == 422
    html = _html(future)
    assert 'id="date_of_birth-error">Date of birth must not be in the future' in html
    assert 'value="2026-03-03"' in html  # kept as typed

    recorded = client.post(action, data={"csrf_token": csrf, "date_of_birth": "1949-11-02"})
    assert recorded.status_code == 302
    page = _html(client.get(recorded.headers["Location"]))
    assert "Date of birth recorded." in page
    assert "DOB 2 Nov 1949" in _identity(page)
    assert action not in page  # nothing left to add
    db.expire_all()
    entry = db.scalars(
        sa.select(AuditEntry).where(
            AuditEntry.action == "update", AuditEntry.subject_id == legacy.id
        )
    ).one()
    assert entry.detail["field"] == "date_of_birth"
    db.rollback()


# --- the course page ---------------------------------------------------------------------


def test_course_page_puts_fractions_first_and_marks_cancel_as_dangerous(
    client: FlaskClient, signed_in: SignIn, seed: Seed
) -> None:
    csrf = signed_in(client, "scheduler")
    course_id = _course(client, csrf, _patient(client, csrf, "PAGE-1"), seed)
    _book(client, course_id, "2026-03-09")
    html = _html(client.get(f"/courses/{course_id}"))

    fractions = html.index('id="fractions-heading"')
    assert fractions < html.index('id="readiness-heading"')
    assert fractions < html.index('id="summary-heading"')

    cancel = re.search(r'<a class="([^"]+)" href="/courses/\d+/cancel">Cancel course', html)
    assert cancel and cancel.group(1).split() == ["button", "danger"]
    propose_or_primary = _background(".button")
    assert _background(".button.danger") != propose_or_primary
    assert 'class="danger" href="/fractions/' in html  # cancelling one fraction too
    assert _css_rules("a.danger:not(.button)")


def test_readiness_is_one_form_with_every_step_and_a_blank_now(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    course_id = _course(client, csrf, _patient(client, csrf, "READY-1"), seed)
    action = f"/courses/{course_id}/readiness"
    forms = _forms(_html(client.get(f"/courses/{course_id}")), action)
    assert len(forms) == 1
    form = forms[0]
    assert form.getlist("record") == [
        "ct_simulation",
        "plan_approved",
        "physics_qa",
        "consent",
        "fiducials_placed",
    ]
    assert form.getlist("done_at") == [""]  # not prefilled: blank means now

    nothing = client.post(action, data={"csrf_token": csrf, "done_at": ""})
    assert nothing.status_code == 422
    assert "Tick the steps to record" in _html(nothing)

    both = client.post(
        action,
        data={"csrf_token": csrf, "record": ["plan_approved", "physics_qa"], "done_at": ""},
    )
    assert both.status_code == 302
    page = _html(client.get(both.headers["Location"]))
    assert "Plan approval and Physics QA recorded for Mon 2 Mar 2026 07:00 EST" in page
    assert "the course is ready to treat" in page
    db.expire_all()
    course = db.get(Course, course_id)
    assert course.plan_approved_at == course.physics_qa_at == NOW
    assert course.ct_simulation_at is None
    db.rollback()

    # A step already done can be cleared from the same form, but not recorded at once.
    contradictory = client.post(
        action, data={"csrf_token": csrf, "record": "physics_qa", "clear": "physics_qa"}
    )
    assert contradictory.status_code == 422
    assert "Physics QA: tick either Record or Clear" in _html(contradictory)
    cleared = client.post(action, data={"csrf_token": csrf, "clear": "physics_qa"})
    assert cleared.status_code == 302
    assert "Physics QA cleared." in _html(client.get(cleared.headers["Location"]))
    db.expire_all()
    assert db.get(Course, course_id).physics_qa_at is None
    db.rollback()


# --- a second course close to another ------------------------------------------------------


def test_a_second_course_within_seven_days_shows_a_warning_to_acknowledge(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    patient_id = _patient(client, csrf, "TWICE-1")
    first = _course(client, csrf, patient_id, seed)
    _book(client, first, "2026-03-09")
    second = _course(client, csrf, patient_id, seed)

    warned = client.post(
        f"/courses/{second}/book", data=_first_option(client, second, "2026-03-16")
    )
    assert warned.status_code == 409
    html = _html(warned)
    assert "this patient has another course close to this schedule" in html
    assert f'href="/courses/{first}">Course {first}</a>' in html
    assert "Lopez, Ana" in _identity(html)
    confirm = _forms(html, f"/courses/{second}/book")
    assert len(confirm) == 1
    assert confirm[0].getlist("nearby_course_id") == [str(first)]
    assert re.search(
        r'<input id="acknowledge_nearby" name="acknowledge_nearby" type="checkbox"', html
    )
    db.expire_all()
    assert db.get(Course, second).status == "draft"
    db.rollback()  # on SQLite an open read holds the write lock the app's next request needs

    # Sent back without the tick: still nothing booked, and the page says why.
    unticked = confirm[0].copy()
    unticked.poplist("acknowledge_nearby")
    again = client.post(f"/courses/{second}/book", data=unticked)
    assert again.status_code == 409
    assert "tick the box" in _html(again)

    booked = client.post(f"/courses/{second}/book", data=confirm[0])
    assert booked.status_code == 302, _html(booked)
    assert "Booked 5 fractions" in _html(client.get(booked.headers["Location"]))
    db.expire_all()
    assert db.get(Course, second).status == "booked"
    event = db.scalars(
        sa.select(BookingEvent).where(
            BookingEvent.course_id == second, BookingEvent.kind == "course_booked"
        )
    ).one()
    assert event.payload["nearby_courses_acknowledged"] == [first]
    entry = db.scalars(
        sa.select(AuditEntry).where(AuditEntry.action == "book", AuditEntry.subject_id == second)
    ).one()
    assert entry.detail["acknowledged_nearby_courses"] == [first]


def test_a_second_course_more_than_seven_days_away_books_at_once(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    csrf = signed_in(client, "scheduler")
    patient_id = _patient(client, csrf, "LATER-1")
    first = _course(client, csrf, patient_id, seed)
    _book(client, first, "2026-03-09")
    second = _course(client, csrf, patient_id, seed)
    _book(client, second, "2026-04-06")
    db.expire_all()
    assert db.get(Course, second).status == "booked"
