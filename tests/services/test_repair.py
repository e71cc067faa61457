"""Repairing courses: cancelled and missed fractions, rebooking, prescription changes and
undoing a missed fraction, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from notifications.models import Reminder
from scheduler.errors import Conflict, InvalidInput, RulesBroken, StateConflict
from scheduler.models import (
    BookingEvent,
    Course,
    CourseStatus,
    Downtime,
    Fraction,
    FractionStatus,
)
from scheduler.services import Placement
from scheduler.timeutil import local_date
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY
TZ = "America/New_York"


def _world(session):
    """The test world with only the beam-matched pair A/B able to treat SBRT, so every
    fraction lands on a machine that has a partner."""
    w = f.world(session)
    w["linacs"]["C"].capabilities = ["imrt"]
    session.commit()
    return w


def _booked_course(session, w):
    patient = f.patient(session, w["department"], sms_consent=True)
    course = f.course(session, patient, w["liver"])
    session.commit()
    proposal = services.propose_schedules(session, course.id, now=NOW).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(session, course.id, placements, now=NOW)
    return course.id, _fractions(session, course.id)


def _fractions(session, course_id):
    session.expire_all()
    return list(
        session.scalars(
            sa.select(Fraction)
            .where(Fraction.course_id == course_id)
            .order_by(Fraction.number, Fraction.id)
        )
    )


def _held(session, course_id):
    return {
        r.number: r
        for r in _fractions(session, course_id)
        if r.status not in (FractionStatus.CANCELLED, FractionStatus.MISSED)
    }


def _course(session, course_id) -> Course:
    session.expire_all()
    course = session.get(Course, course_id)
    assert course is not None
    return course


def _events(session, kind):
    return list(
        session.scalars(
            sa.select(BookingEvent).where(BookingEvent.kind == kind).order_by(BookingEvent.id)
        )
    )


def _close_every_sbrt_linac_between(session, w, start, end):
    for key in ("A", "B"):
        session.add(
            Downtime(
                linac_id=w["linacs"][key].id,
                starts_at=start,
                ends_at=end,
                kind="planned",
                reason="service",
            )
        )
    session.commit()


# --- a cancelled fraction ----------------------------------------------------------------------


def test_a_cancelled_fraction_leaves_the_course_incomplete_until_rebooked(session):
    w = _world(session)
    course_id, fractions = _booked_course(session, w)
    third = fractions[2]
    services.cancel_fraction(session, third.id, reason="patient away that day", now=NOW)

    course = _course(session, course_id)
    assert course.status == CourseStatus.INCOMPLETE
    assert course.incomplete and course.missing_numbers == [3]

    proposal = services.propose_rebooking(session, course_id, count=3, now=NOW)
    assert proposal.missing == [3] and not proposal.needs_clinician
    assert proposal.schedules
    held = _held(session, course_id)
    for schedule in proposal.schedules:
        placed = {p.number: p for p in schedule.fractions}
        # The held fractions stay where they are; only fraction 3 is new.
        for n in (1, 2, 4, 5):
            assert (placed[n].linac_id, placed[n].start) == (held[n].linac_id, held[n].starts_at)
        assert placed[2].start < placed[3].start < placed[4].start
        first, last = local_date(placed[1].start, TZ), local_date(placed[5].start, TZ)
        assert (last - first).days + 1 <= w["liver"].max_overall_days
    # Proposing is a read: the course is unchanged.
    assert _course(session, course_id).status == CourseStatus.INCOMPLETE

    target = next(p for p in proposal.schedules[0].fractions if p.number == 3)
    services.rebook_fractions(
        session, course_id, [Placement(3, target.linac_id, target.start)], now=NOW
    )
    course = _course(session, course_id)
    assert course.status == CourseStatus.BOOKED and not course.incomplete
    new = _held(session, course_id)[3]
    assert (new.status, new.linac_id, new.starts_at) == ("booked", target.linac_id, target.start)
    (event,) = _events(session, "fraction_rebooked")
    assert event.fraction_id == new.id and event.payload["replaces"] == third.id
    # The patient hears about the new session and gets its reminders.
    kinds = set(session.scalars(sa.select(Reminder.kind).where(Reminder.fraction_id == new.id)))
    assert "change" in kinds and "day_before" in kinds


def test_rebooking_places_exactly_the_missing_fractions_within_the_rules(session):
    w = _world(session)
    course_id, fractions = _booked_course(session, w)
    services.cancel_fraction(session, fractions[4].id, reason="toxicity review", now=NOW)
    fourth = fractions[3]
    with pytest.raises(InvalidInput):
        services.rebook_fractions(
            session, course_id, [Placement(4, fourth.linac_id, fourth.starts_at)], now=NOW
        )
    # A fifth fraction three weeks later breaks the spacing and the overall time.
    late = fourth.starts_at + timedelta(days=21)
    with pytest.raises(RulesBroken) as caught:
        services.rebook_fractions(
            session, course_id, [Placement(5, fourth.linac_id, late)], now=NOW
        )
    assert {"max_interval_days", "max_overall_days"} <= {v.code for v in caught.value.violations}
    assert _course(session, course_id).status == CourseStatus.INCOMPLETE
    assert 5 not in _held(session, course_id)


def test_with_no_rebooking_inside_the_overall_time_the_course_is_flagged(session):
    w = _world(session)
    course_id, fractions = _booked_course(session, w)
    second, fourth = fractions[1], fractions[3]
    # Fraction 3 can only fall between fractions 2 and 4: make that time unavailable.
    _close_every_sbrt_linac_between(session, w, second.ends_at, fourth.starts_at)

    services.cancel_fraction(session, fractions[2].id, reason="machine booked for QA", now=NOW)
    course = _course(session, course_id)
    assert course.status == CourseStatus.NEEDS_REVIEW
    assert course.missing_numbers == [3]
    assert "clinician" in course.review_reason and "fraction 3" in course.review_reason

    proposal = services.propose_rebooking(session, course_id, now=NOW)
    assert proposal.schedules == [] and proposal.needs_clinician
    assert "overall time" in proposal.reason


def test_a_clinician_changes_the_prescription_with_a_reason(session):
    w = _world(session)
    course_id, fractions = _booked_course(session, w)
    _close_every_sbrt_linac_between(session, w, fractions[1].ends_at, fractions[3].starts_at)
    services.cancel_fraction(session, fractions[2].id, reason="machine booked for QA", now=NOW)

    with pytest.raises(InvalidInput) as caught:
        services.change_prescription(session, course_id, fractions=4, reason="  ", now=NOW)
    assert [e.field for e in caught.value.errors] == ["reason"]
    with pytest.raises(InvalidInput) as caught:
        services.change_prescription(session, course_id, fractions=3, reason="dose", now=NOW)
    assert [e.field for e in caught.value.errors] == ["fractions"]

    course = services.change_prescription(
        session, course_id, fractions=4, reason="4 fractions of 12.5 Gy agreed", now=NOW
    )
    course = _course(session, course_id)
    assert course.status == CourseStatus.BOOKED and not course.incomplete
    assert (course.fraction_count, course.prescription_reason) == (
        4,
        "4 fractions of 12.5 Gy agreed",
    )
    (event,) = _events(session, "prescription_changed")
    assert event.payload == {"before": 5, "after": 4, "reason": "4 fractions of 12.5 Gy agreed"}

    # Delivering the four held fractions completes the course.
    for row in _held(session, course_id).values():
        services.record_completed(session, row.id, now=row.ends_at)
    assert _course(session, course_id).status == CourseStatus.COMPLETED


# --- a missed fraction -------------------------------------------------------------------------


def test_a_missed_fraction_needs_a_known_reason_and_words_for_other(session):
    w = _world(session)
    _, fractions = _booked_course(session, w)
    second = fractions[1]
    later = second.starts_at + timedelta(minutes=30)
    with pytest.raises(InvalidInput) as caught:
        services.record_missed(session, second.id, reason="forgot", now=later)
    assert [e.field for e in caught.value.errors] == ["reason"]
    with pytest.raises(InvalidInput) as caught:
        services.record_missed(session, second.id, reason="other", reason_text=" ", now=later)
    assert [e.field for e in caught.value.errors] == ["reason_text"]
    assert session.get(Fraction, second.id).status == FractionStatus.BOOKED

    result = services.record_missed(
        session, second.id, reason="other", reason_text="transport strike", now=later
    )
    missed = session.get(Fraction, result.missed.id)
    assert (missed.status, missed.missed_reason, missed.status_reason) == (
        "missed",
        "other",
        "transport strike",
    )
    (event,) = _events(session, "fraction_missed")
    assert event.payload["reason"] == "other" and event.payload["status_before"] == "booked"


def test_a_missed_fraction_is_undone_the_same_day_and_refused_the_next(session):
    w = _world(session)
    course_id, fractions = _booked_course(session, w)
    second, third = fractions[1], fractions[2]
    later = second.starts_at + timedelta(minutes=30)
    result = services.record_missed(session, second.id, reason="unwell", now=later)
    assert result.rebooked is not None
    replacement_id = result.rebooked.id

    restored = services.undo_missed(
        session, second.id, actor_id=None, now=later + timedelta(hours=2)
    )
    assert (restored.status, restored.missed_reason, restored.status_reason) == (
        "booked",
        None,
        None,
    )
    assert session.get(Fraction, replacement_id).status == FractionStatus.CANCELLED
    assert sorted(_held(session, course_id)) == [1, 2, 3, 4, 5]
    assert _course(session, course_id).status == CourseStatus.BOOKED
    (undone,) = _events(session, "fraction_missed_undone")
    assert undone.payload["reason"] == "unwell"
    assert undone.payload["cancelled_replacement"] == replacement_id

    third_later = third.starts_at + timedelta(minutes=30)
    services.record_missed(session, third.id, reason="did_not_attend", now=third_later)
    with pytest.raises(StateConflict) as caught:
        services.undo_missed(session, third.id, now=third_later + timedelta(days=1))
    assert "can be undone only on that day" in caught.value.detail
    assert session.get(Fraction, third.id).status == FractionStatus.MISSED


def test_a_machine_fault_is_rebooked_at_the_same_time_on_the_beam_matched_partner(session):
    w = _world(session)
    _, fractions = _booked_course(session, w)
    second = fractions[1]
    partner = ({w["linacs"]["A"].id, w["linacs"]["B"].id} - {second.linac_id}).pop()
    during = second.starts_at + timedelta(minutes=10)

    result = services.record_missed(session, second.id, reason="machine_fault", now=during)
    rebooked = result.rebooked
    assert rebooked is not None and not result.needs_review
    assert (rebooked.linac_id, rebooked.starts_at, rebooked.ends_at) == (
        partner,
        second.starts_at,
        second.ends_at,
    )
    assert session.get(Fraction, second.id).status_reason == "machine fault"


def test_a_machine_fault_with_the_partner_busy_is_rebooked_later(session):
    w = _world(session)
    _, fractions = _booked_course(session, w)
    second = fractions[1]
    partner = ({w["linacs"]["A"].id, w["linacs"]["B"].id} - {second.linac_id}).pop()
    session.add(
        Downtime(
            linac_id=partner,
            starts_at=second.starts_at - timedelta(hours=1),
            ends_at=second.ends_at + timedelta(hours=1),
            kind="planned",
            reason="QA",
        )
    )
    session.commit()
    during = second.starts_at + timedelta(minutes=10)

    result = services.record_missed(session, second.id, reason="machine_fault", now=during)
    assert result.rebooked is not None
    assert result.rebooked.starts_at >= during + services.REBOOK_LEAD_TIME


def test_restoring_the_protocols_count_makes_the_course_incomplete_again(session):
    w = _world(session)
    course_id, fractions = _booked_course(session, w)
    services.cancel_fraction(session, fractions[4].id, reason="toxicity review", now=NOW)
    services.change_prescription(session, course_id, fractions=4, reason="hold at 4", now=NOW)
    assert _course(session, course_id).status == CourseStatus.BOOKED

    services.change_prescription(session, course_id, fractions=5, reason="resume", now=NOW)
    course = _course(session, course_id)
    assert course.status == CourseStatus.INCOMPLETE and course.missing_numbers == [5]
    assert course.prescription_reason == "resume"
    proposal = services.propose_rebooking(session, course_id, now=NOW)
    target = next(p for p in proposal.schedules[0].fractions if p.number == 5)
    services.rebook_fractions(
        session, course_id, [Placement(5, target.linac_id, target.start)], now=NOW
    )
    assert _course(session, course_id).status == CourseStatus.BOOKED
    assert [e.payload["after"] for e in _events(session, "prescription_changed")] == [4, 5]


def test_several_missing_fractions_are_rebooked_all_or_none(session):
    w = _world(session)
    course_id, fractions = _booked_course(session, w)
    for row in fractions[3:]:
        services.cancel_fraction(session, row.id, reason="course paused", now=NOW)
    proposal = services.propose_rebooking(session, course_id, now=NOW)
    assert proposal.missing == [4, 5]
    placed = {p.number: p for p in proposal.schedules[0].fractions}
    placements = [Placement(n, placed[n].linac_id, placed[n].start) for n in (4, 5)]
    # Fraction 5's time is taken meanwhile: nothing is booked, not even fraction 4.
    session.add(
        Downtime(
            linac_id=placed[5].linac_id,
            starts_at=placed[5].start,
            ends_at=placed[5].end,
            kind="unplanned",
            reason="fault",
        )
    )
    session.commit()
    with pytest.raises(Conflict):
        services.rebook_fractions(session, course_id, placements, now=NOW)
    assert sorted(_held(session, course_id)) == [1, 2, 3]
    assert _course(session, course_id).missing_numbers == [4, 5]

    session.execute(sa.delete(Downtime))
    session.commit()
    services.rebook_fractions(session, course_id, placements, now=NOW)
    assert sorted(_held(session, course_id)) == [1, 2, 3, 4, 5]
    assert len(_events(session, "fraction_rebooked")) == 2
