"""Finding complete, valid schedules for a course, and explaining a late start or none.

How :func:`propose` searches
----------------------------
Fractions are placed in number order. The first free (not fixed) fraction is enumerated over
the candidate starts of each day; the rest of the course is completed by a depth-first search
whose candidates, per fraction, come from precomputed free slots (opening window minus the
linac's busy time, the patient's other appointments and the fixed fractions, on a grid of
``step_minutes`` aligned to that window's opening time). Day bounds derived from the interval
and overall-days rules prune every branch that could not finish the course in time, and
subproblems already known to fail are memoised, so the search never walks the full product.

Ranking
-------
A whole course (nothing fixed) is ranked by a score: penalty points, the fewest first. Every
proposal carries its :class:`~scheduler.types.Score`, part by part, so the API and the
proposals page show why an option ranks where it does. The parts and their weights:

=============== =========================================================== ==============
part            what is measured                                            points
=============== =========================================================== ==============
``wait``        days from ``request.earliest`` (the ready date, or the      20 per day
                date asked for) to the first fraction
``overall``     days from the first fraction to the last, inclusive,        5 per day
                beyond the shortest the protocol allows (its minimum
                overall days, or the fractions at the minimum interval)
``linacs``      one linac; else one beam-matched group (the plan travels);  0 / 5 / 40
                else machines that need another plan
``time_of_day`` the largest difference between a fraction's local start     1 per started
                time and the first fraction's, beyond 30 minutes            quarter hour
``window``      fractions starting or ending outside                        5 each
                ``request.preferred_window`` (none without a window)
``spacing``     the longest gap between consecutive fractions minus the     2 per day
                shortest, in days (uneven spacing, e.g. across a weekend)
``day_load``    fragments of linac free time the sessions leave: one for    2 each
                each session that splits a free stretch in two instead of
                sitting at its edge, one for each piece of free time next
                to it shorter than 30 minutes (too short for any session)
=============== =========================================================== ==============

A day's wait weighs most: one day later must buy four days less overall time, or a tidier
time of day, window and spacing, or one plan instead of two. Ties go to a first linac in
``request.preferred_linacs`` order, then to the earlier start, then to lower linac ids.

How the ranking is searched: start days are taken in date order. For each start day and each
capable linac ("anchor"), the first fraction is tried on that linac, the placements leaving
the fewest fragments (and inside the window) first, and the course is completed by the
depth-first search above, each later fraction taking the cheapest slot by its own share of
the score (days past the earliest possible one, leaving the anchor linac, time of day,
window, fragments) among every capable linac. Each (start day, anchor) gives at most one
candidate; once ``count`` are kept, an anchor's course is abandoned as soon as its cheapest
next fraction leaves it costing at least as much as the last of them (the parts other than
wait and overall time can only grow as fractions are added). Because every course
starting on day *d* costs at least its wait, plus the
overall time the calendar forces on a start that day, the search stops at the first day
whose wait alone costs as much as the last of ``count`` proposals already found: the list is
then *settled*, and a longer horizon could not change it (:func:`propose_ranked` says so;
the service reads a few weeks of bookings first and reads more only when it is not). A
protocol of several fractions with no maximum interval or overall time is never settled
early, since the horizon then also bounds how late its last fraction may fall.

Alternatives are meaningfully different: each proposal differs from every better one in its
first day or in the set of linacs it uses, never the same course shifted by minutes.

Re-planning around fixed fractions (moves, missed fractions, downtime) keeps its own order,
by date first, since the course already has its machine and time of day:

1. the local date of the first free fraction (earliest first);
2. all fractions on one linac, else all in one beam-matched group, else any capable linac;
3. every fraction within ±30 minutes of the first fraction's local time of day;
4. every free fraction inside ``request.preferred_window`` (when given);
5. the first free fraction's linac in ``request.preferred_linacs`` order;
6. when fraction 1 is fixed, the time of day closest to it;
7. the first free fraction's start time, then its linac id.

"One linac" and "one group" include the fixed fractions: re-planned fractions stay on the
course's machine, else on a beam-matched one. Criteria 2–4 form "tiers" that are tried
strictly in order for every candidate start of a day, so a tier's first success is the best
remaining candidate and the search can stop as soon as ``count`` proposals are accepted.
Within a course the later fractions take, in turn, the time of day within ±30 minutes of the
first fraction's (even on a later day), the earliest day, the preferred linac, the closest
time of day, the lower linac id and the earlier start. A re-planned alternative is accepted
when, against every one already accepted, its first free fraction is on another local date,
on another linac, or starts at least an hour apart. Re-planned schedules carry a score too.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from heapq import heapify, heappop
from typing import Any

from scheduler.rules import BusyIndex, Validator, capable, closed_reason
from scheduler.timeutil import format_day, local_date, local_minutes, to_local
from scheduler.types import (
    DowntimeSpan,
    Explanation,
    Interval,
    LinacSpec,
    PlannedFraction,
    Rules,
    Schedule,
    ScheduleRequest,
    Score,
    ScorePart,
    SearchContext,
)

SAME_TIME_TOLERANCE_MINUTES = 30
DISTINCT_START_MINUTES = 60
EXPLAIN_HORIZON_DAYS = 56
# Every code an explanation can carry (explain and explain_late_start), documented in the API.
EXPLANATION_CODES: frozenset[str] = frozenset(
    {
        "invalid_rules",
        "no_capable_linac",
        "fixed_conflict",
        "opening_hours",
        "not_enough_days",
        "closure",
        "linac_downtime",
        "capacity",
        "patient_busy",
        "physicist_cover",
        "feasible",
    }
)
# An explanation names at most this many downtimes or closed periods (the longest ones).
EXPLAIN_MAX_NAMED = 3

# The score's weights, in penalty points (see "Ranking" above); lower totals rank first.
WAIT_POINTS_PER_DAY = 20
OVERALL_POINTS_PER_DAY = 5
GROUP_POINTS = 5
MIXED_LINACS_POINTS = 40
TIME_POINTS_PER_QUARTER_HOUR = 1
OUTSIDE_WINDOW_POINTS = 5
SPACING_POINTS_PER_DAY = 2
FRAGMENT_POINTS = 2
# A free piece shorter than the shortest session the product allows can never be booked.
STRANDED_MINUTES = 30

# Linac scope of a tier: the first free fraction's linac, its beam group, or any capable one.
_SCOPE_LINAC, _SCOPE_GROUP, _SCOPE_ANY = 0, 1, 2


@dataclass(frozen=True, slots=True)
class _Slot:
    """A candidate placement of one session (or a fixed fraction, seen the same way)."""

    linac: int
    start: datetime
    end: datetime
    day: date  # local date of start
    tod: int  # local minutes since midnight of start
    end_tod: int  # local minutes since midnight of end
    # Free-time fragments this session leaves on its linac's day (see _fragments).
    frag: int = 0


@dataclass(frozen=True, slots=True)
class _Tier:
    scope: int
    same_time: bool
    in_window: bool


@dataclass(slots=True)
class _Course:
    """Per first-day bounds: fraction ``k`` must fall on a local date in [lo[k], hi[k]]."""

    first_day: date
    lo: dict[int, date]
    hi: dict[int, date]


class _Search:
    """One search over a context: the slot cache, the rules and the ranking."""

    def __init__(
        self,
        request: ScheduleRequest,
        ctx: SearchContext,
        *,
        horizon_days: int | None = None,
    ) -> None:
        self.request = request
        self.rules: Rules = request.rules
        self.ctx = ctx
        self.cal = ctx.calendar
        self.tz = ctx.calendar.timezone
        self.validator = Validator(ctx)
        self.n = self.rules.fractions
        horizon = horizon_days if horizon_days is not None else request.horizon_days
        self.first_day, self.last_start_day, self.last_day = _dates(request, horizon)
        self.step = timedelta(minutes=max(1, request.step_minutes))
        self.min_gap = timedelta(hours=self.rules.min_hours_between)
        self.linacs: list[LinacSpec] = sorted(
            (linac for linac in ctx.linacs if capable(linac, self.rules)), key=lambda x: x.id
        )
        self.linac_ids = [linac.id for linac in self.linacs]
        self.by_id = {linac.id: linac for linac in self.linacs}
        self.all_linacs = {linac.id: linac for linac in ctx.linacs}
        self.pref_rank = {lid: i for i, lid in enumerate(request.preferred_linacs)}
        self.no_pref = len(request.preferred_linacs)
        window = request.preferred_window
        self.window = (
            None
            if window is None
            else (window[0].hour * 60 + window[0].minute, window[1].hour * 60 + window[1].minute)
        )
        self.fixed: dict[int, _Slot] = {
            num: self._slot_of(f) for num, f in request.fixed.items() if 1 <= num <= self.n
        }
        self.free_numbers = [k for k in range(1, self.n + 1) if k not in self.fixed]
        # The patient cannot be in two places: other appointments and the fixed fractions
        # block every linac alike.
        self.blocked = BusyIndex([*ctx.patient_busy, *(f.interval for f in request.fixed.values())])
        self._slots: dict[tuple[int, date, int, bool], list[_Slot]] = {}
        self._slot_starts: dict[tuple[int, date, int, bool], list[datetime]] = {}
        # The physicist roster, when the department keeps one: a supervised fraction only
        # takes slots with a physicist free for its whole length.
        self.cover = self.validator.cover
        self._day_ok: dict[tuple[date, int], bool] = {}
        # Failed (fraction, linac, start) subproblems of the loosest tier, per course first day.
        self._dead: dict[date, set[tuple[int, int, datetime]]] = {}
        self._tiers: dict[int, list[_Tier]] = {}
        self._linac_points_cache: dict[int, dict[int, int]] = {}
        self._abandoned = False  # set by complete_scored when a course cannot rank
        # Per course start day: the earliest next-fraction start known to leave no way to
        # finish the course (see _best_from).
        self._fails_from: dict[date, datetime] = {}
        self._stretches: dict[tuple[int, date], Any] = {}
        # Candidates of ranked(), by id(): they stay alive in its list while this is used.
        self._valid: dict[int, bool] = {}

    # -- slots ---------------------------------------------------------------------------

    def _slot_of(self, f: PlannedFraction) -> _Slot:
        return _Slot(
            f.linac_id,
            f.start,
            f.end,
            local_date(f.start, self.tz),
            local_minutes(f.start, self.tz),
            local_minutes(f.end, self.tz),
        )

    def supervised(self, number: int) -> bool:
        """Whether fraction ``number`` needs a physicist (never without a roster)."""
        return self.cover is not None and self.cover.cover.supervises(self.rules, number)

    def slots(
        self, linac_id: int, day: date, minutes: int, supervised: bool = False
    ) -> list[_Slot]:
        """Free starts for a ``minutes``-long session on ``linac_id`` on local ``day``; a
        ``supervised`` session also needs a physicist free for its whole length."""
        key = (linac_id, day, minutes, supervised)
        cached = self._slots.get(key)
        if cached is None:
            if supervised:
                assert self.cover is not None
                fits = self.cover.fits
                cached = [s for s in self.slots(linac_id, day, minutes) if fits(s.start, s.end)]
            else:
                cached = self._compute_slots(linac_id, day, minutes)
            self._slots[key] = cached
            self._slot_starts[key] = [s.start for s in cached]
        return cached

    def _compute_slots(self, linac_id: int, day: date, minutes: int) -> list[_Slot]:
        stretches = self._free_stretches(linac_id, day)
        if stretches is None:
            return []
        opens, opens_tod, free = stretches
        length = timedelta(minutes=minutes)
        minute = timedelta(minutes=1)
        tz = self.tz
        out: list[_Slot] = []
        for free_from, gap_end, pieces in free:
            for start, end in pieces:
                if end - start < length:
                    continue
                # First grid point at or after start; the grid is anchored at opening time.
                k = (start - opens) // self.step
                t = opens + k * self.step
                if t < start:
                    t += self.step
                while t + length <= end:
                    if opens_tod is None:
                        tod, end_tod = local_minutes(t, tz), local_minutes(t + length, tz)
                    else:
                        tod = opens_tod + (t - opens) // minute
                        end_tod = tod + minutes
                    out.append(
                        _Slot(
                            linac_id,
                            t,
                            t + length,
                            day,
                            tod,
                            end_tod,
                            _fragments(t - free_from, gap_end - t - length),
                        )
                    )
                    t += self.step
        return out

    def _free_stretches(
        self, linac_id: int, day: date
    ) -> (
        tuple[
            datetime, int | None, list[tuple[datetime, datetime, list[tuple[datetime, datetime]]]]
        ]
        | None
    ):
        """The linac's free stretches on local ``day``, shared by every session length: the
        opening instant, its local minutes (None when the clocks change within the window),
        and per stretch the instant its free time counts from, its end and the pieces in it
        the patient can attend (not before now). None when the linac does not open."""
        key = (linac_id, day)
        if key in self._stretches:
            return self._stretches[key]
        found = None
        window = None
        if (
            self.first_day <= day <= self.last_day
            and day.weekday() in self.rules.weekdays
            and closed_reason(self.cal, day) is None
        ):
            window = self.validator.window(self.by_id[linac_id], day)
        if window is not None:
            opens, closes = window
            local_opens, local_closes = to_local(opens, self.tz), to_local(closes, self.tz)
            opens_tod = None
            if local_opens.utcoffset() == local_closes.utcoffset():
                opens_tod = local_opens.hour * 60 + local_opens.minute
            not_before = self.request.not_before
            free = []
            # Most days the patient has nothing else on: then no stretch needs cutting.
            patient_free = not self.blocked.overlapping(opens, closes)
            for gap_start, gap_end in self.validator.linac_busy(linac_id).free(opens, closes):
                # Free time that lapses before the first grid point after now is no fragment.
                free_from = gap_start
                if not_before is not None and gap_start < not_before:
                    free_from = opens + -((opens - not_before) // self.step) * self.step
                pieces = []
                attendable = (
                    [(gap_start, gap_end)]
                    if patient_free
                    else self.blocked.free(gap_start, gap_end)
                )
                for start, end in attendable:
                    if not_before is not None and start < not_before:
                        start = not_before
                    if start < end:
                        pieces.append((start, end))
                free.append((free_from, gap_end, pieces))
            found = (opens, opens_tod, free)
        self._stretches[key] = found
        return found

    def day_open(self, day: date, minutes: int) -> bool:
        """Whether the calendar lets some capable linac treat ``minutes`` on ``day``.

        Bookings are ignored on purpose: this only prunes course starts the calendar rules out
        (weekends, closures, short hours); the slot search handles capacity.
        """
        key = (day, minutes)
        ok = self._day_ok.get(key)
        if ok is None:
            ok = (
                self.first_day <= day <= self.last_day
                and day.weekday() in self.rules.weekdays
                and closed_reason(self.cal, day) is None
                and any(self._window_fits(linac, day, minutes) for linac in self.linacs)
            )
            self._day_ok[key] = ok
        return ok

    def _window_fits(self, linac: LinacSpec, day: date, minutes: int) -> bool:
        window = self.validator.window(linac, day)
        return window is not None and window[1] - window[0] >= timedelta(minutes=minutes)

    # -- day-level bounds ----------------------------------------------------------------

    def course(self, first_day: date) -> _Course | None:
        """Date bounds per fraction for a course starting ``first_day`` (None: impossible)."""
        r = self.rules
        n = self.n
        end_limit = self.last_day
        if r.max_overall_days is not None:
            end_limit = min(end_limit, first_day + timedelta(days=r.max_overall_days - 1))
        end_floor = first_day
        if r.min_overall_days is not None:
            end_floor = first_day + timedelta(days=r.min_overall_days - 1)
        lo: dict[int, date] = {}
        hi: dict[int, date] = {}
        for k in range(1, n + 1):
            hi[k] = end_limit - timedelta(days=(n - k) * r.min_interval_days)
            lo[k] = first_day
            if r.max_interval_days is not None:
                lo[k] = max(lo[k], end_floor - timedelta(days=(n - k) * r.max_interval_days))
            elif k == n:
                lo[k] = max(lo[k], end_floor)
        # Fixed fractions pin their neighbours' dates too.
        for j, fixed in self.fixed.items():
            for k in range(1, n + 1):
                if k < j:
                    hi[k] = min(hi[k], fixed.day - timedelta(days=(j - k) * r.min_interval_days))
                    if r.max_interval_days is not None:
                        lo[k] = max(
                            lo[k], fixed.day - timedelta(days=(j - k) * r.max_interval_days)
                        )
                elif k > j:
                    lo[k] = max(lo[k], fixed.day + timedelta(days=(k - j) * r.min_interval_days))
                    if r.max_interval_days is not None:
                        hi[k] = min(
                            hi[k], fixed.day + timedelta(days=(k - j) * r.max_interval_days)
                        )
        if any(lo[k] > hi[k] for k in range(1, n + 1)):
            return None
        return _Course(first_day, lo, hi)

    def days_possible(self, course: _Course) -> bool:
        """Whether some sequence of open days satisfies the date rules (times ignored)."""
        return bool(self.last_days(course))

    def last_days(self, course: _Course) -> set[date]:
        """The days the last fraction can fall on by the date rules (times ignored)."""
        r = self.rules
        reachable: set[date] = set()
        for k in range(1, self.n + 1):
            fixed = self.fixed.get(k)
            if fixed is not None:
                options = [fixed.day] if course.lo[k] <= fixed.day <= course.hi[k] else []
                if k > 1:
                    options = [
                        d for d in options if any(self._days_follow(p, d) for p in reachable)
                    ]
            elif k == 1:  # the course's first day is given; run() checked its weekday
                options = (
                    [course.first_day] if self.day_open(course.first_day, r.minutes_for(1)) else []
                )
            else:
                options = self._next_days(reachable, course.lo[k], course.hi[k], r.minutes_for(k))
            reachable = set(options)
            if not reachable:
                return reachable
        return reachable

    def _next_days(self, reachable: set[date], lo: date, hi: date, minutes: int) -> set[date]:
        """Open days in [lo, hi] that may follow some day in ``reachable`` by the interval
        rules (as :meth:`_days_follow`), found from the few reachable days rather than by
        testing every day of the range against each of them."""
        r = self.rules
        if r.max_interval_days is None:
            lo = max(lo, min(reachable) + timedelta(days=r.min_interval_days))
            return {d for d in _date_range(lo, hi) if self.day_open(d, minutes)}
        gaps = [timedelta(days=g) for g in range(r.min_interval_days, r.max_interval_days + 1)]
        return {
            d
            for day in reachable
            for gap in gaps
            if lo <= (d := day + gap) <= hi and self.day_open(d, minutes)
        }

    def _days_follow(self, prev: date, cur: date) -> bool:
        gap = (cur - prev).days
        r = self.rules
        return gap >= r.min_interval_days and (
            r.max_interval_days is None or gap <= r.max_interval_days
        )

    # -- completing a course -------------------------------------------------------------

    def follows(self, prev: _Slot, cur: _Slot) -> bool:
        """Whether ``cur`` may come right after ``prev`` (spacing and no overlap)."""
        return (
            self._days_follow(prev.day, cur.day)
            and cur.start >= prev.end
            and cur.start - prev.start >= self.min_gap
        )

    def scope_ids(self, tier: _Tier, anchor: int) -> list[int]:
        if tier.scope == _SCOPE_LINAC:
            return [anchor]
        if tier.scope == _SCOPE_GROUP:
            group = self.by_id[anchor].beam_group
            return [lid for lid in self.linac_ids if self.by_id[lid].beam_group == group]
        return self.linac_ids

    def tiers(self, anchor: int) -> list[_Tier]:
        """The tiers to try for a first fraction on linac ``anchor``, best first."""
        cached = self._tiers.get(anchor)
        if cached is None:
            cached = self._tiers[anchor] = self._make_tiers(anchor)
        return cached

    def _make_tiers(self, anchor: int) -> list[_Tier]:
        # Fixed fractions count too: "all on one linac" (or group) means the whole course.
        fixed_linacs = {f.linac for f in self.fixed.values()}
        group = self.by_id[anchor].beam_group
        group_ids = self.scope_ids(_Tier(_SCOPE_GROUP, False, False), anchor)
        scopes: list[int] = []
        widest = 0
        if fixed_linacs <= {anchor}:
            scopes.append(_SCOPE_LINAC)
            widest = 1
        in_group = all(
            lid in self.all_linacs and self.all_linacs[lid].beam_group == group
            for lid in fixed_linacs
        )
        if group is not None and in_group and len(group_ids) > widest:
            scopes.append(_SCOPE_GROUP)
            widest = len(group_ids)
        if len(self.linac_ids) > widest:
            scopes.append(_SCOPE_ANY)
        windows = (True, False) if self.window is not None else (False,)
        return [_Tier(s, t, w) for s in scopes for t in (True, False) for w in windows]

    def fits_tier(self, slot: _Slot, tier: _Tier, ref: int) -> bool:
        if tier.same_time and abs(slot.tod - ref) > SAME_TIME_TOLERANCE_MINUTES:
            return False
        if tier.in_window:
            assert self.window is not None
            return self.window[0] <= slot.tod and slot.end_tod <= self.window[1]
        return True

    def scored_candidates(
        self, k: int, prev: _Slot, course: _Course, ref: int, anchor: int
    ) -> Iterator[_Slot]:
        """Slots on any capable linac for free fraction ``k`` after ``prev``, cheapest first by
        their share of the score: days past the earliest possible one, leaving linac
        ``anchor``, time of day away from ``ref``, outside the preferred window, fragments.

        Lazy: the (day, linac) groups are opened in order of their cheapest possible slot, so
        a search that takes the first candidate never prices most of the others.
        """
        r = self.rules
        earliest_day = prev.day + timedelta(days=r.min_interval_days)
        lo = max(course.lo[k], earliest_day)
        hi = course.hi[k]
        if r.max_interval_days is not None:
            hi = min(hi, prev.day + timedelta(days=r.max_interval_days))
        earliest_start = max(prev.end, prev.start + self.min_gap)
        minutes = r.minutes_for(k)
        supervised = self.supervised(k)
        linac_points = self._linac_points(anchor)
        window = self.window
        groups = sorted(
            (OVERALL_POINTS_PER_DAY * (day - earliest_day).days + linac_points[lid], day, lid)
            for day in _date_range(lo, hi)
            for lid in self.linac_ids
        )
        heap: list[tuple[int, date, int, int, datetime, _Slot]] = []
        g = 0
        while g < len(groups) or heap:
            # A group whose cheapest possible slot ties the best so far must be priced first.
            while g < len(groups) and (not heap or groups[g][0] <= heap[0][0]):
                base, day, lid = groups[g]
                g += 1
                day_slots = self.slots(lid, day, minutes, supervised)
                if not day_slots:
                    continue
                i = bisect_left(self._slot_starts[(lid, day, minutes, supervised)], earliest_start)
                for s in day_slots[i:]:
                    off = abs(s.tod - ref)
                    points = base + _time_points(off) + FRAGMENT_POINTS * s.frag
                    if window is not None and not (window[0] <= s.tod and s.end_tod <= window[1]):
                        points += OUTSIDE_WINDOW_POINTS
                    heap.append((points, day, off, lid, s.start, s))
                heapify(heap)
            if heap:
                yield heappop(heap)[5]

    def _linac_points(self, anchor: int) -> dict[int, int]:
        cached = self._linac_points_cache.get(anchor)
        if cached is None:
            group = self.by_id[anchor].beam_group
            cached = {
                lid: 0
                if lid == anchor
                else GROUP_POINTS
                if group is not None and self.by_id[lid].beam_group == group
                else MIXED_LINACS_POINTS
                for lid in self.linac_ids
            }
            self._linac_points_cache[anchor] = cached
        return cached

    def candidates(
        self, k: int, prev: _Slot, course: _Course, tier: _Tier, ids: Sequence[int], ref: int
    ) -> list[_Slot]:
        """Slots for free fraction ``k`` after ``prev``, best first.

        A slot near the first fraction's time of day beats an earlier day at another time;
        then come the earlier day, the preferred linac, the closer time, linac id and start.
        """
        r = self.rules
        lo = max(course.lo[k], prev.day + timedelta(days=r.min_interval_days))
        hi = course.hi[k]
        if r.max_interval_days is not None:
            hi = min(hi, prev.day + timedelta(days=r.max_interval_days))
        earliest_start = max(prev.end, prev.start + self.min_gap)
        minutes = r.minutes_for(k)
        supervised = self.supervised(k)
        found: list[_Slot] = []
        for day in _date_range(lo, hi):
            for lid in ids:
                day_slots = self.slots(lid, day, minutes, supervised)
                if not day_slots:
                    continue
                i = bisect_left(self._slot_starts[(lid, day, minutes, supervised)], earliest_start)
                found.extend(s for s in day_slots[i:] if self.fits_tier(s, tier, ref))
        found.sort(
            key=lambda s: (
                abs(s.tod - ref) > SAME_TIME_TOLERANCE_MINUTES,
                s.day,
                self.pref_rank.get(s.linac, self.no_pref),
                abs(s.tod - ref),
                s.linac,
                s.start,
            )
        )
        return found

    def complete(
        self,
        k: int,
        prev: _Slot,
        course: _Course,
        tier: _Tier,
        ids: Sequence[int],
        ref: int,
        dead: set[tuple[int, int, datetime]],
    ) -> list[_Slot] | None:
        """Fractions k..n after ``prev``, or None; ``dead`` memoises failed subproblems."""
        if k > self.n:
            return []
        fixed = self.fixed.get(k)
        if fixed is not None:
            if not self.follows(prev, fixed):
                return None
            rest = self.complete(k + 1, fixed, course, tier, ids, ref, dead)
            return None if rest is None else [fixed, *rest]
        for slot in self.candidates(k, prev, course, tier, ids, ref):
            key = (k, slot.linac, slot.start)
            if key in dead:
                continue
            rest = self.complete(k + 1, slot, course, tier, ids, ref, dead)
            if rest is not None:
                return [slot, *rest]
            dead.add(key)
        return None

    def complete_scored(
        self,
        path: list[_Slot],
        course: _Course,
        anchor: int,
        dead: set[tuple[int, int, datetime]],
        budget: tuple[int, Schedule] | None,
    ) -> list[_Slot] | None:
        """Fractions after ``path`` (fractions 1..k-1 of a whole course), each the cheapest
        that lets the course finish, or None. ``dead`` memoises subproblems that cannot
        finish. With a ``budget`` (the day's floor and the worst proposal kept so far), the
        search gives up as soon as the cheapest next fraction leaves a course that could no
        longer rank above that proposal (and sets ``_abandoned``): a costlier one would
        rarely do better, and later start days rarely produce a proposal at all."""
        k = len(path) + 1
        if k > self.n:
            return []
        prev = path[-1]
        for slot in self.scored_candidates(k, prev, course, path[0].tod, anchor):
            key = (k, slot.linac, slot.start)
            if key in dead:
                continue
            path.append(slot)
            if budget is not None and self._cannot_rank(
                budget[0] + self._partial_points(path), budget[1]
            ):
                path.pop()
                self._abandoned = True
                return None
            rest = self.complete_scored(path, course, anchor, dead, budget)
            path.pop()
            if rest is not None:
                return [slot, *rest]
            if self._abandoned:
                return None
            dead.add(key)  # a pure failure, true for every anchor and budget
        return None

    def _partial_points(self, path: list[_Slot]) -> int:
        """A lower bound of the points fractions beyond ``path`` cannot take back: every
        part except wait and overall (counted in the day's floor) only grows as a course
        is completed."""
        first = path[0]
        spread = max(abs(s.tod - first.tod) for s in path)
        points = _time_points(spread) + FRAGMENT_POINTS * sum(s.frag for s in path)
        window = self.window
        if window is not None:
            outside = sum(1 for s in path if not (window[0] <= s.tod and s.end_tod <= window[1]))
            points += OUTSIDE_WINDOW_POINTS * outside
        linacs = {s.linac for s in path}
        if len(linacs) > 1:
            groups = {self.by_id[lid].beam_group for lid in linacs}
            one_group = len(groups) == 1 and None not in groups
            points += GROUP_POINTS if one_group else MIXED_LINACS_POINTS
        if len(path) > 2:
            gaps = [(b.day - a.day).days for a, b in zip(path, path[1:], strict=False)]
            points += SPACING_POINTS_PER_DAY * (max(gaps) - min(gaps))
        return points

    # -- the outer search ----------------------------------------------------------------

    def run(self, count: int) -> list[Schedule]:
        """Up to ``count`` ranked, distinct, validated schedules."""
        if count <= 0 or self.n < 1:
            return []
        if not self.free_numbers:
            return [s for s in [self._schedule([])] if s is not None][:count]
        if not self.linacs:
            return []
        # A fixed fraction that breaks a rule on its own would fail every candidate: stop now.
        if self.fixed and _fixed_problem(self.request, self.validator) is not None:
            return []
        k0 = self.free_numbers[0]
        before = [self.fixed[k] for k in range(1, k0)]
        if any(not self.follows(a, b) for a, b in zip(before, before[1:], strict=False)):
            return []
        prev = before[-1] if before else None
        shared_course = None if k0 == 1 else self.course(self.fixed[1].day)
        if k0 > 1 and (shared_course is None or not self.days_possible(shared_course)):
            return []
        accepted: list[tuple[_Slot, Schedule]] = []
        minutes = self.rules.minutes_for(k0)
        for day in _date_range(self.first_day, self.last_start_day):
            if not self.day_open(day, minutes):
                continue
            if k0 == 1:
                starts = self.rules.start_weekdays
                if starts is not None and day.weekday() not in starts:
                    continue
                course = self.course(day)
                if course is None or not self.days_possible(course):
                    continue
            else:
                course = shared_course
            assert course is not None
            if not course.lo[k0] <= day <= course.hi[k0]:
                continue
            placements = [
                s
                for lid in self.linac_ids
                for s in self.slots(lid, day, minutes, self.supervised(k0))
                if prev is None or self.follows(prev, s)
            ]
            if self._rank_day(placements, course, k0, count, accepted):
                break
        return [schedule for _, schedule in accepted]

    def _rank_day(
        self,
        placements: list[_Slot],
        course: _Course,
        k0: int,
        count: int,
        accepted: list[tuple[_Slot, Schedule]],
    ) -> bool:
        """Accept the day's best distinct proposals, tier by tier; True once ``count`` reached."""
        # When re-planning (k0 > 1) the course already has a time of day: stay close to it.
        ref_fixed = self.fixed[1].tod if k0 > 1 else None
        placements.sort(
            key=lambda s: (
                self.pref_rank.get(s.linac, self.no_pref),
                0 if ref_fixed is None else abs(s.tod - ref_fixed),
                s.start,
                s.linac,
            )
        )
        dead = self._dead.setdefault(course.first_day, set())
        pending = placements
        all_tiers = sorted(
            {t for lid in {s.linac for s in placements} for t in self.tiers(lid)},
            key=lambda t: (t.scope, not t.same_time, not t.in_window),
        )
        for tier in all_tiers:
            still: list[_Slot] = []
            for first in pending:
                if not all(_distinct(first, other) for other, _ in accepted):
                    continue  # can never be accepted now: drop it for every later tier
                if tier not in self.tiers(first.linac):
                    still.append(first)
                    continue
                ref = first.tod if ref_fixed is None else ref_fixed
                if not self.fits_tier(first, tier, ref):
                    still.append(first)
                    continue
                ids = self.scope_ids(tier, first.linac)
                # A failure found with no tier filter holds for every first fraction of this
                # course start, so that tier shares one memo; filtered tiers memoise per call.
                shared = len(ids) == len(self.linac_ids) and not (tier.same_time or tier.in_window)
                memo = dead if shared else set()
                rest = self.complete(k0 + 1, first, course, tier, ids, ref, memo)
                schedule = None if rest is None else self._schedule([first, *rest])
                if schedule is None:
                    still.append(first)
                    continue
                accepted.append((first, schedule))
                if len(accepted) >= count:
                    return True
            pending = still
            if not pending:
                break
        return False

    def _schedule(self, placed: list[_Slot], *, check: bool = True) -> Schedule | None:
        """The schedule of ``placed`` (fractions k0..n, in order) and the earlier fixed ones,
        or None if it does not pass validation (a safety net: the search keeps every rule).
        ``check=False`` leaves validation to the caller (see :meth:`valid`)."""
        fractions = {k: f for k, f in self.request.fixed.items() if 1 <= k <= self.n}
        first_number = self.free_numbers[0] if self.free_numbers else self.n + 1
        for number, slot in enumerate(placed, start=first_number):
            if number not in self.fixed:
                fractions[number] = PlannedFraction(number, slot.linac, slot.start, slot.end)
        schedule = Schedule(tuple(fractions[k] for k in sorted(fractions)))
        if check and not self.valid(schedule):
            return None
        slots = [self.fixed[k] for k in range(1, first_number)] + placed
        return Schedule(schedule.fractions, self.score(slots))

    def valid(self, schedule: Schedule) -> bool:
        problems = self.validator.validate(
            schedule, self.rules, not_before=self.request.not_before, fixed=self.fixed.keys()
        )
        # A fixed fraction left without physicist cover (the roster changed after it was
        # booked) stays where it is: the search does not move it, so it blames no schedule.
        return not any(
            not (v.code == "physicist_cover" and v.fraction in self.fixed) for v in problems
        )

    # -- ranking whole courses by score --------------------------------------------------

    def ranked(self, count: int) -> tuple[list[Schedule], bool]:
        """Up to ``count`` distinct schedules of a whole course (nothing fixed), lowest score
        first, and whether that ranking is settled: True when no first day after the horizon
        could rank among them (its wait alone would cost more than the last one's score)."""
        if count <= 0 or self.n < 1 or not self.linacs:
            return [], True
        minutes = self.rules.minutes_for(1)
        starts = self.rules.start_weekdays
        shortest = _shortest_overall(self.rules)
        anchors = sorted(
            self.linac_ids, key=lambda lid: (self.pref_rank.get(lid, self.no_pref), lid)
        )
        candidates: list[_Candidate] = []
        chosen: list[Schedule] = []
        for day in _date_range(self.first_day, self.last_start_day):
            if len(chosen) >= count and self._cannot_rank(self._wait_points(day), chosen[-1]):
                # Without a rule bounding the course's length, the horizon also bounds its
                # last fraction (search_dates), so a longer one could still change a course.
                r = self.rules
                bounded = r.max_overall_days is not None or r.max_interval_days is not None
                return chosen, bounded or self.n == 1
            if not self.day_open(day, minutes):
                continue
            if starts is not None and day.weekday() not in starts:
                continue
            course = self.course(day)
            last_days = set() if course is None else self.last_days(course)
            if course is None or not last_days:
                continue
            # The calendar alone can make every course starting this day too long to rank.
            overall = (min(last_days) - day).days + 1
            floor = self._wait_points(day) + OVERALL_POINTS_PER_DAY * max(0, overall - shortest)
            # Anchor by anchor, so that each course found tightens the bound for the next.
            for lid in anchors:
                worst = chosen[-1] if len(chosen) >= count else None
                if worst is not None and self._cannot_rank(floor, worst):
                    break
                schedule = self._best_from(day, course, lid, minutes, floor, worst)
                if schedule is None:
                    continue
                signature = (day, frozenset(f.linac_id for f in schedule.fractions))
                candidates.append(
                    _Candidate(_rank_key(schedule, self.pref_rank), signature, schedule)
                )
                candidates.sort(key=lambda c: c.key)
                chosen = _pick(candidates, count, self._checked)
        return chosen, False

    def _checked(self, schedule: Schedule) -> bool:
        """Whether a candidate passes validation, each candidate validated at most once."""
        ok = self._valid.get(id(schedule))
        if ok is None:
            ok = self._valid[id(schedule)] = self.valid(schedule)
        return ok

    def _cannot_rank(self, at_least: int, worst: Schedule) -> bool:
        """Whether a candidate scoring ``at_least`` could never rank above ``worst``: a tie
        goes to the earlier start, unless a preferred linac decides it first."""
        total = _total(worst)
        return at_least > total or (at_least == total and not self.pref_rank)

    def _wait_points(self, day: date) -> int:
        return WAIT_POINTS_PER_DAY * (day - self.request.earliest).days

    def _best_from(
        self,
        day: date,
        course: _Course,
        anchor: int,
        minutes: int,
        floor: int,
        worst: Schedule | None,
    ) -> Schedule | None:
        """The best course the search finds whose first fraction is on ``anchor`` on ``day``
        (None also when it could not rank above ``worst``, given the day's ``floor``).

        First fractions are tried in order of their share of the score (preferred window,
        fragments), then earliest; each later fraction is the cheapest that still lets the
        course finish, on any capable linac.
        """
        window = self.window

        def first_points(s: _Slot) -> int:
            points = FRAGMENT_POINTS * s.frag
            if window is not None and not (window[0] <= s.tod and s.end_tod <= window[1]):
                points += OUTSIDE_WINDOW_POINTS
            return points

        placements = sorted(
            self.slots(anchor, day, minutes, self.supervised(1)),
            key=lambda s: (first_points(s), s.start),
        )
        # No filter applies, so a failure to finish from a slot holds for the whole course start.
        dead = self._dead.setdefault(course.first_day, set())
        # Every first fraction of the day leaves the same days to the rest of the course, and
        # a later earliest next start leaves fewer slots: once a course cannot be finished
        # after one first fraction, none finishes after any allowing the next no sooner.
        fails_from = self._fails_from.get(day)
        for first in placements:
            if worst is not None and self._cannot_rank(floor + first_points(first), worst):
                break  # every later placement costs at least as much
            next_from = max(first.end, first.start + self.min_gap)
            if fails_from is not None and next_from >= fails_from:
                continue
            budget = None if worst is None else (floor, worst)
            self._abandoned = False
            rest = self.complete_scored([first], course, anchor, dead, budget)
            if self._abandoned:
                return None
            if rest is not None:
                # Validated only if it is picked: most candidates never are.
                return self._schedule([first, *rest], check=False)
            fails_from = next_from if fails_from is None else min(fails_from, next_from)
            self._fails_from[day] = fails_from
        return None

    def score(self, slots: Sequence[_Slot]) -> Score:
        """The score of a course whose fractions 1..n sit in ``slots`` (see "Ranking")."""
        r = self.rules
        free = [s for k, s in enumerate(slots, start=1) if k not in self.fixed]
        days = [s.day for s in slots]
        gaps = tuple((b - a).days for a, b in zip(days, days[1:], strict=False))
        overall = (days[-1] - days[0]).days + 1
        shortest = _shortest_overall(r)
        wait = (free[0].day - self.request.earliest).days if free else 0
        linac_ids = sorted({s.linac for s in slots})
        groups = {
            self.all_linacs[lid].beam_group if lid in self.all_linacs else None for lid in linac_ids
        }
        spread = max(abs(s.tod - slots[0].tod) for s in slots)
        window = self.window
        outside = (
            0
            if window is None
            else sum(1 for s in free if not (window[0] <= s.tod and s.end_tod <= window[1]))
        )
        uneven = max(gaps) - min(gaps) if gaps else 0
        fragments = sum(s.frag for s in free)

        if wait == 0:
            wait_words = f"starts on the earliest date, {format_day(self.request.earliest)}"
        else:
            wait_words = f"starts {_days(wait)} after {format_day(self.request.earliest)}"
        if overall > shortest:
            overall_words = f"{_days(overall)} overall; the protocol's shortest is {shortest}"
        else:
            overall_words = f"{_days(overall)} overall, the shortest the protocol allows"
        if len(linac_ids) == 1:
            linac_points, linac_words = 0, "one linac"
        elif len(groups) == 1 and None not in groups:
            linac_points = GROUP_POINTS
            linac_words = f"{len(linac_ids)} linacs of one beam-matched group"
        else:
            linac_points = MIXED_LINACS_POINTS
            linac_words = f"{len(linac_ids)} linacs, not all beam-matched"
        if spread == 0:
            time_words = "the same time of day"
        elif spread <= SAME_TIME_TOLERANCE_MINUTES:
            time_words = f"the same time of day, within {spread} min"
        else:
            time_words = f"start times up to {_duration(spread)} apart"
        if window is None:
            window_words = "no preferred window"
        elif outside == 0:
            window_words = "every fraction in the preferred window"
        else:
            window_words = f"{_count(outside, 'fraction')} outside the preferred window"
        if not gaps:
            spacing_words = "a single fraction"
        elif uneven == 0:
            spacing_words = "even gaps"
        else:
            spacing_words = f"gaps differ by {_days(uneven)}"
        if fragments == 0:
            load_words = "fits the linacs' free time without fragmenting it"
        else:
            load_words = f"leaves {_count(fragments, 'fragment')} of linac free time"
        parts = (
            ScorePart("wait", WAIT_POINTS_PER_DAY * wait, wait, wait_words),
            ScorePart(
                "overall",
                OVERALL_POINTS_PER_DAY * max(0, overall - shortest),
                overall,
                overall_words,
            ),
            ScorePart("linacs", linac_points, len(linac_ids), linac_words),
            ScorePart("time_of_day", _time_points(spread), spread, time_words),
            ScorePart("window", OUTSIDE_WINDOW_POINTS * outside, outside, window_words),
            ScorePart("spacing", SPACING_POINTS_PER_DAY * uneven, uneven, spacing_words),
            ScorePart("day_load", FRAGMENT_POINTS * fragments, fragments, load_words),
        )
        return Score(parts, overall, gaps)


def _dates(request: ScheduleRequest, horizon_days: int) -> tuple[date, date, date]:
    """First and last local date the first free fraction may fall on, and the last for any."""
    rules = request.rules
    last_start = request.earliest + timedelta(days=max(1, horizon_days) - 1)
    if rules.max_overall_days is not None:
        span = rules.max_overall_days - 1
    elif rules.max_interval_days is not None:
        span = (rules.fractions - 1) * rules.max_interval_days
    else:
        span = max(1, horizon_days)  # no rule bounds the course: allow one more horizon
    return request.earliest, last_start, last_start + timedelta(days=max(0, span))


def search_dates(request: ScheduleRequest) -> tuple[date, date]:
    """The local dates [first, last] a proposal for ``request`` may use.

    The first free fraction falls within ``request.horizon_days`` of ``request.earliest``; the
    rest of the course may run past that, up to the protocol's overall time. The SearchContext
    must hold the bookings and downtime of this whole range.
    """
    first, _, last = _dates(request, request.horizon_days)
    return first, last


def _date_range(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


def _shortest_overall(rules: Rules) -> int:
    """The fewest days from first to last fraction, inclusive, the protocol allows."""
    return max(rules.min_overall_days or 1, (rules.fractions - 1) * rules.min_interval_days + 1)


def _fragments(before: timedelta, after: timedelta) -> int:
    """Fragments a session leaves in its linac's free stretch, given the free time left
    before and after it: one for splitting the stretch in two, one per stranded piece."""
    zero, stranded = timedelta(0), timedelta(minutes=STRANDED_MINUTES)
    count = 1 if before > zero and after > zero else 0
    if zero < before < stranded:
        count += 1
    if zero < after < stranded:
        count += 1
    return count


def _time_points(minutes_off: int) -> int:
    """Points for a start ``minutes_off`` from the course's time of day: one per started
    quarter hour beyond the tolerance."""
    beyond = minutes_off - SAME_TIME_TOLERANCE_MINUTES
    return 0 if beyond <= 0 else -(-beyond // 15) * TIME_POINTS_PER_QUARTER_HOUR


def _total(schedule: Schedule) -> int:
    assert schedule.score is not None
    return schedule.score.total


def _rank_key(
    schedule: Schedule, pref_rank: dict[int, int]
) -> tuple[int, int, datetime, tuple[int, ...], tuple[datetime, ...]]:
    """Score, then a preferred first linac, the earlier start, then linac ids and starts: a
    total, stable order."""
    return (
        _total(schedule),
        pref_rank.get(schedule.fractions[0].linac_id, len(pref_rank)),
        schedule.first_start,
        tuple(f.linac_id for f in schedule.fractions),
        tuple(f.start for f in schedule.fractions),
    )


@dataclass(frozen=True, slots=True)
class _Candidate:
    key: tuple[int, int, datetime, tuple[int, ...], tuple[datetime, ...]]  # see _rank_key
    signature: tuple[date, frozenset[int]]  # first day and linacs: what must differ
    schedule: Schedule


def _pick(
    candidates: list[_Candidate], count: int, valid: Callable[[Schedule], bool]
) -> list[Schedule]:
    """The ``count`` best valid candidates (sorted best first) that differ in start day or
    in the linacs they use."""
    chosen: list[Schedule] = []
    seen: set[tuple[date, frozenset[int]]] = set()
    for candidate in candidates:
        if candidate.signature in seen or not valid(candidate.schedule):
            continue
        seen.add(candidate.signature)
        chosen.append(candidate.schedule)
        if len(chosen) >= count:
            break
    return chosen


def _days(n: int) -> str:
    return _count(n, "day")


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def _distinct(a: _Slot, b: _Slot) -> bool:
    """Whether two first fractions make meaningfully different proposals."""
    return (
        a.day != b.day
        or a.linac != b.linac
        or abs(a.start - b.start) >= timedelta(minutes=DISTINCT_START_MINUTES)
    )


@dataclass(frozen=True)
class Proposals:
    schedules: list[Schedule]
    # True when a longer horizon could not change the list: either no later first day
    # could outrank these schedules, or the search did not need the horizon's end.
    settled: bool


def propose_ranked(request: ScheduleRequest, ctx: SearchContext) -> Proposals:
    """:func:`propose`, and whether its ranking is settled within ``request.horizon_days``."""
    search = _Search(request, ctx)
    if any(1 <= k <= search.n for k in request.fixed):
        schedules = search.run(request.count)
        # Re-planning ranks by date first: enough proposals are the final ones.
        return Proposals(schedules, len(schedules) >= request.count)
    schedules, settled = search.ranked(request.count)
    return Proposals(schedules, settled)


def propose(request: ScheduleRequest, ctx: SearchContext) -> list[Schedule]:
    """Up to ``request.count`` complete schedules that pass :func:`~scheduler.rules.validate`,
    each with its :class:`~scheduler.types.Score`.

    Fractions in ``request.fixed`` are kept as given; every other number 1..fractions is placed
    not before ``request.not_before``, the first of them on a local date in
    [request.earliest, request.earliest + horizon_days) and the rest within
    :func:`search_dates`, which ``ctx`` must cover. ``ctx`` must not contain the course's own
    bookings. See the module docstring for the ranking and what makes proposals different.
    """
    return propose_ranked(request, ctx).schedules


def _rules_problem(rules: Rules) -> str | None:
    """Why ``rules`` contradict themselves, or None."""
    if rules.fractions < 1:
        return f"the protocol has {rules.fractions} fractions; at least 1 is needed"
    if rules.max_interval_days is not None and rules.max_interval_days < rules.min_interval_days:
        return (
            f"the protocol's interval of {rules.min_interval_days}–{rules.max_interval_days} "
            "days is empty"
        )
    if (
        rules.min_overall_days is not None
        and rules.max_overall_days is not None
        and rules.max_overall_days < rules.min_overall_days
    ):
        return (
            f"the protocol's overall time of {rules.min_overall_days}–"
            f"{rules.max_overall_days} days is empty"
        )
    if not rules.weekdays:
        return "the protocol allows no weekday"
    return None


def _fixed_problem(request: ScheduleRequest, validator: Validator) -> str | None:
    """The first rule a fixed fraction breaks on its own (or by overlapping another one)."""
    fixed = [f for k, f in sorted(request.fixed.items()) if 1 <= k <= request.rules.fractions]
    if not fixed:
        return None
    problems = validator.validate(Schedule(tuple(fixed)), request.rules, fixed=request.fixed.keys())
    # Spacing between fixed fractions that are not neighbours in the course is no conflict.
    own = {
        "session_length",
        "weekday",
        "start_weekday",
        "closed_date",
        "outside_hours",
        "capability",
        "linac_busy",
        "patient_busy",
        "self_overlap",
    }
    for violation in problems:
        if violation.code in own:
            return violation.message
    return None


def _longest_window_minutes(ctx: SearchContext, rules: Rules) -> int | None:
    """The longest opening window, in minutes, of any capable linac on an allowed weekday
    (None when no capable linac opens on any weekday the protocol allows)."""
    longest: int | None = None
    for linac in ctx.linacs:
        if not capable(linac, rules):
            continue
        hours = linac.hours if linac.hours is not None else ctx.calendar.hours
        for weekday in rules.weekdays:
            window = hours.window(weekday)
            if window is not None:
                opens = window[0].hour * 60 + window[0].minute
                closes = window[1].hour * 60 + window[1].minute
                longest = max(longest or 0, closes - opens)
    return longest


def _first_free_day(schedules: list[Schedule], request: ScheduleRequest, tz: str) -> date | None:
    if not schedules:
        return None
    free = [f for f in schedules[0].fractions if f.number not in request.fixed]
    return local_date(free[0].start, tz) if free else None


def explain(
    request: ScheduleRequest,
    ctx: SearchContext,
    *,
    horizon_days: int = EXPLAIN_HORIZON_DAYS,
    downtimes: Sequence[DowntimeSpan] = (),
) -> Explanation:
    """Why :func:`propose` finds nothing, and the earliest local date a course could start.

    Codes: ``invalid_rules``, ``no_capable_linac``, ``fixed_conflict``, ``opening_hours``,
    ``not_enough_days`` (weekdays and session lengths alone make the rules impossible),
    ``closure`` (public holidays or local closures are in the way; named with their dates),
    ``linac_downtime`` (the capable linacs' downtime is in the way; each named with its dates
    and reason), ``capacity`` (the linacs are too booked), ``patient_busy`` (the patient's
    other appointments are in the way), ``physicist_cover`` (no rostered physicist is free to
    supervise) and ``feasible`` (propose would succeed). The earliest
    start is searched for up to ``max(horizon_days, request.horizon_days)`` days from
    ``request.earliest``; ``ctx`` should cover that range. ``downtimes`` are the capable
    linacs' downtime in ``ctx`` (part of its busy time), with their reasons.
    """
    rules = request.rules
    tz = ctx.calendar.timezone
    n = rules.fractions
    caps = "/".join(sorted(rules.capabilities)).upper()
    capable_word = f"{caps}-capable linac" if caps else "linac"
    course = f"{n} fraction{'s' if n != 1 else ''}"
    within = (
        f"within {rules.max_overall_days} days"
        if rules.max_overall_days is not None
        else f"within the {request.horizon_days}-day horizon"
    )
    start_day = format_day(request.earliest)

    problem = _rules_problem(rules)
    if problem is not None:
        return Explanation("invalid_rules", problem)
    if not any(capable(linac, rules) for linac in ctx.linacs):
        return Explanation(
            "no_capable_linac", f"no linac has {caps or 'the required capabilities'}"
        )
    problem = _fixed_problem(request, Validator(ctx))
    if problem is not None:
        return Explanation("fixed_conflict", f"a fixed fraction cannot stay as it is: {problem}")
    longest_session = max(rules.first_session_minutes, rules.session_minutes)
    longest_window = _longest_window_minutes(ctx, rules)
    if longest_window is None:
        return Explanation(
            "not_enough_days",
            f"no {capable_word} opens on any weekday the protocol allows",
        )
    if longest_window < longest_session:
        return Explanation(
            "opening_hours",
            f"no {capable_word} is open for {longest_session} minutes on an allowed weekday",
        )

    horizon = max(horizon_days, request.horizon_days)
    earliest = _first_free_day(_Search(request, ctx, horizon_days=horizon).run(1), request, tz)
    if earliest is not None:
        tail = f"earliest possible start {format_day(earliest)}"
    else:
        tail = f"no possible start within {horizon} days of {start_day}"

    if _Search(request, ctx).run(1):
        return Explanation(
            "feasible", f"schedules are available; {tail}", earliest_feasible=earliest
        )
    if ctx.physicists is not None:
        unsupervised = replace(ctx, physicists=None)
        if _Search(request, unsupervised).run(1):
            return Explanation(
                "physicist_cover",
                f"no rostered physicist is free to supervise {course} {within} from "
                f"{start_day}; {tail}",
                earliest_feasible=earliest,
            )
        # Something else binds as well: name it as if supervision were not needed.
        ctx = unsupervised
    calendar_only = replace(ctx, linac_busy={}, patient_busy=())
    if not _Search(request, calendar_only).run(1):
        if _Search(request, _without_closures(calendar_only)).run(1):
            last = request.earliest + timedelta(days=max(request.horizon_days, 1) - 1)
            closed = _closures_in(ctx, request.earliest, last + timedelta(days=_span_days(rules)))
            return Explanation(
                "closure",
                f"{closed}, which leaves no room for {course} {within} from {start_day}; {tail}",
                earliest_feasible=earliest,
            )
        needed = (n - 1) * rules.min_interval_days + 1
        if rules.max_overall_days is not None and needed > rules.max_overall_days:
            why = (
                f"{course} at least {rules.min_interval_days} day(s) apart need {needed} days, "
                f"more than the {rules.max_overall_days} allowed"
            )
        else:
            why = (
                f"treatment days (weekdays, holidays and closures) leave no room for {course} "
                f"{within} from {start_day}"
            )
        return Explanation("not_enough_days", f"{why}; {tail}", earliest_feasible=earliest)
    down = [d for d in downtimes if _is_capable(ctx, d.linac_id, rules)]
    if down and _Search(request, _without_downtime(ctx, down)).run(1):
        until = earliest if earliest is not None else request.earliest + timedelta(days=horizon)
        named = _downtimes_in(ctx, down, request.earliest, until)
        return Explanation("linac_downtime", f"{named}; {tail}", earliest_feasible=earliest)
    if not _Search(request, replace(ctx, patient_busy=())).run(1):
        return Explanation(
            "capacity",
            f"no {capable_word} free for {course} {within} from {start_day}; {tail}",
            earliest_feasible=earliest,
        )
    return Explanation(
        "patient_busy",
        f"the patient's other appointments leave no room for {course} {within} "
        f"from {start_day}; {tail}",
        earliest_feasible=earliest,
    )


def explain_late_start(
    request: ScheduleRequest,
    ctx: SearchContext,
    first_day: date,
    *,
    downtimes: Sequence[DowntimeSpan] = (),
) -> Explanation | None:
    """Why the proposals for ``request`` start on local ``first_day`` and not earlier.

    None when nothing but the protocol's weekdays, opening hours or the time already gone
    today explains it (a Saturday ready date starting on Monday needs no words). Otherwise
    the binding cause, tried in this order: ``closure``, ``linac_downtime``,
    ``physicist_cover``, ``patient_busy``, ``capacity`` (codes as in :func:`explain`), with
    ``first_day`` as the earliest feasible start. ``ctx`` must cover the proposals' search range.
    """
    days_before = (first_day - request.earliest).days
    if days_before <= 0:
        return None

    def starts_earlier(world: SearchContext, asked: ScheduleRequest = request) -> bool:
        return bool(_Search(asked, world, horizon_days=days_before).run(1))

    # With nothing booked a session fits at a window's opening if it fits anywhere, so a
    # coarse grid answers the calendar's questions at a fraction of the cost.
    coarse = replace(request, step_minutes=max(request.step_minutes, 60))
    calendar_only = replace(ctx, linac_busy={}, patient_busy=(), physicists=None)
    if not starts_earlier(_without_closures(calendar_only), coarse):
        return None
    rules = request.rules
    n = rules.fractions
    course = f"{n} fraction{'s' if n != 1 else ''}"
    tail = f"earliest possible start {format_day(first_day)}"
    if not starts_earlier(calendar_only, coarse):
        closed = _closures_in(ctx, request.earliest, first_day - timedelta(days=1))
        if closed is None:  # a closure inside the course's span, not before its start
            closed = _closures_in(
                ctx, request.earliest, first_day + timedelta(days=_span_days(rules))
            )
        return Explanation(
            "closure",
            f"{closed or 'the department is closed'}; {tail}",
            earliest_feasible=first_day,
        )
    down = [d for d in downtimes if _is_capable(ctx, d.linac_id, rules)]
    if down and starts_earlier(_without_downtime(ctx, down)):
        named = _downtimes_in(ctx, down, request.earliest, first_day)
        return Explanation("linac_downtime", f"{named}; {tail}", earliest_feasible=first_day)
    if ctx.physicists is not None and starts_earlier(replace(ctx, physicists=None)):
        return Explanation(
            "physicist_cover",
            f"no rostered physicist is free to supervise {course} starting between "
            f"{format_day(request.earliest)} and {format_day(first_day)}; {tail}",
            earliest_feasible=first_day,
        )
    caps = "/".join(sorted(rules.capabilities)).upper()
    capable_word = f"{caps}-capable linac" if caps else "linac"
    machines = [
        linac.name for linac in sorted(ctx.linacs, key=lambda x: x.id) if capable(linac, rules)
    ]
    start_day = format_day(request.earliest)
    # Each further look is a search that fails when its cause is not the one: only made when
    # there is something to take away.
    if ctx.patient_busy and starts_earlier(replace(ctx, patient_busy=())):
        return Explanation(
            "patient_busy",
            f"the patient's other appointments leave no room for {course} to start between "
            f"{start_day} and {format_day(first_day)}; {tail}",
            earliest_feasible=first_day,
        )
    return Explanation(
        "capacity",
        f"no {capable_word} ({_names(machines)}) is free for {course} to start between "
        f"{start_day} and {format_day(first_day)}; {tail}",
        earliest_feasible=first_day,
    )


def _span_days(rules: Rules) -> int:
    """How many days a course may run after its first day (for naming what is in the way)."""
    if rules.max_overall_days is not None:
        return rules.max_overall_days - 1
    if rules.max_interval_days is not None:
        return (rules.fractions - 1) * rules.max_interval_days
    return (rules.fractions - 1) * max(1, rules.min_interval_days)


def _is_capable(ctx: SearchContext, linac_id: int, rules: Rules) -> bool:
    return any(linac.id == linac_id and capable(linac, rules) for linac in ctx.linacs)


def _without_closures(ctx: SearchContext) -> SearchContext:
    calendar = replace(ctx.calendar, closed_dates=frozenset(), closed_reasons={})
    return replace(ctx, calendar=calendar)


def _without_downtime(ctx: SearchContext, downtimes: Sequence[DowntimeSpan]) -> SearchContext:
    """``ctx`` as if ``downtimes`` had not been recorded (bookings stay)."""
    remove: dict[int, list[Interval]] = {}
    for d in downtimes:
        remove.setdefault(d.linac_id, []).append(Interval(d.start, d.end))
    busy: dict[int, Sequence[Interval]] = {}
    for linac_id, intervals in ctx.linac_busy.items():
        gone = list(remove.get(linac_id, ()))
        kept = []
        for interval in intervals:
            if interval in gone:
                gone.remove(interval)  # once: a booking may share the downtime's times
            else:
                kept.append(interval)
        busy[linac_id] = kept
    return replace(ctx, linac_busy=busy)


def _day_range_words(first: date, last: date) -> str:
    """'2 March', '2–22 March' or '28 February–3 March'."""
    if first == last:
        return format_day(first)
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}–{format_day(last)}"
    return f"{format_day(first)}–{format_day(last)}"


def _downtime_period(d: DowntimeSpan, tz: str) -> str:
    start, end = to_local(d.start, tz), to_local(d.end, tz)
    if d.end - d.start < timedelta(days=1):
        if start.date() == end.date():
            return f"{format_day(start.date())} {start:%H:%M}–{end:%H:%M}"
        return f"{format_day(start.date())} {start:%H:%M}–{format_day(end.date())} {end:%H:%M}"
    # A downtime ending at midnight does not take the day it ends on.
    last = (end - timedelta(microseconds=1)).date()
    return _day_range_words(start.date(), last)


def _names(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _downtimes_in(
    ctx: SearchContext, downtimes: Sequence[DowntimeSpan], first: date, last: date
) -> str:
    """The downtimes touching local days first..last, in words: 'TrueBeam 1 and TrueBeam 2
    down 2–22 March (upgrade)', linacs sharing a period and reason named together."""
    tz = ctx.calendar.timezone
    names = {linac.id: linac.name for linac in ctx.linacs}
    groups: dict[tuple[datetime, datetime, str], list[str]] = {}
    for d in sorted(downtimes, key=lambda d: (d.start, d.end, d.linac_id)):
        if local_date(d.start, tz) > last or local_date(d.end, tz) < first:
            continue
        name = names.get(d.linac_id, f"linac {d.linac_id}")
        members = groups.setdefault((d.start, d.end, d.reason), [])
        if name not in members:
            members.append(name)
    if not groups:  # the downtime lies in the course's span rather than before its start
        groups = {}
        for d in sorted(downtimes, key=lambda d: (d.start, d.end, d.linac_id)):
            name = names.get(d.linac_id, f"linac {d.linac_id}")
            groups.setdefault((d.start, d.end, d.reason), []).append(name)
    # The longest first: those are the ones a scheduler plans around.
    ordered = sorted(groups.items(), key=lambda item: (item[0][0] - item[0][1], item[0][0]))
    parts = []
    for (start, end, reason), members in ordered[:EXPLAIN_MAX_NAMED]:
        period = _downtime_period(DowntimeSpan(0, start, end, reason), tz)
        why = f" ({reason})" if reason.strip() else ""
        parts.append(f"{_names(members)} down {period}{why}")
    more = len(ordered) - EXPLAIN_MAX_NAMED
    if more > 0:
        parts.append(f"{more} more downtime{'s' if more != 1 else ''}")
    return "; ".join(parts)


def _closures_in(ctx: SearchContext, first: date, last: date) -> str | None:
    """The closed dates in local days first..last, in words ('the department is closed on
    26 November (Thanksgiving) and 24–31 December (refurbishment)'), or None."""
    cal = ctx.calendar
    days = sorted(d for d in cal.closed_dates if first <= d <= last)
    if not days:
        return None
    # Consecutive days closed for one reason are one period.
    periods: list[tuple[date, date, str]] = []
    for day in days:
        reason = closed_reason(cal, day) or "closed"
        if periods and periods[-1][2] == reason and (day - periods[-1][1]).days <= 3:
            periods[-1] = (periods[-1][0], day, reason)
        else:
            periods.append((day, day, reason))
    named = [f"{_day_range_words(a, b)} ({reason})" for a, b, reason in periods]
    more = len(named) - EXPLAIN_MAX_NAMED
    named = named[:EXPLAIN_MAX_NAMED] + ([f"{more} more closed dates"] if more > 0 else [])
    return f"the department is closed on {_names(named)}"
