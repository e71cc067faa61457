"""What patients read: the clinic's phone in its country's national format and a readable
time-zone name, on the patient link pages and in messages, for departments in two countries;
the stored number stays E.164."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from notifications import outbox, rendering
from notifications.phone_display import dial_string, national_phone
from notifications.types import Channel, Kind, PlannedReminder
from notifications.zone_names import zone_name
from scheduler import links
from scheduler.models import Course, Department
from scheduler.protocols import PREP_INSTRUCTIONS
from tests import factories
from tests.committing import services

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DAYS = (date(2026, 3, 4), date(2026, 3, 5), date(2026, 3, 6), date(2026, 3, 9), date(2026, 3, 10))
# (department settings, number as shown, zone name in English, in Spanish)
CLINICS = {
    "us": (
        {"timezone": "America/New_York", "phone": "+12125550100", "holiday_country": "US"},
        "(212) 555-0100",
        "Eastern Time",
        "hora oriental",
    ),
    "de": (
        {"timezone": "Europe/Berlin", "phone": "+493012345678", "holiday_country": "DE"},
        "030 12345678",
        "Central European Time",
        "hora de Europa central",
    ),
}


def test_national_phone_formats() -> None:
    assert national_phone("+12125550100", "US") == "(212) 555-0100"
    assert national_phone("+493012345678", "DE") == "030 12345678"
    assert national_phone("+34912345678", "es") == "912 34 56 78"
    # No country set: the number's own country.
    assert national_phone("+442079460000", None) == "020 7946 0000"
    # A number of another country than the clinic's is dialled internationally.
    assert national_phone("+493012345678", "US") == "+49 30 12345678"
    # Nothing to format, or nothing valid: shown as stored.
    assert national_phone(None, "US") is None
    assert national_phone("call reception", "US") == "call reception"
    assert national_phone("+1555", "US") == "+1555"
    assert dial_string("+493012345678", "DE") == "+493012345678"


def test_zone_names() -> None:
    assert zone_name("Europe/Berlin") == "Central European Time"
    assert zone_name("America/New_York", "en") == "Eastern Time"
    assert zone_name("America/Chicago", "es") == "hora central"
    assert zone_name("UTC") == "Coordinated Universal Time"
    assert zone_name("Europe/Madrid", "fr") == "Central European Time"  # not shipped: English
    # A zone the table lacks is named by its city, never by its IANA key.
    assert zone_name("Mars/Olympus_Mons") == "Olympus Mons time"
    assert zone_name("Mars/Olympus_Mons", "es") == "hora de Olympus Mons"


def _booked(db: Session, clinic: dict[str, str], language: str) -> Course:
    dept = factories.department(db, **clinic)
    machines = factories.linacs(db, dept)
    liver = factories.protocol(db, prep_instructions=PREP_INSTRUCTIONS["liver"])
    patient = factories.patient(db, dept, language=language, email="ana@example.org",
                                email_consent=True)  # fmt: skip
    course = factories.course(db, patient, liver)
    db.commit()
    tz = ZoneInfo(clinic["timezone"])
    placements = [
        services.Placement(n, machines["A"].id, datetime.combine(day, time(9, 0), tz))
        for n, day in enumerate(DAYS, start=1)
    ]
    return services.book_course(db, course.id, placements, now=NOW)


@pytest.mark.parametrize("country", sorted(CLINICS))
@pytest.mark.parametrize("language", ["en", "es"])
def test_patient_page_and_messages_show_the_national_number_and_a_zone_name(
    client: FlaskClient, db: Session, country: str, language: str
) -> None:
    clinic, shown, english_zone, spanish_zone = CLINICS[country]
    zone = english_zone if language == "en" else spanish_zone
    with time_machine.travel(NOW, tick=False):
        course = _booked(db, clinic, language)
        token = links.issue_patient_link(
            db, patient_id=course.patient_id, course_id=course.id, now=NOW
        )
        db.commit()
        course_id = course.id
        page = client.get(f"/p/{token}").get_data(as_text=True)
    assert f'href="tel:{clinic["phone"]}">{shown}</a>' in page
    assert zone in page and clinic["timezone"] not in page

    # The confirmation email's footer, rendered as the sender renders it.
    course = db.get(Course, course_id)
    assert course is not None
    snapshot = outbox.course_snapshot(db, course)
    planned = PlannedReminder(Kind.CONFIRMATION, Channel.EMAIL, NOW, course_id, None, None, "k")
    context = rendering.message_context(snapshot, planned, link="https://c.example/p/x")
    message = rendering.render(Kind.CONFIRMATION, Channel.EMAIL, language, context)
    assert shown in message.text and f"({zone})" in message.text
    assert shown in (message.html or "")
    # Only what patients read changed: the stored number is still E.164.
    stored = db.scalar(
        sa.select(Department.phone).where(Department.id == course.patient.department_id)
    )
    assert stored == clinic["phone"]
    db.rollback()
