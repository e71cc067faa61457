"""What an action queued is told by the outbox as it writes, not found by comparing the
outbox before and after: exactly the rows of this action, none of a rolled-back attempt."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from notifications import outbox
from notifications.models import Reminder, ReminderStatus
from notifications.types import Kind
from scheduler.models import Fraction
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY


def _booked(session) -> tuple[int, list]:
    w = f.world(session)
    patient = f.patient(session, w["department"], sms_consent=True)
    course = f.course(session, patient, w["liver"])
    session.commit()
    proposal = services.propose_schedules(session, course.id, now=NOW).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    queued = outbox.collect(session)
    services.book_course(session, course.id, placements, now=NOW)
    return course.id, queued


def _fractions(session, course_id: int) -> list[Fraction]:
    return list(
        session.scalars(
            sa.select(Fraction).where(Fraction.course_id == course_id).order_by(Fraction.number)
        )
    )


def _ids(rows) -> set[int]:
    return {r.id for r in rows}


def test_a_booking_reports_every_message_it_wrote_and_nothing_else(session):
    course_id, queued = _booked(session)
    in_outbox = session.scalars(sa.select(Reminder).where(Reminder.course_id == course_id))
    assert queued.written and _ids(queued.written) == _ids(in_outbox)
    assert queued.withdrawn == []
    # Another action in another session: not this one's to report.
    assert all(r.course_id == course_id for r in queued.written)


def test_a_move_reports_the_notice_it_queued_and_the_reminders_it_took_back(session):
    course_id, _ = _booked(session)
    fractions = _fractions(session, course_id)
    third = next(x for x in fractions if x.number == 3)
    old_open = _ids(
        session.scalars(
            sa.select(Reminder).where(
                Reminder.fraction_id == third.id,
                Reminder.status.in_(outbox.OPEN_STATUSES),
            )
        )
    )
    target = services.fraction_alternatives(session, third.id, count=1, now=NOW)[0]
    session.rollback()
    queued = outbox.collect(session)
    services.move_fraction(
        session, third.id, linac_id=target.linac_id, starts_at=target.start, now=NOW
    )
    assert Kind.CHANGE in {r.kind for r in queued.written}
    assert old_open and old_open <= _ids(queued.withdrawn)
    assert all(r.status == ReminderStatus.SUPERSEDED for r in queued.withdrawn)


def test_a_rolled_back_attempt_is_forgotten_and_a_committed_one_kept(session):
    course_id, queued = _booked(session)
    kept = _ids(queued.written)
    fractions = _fractions(session, course_id)
    services.cancel_fraction(session, fractions[-1].id, reason="patient away", now=NOW)
    assert _ids(queued.written) > kept  # the cancellation notice
    session.rollback()  # a later rollback: the committed actions stay reported
    assert _ids(queued.written) > kept

    later = outbox.collect(session)
    w_downtime = services.add_downtime(
        session,
        fractions[0].linac_id,
        starts_at=fractions[0].starts_at - timedelta(minutes=5),
        ends_at=fractions[0].ends_at + timedelta(minutes=5),
        kind="unplanned",
        reason="Gantry fault",
        preview=True,
        now=NOW,
    )
    # The preview re-planned (and so wrote notices) and then rolled everything back.
    assert w_downtime.moved or w_downtime.unplaceable
    assert later.written == [] and later.withdrawn == []
