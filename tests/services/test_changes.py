"""Moving, cancelling, missed fractions and linac downtime, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from scheduler.errors import Conflict, RulesBroken, StateConflict
from scheduler.models import BookingEvent, Course, CourseStatus, Downtime, Fraction, FractionStatus
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY


def _booked_course(session, w, **patient):
    course = f.course(session, f.patient(session, w["department"], **patient), w["liver"])
    session.commit()
    proposal = services.propose_schedules(session, course.id, now=NOW).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(session, course.id, placements, now=NOW)
    return course.id, _fractions(session, course.id)


def _fractions(session, course_id):
    return list(
        session.scalars(
            sa.select(Fraction)
            .where(Fraction.course_id == course_id)
            .order_by(Fraction.number, Fraction.id)
        )
    )


def _kinds(session):
    return [e.kind for e in session.scalars(sa.select(BookingEvent).order_by(BookingEvent.id))]


def test_move_to_an_alternative_keeps_the_rules_and_bumps_the_version(session):
    w = f.world(session)
    course_id, fractions = _booked_course(session, w)
    third = fractions[2]
    alternatives = services.fraction_alternatives(session, third.id, now=NOW)
    assert alternatives
    target = next(
        a for a in alternatives if a.start != third.starts_at or a.linac_id != third.linac_id
    )
    moved = services.move_fraction(
        session, third.id, linac_id=target.linac_id, starts_at=target.start, now=NOW
    )
    assert (moved.starts_at, moved.linac_id, moved.version) == (target.start, target.linac_id, 2)
    assert moved.ends_at - moved.starts_at == timedelta(minutes=45)
    event = session.scalars(
        sa.select(BookingEvent).where(BookingEvent.kind == "fraction_moved")
    ).one()
    assert event.payload["before"] != event.payload["after"]
    assert event.payload["version"] == 2


def test_a_move_breaking_the_spacing_needs_a_reason(session):
    w = f.world(session)
    _, fractions = _booked_course(session, w)
    second, third = fractions[1], fractions[2]
    # Put fraction 3 on the same day as fraction 2, three hours after it.
    second, third = third, second
    start = third.starts_at + timedelta(hours=3)
    with pytest.raises(RulesBroken) as caught:
        services.move_fraction(
            session, second.id, linac_id=second.linac_id, starts_at=start, now=NOW
        )
    codes = {v.code for v in caught.value.violations}
    assert codes & {"min_interval_days", "min_hours_between"}
    assert session.get(Fraction, second.id).version == 1

    moved = services.move_fraction(
        session,
        second.id,
        linac_id=second.linac_id,
        starts_at=start,
        override_reason="clinician approved same-day",
        now=NOW,
    )
    assert moved.override_reason == "clinician approved same-day"


def test_a_move_onto_another_course_is_a_conflict(session):
    w = f.world(session)
    _, mine = _booked_course(session, w)
    _, theirs = _booked_course(session, w)
    target = theirs[0]
    with pytest.raises(Conflict):
        services.move_fraction(
            session,
            mine[0].id,
            linac_id=target.linac_id,
            starts_at=target.starts_at,
            override_reason="anything",
            now=NOW,
        )


def test_cancel_fraction_and_course(session):
    w = f.world(session)
    course_id, fractions = _booked_course(session, w)
    services.cancel_fraction(session, fractions[4].id, reason="toxicity", now=NOW)
    with pytest.raises(StateConflict):
        services.cancel_fraction(session, fractions[4].id, reason="again", now=NOW)
    services.cancel_course(session, course_id, reason="patient choice", now=NOW)
    rows = _fractions(session, course_id)
    assert {r.status for r in rows} == {FractionStatus.CANCELLED}
    assert session.get(Course, course_id).status == CourseStatus.CANCELLED
    assert _kinds(session) == ["course_booked", "fraction_cancelled", "course_cancelled"]
    # The freed times can be booked by someone else.
    other = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()
    placements = [Placement(r.number, r.linac_id, r.starts_at) for r in rows]
    services.book_course(session, other.id, placements, now=NOW)


def test_missed_fraction_is_rebooked_within_the_overall_time(session):
    w = f.world(session)
    course_id, fractions = _booked_course(session, w)
    second = fractions[1]
    later = second.starts_at + timedelta(hours=1)
    result = services.record_missed(session, second.id, reason="did_not_attend", now=later)
    assert result.missed.status == FractionStatus.MISSED
    assert result.rebooked is not None and not result.needs_review
    assert (
        result.rebooked.number == 2
        and result.rebooked.starts_at >= later + services.REBOOK_LEAD_TIME
    )
    current = {r.number: r for r in _fractions(session, course_id) if r.status != "missed"}
    assert sorted(current) == [1, 2, 3, 4, 5]
    starts = [current[n].starts_at for n in range(1, 6)]
    assert starts == sorted(starts)
    first_day = starts[0].astimezone().date()
    assert (starts[-1].date() - first_day).days + 1 <= 15


def test_missing_before_the_start_is_refused(session):
    w = f.world(session)
    _, fractions = _booked_course(session, w)
    with pytest.raises(StateConflict):
        services.record_missed(session, fractions[1].id, reason="unwell", now=NOW)


def test_downtime_replans_onto_the_beam_matched_partner_at_the_same_time(session):
    w = f.world(session)
    course_id, fractions = _booked_course(session, w)
    first = fractions[0]
    linac_id = first.linac_id
    start, end = first.starts_at - timedelta(hours=1), first.ends_at + timedelta(hours=1)

    preview = services.add_downtime(
        session,
        linac_id,
        starts_at=start,
        ends_at=end,
        kind="unplanned",
        reason="MLC fault",
        preview=True,
        now=NOW,
    )
    assert preview.downtime_id is None
    assert [m.fraction_id for m in preview.moved] == [first.id]
    assert session.scalars(sa.select(Downtime)).all() == []
    assert session.get(Fraction, first.id).version == 1

    report = services.add_downtime(
        session,
        linac_id,
        starts_at=start,
        ends_at=end,
        kind="unplanned",
        reason="MLC fault",
        now=NOW,
    )
    assert report.downtime_id is not None and not report.unplaceable
    (moved,) = report.moved
    group = {w["linacs"]["A"].id, w["linacs"]["B"].id}
    if linac_id in group:
        assert moved.after.linac_id in group - {linac_id}
        assert moved.after.start == first.starts_at
    row = session.get(Fraction, first.id)
    assert (row.linac_id, row.starts_at, row.version) == (
        moved.after.linac_id,
        moved.after.start,
        2,
    )
    assert _kinds(session)[-1] == "fraction_moved"


def test_downtime_that_leaves_no_room_lists_the_course_for_a_human(session):
    w = f.world(session)
    course_id, fractions = _booked_course(session, w)
    # Every SBRT linac down for four weeks: nothing can be re-placed within 15 days.
    start, end = NOW, NOW + timedelta(days=28)
    for key in ("B", "C"):
        services.add_downtime(
            session,
            w["linacs"][key].id,
            starts_at=start,
            ends_at=end,
            kind="planned",
            reason="upgrade",
            now=NOW,
        ) if w["linacs"][key].id != fractions[0].linac_id else None
    report = services.add_downtime(
        session,
        fractions[0].linac_id,
        starts_at=start,
        ends_at=end,
        kind="planned",
        reason="upgrade",
        now=NOW,
    )
    assert report.moved == []
    assert {u.fraction_id for u in report.unplaceable} == {x.id for x in fractions}
    assert session.get(Course, course_id).status == CourseStatus.NEEDS_REVIEW
