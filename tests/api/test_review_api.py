"""Signing off a course flagged for review through the API: the same use case as the page,
with the protocol's rules, a booking event and one audit entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, BookingEvent, BookingEventKind, Course, Fraction
from tests.api.conftest import Seed
from tests.api.test_repair_api import NOW, PROBLEM, _booked_course


def _flag(db: Session, course_id: int) -> None:
    db.execute(
        sa.update(Course)
        .where(Course.id == course_id)
        .values(status="needs_review", review_reason="linac downtime")
    )
    db.commit()


def _squeeze_second_fraction(db: Session, course_id: int) -> None:
    first, second = db.scalars(
        sa.select(Fraction)
        .where(Fraction.course_id == course_id, Fraction.number.in_([1, 2]))
        .order_by(Fraction.number)
    )
    length = second.ends_at - second.starts_at
    second.linac_id = first.linac_id
    second.starts_at = first.starts_at + timedelta(hours=4)
    second.ends_at = second.starts_at + length
    db.commit()


def _audit_rows(db: Session, course_id: int) -> list[AuditEntry]:
    db.expire_all()
    rows = list(
        db.scalars(
            sa.select(AuditEntry).where(
                AuditEntry.subject_type == "course",
                AuditEntry.subject_id == course_id,
                AuditEntry.detail["reviewed"].as_boolean().is_(True),
            )
        )
    )
    db.rollback()
    return rows


def test_rules_are_checked_and_an_override_reason_accepts_them(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    auth = seed.auth("scheduler")
    with time_machine.travel(NOW, tick=False):
        course_id = _booked_course(client, seed, "REVIEW-1")["id"]
        _flag(db, course_id)
        _squeeze_second_fraction(db, course_id)
        url = f"/api/v1/courses/{course_id}/reviewed"

        refused = client.post(url, json={}, headers=auth)
        assert refused.status_code == 422
        assert refused.content_type == PROBLEM
        violations = refused.json["violations"]
        assert violations and all(v["overridable"] for v in violations)
        assert _audit_rows(db, course_id) == []

        accepted = client.post(url, json={"override_reason": "oncologist accepts"}, headers=auth)
        assert accepted.status_code == 200, accepted.json
        assert accepted.json["status"] == "booked"
    (audit,) = _audit_rows(db, course_id)
    assert audit.detail["path"] == url and audit.detail["overridden"] is True
    event = db.scalars(
        sa.select(BookingEvent).where(BookingEvent.kind == BookingEventKind.COURSE_REVIEWED)
    ).one()
    assert event.payload["override_reason"] == "oncologist accepts"


def test_a_course_not_waiting_for_review_is_a_conflict_and_viewers_are_refused(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    with time_machine.travel(NOW, tick=False):
        course_id = _booked_course(client, seed, "REVIEW-2")["id"]
        url = f"/api/v1/courses/{course_id}/reviewed"
        assert client.post(url, json={}, headers=seed.auth("scheduler")).status_code == 409
        _flag(db, course_id)
        assert client.post(url, json={}, headers=seed.auth("viewer")).status_code == 403
        assert (
            client.post(url, json={"override_reason": ""}, headers=seed.auth()).status_code == 422
        )
        done = client.post(url, json={}, headers=seed.auth("scheduler"))
        assert done.status_code == 200 and done.json["status"] == "booked"
        assert datetime.now(UTC) == NOW
