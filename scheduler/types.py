"""Plain, immutable data the scheduling engine works on.

The engine (rules.py, search.py) imports nothing but this module and the standard library:
no Flask, Celery or database. Services translate ORM rows into these values and back.

Conventions:
- every datetime is timezone-aware UTC; every interval is half-open [start, end);
- weekdays are numbered like ``date.weekday()``: Monday=0 ... Sunday=6;
- opening hours and dates are in the department's local time zone (``Calendar.timezone``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time

ALL_WEEKDAYS: frozenset[int] = frozenset(range(7))
WORKING_WEEKDAYS: frozenset[int] = frozenset(range(5))


@dataclass(frozen=True)
class OpeningHours:
    """Local opening hours per weekday (Monday=0); a weekday that is absent is closed."""

    by_weekday: Mapping[int, tuple[time, time]]

    def window(self, weekday: int) -> tuple[time, time] | None:
        return self.by_weekday.get(weekday)


@dataclass(frozen=True)
class Rules:
    """A protocol's scheduling rules (DICOM RT second-generation prescription parameters)."""

    fractions: int
    min_hours_between: float = 0.0
    min_interval_days: int = 1
    max_interval_days: int | None = None
    min_overall_days: int | None = None
    max_overall_days: int | None = None
    weekdays: frozenset[int] = WORKING_WEEKDAYS
    start_weekdays: frozenset[int] | None = None
    first_session_minutes: int = 60
    session_minutes: int = 45
    capabilities: frozenset[str] = frozenset({"sbrt"})

    def minutes_for(self, number: int) -> int:
        """Session length of fraction ``number`` (1-based): the first one is longer."""
        return self.first_session_minutes if number == 1 else self.session_minutes


@dataclass(frozen=True)
class Interval:
    """A half-open UTC interval [start, end)."""

    start: datetime
    end: datetime

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class LinacSpec:
    id: int
    name: str
    capabilities: frozenset[str]
    beam_group: str | None = None
    hours: OpeningHours | None = None  # None: the department's hours apply


@dataclass(frozen=True)
class Calendar:
    """The department's time zone, opening hours and days it does not treat."""

    timezone: str
    hours: OpeningHours
    closed_dates: frozenset[date] = frozenset()  # public holidays and local closures
    closed_reasons: Mapping[date, str] = field(default_factory=dict)


# A block of a physicist roster: local start, local end, physicists present.
RosterBlock = tuple[time, time, int]


@dataclass(frozen=True)
class PhysicistCover:
    """When qualified medical physicists are present to supervise SBRT sessions, and how many.

    A supervised session needs one physicist for its whole length, so at no instant may more
    supervised sessions run than physicists are present, and a supervised session must lie
    inside the rostered time. Blocks are in the department's local time.
    """

    by_weekday: Mapping[int, Sequence[RosterBlock]]
    # A date listed here replaces its weekday's blocks (no blocks: nobody present that day).
    exceptions: Mapping[date, Sequence[RosterBlock]] = field(default_factory=dict)
    # Department setting: every SBRT fraction is supervised, not only the first.
    every_fraction: bool = False
    # Supervised sessions already booked in the horizon (other courses), sorted by start.
    supervised: Sequence[Interval] = ()

    def blocks_on(self, day: date) -> Sequence[RosterBlock]:
        if day in self.exceptions:
            return self.exceptions[day]
        return self.by_weekday.get(day.weekday(), ())

    def supervises(self, rules: Rules, number: int) -> bool:
        """Whether fraction ``number`` of a course under ``rules`` needs a physicist."""
        return "sbrt" in rules.capabilities and (number == 1 or self.every_fraction)


@dataclass(frozen=True)
class SearchContext:
    """Everything the engine needs to know about the world, for one request's horizon."""

    calendar: Calendar
    linacs: tuple[LinacSpec, ...]
    # Per linac id: existing active bookings and downtime, sorted by start.
    linac_busy: Mapping[int, Sequence[Interval]] = field(default_factory=dict)
    # The patient's other active bookings (any linac), sorted by start.
    patient_busy: Sequence[Interval] = ()
    # None: the department keeps no physicist roster, so supervision does not limit booking.
    physicists: PhysicistCover | None = None


@dataclass(frozen=True)
class DowntimeSpan:
    """A period a linac cannot treat, with its recorded reason: what an explanation names.

    The same period is part of ``SearchContext.linac_busy``; this says which busy time is
    downtime rather than bookings.
    """

    linac_id: int
    start: datetime
    end: datetime
    reason: str


@dataclass(frozen=True)
class PlannedFraction:
    number: int  # 1-based position in the course
    linac_id: int
    start: datetime
    end: datetime

    @property
    def interval(self) -> Interval:
        return Interval(self.start, self.end)


@dataclass(frozen=True)
class ScorePart:
    """One part of a proposal's score: what was measured and the penalty points it costs."""

    name: str  # wait, overall, linacs, time_of_day, window, spacing, day_load
    points: int  # 0 is as good as this part gets; lower totals rank first
    value: int  # the measure, in the part's own unit (days, linacs, minutes, fractions)
    summary: str  # the measure in words, e.g. "one linac"


@dataclass(frozen=True)
class Score:
    """Why a proposal ranks where it does (see scheduler.search, "Ranking")."""

    parts: tuple[ScorePart, ...]
    overall_days: int  # local dates from the first fraction to the last, inclusive
    gap_days: tuple[int, ...]  # local days between consecutive fractions

    @property
    def total(self) -> int:
        return sum(part.points for part in self.parts)


@dataclass(frozen=True)
class Schedule:
    """A complete placement of every fraction of a course, ordered by number."""

    fractions: tuple[PlannedFraction, ...]
    # Set on proposals; two schedules with the same fractions are the same schedule.
    score: Score | None = field(default=None, compare=False)

    @property
    def first_start(self) -> datetime:
        return self.fractions[0].start


@dataclass(frozen=True)
class ScheduleRequest:
    """What to propose: for a whole course, or to complete one around fixed fractions."""

    rules: Rules
    earliest: date  # local date of the earliest allowed first (free) fraction
    not_before: datetime | None = None  # UTC instant nothing free may start before (now)
    count: int = 3
    horizon_days: int = 56
    preferred_window: tuple[time, time] | None = None  # local time of day the patient prefers
    # Fractions that keep their placement (completed ones, or the unaffected ones of a
    # course being re-planned). The engine places every other number 1..rules.fractions.
    fixed: Mapping[int, PlannedFraction] = field(default_factory=dict)
    # Linacs to prefer, in order (e.g. the course's current machine when re-planning).
    preferred_linacs: tuple[int, ...] = ()
    step_minutes: int = 15


@dataclass(frozen=True)
class Violation:
    """One broken rule: a stable code for machines and a sentence for people."""

    code: str
    message: str
    fraction: int | None = None


@dataclass(frozen=True)
class Explanation:
    """Why nothing fits, and the earliest start that would."""

    code: str  # the binding cause, one of scheduler.search.EXPLANATION_CODES
    message: str
    earliest_feasible: date | None = None
