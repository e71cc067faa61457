"""Valid new placements for one fraction of a booked course, judged the way a move is judged.

A move is refused only for what it would introduce (``services.move_fraction``), so a course
that already breaks a rule (booked or moved with a clinical override) still has somewhere to
go: a candidate is offered when it adds no violation to the course as it stands and the
fraction keeps every rule of its own there (allowed and open day, opening hours, capable and
free machine, free patient, not before now). Every alternative can therefore be booked in one
click without an override.

Candidates are searched around the fraction's own date, before and after it, however far
ahead it lies, and never before ``not_before``. They are chosen to differ usefully, in this
order:

1. the same time on each beam-matched partner (a change the patient barely notices);
2. then, taking turns, the same time of day on the nearest other day, and another time on the
   same day at least an hour from the others;
3. then any other valid time, nearest day and nearest time of day first, the fraction's own
   machine and its beam-matched partners before any other capable linac.

The current placement is never offered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from scheduler.rules import Validator, capable, closed_reason
from scheduler.timeutil import local_date, local_minutes, local_to_utc, to_local
from scheduler.types import PlannedFraction, Rules, Schedule, SearchContext

# How an alternative differs from the current placement (stable codes, shown in the API).
PARTNER_SAME_TIME = "partner_same_time"
SAME_TIME_OTHER_DAY = "same_time_other_day"
SAME_DAY_OTHER_TIME = "same_day_other_time"
OTHER_TIME = "other_time"
# A capable linac outside the fraction's beam-matched group: the plan must be made for it.
OTHER_LINAC = "other_linac"
KINDS = (PARTNER_SAME_TIME, SAME_TIME_OTHER_DAY, SAME_DAY_OTHER_TIME, OTHER_TIME, OTHER_LINAC)

# How far from the fraction's own date alternatives are looked for, each way. The
# neighbouring fractions usually bound it much closer.
SPAN_DAYS = 28
# Two alternatives on one day closer than this are the same choice for a patient.
DISTINCT_MINUTES = 60
STEP_MINUTES = 15

# Rules a fraction keeps on its own: an alternative never breaks them, even where the
# current placement does (say, a closure added after booking).
OWN_RULES = frozenset(
    {
        "in_past",
        "session_length",
        "weekday",
        "start_weekday",
        "closed_date",
        "outside_hours",
        "capability",
        "linac_busy",
        "patient_busy",
        "physicist_cover",
    }
)
# Rules that depend only on the local date of the moved fraction: once broken by one time of
# a day, every time of that day breaks them.
DAY_RULES = frozenset(
    {
        "weekday",
        "start_weekday",
        "closed_date",
        "min_interval_days",
        "max_interval_days",
        "min_overall_days",
        "max_overall_days",
    }
)


@dataclass(frozen=True)
class Alternative(PlannedFraction):
    """A new placement for the fraction, and how it differs from the current one."""

    kind: str = OTHER_TIME


def search_days(
    schedule: Schedule, number: int, tz: str, *, not_before: datetime
) -> tuple[date, date]:
    """The local dates [first, last] alternatives for fraction ``number`` are sought in.

    Around the fraction's own date, never before ``not_before``'s date, and never past the
    neighbouring fractions (a fraction cannot swap places with them).
    """
    by_number = {f.number: f for f in schedule.fractions}
    current = local_date(by_number[number].start, tz)
    today = local_date(not_before, tz)
    first = max(today, current - timedelta(days=SPAN_DAYS))
    last = max(current, today) + timedelta(days=SPAN_DAYS)
    previous = by_number.get(number - 1)
    following = by_number.get(number + 1)
    if previous is not None:
        first = max(first, local_date(previous.start, tz))
    if following is not None:
        last = min(last, local_date(following.start, tz))
    return first, last


def alternatives(
    schedule: Schedule,
    number: int,
    rules: Rules,
    ctx: SearchContext,
    *,
    not_before: datetime,
    count: int,
    linac_order: Sequence[int],
) -> list[Alternative]:
    """Up to ``count`` useful, valid new placements of fraction ``number``, best first.

    ``schedule`` is the course as it stands; ``ctx`` must hold everything but the course's own
    bookings over :func:`search_days` and the course's dates. ``linac_order`` is the
    fraction's linac followed by its beam-matched partners. See the module docstring.
    """
    search = _Alternatives(schedule, number, rules, ctx, not_before, linac_order)
    current = search.current
    tz = ctx.calendar.timezone
    group = {current.linac_id, *linac_order}
    return [
        Alternative(p.number, p.linac_id, p.start, p.end, _kind(p, current, group, tz))
        for p in search.take(count)
    ]


def _kind(placement: PlannedFraction, current: PlannedFraction, group: set[int], tz: str) -> str:
    if placement.linac_id not in group:
        return OTHER_LINAC
    if placement.start == current.start:
        return PARTNER_SAME_TIME
    if local_date(placement.start, tz) == local_date(current.start, tz):
        return SAME_DAY_OTHER_TIME
    if local_minutes(placement.start, tz) == local_minutes(current.start, tz):
        return SAME_TIME_OTHER_DAY
    return OTHER_TIME


class _Alternatives:
    def __init__(
        self,
        schedule: Schedule,
        number: int,
        rules: Rules,
        ctx: SearchContext,
        not_before: datetime,
        linac_order: Sequence[int],
    ) -> None:
        self.schedule = schedule
        self.number = number
        self.rules = rules
        self.ctx = ctx
        self.tz = ctx.calendar.timezone
        self.not_before = not_before
        self.validator = Validator(ctx)
        self.current = next(f for f in schedule.fractions if f.number == number)
        self.current_day = local_date(self.current.start, self.tz)
        self.length = timedelta(minutes=rules.minutes_for(number))
        capable_ids = [linac.id for linac in ctx.linacs if capable(linac, rules)]
        self.group = [lid for lid in linac_order if lid in capable_ids]
        self.others = sorted(lid for lid in capable_ids if lid not in self.group)
        # What the course breaks already (overrides, fractions now in the past) is no reason
        # to refuse a move, exactly as in move_fraction.
        self.known = {
            (v.code, v.fraction)
            for v in self.validator.validate(schedule, rules, not_before=not_before)
        }
        first, last = search_days(schedule, number, self.tz, not_before=not_before)
        span = (last - first).days
        days = [first + timedelta(days=i) for i in range(span + 1)] if span >= 0 else []
        self.days = sorted(days, key=lambda d: (abs((d - self.current_day).days), d))
        self.dead_days: set[date] = set()
        self.accepted: list[PlannedFraction] = []
        self.tried: set[tuple[int, datetime]] = {(self.current.linac_id, self.current.start)}

    # -- choosing ------------------------------------------------------------------------

    def take(self, count: int) -> list[PlannedFraction]:
        if count <= 0:
            return []
        for found in self._valid(self._partners_same_time(), same_time_ok=True):
            self.accepted.append(found)
            if len(self.accepted) >= count:
                return self.accepted
        turns = [
            self._valid(self._same_time_other_days()),
            self._valid(self._same_day_other_times()),
        ]
        while turns:
            for source in list(turns):
                found = next(source, None)
                if found is None:
                    turns.remove(source)
                    continue
                self.accepted.append(found)
                if len(self.accepted) >= count:
                    return self.accepted
        for found in self._valid(self._anything_else()):
            self.accepted.append(found)
            if len(self.accepted) >= count:
                break
        return self.accepted

    def _valid(
        self, candidates: Iterator[PlannedFraction], *, same_time_ok: bool = False
    ) -> Iterator[PlannedFraction]:
        """The candidates that are new, useful next to those accepted, and keep the rules.

        Filtering happens as each candidate is drawn, against what has been accepted by then.
        """
        for candidate in candidates:
            key = (candidate.linac_id, candidate.start)
            if key in self.tried or candidate.start < self.not_before:
                continue
            if not self._useful(candidate, same_time_ok=same_time_ok):
                continue
            self.tried.add(key)
            if self._keeps_rules(candidate):
                yield candidate

    def _useful(self, candidate: PlannedFraction, *, same_time_ok: bool) -> bool:
        day = local_date(candidate.start, self.tz)
        if day in self.dead_days:
            return False
        for other in (self.current, *self.accepted):
            if local_date(other.start, self.tz) != day:
                continue
            if same_time_ok and other is self.current and candidate.start == other.start:
                continue  # the same time on a partner machine
            if abs(candidate.start - other.start) < timedelta(minutes=DISTINCT_MINUTES):
                return False
        return True

    def _keeps_rules(self, candidate: PlannedFraction) -> bool:
        if not self._fits_alone(candidate):
            return False
        moved = Schedule(
            tuple(candidate if f.number == self.number else f for f in self.schedule.fractions)
        )
        found = self.validator.validate(moved, self.rules, not_before=self.not_before)
        introduced = [
            v
            for v in found
            if (v.code, v.fraction) not in self.known
            or (v.fraction == self.number and v.code in OWN_RULES)
        ]
        if introduced and all(v.code in DAY_RULES for v in introduced):
            self.dead_days.add(local_date(candidate.start, self.tz))
        return not introduced

    def _fits_alone(self, candidate: PlannedFraction) -> bool:
        """A cheap first look: allowed, open day, inside hours, machine and patient free."""
        day = local_date(candidate.start, self.tz)
        if day.weekday() not in self.rules.weekdays or closed_reason(self.ctx.calendar, day):
            self.dead_days.add(day)
            return False
        linac = self.validator.linacs.get(candidate.linac_id)
        if linac is None:
            return False
        window = self.validator.window(linac, day)
        if window is None or candidate.start < window[0] or candidate.end > window[1]:
            return False
        busy = self.validator.linac_busy(candidate.linac_id)
        if busy.overlapping(candidate.start, candidate.end):
            return False
        return not self.validator.patient_busy.overlapping(candidate.start, candidate.end)

    # -- candidates, in the order they are worth offering --------------------------------

    def _at(self, linac_id: int, start: datetime) -> PlannedFraction:
        return PlannedFraction(self.number, linac_id, start, start + self.length)

    def _partners_same_time(self) -> Iterator[PlannedFraction]:
        for linac_id in self.group:
            yield self._at(linac_id, self.current.start)

    def _same_time_other_days(self) -> Iterator[PlannedFraction]:
        """The fraction's local time of day on the nearest other days, one per day."""
        clock = to_local(self.current.start, self.tz).time().replace(tzinfo=None)
        for day in self.days:
            if day == self.current_day:
                continue
            start = local_to_utc(datetime.combine(day, clock), self.tz)
            if local_date(start, self.tz) != day:
                continue
            for linac_id in self.group:
                yield self._at(linac_id, start)

    def _same_day_other_times(self) -> Iterator[PlannedFraction]:
        """Other times on the fraction's own day, nearest first, earlier before later."""
        step = timedelta(minutes=STEP_MINUTES)
        for k in range(1, 24 * 60 // STEP_MINUTES):
            for start in (self.current.start - k * step, self.current.start + k * step):
                if local_date(start, self.tz) != self.current_day:
                    continue
                for linac_id in self.group:
                    yield self._at(linac_id, start)

    def _anything_else(self) -> Iterator[PlannedFraction]:
        """Every start on the opening grid, nearest day and time of day first."""
        tod = local_minutes(self.current.start, self.tz)
        step = timedelta(minutes=STEP_MINUTES)
        for day in self.days:
            for linac_id in (*self.group, *self.others):
                if day in self.dead_days:
                    break
                linac = self.validator.linacs[linac_id]
                window = self.validator.window(linac, day)
                if window is None:
                    continue
                starts = []
                start = window[0]
                while start + self.length <= window[1]:
                    starts.append(start)
                    start += step
                starts.sort(key=lambda s: (abs(local_minutes(s, self.tz) - tod), s))
                for start in starts:
                    yield self._at(linac_id, start)


__all__ = ["KINDS", "Alternative", "alternatives", "search_days"]
