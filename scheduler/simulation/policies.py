"""How courses are placed: at arrival one by one (online), a day's arrivals together
(batch-daily), or every course of a window together knowing the whole future (hindsight).

The joint policies ask the optimiser for schedules and book each through ``book_course``,
which checks it like any booking; a course the optimiser did not place, or whose booking is
refused, gets the first-ranked proposal instead, as a scheduler would book it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from scheduler.simulation.arrivals import Arrival

if TYPE_CHECKING:
    from scheduler.simulation.runner import CourseState, Simulation

# Hindsight places the courses of this many days of ready dates together.
HINDSIGHT_WINDOW_DAYS = 14
# The optimiser's time limit per solve when the caller gives none.
DEFAULT_SOLVER_SECONDS = 10.0


class Policy:
    """The hooks the clock calls; the default places nothing."""

    name = ""

    def prepare(self, sim: Simulation, arrivals: Sequence[Arrival]) -> None:
        self.by_arrival: dict[date, list[Arrival]] = {}
        for arrival in arrivals:
            self.by_arrival.setdefault(arrival.arrival, []).append(arrival)

    def morning(self, sim: Simulation, day: date, now: datetime) -> None:
        """New courses become known; those not yet booked are tried again."""
        sim.retry_waiting(now)

    def evening(self, sim: Simulation, day: date, now: datetime) -> None:
        """After the day's sessions: nothing by default."""


class Online(Policy):
    """The product today: each new course gets its first-ranked proposal when it arrives."""

    name = "online"

    def morning(self, sim: Simulation, day: date, now: datetime) -> None:
        super().morning(sim, day, now)
        for arrival in self.by_arrival.get(day, []):
            sim.book_first_proposal(sim.create_course(arrival, now), now)


class BatchDaily(Policy):
    """The day's new courses are registered as they arrive and placed together at the end
    of the day by the optimiser."""

    name = "batch-daily"

    def morning(self, sim: Simulation, day: date, now: datetime) -> None:
        super().morning(sim, day, now)
        self.today = [sim.create_course(a, now) for a in self.by_arrival.get(day, [])]

    def evening(self, sim: Simulation, day: date, now: datetime) -> None:
        place_jointly(sim, self.today, now)
        self.today = []


class Hindsight(Policy):
    """Every arrival is known in advance: the courses of each window of ready dates are
    registered and placed together on the morning the window opens. With the future known,
    no online policy can do better: the bound of the comparison."""

    name = "hindsight"

    def prepare(self, sim: Simulation, arrivals: Sequence[Arrival]) -> None:
        super().prepare(sim, arrivals)
        self.by_ready = sorted(arrivals, key=lambda a: (a.ready, a.number))
        self.window_start: date | None = None

    def morning(self, sim: Simulation, day: date, now: datetime) -> None:
        super().morning(sim, day, now)
        if self.window_start is not None and day < self.window_start + timedelta(
            days=HINDSIGHT_WINDOW_DAYS
        ):
            return
        self.window_start = day
        window_end = day + timedelta(days=HINDSIGHT_WINDOW_DAYS)
        batch = [a for a in self.by_ready if day <= a.ready < window_end]
        place_jointly(sim, [sim.create_course(a, now) for a in batch], now)


POLICIES: dict[str, type[Policy]] = {p.name: p for p in (Online, BatchDaily, Hindsight)}


def policy_for(name: str) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")
    return POLICIES[name]()


def place_jointly(sim: Simulation, states: Sequence[CourseState], now: datetime) -> None:
    """Ask the optimiser for every course at once, book what it placed, and give the rest
    their first-ranked proposal."""
    if not states:
        return
    schedules = _optimised(sim, states, now)
    # Most urgent first, so a fallback proposal serves them before the routine ones.
    for state in sorted(states, key=lambda s: (s.arrival.priority, s.arrival.ready, s.course_id)):
        schedule = schedules.get(state.course_id)
        if schedule is not None and sim.book_schedule(state, schedule, now):
            continue
        sim.book_first_proposal(state, now)


def _optimised(sim: Simulation, states: Sequence[CourseState], now: datetime) -> dict[int, Any]:
    from scheduler.optimiser import CourseRequest, plan_courses

    requests = [
        CourseRequest(
            course_id=s.course_id,
            earliest=s.arrival.ready,
            priority=s.arrival.priority,
            preferred_window=s.arrival.preferred_window,
        )
        for s in states
    ]
    limit = sim.solver_seconds if sim.solver_seconds is not None else DEFAULT_SOLVER_SECONDS
    try:
        return plan_courses(
            sim.session, sim.world.department_id, requests, now=now, time_limit_seconds=limit
        )
    finally:
        sim.session.rollback()  # the optimiser only reads: release the read transaction
