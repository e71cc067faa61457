"""The simulated clock: a department's days replayed through the real booking services.

Every use case is called as the web app calls it, one unit of work per action, with the
simulated instant passed as ``now``: nothing here reads the wall clock for simulated time.
A day runs: courses become known and are booked (as the policy decides), readiness is
recorded for the courses ready to treat that day, then the day's sessions end one by one in
time order -- each delivered or, with the scenario's probability, missed and rebooked -- with
every downtime added when the department learns of it.
"""

from __future__ import annotations

import random
import tempfile
import time as wallclock
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler import records, services, unit_of_work
from scheduler.errors import ServiceError
from scheduler.models import ACTIVE_FRACTION_STATUSES, Fraction, MissedReason
from scheduler.simulation import arrivals as arrivals_module
from scheduler.simulation import metrics, outputs, policies, world
from scheduler.simulation.arrivals import Arrival, PlannedDowntime
from scheduler.simulation.pathway import book_pathway_for_arrival

# Local time at which the day's new courses are booked and readiness is recorded.
MORNING = time(6, 0)
# Local time at which a batch policy places the day's arrivals.
EVENING = time(21, 0)
# The readiness steps that make a course ready to treat (Course.ready_to_treat).
READY_TO_TREAT_STEPS = ("plan_approved", "physics_qa")
# Reasons a patient misses a session, drawn evenly.
MISSED_REASONS = (MissedReason.DID_NOT_ATTEND, MissedReason.UNWELL)


@dataclass
class CourseState:
    """What the clock knows of one course beyond the database."""

    arrival: Arrival
    course_id: int
    booked: bool = False
    # Booked at the first attempt, by the policy's own placement or its first proposal.
    first_pass: bool = False
    attempts: int = 0


