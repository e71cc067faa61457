"""Reasons staff type for a change are shown on pages, in the audit log and in calendar files:
line breaks, control and invisible characters are refused, and the refused change stores
nothing. Runs on both database backends."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from scheduler.errors import InvalidInput
from scheduler.models import ApiToken, Course, CourseStatus, Downtime, Fraction, FractionStatus
from scheduler.services import Placement
from tests import factories as f
from tests.committing import accounts, services

NOW = f.MONDAY
HIDDEN = ["machine\nfault", "machine\rfault", "QA\u202e", "QA\u200b", "QA\x1b[2J"]


def _booked(session):
    w = f.world(session)
    patient = f.patient(session, w["department"], sms_consent=True)
    course = f.course(session, patient, w["liver"])
    session.commit()
    proposal = services.propose_schedules(session, course.id, now=NOW).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(session, course.id, placements, now=NOW)
    session.expire_all()
    fractions = list(
        session.scalars(
            sa.select(Fraction).where(Fraction.course_id == course.id).order_by(Fraction.number)
        )
    )
    return w, course.id, fractions


def _fields(caught: pytest.ExceptionInfo[InvalidInput]) -> list[str]:
    return [e.field for e in caught.value.errors]


@pytest.mark.parametrize("reason", HIDDEN)
def test_cancel_reasons_must_be_plain_text(session, reason: str) -> None:
    _, course_id, fractions = _booked(session)
    with pytest.raises(InvalidInput) as caught:
        services.cancel_fraction(session, fractions[1].id, reason=reason, now=NOW)
    assert _fields(caught) == ["reason"]
    with pytest.raises(InvalidInput) as caught:
        services.cancel_course(session, course_id, reason=reason, now=NOW)
    assert _fields(caught) == ["reason"]
    session.expire_all()
    assert session.get(Fraction, fractions[1].id).status == FractionStatus.BOOKED
    assert session.get(Course, course_id).status == CourseStatus.BOOKED


def test_a_missed_fraction_reason_must_be_plain_text(session) -> None:
    _, _, fractions = _booked(session)
    later = fractions[1].starts_at + timedelta(minutes=30)
    with pytest.raises(InvalidInput) as caught:
        services.record_missed(
            session, fractions[1].id, reason="other", reason_text="bus\u202elate", now=later
        )
    assert _fields(caught) == ["reason_text"]
    assert session.get(Fraction, fractions[1].id).status == FractionStatus.BOOKED


def test_an_override_reason_must_be_plain_text(session) -> None:
    w, _, fractions = _booked(session)
    second = fractions[1]
    # Onto the first fraction's day: breaks the spacing rule, so only an override books it.
    target = fractions[0].starts_at + timedelta(hours=8)
    with pytest.raises(InvalidInput) as caught:
        services.move_fraction(
            session,
            second.id,
            linac_id=second.linac_id,
            starts_at=target,
            override_reason="approved\nby Dr X",
            now=NOW,
        )
    assert _fields(caught) == ["override_reason"]
    session.expire_all()
    assert session.get(Fraction, second.id).starts_at == second.starts_at


def test_a_downtime_reason_must_be_plain_text(session) -> None:
    w = f.world(session)
    session.commit()
    start = NOW + timedelta(days=10)
    with pytest.raises(InvalidInput) as caught:
        services.add_downtime(
            session,
            w["linacs"]["A"].id,
            starts_at=start,
            ends_at=start + timedelta(hours=2),
            kind="planned",
            reason="Service\r\nEND:VEVENT",
            now=NOW,
        )
    assert _fields(caught) == ["reason"]
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(Downtime)) == 0


def test_an_api_token_name_must_be_plain_text(session) -> None:
    user = accounts.create_user(session, email="int@example.org", name="EHR", role="scheduler")
    with pytest.raises(InvalidInput) as caught:
        accounts.issue_api_token(session, user.id, "EHR\nfeed")
    assert _fields(caught) == ["name"]
    assert session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 0
