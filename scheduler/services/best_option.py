"""Booking the best option in one step: propose, book, and look again after a lost race.

A client that books whatever ranks best would otherwise propose, pick and book in separate
requests, and lose every race another client wins between them. Here the server proposes and
books in one transaction. When a concurrent booking takes the chosen time first (the
exclusion constraint on PostgreSQL rejects the insert, after waiting for the winner's commit),
only a savepoint is rolled back: the next proposal, read in the same transaction, sees the
winner's rows (READ COMMITTED reads a fresh snapshot per statement) and the next candidate is
tried, a bounded number of times. On SQLite the write lock taken at BEGIN means nothing can
win in between, so the first choice always holds.

Concurrent requests for similar courses would all see the same best option and all but one
lose. The options the search ranks equally best (same score: e.g. the same day on either of
two linacs) are all as good for the patient, so each course takes the one its id points at:
clients booking consecutive courses at once spread over them instead of queueing on one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from scheduler import unit_of_work
from scheduler.context import hold_physicist_roster
from scheduler.errors import NoScheduleAvailable, OptionsTaken
from scheduler.models import Course
from scheduler.services.booking import (
    add_fractions,
    bookable_course,
    checked_nearby_courses,
    record_booked,
)
from scheduler.services.common import _department_of, _now
from scheduler.services.proposing import propose_schedules
from scheduler.types import Interval, Schedule

# Looks at the bookings again after a lost race; each look is a fresh proposal.
BEST_OPTION_ATTEMPTS = 6
# PostgreSQL's exclusion_violation: a linac's or the patient's time is already booked.
EXCLUSION_VIOLATION = "23P01"
# Proposals asked for at each look: the equally best among them are spread over.
SPREAD_CANDIDATES = 4


@dataclass(frozen=True)
class BestBooking:
    course: Course
    schedule: Schedule
    lost_races: int  # times a concurrent booking took the chosen option first


def equally_best(schedules: Sequence[Schedule]) -> list[Schedule]:
    """The leading schedules whose score equals the best one's (ranked best first)."""
    if not schedules:
        return []
    best = _total(schedules[0])
    return [s for s in schedules if _total(s) == best]


def spread_choice(candidates: Sequence[Schedule], course_id: int, attempt: int) -> Schedule:
    """One of equally good candidates, chosen by the course and the attempt: deterministic
    for a request, different for neighbouring courses (see the module docstring)."""
    return candidates[(course_id + attempt) % len(candidates)]


def book_best_option(
    session: Session,
    course_id: int,
    *,
    earliest: date | None = None,
    preferred_window: tuple[time, time] | None = None,
    acknowledged_course_ids: Collection[int] = (),
    actor_id: int | None = None,
    now: datetime | None = None,
    attempts: int = BEST_OPTION_ATTEMPTS,
) -> BestBooking:
    """Propose and book the best schedule for a draft course, in the caller's transaction.

    Raises :class:`NoScheduleAvailable` (with the proposal's explanation) when nothing fits,
    :class:`OptionsTaken` when concurrent bookings took every option found in ``attempts``
    looks, and :class:`NearbyCourseWarning` as ``book_course`` does.
    """
    now = _now(now)
    course = bookable_course(session, course_id)
    # Supervised sessions are counted against the roster, which no constraint guards: hold
    # it before reading what is booked, as every other booking does.
    hold_physicist_roster(session, _department_of(session, course))
    for attempt in range(attempts):
        found = propose_schedules(
            session,
            course_id,
            earliest=earliest,
            count=SPREAD_CANDIDATES,
            preferred_window=preferred_window,
            now=now,
        )
        if not found.schedules:
            explanation = found.explanation
            assert explanation is not None  # the search explains every empty answer
            raise NoScheduleAvailable(
                f"nothing can be booked: {explanation.message}",
                {
                    "code": explanation.code,
                    "message": explanation.message,
                    "earliest_feasible": explanation.earliest_feasible,
                },
            )
        schedule = spread_choice(equally_best(found.schedules), course_id, attempt)
        planned = schedule.fractions
        window = Interval(min(f.start for f in planned), max(f.end for f in planned))
        nearby = checked_nearby_courses(session, course, window, acknowledged_course_ids)
        if _took(session, course, schedule, now):
            booked = record_booked(
                session, course, planned, actor_id=actor_id, now=now, nearby=nearby
            )
            return BestBooking(booked, schedule, attempt)
    raise OptionsTaken(
        f"other bookings took each of the {attempts} options found for this course while it "
        "was being booked; ask again"
    )


def _took(session: Session, course: Course, schedule: Schedule, now: datetime) -> bool:
    """Write the schedule's fractions inside a savepoint: True if they are in, False (and
    nothing written) if a concurrent booking holds one of their times."""
    savepoint = session.begin_nested()
    try:
        add_fractions(session, course, schedule.fractions, None, now=now)
        session.flush()
    except IntegrityError as exc:
        # Only the no-overlap constraints mean "taken"; any other integrity error is a bug.
        if getattr(exc.orig, "sqlstate", None) != EXCLUSION_VIOLATION:
            raise
        savepoint.rollback()
        return False
    except OperationalError as exc:
        # A deadlock between two bookings' constraint checks aborts only the savepoint's
        # statements: the other booking went ahead, so this one looks again like a loser.
        if not unit_of_work.is_lost_race(exc):
            raise
        savepoint.rollback()
        return False
    savepoint.commit()
    return True


def _total(schedule: Schedule) -> int:
    assert schedule.score is not None  # proposals carry their score
    return schedule.score.total
