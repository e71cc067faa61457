"""Use cases flush and never commit; the caller's unit of work commits, rolls back or retries."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from scheduler import records, services, unit_of_work
from scheduler.errors import Conflict
from scheduler.models import AuditEntry, BookingEvent, Downtime, Fraction
from scheduler.services import Placement
from tests import factories as f

NOW = f.MONDAY


def _count(session_factory, model) -> int:
    with session_factory() as other:
        return other.scalar(sa.select(sa.func.count()).select_from(model))


def _draft(session):
    w = f.world(session)
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()
    return w, course


def test_a_use_case_stores_nothing_until_its_caller_commits(session, session_factory):
    _, course = _draft(session)
    result = services.propose_schedules(session, course.id, now=NOW)
    placements = [Placement(p.number, p.linac_id, p.start) for p in result.schedules[0].fractions]

    services.book_course(session, course.id, placements, now=NOW)
    # Flushed in this transaction, invisible to everyone else, and gone with a rollback.
    assert len(session.scalars(sa.select(Fraction)).all()) == 5
    session.rollback()
    assert _count(session_factory, Fraction) == 0
    assert _count(session_factory, BookingEvent) == 0

    with unit_of_work.transaction(session):
        services.book_course(session, course.id, placements, now=NOW)
    assert _count(session_factory, Fraction) == 5
    assert _count(session_factory, BookingEvent) == 1


def test_a_change_and_what_the_caller_adds_fail_together(session, session_factory):
    _, course = _draft(session)
    with pytest.raises(RuntimeError), unit_of_work.transaction(session):
        records.update_course(session, course.id, {"notes": "changed"})
        session.add(AuditEntry(actor_id=None, action="update", subject_type="course",
                               subject_id=course.id, detail={}))  # fmt: skip
        session.flush()
        raise RuntimeError("the action failed after its change was flushed")
    assert _count(session_factory, AuditEntry) == 0
    with session_factory() as other:
        assert other.scalar(sa.select(sa.text("notes")).select_from(sa.text("courses"))) == ""


def test_run_retries_a_lost_race_in_a_fresh_transaction(session, session_factory):
    _draft(session)
    attempts: list[int] = []

    def action() -> str:
        attempts.append(1)
        session.add(AuditEntry(actor_id=None, action="try", subject_type="test", subject_id=None,
                               detail={"attempt": len(attempts)}))  # fmt: skip
        session.flush()
        if len(attempts) < unit_of_work.RACE_RETRIES:
            raise unit_of_work.LostRace()
        return "done"

    assert unit_of_work.run(session, action) == "done"
    assert len(attempts) == unit_of_work.RACE_RETRIES
    # Only the last attempt's writes were committed; the lost ones were rolled back.
    with session_factory() as other:
        details = other.scalars(sa.select(AuditEntry.detail)).all()
    assert details == [{"attempt": unit_of_work.RACE_RETRIES}]


def test_run_gives_up_with_a_conflict(session):
    def action() -> None:
        raise unit_of_work.LostRace()

    with pytest.raises(Conflict):
        unit_of_work.run(session, action)


def test_a_downtime_preview_leaves_the_callers_transaction_as_it_was(session, session_factory):
    w, course = _draft(session)
    linac = w["linacs"]["A"]
    start = NOW + timedelta(days=3)
    with unit_of_work.transaction(session):
        records.update_course(session, course.id, {"notes": "kept"})
        report = services.add_downtime(
            session,
            linac.id,
            starts_at=start,
            ends_at=start + timedelta(hours=2),
            kind="planned",
            reason="QA",
            preview=True,
            now=NOW,
        )
    assert report.downtime_id is None
    assert _count(session_factory, Downtime) == 0
    with session_factory() as other:
        assert other.scalar(sa.select(sa.text("notes")).select_from(sa.text("courses"))) == "kept"
