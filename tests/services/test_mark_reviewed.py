"""Signing off a course flagged for review: the protocol's rules are checked as a booking
checks them, the change writes a booking event, and the use case only flushes."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from scheduler import services as use_cases
from scheduler.errors import RulesBroken, StateConflict
from scheduler.models import (
    BookingEvent,
    BookingEventKind,
    Course,
    CourseStatus,
    Downtime,
    Fraction,
    FractionStatus,
)
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY


def _flagged_course(session) -> tuple[int, list[Fraction]]:
    """A booked liver course that a re-plan left waiting for review."""
    w = f.world(session)
    patient = f.patient(session, w["department"], sms_consent=True)
    course = f.course(session, patient, w["liver"])
    session.commit()
    proposal = services.propose_schedules(session, course.id, now=NOW).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(session, course.id, placements, now=NOW)
    course = session.get(Course, course.id)
    course.status = CourseStatus.NEEDS_REVIEW
    course.review_reason = "linac downtime: fractions could not be re-planned"
    session.commit()
    fractions = list(
        session.scalars(
            sa.select(Fraction).where(Fraction.course_id == course.id).order_by(Fraction.number)
        )
    )
    return course.id, fractions


def _reviewed_events(session, course_id: int) -> list[BookingEvent]:
    return list(
        session.scalars(
            sa.select(BookingEvent).where(
                BookingEvent.course_id == course_id,
                BookingEvent.kind == BookingEventKind.COURSE_REVIEWED,
            )
        )
    )


def _squeeze_second_fraction(session, fractions: list[Fraction]) -> None:
    """Fraction 2 four hours after fraction 1 on its linac: too close for the protocol (at
    least 20 h and a day apart), which a downtime repair done by hand can leave behind."""
    first, second = fractions[0], fractions[1]
    length = second.ends_at - second.starts_at
    second.linac_id = first.linac_id
    second.starts_at = first.starts_at + timedelta(hours=4)
    second.ends_at = second.starts_at + length
    session.commit()


def test_a_course_keeping_the_rules_is_booked_again_with_an_event(session):
    course_id, _ = _flagged_course(session)
    course = services.mark_reviewed(session, course_id, actor_id=None, now=NOW)
    assert course.status == CourseStatus.BOOKED and course.review_reason is None
    (event,) = _reviewed_events(session, course_id)
    assert event.payload["review_reason"].startswith("linac downtime")
    assert event.payload["violations"] == [] and event.payload["override_reason"] is None
    session.commit()


def test_the_use_case_only_flushes_so_the_caller_decides(session):
    course_id, _ = _flagged_course(session)
    use_cases.mark_reviewed(session, course_id, now=NOW)
    session.rollback()
    session.expire_all()
    assert session.get(Course, course_id).status == CourseStatus.NEEDS_REVIEW
    assert _reviewed_events(session, course_id) == []


def test_broken_protocol_rules_are_refused_without_a_reason(session):
    course_id, fractions = _flagged_course(session)
    _squeeze_second_fraction(session, fractions)
    with pytest.raises(RulesBroken) as refused:
        services.mark_reviewed(session, course_id, now=NOW)
    codes = {v.code for v in refused.value.violations}
    assert "min_hours_between" in codes
    assert [v.message for v in refused.value.violations if not v.overridable] == []
    session.rollback()
    session.expire_all()
    assert session.get(Course, course_id).status == CourseStatus.NEEDS_REVIEW
    assert _reviewed_events(session, course_id) == []

    course = services.mark_reviewed(
        session, course_id, override_reason="radiation oncologist accepts", now=NOW
    )
    session.commit()
    assert course.status == CourseStatus.BOOKED
    (event,) = _reviewed_events(session, course_id)
    assert event.payload["override_reason"] == "radiation oncologist accepts"
    assert "min_hours_between" in event.payload["violations"]


def test_a_fraction_still_on_a_downtime_must_be_moved_first(session):
    course_id, fractions = _flagged_course(session)
    third = fractions[2]
    session.add(
        Downtime(
            linac_id=third.linac_id,
            starts_at=third.starts_at - timedelta(hours=1),
            ends_at=third.ends_at + timedelta(hours=1),
            kind="unplanned",
            reason="Gantry fault",
        )
    )
    session.commit()
    with pytest.raises(StateConflict, match="fraction 3 still overlaps a downtime"):
        services.mark_reviewed(session, course_id, now=NOW)


def test_only_a_course_waiting_for_review_and_with_sessions_can_be_signed_off(session):
    course_id, fractions = _flagged_course(session)
    services.mark_reviewed(session, course_id, now=NOW)
    session.commit()
    with pytest.raises(StateConflict, match="not waiting for review"):
        services.mark_reviewed(session, course_id, now=NOW)
    session.rollback()

    course = session.get(Course, course_id)
    course.status = CourseStatus.NEEDS_REVIEW
    for fraction in fractions:
        fraction.status = FractionStatus.CANCELLED
    session.commit()
    with pytest.raises(StateConflict, match="no active fractions"):
        services.mark_reviewed(session, course_id, now=NOW)
