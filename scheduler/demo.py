"""The demo department `make run` starts with: machines, the default protocols, two staff
accounts and a few patients with booked courses. Loading it twice changes nothing."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from config import Settings
from scheduler import accounts, records, services, unit_of_work
from scheduler.models import Department
from scheduler.protocols import DEFAULT_PROTOCOLS, PREP_INSTRUCTIONS
from scheduler.timeutil import local_date

DEMO_DEPARTMENT = "Riverside Radiation Oncology (demo)"
SBRT_MACHINE = ["sbrt", "cbct", "gating", "breath_hold"]
DEMO_LINACS = [
    {"name": "TrueBeam 1", "capabilities": SBRT_MACHINE, "beam_group": "truebeam"},
    {"name": "TrueBeam 2", "capabilities": SBRT_MACHINE, "beam_group": "truebeam"},
    {"name": "Edge", "capabilities": ["sbrt", "cbct", "gating", "srs"], "beam_group": None},
    {"name": "Clinac iX", "capabilities": ["imrt", "vmat", "cbct"], "beam_group": None},
]
# (given name, family name, phone, language, protocol code)
DEMO_PATIENTS = [
    ("Maria", "Gonzalez", "(212) 555-0142", "es", "liver-5fx"),
    ("James", "Okafor", "(212) 555-0178", "en", "lung-peripheral-3fx"),
    ("Helen", "Novak", "(212) 555-0110", "en", "prostate-5fx"),
    ("Samuel", "Reyes", "(212) 555-0193", "es", "spine-1fx"),
]
# Dates of birth of DEMO_PATIENTS, in the same order.
DEMO_BIRTH_DATES = [date(1958, 4, 17), date(1949, 11, 2), date(1961, 7, 29), date(1972, 1, 8)]


def _credentials(settings: Settings) -> dict[str, str]:
    """Random demo passwords, made once per installation and kept in instance/."""
    path = settings.instance_dir / "demo-credentials.json"
    if path.exists():
        return json.loads(path.read_text())
    creds = {
        "admin@demo.example": secrets.token_urlsafe(12),
        "scheduler@demo.example": secrets.token_urlsafe(12),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(creds))
    path.chmod(0o600)
    return creds


def seed_demo(
    session: Session, settings: Settings, *, now: datetime | None = None
) -> dict[str, Any]:
    """Create the demo data if absent; return what an operator needs to log in."""
    now = now or datetime.now(UTC)
    creds = _credentials(settings)
    existing = session.scalar(sa.select(Department).where(Department.name == DEMO_DEPARTMENT))
    if existing is None:
        with unit_of_work.transaction(session):
            _create(session, creds, now)
    session.rollback()  # end the read above: on SQLite it holds the write lock
    return {
        "web": settings.public_base_url,
        "API docs": f"{settings.public_base_url}/api/docs",
        **{f"login ({email.split('@')[0]})": f"{email} / {pw}" for email, pw in creds.items()},
    }


def _create(session: Session, creds: dict[str, str], now: datetime) -> None:
    department = records.create_department(
        session,
        {
            "name": DEMO_DEPARTMENT,
            "timezone": "America/New_York",
            "phone": "+12125550100",
            "holiday_country": "US",
            "holiday_subdivision": "NY",
            "opening_hours": {str(d): ["07:00", "19:00"] for d in range(5)},
        },
    )
    for linac in DEMO_LINACS:
        records.create_linac(session, {"department_id": department.id, **linac})
    protocols = {}
    for spec in DEFAULT_PROTOCOLS:
        prep = PREP_INSTRUCTIONS[spec.get("site", "generic")]
        protocols[spec["code"]] = records.create_protocol(
            session, {**spec, "prep_instructions": prep}
        )
    for (email, password), role in zip(creds.items(), ("admin", "scheduler"), strict=True):
        name = "Demo " + role.title()
        accounts.create_user(session, email=email, name=name, role=role, password=password)
    for index, (given, family, phone, language, code) in enumerate(DEMO_PATIENTS):
        patient = records.create_patient(
            session,
            {
                "department_id": department.id,
                "mrn": f"DEMO{1001 + index}",
                "given_name": given,
                "family_name": family,
                "date_of_birth": DEMO_BIRTH_DATES[index],
                "phone": phone,
                "language": language,
                "sms_consent": True,
                "email_consent": False,
            },
            now=now,
        )
        course = records.create_course(
            session,
            {
                "patient_id": patient.id,
                "protocol_id": protocols[code].id,
                # Days in the department's calendar: late in its evening, UTC is a day ahead.
                "ready_to_treat_on": local_date(now, department.timezone)
                + timedelta(days=1 + index),
            },
        )
        if index < 3:  # the last one stays not yet ready, to show a tentative first fraction
            for step in ("ct_simulation", "plan_approved", "physics_qa", "consent"):
                services.record_readiness(session, course.id, step=step, done_at=now, now=now)
        proposal = services.propose_schedules(session, course.id, now=now)
        if proposal.schedules:
            placements = [
                services.Placement(p.number, p.linac_id, p.start)
                for p in proposal.schedules[0].fractions
            ]
            services.book_course(session, course.id, placements, now=now)
