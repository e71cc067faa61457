"""Small builders for test data, written straight to the database (no use cases involved)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy.orm import Session

from scheduler.models import Course, Department, Linac, Patient, Protocol, Role, User
from scheduler.protocols import DEFAULT_PROTOCOLS

WEEKDAY_HOURS = {str(d): ["07:00", "19:00"] for d in range(5)}
# A Monday in early March 2026, before the US spring-forward change on the 8th.
MONDAY = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def department(session: Session, **overrides: object) -> Department:
    values = {
        "name": "Test Radiation Oncology",
        "timezone": "America/New_York",
        "phone": "+12125550100",
        "holiday_country": "US",
        "opening_hours": WEEKDAY_HOURS,
    } | overrides
    dept = Department(**values)
    session.add(dept)
    session.flush()
    return dept


def linacs(session: Session, dept: Department) -> dict[str, Linac]:
    """Two SBRT linacs in one beam-matched group, one SBRT linac alone, one conventional."""
    sbrt = ["sbrt", "cbct", "gating", "breath_hold"]
    made = {
        "A": Linac(department_id=dept.id, name="TrueBeam A", capabilities=sbrt, beam_group="G1"),
        "B": Linac(department_id=dept.id, name="TrueBeam B", capabilities=sbrt, beam_group="G1"),
        "C": Linac(department_id=dept.id, name="Edge C", capabilities=sbrt),
        "D": Linac(department_id=dept.id, name="Clinac D", capabilities=["imrt", "vmat"]),
    }
    session.add_all(made.values())
    session.flush()
    return made


def protocol(session: Session, code: str = "liver-5fx", **overrides: object) -> Protocol:
    spec = next(p for p in DEFAULT_PROTOCOLS if p["code"] == code) | overrides
    row = Protocol(**spec)
    session.add(row)
    session.flush()
    return row


_mrn = iter(range(100000, 999999))


def patient(session: Session, dept: Department, **overrides: object) -> Patient:
    values = {
        "department_id": dept.id,
        "mrn": f"MRN{next(_mrn)}",
        "given_name": "Ana",
        "family_name": "Example",
        "date_of_birth": date(1956, 5, 14),
        "phone_e164": "+12125550123",
        "language": "en",
    } | overrides
    row = Patient(**values)
    session.add(row)
    session.flush()
    return row


def course(session: Session, pat: Patient, proto: Protocol, *, ready: bool = True) -> Course:
    row = Course(patient_id=pat.id, protocol_id=proto.id)
    if ready:
        row.plan_approved_at = row.physics_qa_at = MONDAY
    session.add(row)
    session.flush()
    return row


_email = iter(range(1, 10**6))


def user(
    session: Session,
    *,
    departments: list[Department],
    role: str = Role.SCHEDULER,
    **overrides: object,
) -> User:
    """A staff user who is a member of ``departments`` (pass [] for a user of none)."""
    number = next(_email)
    values = {"email": f"staff{number}@example.org", "name": f"Staff {number}", "role": role}
    row = User(**(values | overrides))
    row.departments = list(departments)
    session.add(row)
    session.flush()
    return row


def world(session: Session) -> dict[str, object]:
    """A department with its linacs and the liver protocol, committed."""
    dept = department(session)
    machines = linacs(session, dept)
    liver = protocol(session)
    session.commit()
    return {"department": dept, "linacs": machines, "liver": liver}
