"""Random sequences of changes never leave a course wrong, on SQLite and PostgreSQL.

A hypothesis state machine books three liver courses and then applies what a department does
to them over a fortnight, in any order: moves to an offered alternative, moves to a typed time
with a clinical override, cancels, rebooking, missed fractions (and undoing them), completed
fractions, prescription changes, and linac downtime added, edited and removed. The clock only
moves forward. After every step:

- no linac and no patient holds two overlapping active sessions;
- every active course keeps its protocol (the rule book finds nothing wrong with the sessions
  it holds), or carries a recorded clinical decision (an override or a prescription change),
  or is visibly incomplete or flagged for review;
- a course short of its prescribed fractions always says so.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy.orm import Session, sessionmaker

from scheduler.context import rules_from_protocol, search_context
from scheduler.errors import ServiceError
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    HELD_FRACTION_STATUSES,
    Course,
    CourseStatus,
    Downtime,
    Fraction,
    MissedReason,
)
from scheduler.rules import validate
from scheduler.services import Placement
from scheduler.timeutil import local_date
from scheduler.types import PlannedFraction, Schedule
from tests import factories as f
from tests.committing import services
from tests.conftest import _empty_tables

START = f.MONDAY  # Monday 2 March 2026, 07:00 in New York
FLAGGED = (CourseStatus.INCOMPLETE, CourseStatus.NEEDS_REVIEW)
SETTLED = (CourseStatus.DRAFT, CourseStatus.CANCELLED, CourseStatus.COMPLETED)


def _overlaps(rows: list[tuple[int, datetime, datetime]]) -> list[tuple[int, int]]:
    """Pairs of ids whose [start, end) intervals overlap, among rows sorted by start."""
    found = []
    rows = sorted(rows, key=lambda r: r[1])
    for (a, _, a_end), (b, b_start, _) in zip(rows, rows[1:], strict=False):
        if b_start < a_end:
            found.append((a, b))
    return found


class CourseChanges(RuleBasedStateMachine):
    """One example: a fresh department, three booked courses, then random changes."""

    session_factory: sessionmaker[Session]
    engine: sa.Engine

    def __init__(self) -> None:
        super().__init__()
        _empty_tables(self.engine)
        self.db = self.session_factory()
        self.now = START
        self.course_ids: list[int] = []
        self.linac_ids: list[int] = []

    def teardown(self) -> None:
        self.db.close()

    # --- set-up --------------------------------------------------------------------------

    @initialize()
    def book_three_courses(self) -> None:
        w = f.world(self.db)
        self.linac_ids = [linac.id for linac in w["linacs"].values()]
        for n in range(3):
            patient = f.patient(self.db, w["department"], sms_consent=True, mrn=f"INV{n}")
            course = f.course(self.db, patient, w["liver"])
            self.db.commit()
            options = services.propose_schedules(self.db, course.id, now=self.now).schedules
            assert options, "the empty department must offer a schedule"
            placements = [Placement(p.number, p.linac_id, p.start) for p in options[0].fractions]
            services.book_course(self.db, course.id, placements, now=self.now)
            self.course_ids.append(course.id)

    # --- helpers -------------------------------------------------------------------------

    def _fractions(self, *statuses: str) -> list[Fraction]:
        self.db.expire_all()
        query = sa.select(Fraction).order_by(Fraction.id)
        if statuses:
            query = query.where(Fraction.status.in_(statuses))
        return list(self.db.scalars(query))

    def _attempt(self, use_case, *args, **kwargs) -> None:
        """Run a use case; a refusal with a clear error is an allowed outcome, and must leave
        the session usable for the next step."""
        try:
            use_case(self.db, *args, now=self.now, **kwargs)
        except ServiceError:
            self.db.rollback()

    # --- the changes ---------------------------------------------------------------------

    @rule(hours=st.integers(1, 30))
    def time_passes(self, hours: int) -> None:
        self.now += timedelta(hours=hours)

    @rule(pick=st.integers(0, 50), choice=st.integers(0, 10))
    def move_to_an_alternative(self, pick: int, choice: int) -> None:
        upcoming = [x for x in self._fractions(*ACTIVE_FRACTION_STATUSES) if x.starts_at > self.now]
        if not upcoming:
            return
        fraction = upcoming[pick % len(upcoming)]
        offered = services.fraction_alternatives(self.db, fraction.id, now=self.now)
        if not offered:
            return
        target = offered[choice % len(offered)]
        # An offered alternative keeps every rule: the move needs no override.
        services.move_fraction(
            self.db, fraction.id, linac_id=target.linac_id, starts_at=target.start, now=self.now
        )

    @rule(
        pick=st.integers(0, 50),
        linac=st.integers(0, 3),
        shift_minutes=st.integers(-3 * 24 * 4, 3 * 24 * 4).map(lambda q: q * 15),
    )
    def move_with_an_override(self, pick: int, linac: int, shift_minutes: int) -> None:
        upcoming = [x for x in self._fractions(*ACTIVE_FRACTION_STATUSES) if x.starts_at > self.now]
        if not upcoming:
            return
        fraction = upcoming[pick % len(upcoming)]
        self._attempt(
            services.move_fraction,
            fraction.id,
            linac_id=self.linac_ids[linac],
            starts_at=fraction.starts_at + timedelta(minutes=shift_minutes),
            override_reason="Clinician accepts the shorter gap",
        )

    @rule(pick=st.integers(0, 50))
    def cancel_a_fraction(self, pick: int) -> None:
        active = self._fractions(*ACTIVE_FRACTION_STATUSES)
        if active:
            fraction = active[pick % len(active)]
            self._attempt(services.cancel_fraction, fraction.id, reason="Patient unwell")

    @rule(pick=st.integers(0, 2), choice=st.integers(0, 2))
    def rebook_missing_fractions(self, pick: int, choice: int) -> None:
        course_id = self.course_ids[pick]
        try:
            proposal = services.propose_rebooking(self.db, course_id, now=self.now)
        except ServiceError:
            self.db.rollback()
            return
        if not proposal.schedules:
            return
        schedule = proposal.schedules[choice % len(proposal.schedules)]
        placements = [
            Placement(p.number, p.linac_id, p.start)
            for p in schedule.fractions
            if p.number in proposal.missing
        ]
        self._attempt(services.rebook_fractions, course_id, placements)

    @rule(pick=st.integers(0, 50), reason=st.sampled_from(list(MissedReason)))
    def record_a_missed_fraction(self, pick: int, reason: MissedReason) -> None:
        started = [x for x in self._fractions(*ACTIVE_FRACTION_STATUSES) if x.starts_at <= self.now]
        if started:
            fraction = started[pick % len(started)]
            text = "Transport failed" if reason == MissedReason.OTHER else None
            self._attempt(services.record_missed, fraction.id, reason=reason, reason_text=text)

    @rule(pick=st.integers(0, 50))
    def undo_a_missed_fraction(self, pick: int) -> None:
        missed = self._fractions("missed")
        if missed:
            self._attempt(services.undo_missed, missed[pick % len(missed)].id)

    @rule(pick=st.integers(0, 50))
    def record_a_completed_fraction(self, pick: int) -> None:
        started = [x for x in self._fractions(*ACTIVE_FRACTION_STATUSES) if x.starts_at <= self.now]
        if started:
            self._attempt(services.record_completed, started[pick % len(started)].id)

    @rule(pick=st.integers(0, 2), fewer=st.booleans())
    def change_the_prescription(self, pick: int, fewer: bool) -> None:
        self.db.expire_all()
        course = self.db.get(Course, self.course_ids[pick])
        count = len(course.held_numbers) if fewer else course.protocol.fractions
        if count >= 1:
            self._attempt(
                services.change_prescription,
                course.id,
                fractions=count,
                reason="Tumour board decision",
            )

    @rule(
        linac=st.integers(0, 2),
        offset_hours=st.integers(1, 10 * 24),
        length_hours=st.integers(1, 60),
        kind=st.sampled_from(["planned", "unplanned"]),
    )
    def take_a_linac_down(self, linac: int, offset_hours: int, length_hours: int, kind: str):
        starts = self.now + timedelta(hours=offset_hours)
        self._attempt(
            services.add_downtime,
            self.linac_ids[linac],
            starts_at=starts,
            ends_at=starts + timedelta(hours=length_hours),
            kind=kind,
            reason="Beam output check",
        )

    @rule(pick=st.integers(0, 50), start_hours=st.integers(-12, 24), end_hours=st.integers(-24, 48))
    def edit_a_downtime(self, pick: int, start_hours: int, end_hours: int) -> None:
        self.db.expire_all()
        downtimes = list(self.db.scalars(sa.select(Downtime).order_by(Downtime.id)))
        if not downtimes:
            return
        downtime = downtimes[pick % len(downtimes)]
        self._attempt(
            services.update_downtime,
            downtime.id,
            starts_at=max(self.now, downtime.starts_at + timedelta(hours=start_hours)),
            ends_at=downtime.ends_at + timedelta(hours=end_hours),
            kind=downtime.kind,
            reason=downtime.reason,
        )

    @rule(pick=st.integers(0, 50))
    def remove_a_downtime(self, pick: int) -> None:
        self.db.expire_all()
        downtimes = list(self.db.scalars(sa.select(Downtime).order_by(Downtime.id)))
        if downtimes:
            self._attempt(services.delete_downtime, downtimes[pick % len(downtimes)].id)

    # --- what must always hold -----------------------------------------------------------

    @invariant()
    def no_linac_or_patient_is_double_booked(self) -> None:
        active = self._fractions(*ACTIVE_FRACTION_STATUSES)
        by_linac: dict[int, list] = {}
        by_patient: dict[int, list] = {}
        for x in active:
            by_linac.setdefault(x.linac_id, []).append((x.id, x.starts_at, x.ends_at))
            by_patient.setdefault(x.course.patient_id, []).append((x.id, x.starts_at, x.ends_at))
        for rows in [*by_linac.values(), *by_patient.values()]:
            assert not _overlaps(rows)

    @invariant()
    def every_active_course_keeps_its_protocol_or_says_why_not(self) -> None:
        self.db.expire_all()
        for course_id in self.course_ids:
            course = self.db.get(Course, course_id)
            if course is None or course.status in SETTLED:
                continue
            held = sorted(
                (x for x in course.fractions if x.status in HELD_FRACTION_STATUSES),
                key=lambda x: x.number,
            )
            # Short of the prescription: the course must say so.
            if len(held) < course.fraction_count:
                assert course.incomplete and course.status in FLAGGED, (
                    course.status,
                    course.held_numbers,
                )
                continue
            decided = course.prescription_reason or any(x.override_reason for x in held)
            if decided or course.status in FLAGGED:
                continue
            broken = self._broken_rules(course, held)
            assert not broken, (course.id, broken, [(x.number, x.starts_at) for x in held])

    def _broken_rules(self, course: Course, held: list[Fraction]) -> list[str]:
        department = course.patient.department
        schedule = Schedule(
            tuple(PlannedFraction(x.number, x.linac_id, x.starts_at, x.ends_at) for x in held)
        )
        days = [local_date(x.starts_at, department.timezone) for x in held]
        ctx = search_context(
            self.db,
            department,
            min(days) - timedelta(days=1),
            max(days) + timedelta(days=1),
            patient_id=course.patient_id,
            exclude_course_id=course.id,
        )
        rules = rules_from_protocol(course.protocol)
        found = validate(schedule, rules, ctx)
        self.db.rollback()
        # Downtime over a session already delivered is history, not a broken rule.
        delivered = {x.number for x in held if x.status == "completed"}
        return [v.code for v in found if v.fraction not in delivered]


@pytest.mark.slow
def test_random_changes_never_leave_a_course_wrong(
    engine: sa.Engine, session_factory: sessionmaker[Session]
) -> None:
    machine = type(
        "CourseChangesHere",
        (CourseChanges,),
        {"engine": engine, "session_factory": session_factory},
    )
    run = settings(
        max_examples=40,
        stateful_step_count=15,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    machine.TestCase.settings = run
    machine.TestCase().runTest()


def test_the_overlap_check_finds_overlaps() -> None:
    """The invariant's own helper must be able to fail."""
    t = datetime(2026, 3, 2, 12, tzinfo=UTC)
    rows = [(1, t, t + timedelta(hours=1)), (2, t + timedelta(minutes=30), t + timedelta(hours=2))]
    assert _overlaps(rows) == [(1, 2)]
    assert _overlaps([(1, t, t + timedelta(hours=1)), (2, t + timedelta(hours=1), t)]) == []
