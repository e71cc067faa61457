"""Alternatives for moving one fraction, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from scheduler.models import Fraction
from scheduler.services import Placement
from scheduler.timeutil import local_to_utc, to_local
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY  # Monday 2 March 2026, 07:00 in New York
TZ = "America/New_York"


def _at(day: date, clock: str) -> datetime:
    return local_to_utc(datetime.combine(day, time.fromisoformat(clock)), TZ)


def _book(session, w, days: list[date], *, clock: str = "10:00", linac: str = "A") -> list[int]:
    """A liver course booked on ``days`` at ``clock`` local time; its fraction ids by number."""
    course = f.course(session, f.patient(session, w["department"]), w["liver"])
    session.commit()
    linac_id = w["linacs"][linac].id
    placements = [Placement(n, linac_id, _at(d, clock)) for n, d in enumerate(days, start=1)]
    services.book_course(session, course.id, placements, now=NOW)
    return list(
        session.scalars(
            sa.select(Fraction.id).where(Fraction.course_id == course.id).order_by(Fraction.number)
        )
    )


def _local(p) -> tuple[date, str]:  # noqa: ANN001 - a PlannedFraction
    local = to_local(p.start, TZ)
    return local.date(), local.strftime("%H:%M")


def test_a_fraction_ten_weeks_ahead_can_move_two_hours_later_on_its_day(session):
    w = f.world(session)
    monday = date(2026, 5, 11)  # ten weeks after NOW
    ids = _book(session, w, [monday + timedelta(days=i) for i in range(5)])
    third = session.get(Fraction, ids[2])
    wednesday = monday + timedelta(days=2)
    linac_a = w["linacs"]["A"].id

    found = services.fraction_alternatives(session, third.id, now=NOW)

    assert found, "a fraction far ahead still has valid moves"
    assert all(p.number == 3 and p.start >= NOW for p in found)
    assert (linac_a, (wednesday, "12:00")) in {(p.linac_id, _local(p)) for p in found}
    # What is offered is what a move accepts, without an override.
    later = _at(wednesday, "12:00")
    moved = services.move_fraction(session, third.id, linac_id=linac_a, starts_at=later, now=NOW)
    assert moved.starts_at == later and moved.override_reason is None


def test_the_current_placement_is_never_offered(session):
    w = f.world(session)
    ids = _book(session, w, [date(2026, 3, 9) + timedelta(days=i) for i in range(5)])
    for fraction_id in ids:
        fraction = session.get(Fraction, fraction_id)
        current = (fraction.linac_id, fraction.starts_at)
        found = services.fraction_alternatives(session, fraction_id, count=10, now=NOW)
        assert found
        assert current not in {(p.linac_id, p.start) for p in found}


def test_an_override_elsewhere_in_the_course_leaves_alternatives_for_the_rest(session):
    w = f.world(session)
    ids = _book(session, w, [date(2026, 3, 9) + timedelta(days=i) for i in range(5)])
    fifth = session.get(Fraction, ids[4])
    # A week after fraction 4: more than the protocol's 3 days, booked with a reason.
    services.move_fraction(
        session,
        fifth.id,
        linac_id=fifth.linac_id,
        starts_at=_at(date(2026, 3, 20), "10:00"),
        override_reason="patient travels abroad; agreed by Dr X",
        now=NOW,
    )
    for fraction_id in ids[:4]:
        found = services.fraction_alternatives(session, fraction_id, now=NOW)
        assert found, f"fraction {session.get(Fraction, fraction_id).number} has alternatives"
        for p in found:
            # Each one is accepted as a move without a new override.
            session.rollback()
            before = session.get(Fraction, fraction_id)
            start, linac_id = before.starts_at, before.linac_id
            moved = services.move_fraction(
                session, fraction_id, linac_id=p.linac_id, starts_at=p.start, now=NOW
            )
            assert moved.override_reason is None
            services.move_fraction(
                session, fraction_id, linac_id=linac_id, starts_at=start, now=NOW
            )


def test_alternatives_differ_usefully(session):
    w = f.world(session)
    # Mon, Wed, Fri, Mon, Wed: fraction 2 could also be on Tuesday or Thursday.
    days = [date(2026, 3, d) for d in (9, 11, 13, 16, 18)]
    ids = _book(session, w, days)
    second = session.get(Fraction, ids[1])
    linac_b = w["linacs"]["B"].id

    found = services.fraction_alternatives(session, second.id, now=NOW)

    offered = [(p.linac_id, *_local(p)) for p in found]
    wednesday = days[1]
    assert offered[0] == (linac_b, wednesday, "10:00"), "the beam-matched partner, same time"
    same_time_other_day = [o for o in offered if o[1] != wednesday and o[2] == "10:00"]
    assert same_time_other_day and {o[1] for o in same_time_other_day} <= {
        date(2026, 3, 10),
        date(2026, 3, 12),
    }
    other_times = [o for o in offered if o[1] == wednesday and o[2] != "10:00"]
    assert other_times
    # Times on one day are at least an hour apart: a 15-minute shift is no real choice.
    starts = sorted(p.start for p in found if _local(p)[0] == wednesday)
    assert all(b - a >= timedelta(hours=1) for a, b in zip(starts, starts[1:], strict=False))
    assert len(found) == 5
    kinds = {p.kind for p in found}
    assert {"partner_same_time", "same_time_other_day", "same_day_other_time"} <= kinds
    assert found[0].kind == "partner_same_time"


def test_a_busy_partner_is_not_offered_at_the_same_time(session):
    w = f.world(session)
    days = [date(2026, 3, d) for d in (9, 11, 13, 16, 18)]
    ids = _book(session, w, days)
    # Another patient holds the partner machine at fraction 2's time.
    _book(session, w, [date(2026, 3, d) for d in (10, 11, 12, 13, 16)], clock="09:45", linac="B")
    second = session.get(Fraction, ids[1])

    found = services.fraction_alternatives(session, second.id, now=NOW)

    linac_b = w["linacs"]["B"].id
    assert found
    assert (linac_b, second.starts_at) not in {(p.linac_id, p.start) for p in found}


def test_alternatives_never_start_before_now(session):
    w = f.world(session)
    ids = _book(session, w, [date(2026, 3, d) for d in (3, 4, 5, 6, 9)])
    now = _at(date(2026, 3, 3), "09:30")  # fraction 1 (10:00 today) is still to come
    found = services.fraction_alternatives(session, ids[0], count=10, now=now)
    assert found and all(p.start >= now for p in found)