@dataclass
class Simulation:
    """The running simulation: the database session, the world, the clock's bookkeeping."""

    scenario: dict[str, Any]
    session: Session
    world: world.World
    rng: random.Random
    solver_seconds: float | None
    courses: dict[int, CourseState] = field(default_factory=dict)  # by arrival number
    # Courses by the local date they become ready to treat, for the morning's readiness.
    ready_on: dict[date, list[CourseState]] = field(default_factory=dict)
    waiting: list[CourseState] = field(default_factory=list)  # known, not yet booked
    downtime_moves: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("kept_time", "same_day", "other_day", "needs_human"), 0
        )
    )
    # Courses booked on the optimiser's schedule (the rest of a joint policy's fell back).
    optimiser_placed: int = 0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.world.timezone)

    def at(self, day: date, clock: time) -> datetime:
        """The UTC instant of a local time on a local day."""
        return datetime.combine(day, clock, self.zone).astimezone(UTC)

    # -- courses ---------------------------------------------------------------------------

    def create_course(self, arrival: Arrival, now: datetime) -> CourseState:
        """Register the patient and create the draft course, as a scheduler does on referral."""

        def create() -> int:
            patient = records.create_patient(
                self.session,
                {
                    "department_id": self.world.department_id,
                    "mrn": f"SIM{arrival.number:06d}",
                    "given_name": "Simulated",
                    "family_name": f"Patient {arrival.number}",
                    "date_of_birth": date(1960, 1, 1),
                },
                now=now,
            )
            course = records.create_course(
                self.session,
                {
                    "patient_id": patient.id,
                    "protocol_id": self.world.protocol_ids[arrival.protocol],
                    "priority": arrival.priority,
                    "ready_to_treat_on": arrival.ready,
                },
            )
            if pathway is None:
                return course.id, arrival.ready
            # The pathway before treatment (fiducials, CT simulation, planning) is booked at
            # referral and gives the course its ready date; the scenario's ready date then
            # only orders the arrivals.
            ready = book_pathway_for_arrival(
                self.session, course.id, pathway, arrival_day=arrival.arrival, now=now
            )
            return course.id, ready

        pathway = self.scenario.get("pathway")
        course_id, ready = unit_of_work.run(self.session, create)
        state = CourseState(replace(arrival, ready=ready), course_id)
        self.courses[arrival.number] = state
        self.ready_on.setdefault(ready, []).append(state)
        return state

    def book_first_proposal(
        self, state: CourseState, now: datetime, *, retry: bool = False
    ) -> bool:
        """Book the first-ranked proposal for the course, as a scheduler does (online)."""
        arrival = state.arrival

        def book() -> bool:
            found = services.propose_schedules(
                self.session,
                state.course_id,
                earliest=arrival.ready,
                count=1,
                preferred_window=arrival.preferred_window,
                now=now,
            )
            if not found.schedules:
                return False
            services.book_course(
                self.session,
                state.course_id,
                placements_of(found.schedules[0]),
                actor_id=self.world.user_id,
                now=now,
            )
            return True

        return self._attempt(state, book, retry=retry)

    def book_schedule(self, state: CourseState, schedule: Any, now: datetime) -> bool:
        """Book a schedule the optimiser chose; the services check it like any other."""

        def book() -> bool:
            services.book_course(
                self.session,
                state.course_id,
                placements_of(schedule),
                actor_id=self.world.user_id,
                now=now,
            )
            return True

        try:
            booked = self._attempt(state, book, retry=False)
        except ServiceError:  # refused: the caller falls back to a proposal
            return False
        self.optimiser_placed += booked
        return booked

    def _attempt(self, state: CourseState, action: Callable[[], bool], *, retry: bool) -> bool:
        state.attempts += 1
        booked = unit_of_work.run(self.session, action)
        if booked:
            state.booked = True
            # First pass: booked when the policy first placed it, not on a later day's retry.
            state.first_pass = not retry
            if state in self.waiting:
                self.waiting.remove(state)
        elif state not in self.waiting:
            self.waiting.append(state)
        return booked

    def retry_waiting(self, now: datetime) -> None:
        """Courses no proposal fitted yet are tried again each morning."""
        for state in list(self.waiting):
            self.book_first_proposal(state, now, retry=True)

    def record_readiness(self, state: CourseState, now: datetime) -> None:
        """Plan approval and physics QA recorded on the ready date: the course is ready to
        treat from today. (The other readiness steps gate nothing a booking depends on, so
        the simulation leaves them out.)"""

        def ready() -> None:
            for step in READY_TO_TREAT_STEPS:
                services.record_readiness(
                    self.session,
                    state.course_id,
                    step=step,
                    done_at=now,
                    actor_id=self.world.user_id,
                    now=now,
                )

        unit_of_work.run(self.session, ready)

    # -- the day's sessions and downtime ----------------------------------------------------

    def end_sessions_until(self, limit: datetime) -> None:
        """Deliver, or miss and rebook, every active session that has ended by ``limit``, in
        the order they end (a rebooked session later the same day is reached too)."""
        probability = self.scenario["disruptions"]["missed_fraction_probability"]
        while True:
            due = self.session.execute(
                sa.select(Fraction.id, Fraction.ends_at)
                .where(
                    Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
                    Fraction.ends_at <= limit,
                )
                .order_by(Fraction.ends_at, Fraction.id)
            ).all()
            self.session.rollback()  # ends the read: SQLite's lock is not held between actions
            if not due:
                return
            for fraction_id, ends_at in due:
                if probability > 0 and self.rng.random() < probability:
                    reason = self.rng.choice(MISSED_REASONS)
                    unit_of_work.run(
                        self.session,
                        lambda f=fraction_id, r=reason, t=ends_at: services.record_missed(
                            self.session, f, reason=r, actor_id=self.world.user_id, now=t
                        ),
                    )
                else:
                    unit_of_work.run(
                        self.session,
                        lambda f=fraction_id, t=ends_at: services.record_completed(
                            self.session, f, actor_id=self.world.user_id, now=t
                        ),
                    )

    def add_downtime(self, downtime: PlannedDowntime) -> None:
        """Record the downtime when it becomes known; the service re-plans what it displaces."""
        report = unit_of_work.run(
            self.session,
            lambda: services.add_downtime(
                self.session,
                self.world.linac_ids[downtime.linac],
                starts_at=downtime.starts_at,
                ends_at=downtime.ends_at,
                kind=downtime.kind,
                reason=downtime.reason,
                actor_id=self.world.user_id,
                now=downtime.known_at,
            ),
        )
        for outcome in self.downtime_moves:
            self.downtime_moves[outcome] += getattr(report, outcome)


