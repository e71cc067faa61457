"""Booking the best option: which option is taken, and looking again after a lost race."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from scheduler import services as plain_services
from scheduler.errors import OptionsTaken
from scheduler.models import Course, Fraction
from scheduler.services import Placement
from scheduler.services.best_option import equally_best, spread_choice
from scheduler.types import PlannedFraction, Schedule, Score, ScorePart
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY


def _scored(total: int, linac_id: int) -> Schedule:
    start = datetime(2026, 3, 9, 14, tzinfo=UTC)
    return Schedule(
        (PlannedFraction(1, linac_id, start, start + timedelta(hours=1)),),
        Score((ScorePart("wait", total, 0, ""),), 1, ()),
    )


def test_equally_best_keeps_the_leading_ties_only() -> None:
    ranked = [_scored(10, 1), _scored(10, 2), _scored(12, 3), _scored(10, 4)]
    assert equally_best(ranked) == ranked[:2] + [ranked[3]]
    assert equally_best([]) == []


def test_neighbouring_courses_spread_over_equal_options() -> None:
    options = [_scored(0, 1), _scored(0, 2), _scored(0, 3)]
    picks = [spread_choice(options, course_id, 0) for course_id in range(100, 106)]
    assert [p.fractions[0].linac_id for p in picks] == [2, 3, 1, 2, 3, 1]
    # The same request always takes the same option; the next look moves on.
    assert spread_choice(options, 100, 0) is spread_choice(options, 100, 0)
    assert spread_choice(options, 100, 1) is not spread_choice(options, 100, 0)


def _world(session: Session, count: int) -> list[int]:
    w = f.world(session)
    department, liver = w["department"], w["liver"]
    ids = [f.course(session, f.patient(session, department), liver).id for _ in range(count)]
    session.commit()
    return ids


def test_best_option_books_a_proposal_in_one_step(session: Session) -> None:
    [course_id] = _world(session, 1)
    proposed = plain_services.propose_schedules(session, course_id, count=4, now=NOW)
    session.rollback()

    booked = services.book_best_option(session, course_id, now=NOW)

    assert booked.lost_races == 0
    assert booked.schedule in equally_best(proposed.schedules)
    assert booked.course.status == "booked"
    rows = session.scalars(
        sa.select(Fraction).where(Fraction.course_id == course_id).order_by(Fraction.number)
    ).all()
    assert [(r.linac_id, r.starts_at) for r in rows] == [
        (p.linac_id, p.start) for p in booked.schedule.fractions
    ]


def _rivals_book_first(session: Session, session_factory, rival_ids: list[int]):  # type: ignore[no-untyped-def]
    """Each time ``session`` is about to write a course's fractions, the next rival course
    commits the very same placements from another connection first: a race ``session`` then
    loses. Returns the placements the rivals took."""
    rivals = list(rival_ids)
    taken: list[list[Placement]] = []

    @event.listens_for(session, "before_flush")
    def rival_books_first(flushing, _context, _instances):  # type: ignore[no-untyped-def]
        new = [o for o in flushing.new if isinstance(o, Fraction)]
        if not new or not rivals:
            return
        placements = [Placement(o.number, o.linac_id, o.starts_at) for o in new]
        with session_factory() as other:
            services.book_course(other, rivals.pop(0), placements, now=NOW)
        taken.append(placements)

    return taken


def test_a_lost_race_looks_again_and_books_the_next_option(session, session_factory) -> None:  # type: ignore[no-untyped-def]
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("on SQLite the booking holds the write lock: no one can book in between")
    course_id, rival_id = _world(session, 2)
    taken = _rivals_book_first(session, session_factory, [rival_id])

    booked = services.book_best_option(session, course_id, now=NOW)

    assert booked.lost_races == 1 and len(taken) == 1
    mine = {(p.linac_id, p.start) for p in booked.schedule.fractions}
    assert mine.isdisjoint({(p.linac_id, p.starts_at) for p in taken[0]})
    rows = session.scalars(sa.select(Fraction).where(Fraction.course_id == course_id)).all()
    assert {(r.linac_id, r.starts_at) for r in rows} == mine
    assert session.get(Course, rival_id).status == "booked"


def test_every_option_taken_is_a_conflict_and_writes_nothing(session, session_factory) -> None:  # type: ignore[no-untyped-def]
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("on SQLite the booking holds the write lock: no one can book in between")
    course_id, *rivals = _world(session, 3)
    taken = _rivals_book_first(session, session_factory, rivals)

    with pytest.raises(OptionsTaken):
        services.book_best_option(session, course_id, now=NOW, attempts=2)

    assert session.get(Course, course_id).status == "draft"
    assert (
        session.scalar(
            sa.select(sa.func.count()).select_from(Fraction).where(Fraction.course_id == course_id)
        )
        == 0
    )
    assert len(taken) == 2
