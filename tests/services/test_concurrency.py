"""Sixteen clients racing to book overlapping courses: never an overlap, losers get 409."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from scheduler.errors import Conflict
from scheduler.models import Fraction, Linac
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

CLIENTS = 16
NOW = f.MONDAY
FIRST = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # Monday 10:00 in New York


def _race(session_factory, course_ids, placements_for) -> tuple[list[int], list[BaseException]]:
    barrier = threading.Barrier(len(course_ids))
    won: list[int] = []
    lost: list[BaseException] = []
    lock = threading.Lock()

    def client(course_id: int) -> None:
        with session_factory() as session:
            barrier.wait()
            try:
                # Every other course is acknowledged, so the second-course warning (a check
                # in the service, which a racing client may or may not see) stays out of the
                # way: what is raced here is the database's guarantee alone.
                services.book_course(
                    session,
                    course_id,
                    placements_for(course_id),
                    now=NOW,
                    acknowledged_course_ids=course_ids,
                )
            except BaseException as exc:  # recorded and asserted on below
                with lock:
                    lost.append(exc)
            else:
                with lock:
                    won.append(course_id)

    threads = [threading.Thread(target=client, args=(cid,)) for cid in course_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return won, lost


def _overlaps(session) -> int:
    a, b = sa.orm.aliased(Fraction), sa.orm.aliased(Fraction)
    active = ("tentative", "booked", "confirmed")
    return session.scalar(
        sa.select(sa.func.count())
        .select_from(a)
        .join(b, a.id < b.id)
        .where(
            a.status.in_(active),
            b.status.in_(active),
            sa.or_(a.linac_id == b.linac_id, a.patient_id == b.patient_id),
            a.starts_at < b.ends_at,
            b.starts_at < a.ends_at,
        )
    )


def _courses(session, count: int, *, same_patient: bool = False) -> tuple[list[int], int]:
    w = f.world(session)
    pat = f.patient(session, w["department"])
    ids = []
    for _ in range(count):
        owner = pat if same_patient else f.patient(session, w["department"])
        ids.append(f.course(session, owner, w["liver"]).id)
    session.commit()
    return ids, w["linacs"]["A"].id


def _week(linac_id: int, shift: timedelta = timedelta()) -> list[Placement]:
    return [Placement(n, linac_id, FIRST + timedelta(days=n - 1) + shift) for n in range(1, 6)]


@pytest.mark.parametrize("same_patient", [False, True], ids=["linac", "patient"])
def test_identical_bookings_race_one_wins(session, session_factory, same_patient):
    course_ids, linac_id = _courses(session, CLIENTS, same_patient=same_patient)
    if same_patient:
        # Different machines, same patient: only the patient constraint can stop them.
        linacs = session.scalars(sa.select(Linac.id).order_by(Linac.id)).all()[:3]
        session.rollback()  # end the read so this session holds no SQLite lock
        placements = {cid: _week(linacs[i % 3]) for i, cid in enumerate(course_ids)}
    else:
        placements = {cid: _week(linac_id) for cid in course_ids}

    won, lost = _race(session_factory, course_ids, placements.__getitem__)

    assert len(won) == 1, lost
    assert len(lost) == CLIENTS - 1
    assert all(isinstance(exc, Conflict) for exc in lost), [
        repr(e) for e in lost if not isinstance(e, Conflict)
    ]
    assert all(exc.conflicts for exc in lost)
    assert _overlaps(session) == 0
    assert session.scalar(sa.select(sa.func.count()).select_from(Fraction)) == 5


def test_staggered_bookings_race_never_overlap(session, session_factory):
    course_ids, linac_id = _courses(session, CLIENTS)
    # Start times 20 minutes apart: neighbours overlap, some pairs do not.
    shifts = {cid: timedelta(minutes=20 * i) for i, cid in enumerate(course_ids)}
    won, lost = _race(session_factory, course_ids, lambda cid: _week(linac_id, shifts[cid]))

    assert all(isinstance(exc, Conflict) for exc in lost), [
        repr(e) for e in lost if not isinstance(e, Conflict)
    ]
    assert len(won) + len(lost) == CLIENTS
    assert 1 <= len(won) < CLIENTS
    assert _overlaps(session) == 0
    assert session.scalar(sa.select(sa.func.count()).select_from(Fraction)) == 5 * len(won)
