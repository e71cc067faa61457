"""Checking a schedule against a protocol's rules and the world it has to fit into.

:func:`validate` lists every broken rule as a :class:`~scheduler.types.Violation` with a stable
``code`` (for machines) and a sentence naming the fraction and its local times (for people).
The search engine uses the same checks, through :class:`Validator`, as its final safety net.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from itertools import accumulate
from operator import attrgetter, gt

from scheduler.timeutil import format_day, format_local, local_date, local_window, to_local
from scheduler.types import (
    Calendar,
    Interval,
    LinacSpec,
    OpeningHours,
    PhysicistCover,
    PlannedFraction,
    Rules,
    Schedule,
    SearchContext,
    Violation,
)

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Every code validate() can return, for callers that map codes to UI text or HTTP errors.
CODES: frozenset[str] = frozenset(
    {
        "fraction_count",
        "in_past",
        "session_length",
        "weekday",
        "start_weekday",
        "closed_date",
        "outside_hours",
        "capability",
        "linac_busy",
        "patient_busy",
        "self_overlap",
        "order",
        "min_hours_between",
        "min_interval_days",
        "max_interval_days",
        "min_overall_days",
        "max_overall_days",
        "physicist_cover",
    }
)


class BusyIndex:
    """Busy intervals indexed for fast overlap queries over any sub-range.

    Building it is a few C-speed passes (no per-interval Python work), so a search that only
    looks at a few days of a long horizon does not pay for the rest. ``reach[i]`` is the latest
    end among the first i+1 intervals: it is monotonic, so one bisect skips every interval that
    ends before a query, however long the downtimes before it are.
    """

    __slots__ = ("intervals", "starts", "reach")

    def __init__(self, intervals: Iterable[Interval]) -> None:
        ivs = [iv for iv in intervals if iv.end > iv.start]
        starts = [iv.start for iv in ivs]
        if any(map(gt, starts, starts[1:])):  # documented sorted, but do not rely on it
            ivs.sort(key=attrgetter("start"))
            starts = [iv.start for iv in ivs]
        self.intervals = ivs
        self.starts = starts
        self.reach = list(accumulate((iv.end for iv in ivs), max))

    def overlapping(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The busy time overlapping [start, end), merged into disjoint spans in order."""
        i = bisect_right(self.reach, start)
        j = bisect_left(self.starts, end, lo=i)
        spans: list[tuple[datetime, datetime]] = []
        for iv in self.intervals[i:j]:
            if iv.end <= start:
                continue
            if spans and iv.start <= spans[-1][1]:
                if iv.end > spans[-1][1]:
                    spans[-1] = (spans[-1][0], iv.end)
            else:
                spans.append((iv.start, iv.end))
        return spans

    def free(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The parts of [start, end) that no busy span covers, in order."""
        gaps = []
        cursor = start
        for busy_start, busy_end in self.overlapping(start, end):
            if busy_start > cursor:
                gaps.append((cursor, busy_start))
            cursor = max(cursor, busy_end)
        if cursor < end:
            gaps.append((cursor, end))
        return gaps


class CoverIndex:
    """A physicist roster and the supervised sessions already booked, asked per local day
    where one more supervised session fits.

    The physicists present at an instant are those of the roster block containing it (a
    weekday's blocks do not overlap; a dated exception replaces the weekday's blocks), and
    each booked supervised session occupies one of them for its whole length. A session fits
    when at every instant of it at least one physicist is left: it then lies inside rostered
    time and keeps the count within capacity.
    """

    __slots__ = ("cover", "tz", "_supervised", "_starts", "_reach", "_spans_by")

    def __init__(self, cover: PhysicistCover, tz: str) -> None:
        self.cover = cover
        self.tz = tz
        ivs = sorted((iv for iv in cover.supervised if iv.end > iv.start), key=attrgetter("start"))
        self._supervised = ivs
        self._starts = [iv.start for iv in ivs]
        self._reach = list(accumulate((iv.end for iv in ivs), max))
        self._spans_by: dict[tuple[date, bool, int], tuple[list[datetime], list[datetime]]] = {}

    def roster(self, day: date) -> list[tuple[datetime, datetime, int]]:
        """The UTC blocks of local ``day`` with physicists present, in order."""
        out = []
        for start, end, count in self.cover.blocks_on(day):
            if count > 0 and end > start:
                opens, closes = local_window(day, start, end, self.tz)
                if closes > opens:
                    out.append((opens, closes, count))
        out.sort()
        return out

    def booked(self, start: datetime, end: datetime) -> list[Interval]:
        """The booked supervised sessions overlapping [start, end), unmerged."""
        i = bisect_right(self._reach, start)
        j = bisect_left(self._starts, end, lo=i)
        return [iv for iv in self._supervised[i:j] if iv.end > start]

    def _spans(
        self, day: date, *, with_load: bool, spare: int = 1
    ) -> tuple[list[datetime], list[datetime]]:
        """Merged spans of ``day`` where at least ``spare`` physicists are left over (without
        the load: rostered), as parallel lists of starts and ends."""
        key = (day, with_load, spare)
        found = self._spans_by.get(key)
        if found is not None:
            return found
        blocks = self.roster(day)
        events: dict[datetime, int] = {}
        for start, end, count in blocks:
            events[start] = events.get(start, 0) + count
            events[end] = events.get(end, 0) - count
        if with_load and blocks:
            for iv in self.booked(blocks[0][0], max(end for _, end, _ in blocks)):
                events[iv.start] = events.get(iv.start, 0) - 1
                events[iv.end] = events.get(iv.end, 0) + 1
        starts: list[datetime] = []
        ends: list[datetime] = []
        level = 0
        times = sorted(events)
        for at, following in zip(times, times[1:], strict=False):
            level += events[at]
            if level < spare:
                continue
            if ends and ends[-1] == at:
                ends[-1] = following
            else:
                starts.append(at)
                ends.append(following)
        found = (starts, ends)
        self._spans_by[key] = found
        return found

    def _inside(self, start: datetime, end: datetime, *, with_load: bool, spare: int = 1) -> bool:
        starts, ends = self._spans(local_date(start, self.tz), with_load=with_load, spare=spare)
        i = bisect_right(starts, start) - 1
        return i >= 0 and end <= ends[i]

    def kept(self, start: datetime, end: datetime) -> bool:
        """Whether a booked supervised session [start, end), counted among the booked ones,
        has its physicist: rostered throughout and within capacity."""
        return self._inside(start, end, with_load=True, spare=0) and self.rostered(start, end)

    def fits(self, start: datetime, end: datetime) -> bool:
        """Whether one more supervised session [start, end) has a physicist throughout."""
        return self._inside(start, end, with_load=True)

    def rostered(self, start: datetime, end: datetime) -> bool:
        """Whether physicists are rostered throughout [start, end), busy or not."""
        return self._inside(start, end, with_load=False)

    def with_sessions(self, extra: Iterable[Interval]) -> CoverIndex:
        """This index with ``extra`` supervised sessions booked as well."""
        more = [*self.cover.supervised, *extra]
        return CoverIndex(replace(self.cover, supervised=more), self.tz)


def hours_for(linac: LinacSpec | None, calendar: Calendar) -> OpeningHours:
    """The opening hours that apply to ``linac``: its own, else the department's."""
    if linac is not None and linac.hours is not None:
        return linac.hours
    return calendar.hours


def opening_window(
    linac: LinacSpec | None, calendar: Calendar, day: date
) -> tuple[datetime, datetime] | None:
    """UTC [open, close) of ``linac`` on local ``day``, or None when it does not open."""
    window = hours_for(linac, calendar).window(day.weekday())
    if window is None:
        return None
    opens, closes = local_window(day, window[0], window[1], calendar.timezone)
    if closes <= opens:
        return None
    return opens, closes


def closed_reason(calendar: Calendar, day: date) -> str | None:
    """Why the department does not treat on ``day``, or None when it is not a closed date."""
    if day not in calendar.closed_dates:
        return None
    return calendar.closed_reasons.get(day) or "closed"


def capable(linac: LinacSpec, rules: Rules) -> bool:
    return rules.capabilities <= linac.capabilities


class Validator:
    """The rule checks for one SearchContext, with its lookups built once and reused."""

    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.tz = ctx.calendar.timezone
        self.linacs: dict[int, LinacSpec] = {linac.id: linac for linac in ctx.linacs}
        self._linac_busy: dict[int, BusyIndex] = {}
        self._patient_busy: BusyIndex | None = None
        self._windows: dict[tuple[int, date], tuple[datetime, datetime] | None] = {}
        self.cover: CoverIndex | None = (
            CoverIndex(ctx.physicists, self.tz) if ctx.physicists is not None else None
        )

    def supervises(self, rules: Rules, number: int) -> bool:
        """Whether fraction ``number`` needs a physicist here (never without a roster)."""
        return self.cover is not None and self.cover.cover.supervises(rules, number)

    def window(self, linac: LinacSpec, day: date) -> tuple[datetime, datetime] | None:
        """:func:`opening_window`, memoised (zone conversions are the engine's hot spot)."""
        key = (linac.id, day)
        if key not in self._windows:
            self._windows[key] = opening_window(linac, self.ctx.calendar, day)
        return self._windows[key]

    def linac_busy(self, linac_id: int) -> BusyIndex:
        """The merged busy index of one linac, built on first use."""
        index = self._linac_busy.get(linac_id)
        if index is None:
            index = BusyIndex(self.ctx.linac_busy.get(linac_id, ()))
            self._linac_busy[linac_id] = index
        return index

    @property
    def patient_busy(self) -> BusyIndex:
        if self._patient_busy is None:
            self._patient_busy = BusyIndex(self.ctx.patient_busy)
        return self._patient_busy

    def _when(self, f: PlannedFraction) -> str:
        return f"{format_local(f.start, self.tz)}–{to_local(f.end, self.tz):%H:%M}"

    def _span(self, start: datetime, end: datetime) -> str:
        return f"{format_local(start, self.tz)}–{format_local(end, self.tz)}"

    def _linac_name(self, linac_id: int) -> str:
        linac = self.linacs.get(linac_id)
        return linac.name if linac is not None else f"linac {linac_id}"

    def validate(
        self,
        schedule: Schedule,
        rules: Rules,
        *,
        not_before: datetime | None = None,
        fixed: Collection[int] = (),
    ) -> list[Violation]:
        """Every rule ``schedule`` breaks; see :func:`validate`."""
        out: list[Violation] = []
        fractions = sorted(schedule.fractions, key=lambda f: f.number)
        numbers = [f.number for f in fractions]
        if numbers != list(range(1, rules.fractions + 1)):
            out.append(
                Violation(
                    "fraction_count",
                    f"the protocol needs fractions 1–{rules.fractions}, "
                    f"the schedule has {numbers or 'none'}",
                )
            )
        for f in fractions:
            out.extend(self._single(f, rules, not_before, fixed))
        out.extend(self._pairs(fractions, rules))
        if self.cover is not None:
            out.extend(self._supervision(fractions, rules))
        return out

    def _supervision(self, fractions: Sequence[PlannedFraction], rules: Rules) -> list[Violation]:
        """Supervised fractions outside the physicist roster or beyond its capacity, the
        schedule's own supervised fractions counted with the other courses' ones."""
        assert self.cover is not None
        out: list[Violation] = []
        supervised = [f for f in fractions if self.cover.cover.supervises(rules, f.number)]
        for f in supervised:
            own = [g.interval for g in supervised if g is not f and g.interval.overlaps(f.interval)]
            index = self.cover.with_sessions(own) if own else self.cover
            if index.fits(f.start, f.end):
                continue
            if not self.cover.rostered(f.start, f.end):
                why = "no physicist is rostered for all of it"
            else:
                why = "every physicist rostered then already supervises another session"
            out.append(
                Violation(
                    "physicist_cover",
                    f"fraction {f.number} ({self._when(f)}) needs a supervising physicist, "
                    f"but {why}",
                    f.number,
                )
            )
        return out

    def _single(
        self,
        f: PlannedFraction,
        rules: Rules,
        not_before: datetime | None,
        fixed: Collection[int],
    ) -> list[Violation]:
        """The rules one fraction must keep on its own."""
        out: list[Violation] = []
        cal = self.ctx.calendar
        day = local_date(f.start, self.tz)

        def add(code: str, detail: str) -> None:
            # Formatting local times is the costly part, so it only happens for a violation.
            out.append(Violation(code, f"fraction {f.number} ({self._when(f)}){detail}", f.number))

        if not_before is not None and f.number not in fixed and f.start < not_before:
            add("in_past", f" starts before {format_local(not_before, self.tz)}")
        expected = timedelta(minutes=rules.minutes_for(f.number))
        if f.end - f.start != expected:
            actual = (f.end - f.start).total_seconds() / 60
            add(
                "session_length",
                f" lasts {actual:g} min; the protocol needs {rules.minutes_for(f.number)}",
            )
        if day.weekday() not in rules.weekdays:
            add("weekday", f" falls on a {WEEKDAY_NAMES[day.weekday()]}")
        if (
            f.number == 1
            and rules.start_weekdays is not None
            and day.weekday() not in rules.start_weekdays
        ):
            allowed = ", ".join(WEEKDAY_NAMES[d] for d in sorted(rules.start_weekdays))
            add(
                "start_weekday",
                f" starts the course on a {WEEKDAY_NAMES[day.weekday()]}; allowed: {allowed}",
            )
        reason = closed_reason(cal, day)
        if reason is not None:
            add("closed_date", f" falls on {format_day(day)}, a closed date ({reason})")

        linac = self.linacs.get(f.linac_id)
        if linac is None:
            add("capability", f" is on unknown linac {f.linac_id}")
        elif not capable(linac, rules):
            missing = ", ".join(sorted(rules.capabilities - linac.capabilities))
            add("capability", f" is on {linac.name}, which lacks {missing}")
        if linac is not None:
            window = self.window(linac, day)
            if window is None:
                add("outside_hours", f": {linac.name} is closed that day")
            elif f.start < window[0] or f.end > window[1]:
                add(
                    "outside_hours",
                    f" is outside {linac.name}'s hours "
                    f"{to_local(window[0], self.tz):%H:%M}–{to_local(window[1], self.tz):%H:%M}",
                )
        for start, end in self.linac_busy(f.linac_id).overlapping(f.start, f.end):
            add(
                "linac_busy",
                f" overlaps a booking or downtime on {self._linac_name(f.linac_id)} "
                f"({self._span(start, end)})",
            )
        for start, end in self.patient_busy.overlapping(f.start, f.end):
            add(
                "patient_busy",
                f" overlaps the patient's other appointment ({self._span(start, end)})",
            )
        return out

    def _pairs(self, fractions: Sequence[PlannedFraction], rules: Rules) -> list[Violation]:
        """The rules between fractions: overlap, order, spacing and overall time."""
        out: list[Violation] = []
        for i, a in enumerate(fractions):
            for b in fractions[i + 1 :]:
                if a.interval.overlaps(b.interval):
                    out.append(
                        Violation(
                            "self_overlap",
                            f"fraction {a.number} ({self._when(a)}) overlaps "
                            f"fraction {b.number} ({self._when(b)})",
                            b.number,
                        )
                    )
        days = [local_date(f.start, self.tz) for f in fractions]
        for i in range(1, len(fractions)):
            prev, cur = fractions[i - 1], fractions[i]
            gap = (days[i] - days[i - 1]).days
            hours = (cur.start - prev.start).total_seconds() / 3600
            checks = [
                (cur.start <= prev.start, "order", "are not in order"),
                (
                    hours < rules.min_hours_between,
                    "min_hours_between",
                    f"are {hours:g} h apart; at least {rules.min_hours_between:g} h needed",
                ),
                (
                    gap < rules.min_interval_days,
                    "min_interval_days",
                    f"are {gap} day(s) apart; at least {rules.min_interval_days} needed",
                ),
                (
                    rules.max_interval_days is not None and gap > rules.max_interval_days,
                    "max_interval_days",
                    f"are {gap} days apart; at most {rules.max_interval_days} allowed",
                ),
            ]
            for broken, code, detail in checks:
                if broken:
                    pair = (
                        f"fraction {prev.number} ({format_local(prev.start, self.tz)}) and "
                        f"fraction {cur.number} ({format_local(cur.start, self.tz)})"
                    )
                    out.append(Violation(code, f"{pair} {detail}", cur.number))
        if days:
            overall = (days[-1] - days[0]).days + 1
            span = f"{format_day(days[0])} to {format_day(days[-1])}"
            if rules.min_overall_days is not None and overall < rules.min_overall_days:
                out.append(
                    Violation(
                        "min_overall_days",
                        f"the course spans {overall} day(s) ({span}); "
                        f"at least {rules.min_overall_days} needed",
                    )
                )
            if rules.max_overall_days is not None and overall > rules.max_overall_days:
                out.append(
                    Violation(
                        "max_overall_days",
                        f"the course spans {overall} days ({span}); "
                        f"at most {rules.max_overall_days} allowed",
                    )
                )
        return out


def validate(
    schedule: Schedule,
    rules: Rules,
    ctx: SearchContext,
    *,
    not_before: datetime | None = None,
    fixed: Collection[int] = (),
) -> list[Violation]:
    """Every rule ``schedule`` breaks, in fraction order (empty when it is valid).

    ``not_before`` is the instant nothing may start before (usually now); fraction numbers in
    ``fixed`` (delivered or otherwise settled ones) are exempt from that check only. ``ctx``
    must not contain the schedule's own bookings, or they would be reported as conflicts.
    """
    return Validator(ctx).validate(schedule, rules, not_before=not_before, fixed=fixed)
