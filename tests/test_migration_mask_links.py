"""Migration 0013 on both backends: the patient-link tokens in stored messages are masked."""

from __future__ import annotations

from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import command

from tests.test_migration_reminder_cadence import _alembic, _insert, empty_url  # noqa: F401

AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TOKEN = "Ab3dE5gH7jK9mN12"


def test_stored_messages_lose_their_working_links(empty_url: str) -> None:  # noqa: F811
    cfg = _alembic(empty_url)
    command.upgrade(cfg, "0011")
    engine = sa.create_engine(empty_url)
    try:
        with engine.begin() as conn:
            department = _insert(
                conn, "departments", name="D", timezone="America/New_York", opening_hours={},
                created_at=AT,
            )  # fmt: skip
            protocol = _insert(
                conn, "protocols", code="p", name="p", site="generic", fractions=5,
                min_hours_between=0.0, min_interval_days=1, weekdays=[0, 1, 2, 3, 4],
                first_session_minutes=60, session_minutes=45, capabilities=["sbrt"],
                prep_instructions="", active=True,
            )  # fmt: skip
            patient = _insert(
                conn, "patients", department_id=department, mrn="M1", given_name="A",
                family_name="B", date_of_birth=date(1956, 5, 14), language="en",
                sms_consent=True, sms_opted_out=False, email_consent=False, created_at=AT,
            )  # fmt: skip
            course = _insert(
                conn, "courses", patient_id=patient, protocol_id=protocol, status="booked",
                priority=3, notes="", created_at=AT, updated_at=AT,
            )  # fmt: skip
            bodies = {
                "with_link": f"Clinic: 5 visits. See https://c.example/p/{TOKEN} Reply C",
                "without": "Clinic: your visit is Thu 5 Mar, 9:00 AM. Reply C",
                "not_sent": None,
            }
            for key, body in bodies.items():
                _insert(
                    conn, "reminders", dedupe_key=key, kind="confirmation", channel="sms",
                    patient_id=patient, course_id=course, due_at=AT, status="sent", context={},
                    attempts=1, created_at=AT, updated_at=AT, rendered_body=body,
                )  # fmt: skip

        command.upgrade(cfg, "0013")
        with engine.connect() as conn:
            stored = dict(
                conn.execute(sa.text("SELECT dedupe_key, rendered_body FROM reminders")).all()
            )
        assert stored == {
            "with_link": "Clinic: 5 visits. See https://c.example/p/•••• Reply C",
            "without": bodies["without"],
            "not_sent": None,
        }
        command.downgrade(cfg, "0011")  # nothing to restore, and nothing fails
    finally:
        engine.dispose()
