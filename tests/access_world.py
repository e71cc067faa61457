"""Two departments for the access tests: the seed's own (A) and another one (B) with one of
everything a member of A must never see -- a linac, a closure, a downtime, a patient with a
booked course, its reminders and an SMS the patient sent."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import time_machine
from sqlalchemy.orm import Session

from notifications.models import InboundMessage, Reminder, ReminderStatus
from scheduler.models import Closure, Downtime, Fraction
from tests.api.conftest import Seed
from tests.committing import accounts, records, services

NY = ZoneInfo("America/New_York")
# A Monday noon in New York's winter; B's course is booked from this afternoon on.
NOW = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
DAYS = [date(2026, 3, d) for d in (2, 3, 4, 5, 6)]
# Strings that appear only in B's records: any page or answer containing one shows B's data.
B_MARKERS = ("BRAVO-MRN-1", "Secretova", "Bravo Linac", "Bravo Oncology", "Bravo fault")
A_MARKERS = ("ALPHA-MRN-1", "Alphonsine")
PASSWORD = "admin-password-long-enough"


@dataclass(frozen=True)
class OtherDepartment:
    """The ids of department B's records, by the name the routes give them."""

    ids: dict[str, int]
    a_patient_id: int
    a_course_id: int


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=True):
        yield


def _booked_patient(
    db: Session, department_id: int, linac_id: int, protocol_id: int, *, mrn: str, name: str
) -> tuple[int, int]:
    patient = records.create_patient(
        db,
        {"department_id": department_id, "mrn": mrn, "given_name": name, "family_name": name,
         "date_of_birth": date(1950, 1, 1), "email": f"{mrn.lower()}@example.org",
         "email_consent": True},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": protocol_id})
    placements = [
        services.Placement(n, linac_id, datetime(d.year, d.month, d.day, 14, tzinfo=NY))
        for n, d in enumerate(DAYS, start=1)
    ]
    services.book_course(db, course.id, placements, now=NOW)
    return patient.id, course.id


def build_other_department(db: Session, seed: Seed) -> OtherDepartment:
    department = records.create_department(
        db,
        {"name": "Bravo Oncology", "timezone": "America/New_York",
         "opening_hours": {str(d): ["07:00", "19:00"] for d in range(5)}},
    )  # fmt: skip
    linac = records.create_linac(
        db,
        {"department_id": department.id, "name": "Bravo Linac",
         "capabilities": ["sbrt", "cbct", "gating"], "beam_group": "bravo"},
    )  # fmt: skip
    resource = records.create_resource(
        db, {"department_id": department.id, "kind": "ct_sim", "name": "Bravo Linac CT"}
    )
    department_id, linac_id = department.id, linac.id
    patient_id, course_id = _booked_patient(
        db, department_id, linac_id, seed.protocol_id, mrn="BRAVO-MRN-1", name="Secretova"
    )
    a_patient_id, a_course_id = _booked_patient(
        db, seed.department_id, seed.linac_ids[0], seed.protocol_id,
        mrn="ALPHA-MRN-1", name="Alphonsine",
    )  # fmt: skip
    closure = Closure(department_id=department_id, day=date(2026, 3, 20), reason="Bravo fault")
    downtime = Downtime(
        linac_id=linac_id,
        starts_at=datetime(2026, 3, 9, 7, tzinfo=NY).astimezone(UTC),
        ends_at=datetime(2026, 3, 9, 19, tzinfo=NY).astimezone(UTC),
        reason="Bravo fault",
    )
    inbound = InboundMessage(
        provider_id="SM-bravo-1",
        from_number="+12125550199",
        patient_id=patient_id,
        body="Secretova cannot come",
        action="inbox",
        needs_attention=True,
    )
    db.add_all([closure, downtime, inbound])
    db.flush()
    fraction_id = db.scalars(
        sa.select(Fraction.id).where(Fraction.course_id == course_id).order_by(Fraction.number)
    ).first()
    reminder = db.scalars(sa.select(Reminder).where(Reminder.patient_id == patient_id)).first()
    assert fraction_id is not None and reminder is not None
    # A failed message, so that it would be listed among the problems.
    reminder.status = ReminderStatus.FAILED
    reminder.status_reason = "Bravo fault"
    ids = {
        "department_id": department_id,
        "linac_id": linac_id,
        "resource_id": resource.id,
        "closure_id": closure.id,
        "downtime_id": downtime.id,
        "patient_id": patient_id,
        "course_id": course_id,
        "fraction_id": fraction_id,
        "reminder_id": reminder.id,
        "message_id": inbound.id,
    }
    db.commit()
    return OtherDepartment(ids, a_patient_id, a_course_id)


def make_staff(db: Session, role: str, department_ids: list[int], email: str) -> int:
    """A staff user who can sign in to pages with PASSWORD and holds a token; the user's id."""
    user = accounts.create_user(
        db, email=email, name=email.split("@")[0], role=role, password=PASSWORD,
        department_ids=department_ids,
    )  # fmt: skip
    return user.id
