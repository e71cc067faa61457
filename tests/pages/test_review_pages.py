"""The work queue's "Mark reviewed": the protocol's rules as a booking checks them, a reason
to accept broken ones, a booking event and the audit entry in the same transaction."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import (
    AuditEntry,
    BookingEvent,
    BookingEventKind,
    Course,
    CourseStatus,
    Fraction,
)
from tests.api.conftest import Seed
from tests.pages.conftest import SignIn
from tests.pages.test_downtime_pages import book_week, future_monday


def _flag_with_squeezed_second_fraction(db: Session, course_id: int) -> None:
    """Fraction 2 four hours after fraction 1: closer than the protocol allows."""
    course = db.get(Course, course_id)
    course.status = CourseStatus.NEEDS_REVIEW
    course.review_reason = "linac downtime: fractions could not be re-planned"
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


def _state(db: Session, course_id: int) -> tuple[str, int, int]:
    db.expire_all()
    status = db.get(Course, course_id).status
    events = db.scalar(
        sa.select(sa.func.count()).where(BookingEvent.kind == BookingEventKind.COURSE_REVIEWED)
    )
    audits = db.scalar(
        sa.select(sa.func.count()).where(
            AuditEntry.subject_type == "course", AuditEntry.subject_id == course_id
        )
    )
    db.rollback()
    return str(status), events, audits


@pytest.mark.pinned_dates
def test_broken_rules_need_a_reason_on_the_page(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn, now: datetime
) -> None:
    course_id = book_week(db, seed, future_monday(now), seed.linac_ids[0])
    _flag_with_squeezed_second_fraction(db, course_id)
    csrf = signed_in(client, "scheduler")
    action = f"/downtime/courses/{course_id}/reviewed"
    queue = client.get("/downtime").get_data(as_text=True)
    assert 'name="override_reason"' in queue
    _, _, audits_before = _state(db, course_id)

    refused = client.post(action, data={"csrf_token": csrf})
    assert refused.status_code == 302
    page = client.get("/downtime").get_data(as_text=True)
    assert f"Course {course_id} breaks protocol rules: fraction 1" in page
    assert "Give a reason to accept them" in page
    assert _state(db, course_id)[:2] == ("needs_review", 0)

    client.post(action, data={"csrf_token": csrf, "override_reason": "oncologist accepts"})
    page = client.get("/downtime").get_data(as_text=True)
    assert f"Course {course_id} marked reviewed; it is booked again." in page
    status, events, audits = _state(db, course_id)
    assert (status, events) == ("booked", 1)
    # The sign-off's own entry (the queue page reads add theirs under another subject).
    assert audits == audits_before + 1
