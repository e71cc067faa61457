"""Physicist supervision in the engine: validate's ``physicist_cover`` and the search."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date, datetime, time, timedelta

import pytest

from scheduler.rules import CODES, CoverIndex, validate
from scheduler.search import explain, explain_late_start, propose
from scheduler.timeutil import localize
from scheduler.types import (
    Calendar,
    Interval,
    LinacSpec,
    OpeningHours,
    PhysicistCover,
    PlannedFraction,
    Rules,
    Schedule,
    ScheduleRequest,
    SearchContext,
)

TZ = "Europe/London"
MONDAY = date(2027, 3, 1)
CALENDAR = Calendar(TZ, OpeningHours({d: (time(8), time(18)) for d in range(5)}))
LINACS = (
    LinacSpec(1, "TrueBeam 1", frozenset({"sbrt"}), "A"),
    LinacSpec(2, "TrueBeam 2", frozenset({"sbrt"}), "A"),
    LinacSpec(3, "Halcyon", frozenset({"sbrt"}), "B"),
)
LIVER = Rules(5, min_interval_days=1, max_interval_days=3, min_overall_days=5, max_overall_days=15)
SINGLE = Rules(1, first_session_minutes=60)
CONVENTIONAL = Rules(1, capabilities=frozenset())


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return localize(datetime.combine(day, time(hour, minute)), TZ)


def weekdays(start: int, end: int, count: int) -> dict[int, list[tuple[time, time, int]]]:
    return {d: [(time(start), time(end), count)] for d in range(5)}


def ctx_with(cover: PhysicistCover | None, busy: dict | None = None) -> SearchContext:
    return SearchContext(CALENDAR, LINACS, linac_busy=busy or {}, physicists=cover)


def request(rules: Rules, day: date = MONDAY, count: int = 3, **kw) -> ScheduleRequest:
    return ScheduleRequest(
        rules=rules, earliest=day, not_before=at(day, 0), count=count, horizon_days=21, **kw
    )


def one(linac: int, start: datetime, minutes: int = 60, number: int = 1) -> Schedule:
    return Schedule((PlannedFraction(number, linac, start, start + timedelta(minutes=minutes)),))


def codes(schedule: Schedule, rules: Rules, ctx: SearchContext) -> list[str]:
    return [v.code for v in validate(schedule, rules, ctx)]


def test_code_is_listed():
    assert "physicist_cover" in CODES


def test_without_roster_nothing_is_supervised():
    schedule = one(1, at(MONDAY, 7))  # before opening: only outside_hours
    assert codes(schedule, SINGLE, ctx_with(None)) == ["outside_hours"]
    assert codes(one(1, at(MONDAY, 9)), SINGLE, ctx_with(None)) == []


def test_first_fraction_outside_cover_is_reported_with_its_local_time():
    cover = PhysicistCover(weekdays(9, 12, 1))
    violations = validate(one(1, at(MONDAY, 14)), SINGLE, ctx_with(cover))
    assert [v.code for v in violations] == ["physicist_cover"]
    assert "fraction 1" in violations[0].message
    assert "14:00" in violations[0].message
    assert "no physicist is rostered" in violations[0].message
    # Partly inside the block is still outside it.
    assert codes(one(1, at(MONDAY, 11, 30)), SINGLE, ctx_with(cover)) == ["physicist_cover"]
    assert codes(one(1, at(MONDAY, 11)), SINGLE, ctx_with(cover)) == []


def test_capacity_counts_other_courses_sessions():
    booked = [Interval(at(MONDAY, 9), at(MONDAY, 10)), Interval(at(MONDAY, 9, 30), at(MONDAY, 11))]
    two = PhysicistCover(weekdays(8, 17, 2), supervised=booked)
    # 09:30–10:00 already has two supervised sessions: a third breaks capacity.
    violations = validate(one(3, at(MONDAY, 9, 15)), SINGLE, ctx_with(two))
    assert [v.code for v in violations] == ["physicist_cover"]
    assert "already supervises" in violations[0].message
    assert codes(one(3, at(MONDAY, 11)), SINGLE, ctx_with(two)) == []
    three = replace(two, by_weekday=weekdays(8, 17, 3))
    assert codes(one(3, at(MONDAY, 9, 15)), SINGLE, ctx_with(three)) == []


def test_only_first_fraction_unless_every_fraction():
    cover = PhysicistCover(weekdays(8, 9, 1))  # one early hour only
    first = PlannedFraction(1, 1, at(MONDAY, 8), at(MONDAY, 9))
    later = []
    for n in range(2, 6):
        start = at(MONDAY + timedelta(days=n - 1), 12)
        later.append(PlannedFraction(n, 1, start, start + timedelta(minutes=45)))
    fractions = (first, *later)
    schedule = Schedule(fractions)
    assert codes(schedule, LIVER, ctx_with(cover)) == []
    every = replace(cover, every_fraction=True)
    assert [v.fraction for v in validate(schedule, LIVER, ctx_with(every))] == [2, 3, 4, 5]


def test_non_sbrt_protocol_is_never_supervised():
    cover = PhysicistCover({})
    assert codes(one(1, at(MONDAY, 9)), CONVENTIONAL, ctx_with(cover)) == []


def test_exception_replaces_weekday_and_zero_means_nobody():
    cover = PhysicistCover(weekdays(8, 17, 2), exceptions={MONDAY: [(time(8), time(17), 0)]})
    assert codes(one(1, at(MONDAY, 9)), SINGLE, ctx_with(cover)) == ["physicist_cover"]
    tuesday = MONDAY + timedelta(days=1)
    assert codes(one(1, at(tuesday, 9)), SINGLE, ctx_with(cover)) == []
    half = PhysicistCover(weekdays(8, 17, 2), exceptions={MONDAY: [(time(13), time(15), 1)]})
    assert codes(one(1, at(MONDAY, 9)), SINGLE, ctx_with(half)) == ["physicist_cover"]
    assert codes(one(1, at(MONDAY, 13)), SINGLE, ctx_with(half)) == []


def test_adjacent_blocks_cover_a_session_across_them():
    cover = PhysicistCover({0: [(time(8), time(12), 1), (time(12), time(17), 1)]})
    assert codes(one(1, at(MONDAY, 11, 30)), SINGLE, ctx_with(cover)) == []


def test_search_places_supervised_first_fraction_only_in_cover():
    # Physicists only on Monday afternoons: the later fractions, on other days, need none.
    cover = PhysicistCover({0: [(time(13), time(15), 1)]})
    found = propose(request(LIVER), ctx_with(cover))
    assert found
    index = CoverIndex(cover, TZ)
    for schedule in found:
        first = schedule.fractions[0]
        assert index.fits(first.start, first.end)
        assert first.start.weekday() == 0
        assert validate(schedule, LIVER, ctx_with(cover), not_before=at(MONDAY, 0)) == []


def test_search_respects_capacity_against_booked_sessions():
    # The only rostered hour is taken by another course's supervised session.
    taken = Interval(at(MONDAY, 9), at(MONDAY, 10))
    cover = PhysicistCover({0: [(time(9), time(10), 1)]}, supervised=[taken])
    found = propose(request(SINGLE, count=3), ctx_with(cover))
    assert all(s.fractions[0].start.date() > MONDAY for s in found)
    # Every Monday after that has its hour free, so the proposals are the later Mondays.
    assert found and {s.fractions[0].start.weekday() for s in found} == {0}


def test_search_with_no_cover_at_all_finds_nothing():
    assert propose(request(SINGLE), ctx_with(PhysicistCover({}))) == []


def test_search_without_roster_is_unchanged():
    plain = propose(request(LIVER), ctx_with(None))
    assert plain == propose(request(LIVER), SearchContext(CALENDAR, LINACS))
    # A roster covering all opening hours with plenty of physicists changes nothing either.
    generous = PhysicistCover(weekdays(8, 18, 9), every_fraction=True)
    assert propose(request(LIVER), ctx_with(generous)) == plain


def test_rebooking_with_fixed_fraction_keeps_cover_for_the_free_ones():
    cover = PhysicistCover(weekdays(14, 16, 1), every_fraction=True)
    first = PlannedFraction(1, 1, at(MONDAY, 14), at(MONDAY, 15))
    req = request(LIVER, fixed={1: first})
    found = propose(req, ctx_with(cover))
    assert found
    index = CoverIndex(cover, TZ)
    for schedule in found:
        assert all(index.fits(f.start, f.end) for f in schedule.fractions)


@pytest.mark.parametrize("seed", range(12))
def test_random_worlds_never_over_capacity(seed: int):
    """Book course after course into a random roster: the sessions each instant never
    outnumber the physicists present, and every proposal validates."""
    rng = random.Random(seed)
    by_weekday = {
        d: [(time(8 + rng.randint(0, 2)), time(12), rng.randint(0, 2)), (time(13), time(17), 1)]
        for d in range(5)
    }
    cover = PhysicistCover(by_weekday, every_fraction=rng.random() < 0.5)
    busy: dict[int, list[Interval]] = {}
    supervised: list[Interval] = []
    for _ in range(8):
        rules = rng.choice([LIVER, SINGLE])
        ctx = ctx_with(replace(cover, supervised=sorted(supervised, key=lambda i: i.start)), busy)
        found = propose(request(rules, count=1, step_minutes=15), ctx)
        if not found:
            continue
        schedule = found[0]
        assert validate(schedule, rules, ctx, not_before=at(MONDAY, 0)) == []
        for f in schedule.fractions:
            busy.setdefault(f.linac_id, []).append(f.interval)
            busy[f.linac_id].sort(key=lambda i: i.start)
            if cover.supervises(rules, f.number):
                supervised.append(f.interval)
    # Sweep every instant where the load changes.
    for iv in supervised:
        load = sum(1 for other in supervised if other.start <= iv.start < other.end)
        local_day = iv.start.date()
        present = max(
            (
                count
                for start, end, count in cover.blocks_on(local_day)
                if at(local_day, start.hour) <= iv.start < at(local_day, end.hour)
            ),
            default=0,
        )
        assert load <= present


def test_explain_names_physicist_cover_when_it_binds():
    nobody = ctx_with(PhysicistCover({}))
    explanation = explain(request(SINGLE), nobody)
    assert explanation.code == "physicist_cover"
    assert "physicist" in explanation.message
    # Physicists only from Wednesday: a Monday request starts late because of them.
    from_wednesday = ctx_with(PhysicistCover({d: [(time(8), time(18), 1)] for d in (2, 3, 4)}))
    found = propose(request(SINGLE, count=1), from_wednesday)
    first_day = found[0].fractions[0].start.date()
    assert first_day == MONDAY + timedelta(days=2)
    late = explain_late_start(request(SINGLE), from_wednesday, first_day)
    assert late is not None and late.code == "physicist_cover"
