"""Booking use cases on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from scheduler.errors import Conflict, RulesBroken, StateConflict
from scheduler.models import BookingEvent, Course, CourseStatus, Fraction, FractionStatus
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY


def _placements(schedule) -> list[Placement]:
    return [Placement(p.number, p.linac_id, p.start) for p in schedule.fractions]


def _book_first_proposal(session, course_id: int, **kwargs) -> Course:
    result = services.propose_schedules(session, course_id, now=NOW, **kwargs)
    assert result.schedules, result.explanation
    return services.book_course(session, course_id, _placements(result.schedules[0]), now=NOW)


def _active(session) -> list[Fraction]:
    return list(
        session.scalars(
            sa.select(Fraction)
            .where(Fraction.status.in_(["tentative", "booked", "confirmed"]))
            .order_by(Fraction.starts_at)
        )
    )


def test_proposals_are_valid_and_booking_writes_fractions_and_one_event(session):
    w = f.world(session)
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()

    result = services.propose_schedules(session, course.id, now=NOW)
    assert len(result.schedules) == 3
    assert result.timezone == "America/New_York"
    starts = [s.first_start for s in result.schedules]
    assert starts == sorted(starts)

    booked = services.book_course(session, course.id, _placements(result.schedules[0]), now=NOW)
    assert booked.status == CourseStatus.BOOKED
    fractions = _active(session)
    assert [x.number for x in fractions] == [1, 2, 3, 4, 5]
    assert all(x.status == FractionStatus.BOOKED and x.version == 1 for x in fractions)
    # Only SBRT-capable machines are used, and one linac is preferred for the whole course.
    assert len({x.linac_id for x in fractions}) == 1
    assert fractions[0].linac_id != w["linacs"]["D"].id
    events = session.scalars(sa.select(BookingEvent)).all()
    assert [e.kind for e in events] == ["course_booked"]
    assert len(events[0].payload["fractions"]) == 5


def test_a_course_not_ready_books_its_first_fraction_tentatively(session):
    w = f.world(session)
    course = f.course(session, f.patient(session, w["department"]), w["liver"], ready=False)
    session.commit()
    _book_first_proposal(session, course.id)
    first, *rest = _active(session)
    assert first.status == FractionStatus.TENTATIVE
    assert all(x.status == FractionStatus.BOOKED for x in rest)

    services.record_readiness(session, course.id, step="plan_approved", done_at=NOW, now=NOW)
    assert session.get(Fraction, first.id).status == FractionStatus.TENTATIVE
    services.record_readiness(session, course.id, step="physics_qa", done_at=NOW, now=NOW)
    first = session.get(Fraction, first.id)
    assert first.status == FractionStatus.BOOKED
    assert first.version == 2


def test_booking_over_another_course_is_a_conflict_naming_the_time_and_stores_nothing(session):
    w = f.world(session)
    dept = w["department"]
    first = f.course(session, f.patient(session, dept), w["liver"])
    second = f.course(session, f.patient(session, dept), w["liver"])
    session.commit()
    proposal = services.propose_schedules(session, first.id, now=NOW).schedules[0]
    services.book_course(session, first.id, _placements(proposal), now=NOW)

    with pytest.raises(Conflict) as caught:
        services.book_course(session, second.id, _placements(proposal), now=NOW)
    taken = proposal.fractions[0]
    assert any(
        c.kind == "linac" and c.starts_at == taken.start.isoformat().replace("+00:00", "Z")
        for c in caught.value.conflicts
    )
    assert session.get(Course, second.id).status == CourseStatus.DRAFT
    assert len(_active(session)) == 5


def test_the_same_patient_cannot_be_in_two_places_at_once(session):
    w = f.world(session)
    pat = f.patient(session, w["department"])
    first = f.course(session, pat, w["liver"])
    second = f.course(session, pat, w["liver"])
    session.commit()
    proposal = services.propose_schedules(session, first.id, now=NOW).schedules[0]
    services.book_course(session, first.id, _placements(proposal), now=NOW)
    # Same times, but on the other linac of the group: the patient is the conflict.
    other = w["linacs"]["C"].id
    moved = [Placement(p.number, other, p.start) for p in proposal.fractions]
    with pytest.raises(Conflict) as caught:
        services.book_course(session, second.id, moved, now=NOW)
    assert {c.kind for c in caught.value.conflicts} >= {"patient"}
    # And the proposals for the second course avoid the first one's times.
    for schedule in services.propose_schedules(session, second.id, now=NOW).schedules:
        for p in schedule.fractions:
            assert all(not (p.start < q.end and q.start < p.end) for q in proposal.fractions)


def test_rule_breaks_need_an_override_reason_which_is_recorded(session):
    w = f.world(session)
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()
    linac = w["linacs"]["A"].id
    # Five consecutive weekdays would be fine; a 4-day gap breaks "every 24-72 h".
    day = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # Monday 10:00 EDT
    days = [day + timedelta(days=d) for d in (0, 1, 2, 3, 7)]
    placements = [Placement(i + 1, linac, start) for i, start in enumerate(days)]
    with pytest.raises(RulesBroken) as caught:
        services.book_course(session, course.id, placements, now=NOW)
    codes = {v.code for v in caught.value.violations}
    assert "max_interval_days" in codes
    assert all(v.overridable for v in caught.value.violations)
    assert _active(session) == []

    services.book_course(
        session, course.id, placements, override_reason="patient travel, agreed by Dr X", now=NOW
    )
    assert {x.override_reason for x in _active(session)} == {"patient travel, agreed by Dr X"}


def test_hard_rules_cannot_be_overridden(session):
    w = f.world(session)
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()
    conventional = w["linacs"]["D"].id
    day = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)
    placements = [Placement(i + 1, conventional, day + timedelta(days=i)) for i in range(5)]
    with pytest.raises(RulesBroken) as caught:
        services.book_course(session, course.id, placements, override_reason="please", now=NOW)
    assert "capability" in {v.code for v in caught.value.violations}


def test_booking_a_booked_course_again_is_refused(session):
    w = f.world(session)
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()
    booked = _book_first_proposal(session, course.id)
    with pytest.raises(StateConflict):
        services.book_course(session, booked.id, [Placement(1, w["linacs"]["A"].id, NOW)], now=NOW)


def test_an_impossible_request_names_the_earliest_possible_start(session):
    w = f.world(session)
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()
    # Every SBRT linac is down for the next five weeks.
    for key in ("A", "B", "C"):
        services.add_downtime(
            session, w["linacs"][key].id, starts_at=NOW, ends_at=NOW + timedelta(days=35),
            kind="planned", reason="replacement", now=NOW,
        )  # fmt: skip
    result = services.propose_schedules(session, course.id, horizon_days=14, now=NOW)
    assert result.schedules == []
    explanation = result.explanation
    assert explanation is not None and explanation.earliest_feasible is not None
    assert explanation.earliest_feasible >= (NOW + timedelta(days=35)).date()
    assert explanation.earliest_feasible.isoformat()[:7] in ("2026-04",)