def placements_of(schedule: Any) -> list[services.Placement]:
    return [services.Placement(f.number, f.linac_id, f.start) for f in schedule.fractions]


def simulate(
    scenario: dict[str, Any],
    out_dir: Path,
    *,
    seed: int,
    policy: str,
    database_url: str | None,
    progress: Callable[[int, int], None] | None,
    solver_seconds: float | None,
) -> dict[str, Any]:
    """Run a validated scenario (see :func:`scheduler.simulation.run_simulation`)."""
    chosen = policies.policy_for(policy)
    started = wallclock.perf_counter()
    rng = random.Random(seed)
    course_arrivals = arrivals_module.arrivals(scenario, rng)
    known_downtimes = arrivals_module.downtimes(scenario, rng)
    with tempfile.TemporaryDirectory(prefix="simulation-") as scratch:
        url = database_url or world.sqlite_url(Path(scratch))
        engine, session = world.open_database(url)
        try:
            start = date.fromisoformat(scenario["start"])
            zone = ZoneInfo(scenario["department"]["timezone"])
            built = world.build_world(
                session, scenario, now=datetime.combine(start, time.min, zone).astimezone(UTC)
            )
            sim = Simulation(scenario, session, built, rng, solver_seconds)
            _run_days(
                sim, chosen, start, scenario["days"], course_arrivals, known_downtimes, progress
            )
            runtime = wallclock.perf_counter() - started
            result = metrics.measure(sim, policy=policy, seed=seed, runtime_seconds=runtime)
            out_dir.mkdir(parents=True, exist_ok=True)
            outputs.write_files(sim, result, out_dir)
            session.rollback()
        finally:
            session.close()
            engine.dispose()
    return result.summary


def _run_days(
    sim: Simulation,
    policy: policies.Policy,
    start: date,
    days: int,
    course_arrivals: list[Arrival],
    known_downtimes: list[PlannedDowntime],
    progress: Callable[[int, int], None] | None,
) -> None:
    policy.prepare(sim, course_arrivals)
    pending = list(known_downtimes)
    for offset in range(days):
        day = start + timedelta(days=offset)
        morning = sim.at(day, MORNING)
        evening = sim.at(day, EVENING)
        midnight = sim.at(day + timedelta(days=1), time.min)
        todays = [d for d in pending if d.known_at < midnight]
        pending = [d for d in pending if d.known_at >= midnight]
        # Each moment of the day in time order: downtime as it becomes known, the morning's
        # bookings and readiness, the evening's batch; sessions end in between.
        moments: list[tuple[datetime, int, PlannedDowntime | None]] = [
            (d.known_at, 0, d) for d in todays
        ]
        moments += [(morning, 1, None), (evening, 2, None)]
        for moment, kind, downtime in sorted(moments, key=lambda m: (m[0], m[1])):
            sim.end_sessions_until(moment)
            if downtime is not None:
                sim.add_downtime(downtime)
            elif kind == 1:
                policy.morning(sim, day, morning)
                for state in sim.ready_on.pop(day, []):
                    sim.record_readiness(state, morning)
            else:
                policy.evening(sim, day, evening)
        sim.end_sessions_until(midnight)
        if progress is not None:
            progress(offset + 1, days)
