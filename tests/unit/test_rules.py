"""validate(): one small test per violation code, on a department in America/New_York."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest

from scheduler.rules import CODES, BusyIndex, validate
from scheduler.timeutil import localize
from scheduler.types import (
    ALL_WEEKDAYS,
    Calendar,
    Interval,
    LinacSpec,
    OpeningHours,
    PlannedFraction,
    Rules,
    Schedule,
    SearchContext,
)

NY = "America/New_York"
THANKSGIVING = date(2026, 11, 26)
WEEKDAY_HOURS = OpeningHours({d: (time(7), time(19)) for d in range(5)})
CALENDAR = Calendar(
    NY, WEEKDAY_HOURS, frozenset({THANKSGIVING}), {THANKSGIVING: "Thanksgiving Day"}
)
LINACS = (
    LinacSpec(1, "TrueBeam 1", frozenset({"sbrt", "imrt"}), "A"),
    LinacSpec(
        2,
        "TrueBeam 2",
        frozenset({"sbrt"}),
        "A",
        OpeningHours({d: (time(8), time(16)) for d in range(5)}),
    ),
    LinacSpec(3, "Clinac", frozenset({"imrt"})),
)
CTX = SearchContext(CALENDAR, LINACS)
LIVER = Rules(5, min_interval_days=1, max_interval_days=3, min_overall_days=5, max_overall_days=15)
LUNG_PERIPHERAL = Rules(
    3, min_hours_between=48, min_interval_days=2, min_overall_days=8, max_overall_days=14
)
MONDAY = date(2026, 3, 2)


def frac(
    number: int,
    day: date,
    hour: int = 9,
    minute: int = 0,
    *,
    linac: int = 1,
    minutes: int | None = None,
    rules: Rules = LIVER,
) -> PlannedFraction:
    start = localize(datetime.combine(day, time(hour, minute)), NY)
    length = minutes if minutes is not None else rules.minutes_for(number)
    return PlannedFraction(number, linac, start, start + timedelta(minutes=length))


def liver_week(start: date = MONDAY, **changes: PlannedFraction) -> Schedule:
    """Mon..Fri at 09:00 on linac 1; ``changes`` replace fractions by name ``f1``..``f5``."""
    fractions = [frac(n, start + timedelta(days=n - 1)) for n in range(1, 6)]
    for name, replacement in changes.items():
        fractions[int(name[1:]) - 1] = replacement
    return Schedule(tuple(fractions))


def codes(
    schedule: Schedule,
    rules: Rules = LIVER,
    ctx: SearchContext = CTX,
    not_before: datetime | None = None,
) -> set[str]:
    return {v.code for v in validate(schedule, rules, ctx, not_before=not_before)}


def test_valid_schedule_has_no_violations() -> None:
    assert validate(liver_week(), LIVER, CTX) == []


def test_fraction_count_missing_fraction() -> None:
    schedule = Schedule(liver_week().fractions[:4])
    assert "fraction_count" in codes(schedule)


def test_fraction_count_wrong_numbering() -> None:
    fractions = list(liver_week().fractions)
    fractions[4] = PlannedFraction(4, 1, fractions[4].start, fractions[4].end)
    assert "fraction_count" in codes(Schedule(tuple(fractions)))


def test_in_past_and_fixed_fractions_are_exempt() -> None:
    now = localize(datetime(2026, 3, 3, 12, 0), NY)
    violations = validate(liver_week(), LIVER, CTX, not_before=now)
    assert {(v.code, v.fraction) for v in violations} == {("in_past", 1), ("in_past", 2)}
    assert validate(liver_week(), LIVER, CTX, not_before=now, fixed={1, 2}) == []


def test_session_length() -> None:
    schedule = liver_week(f2=frac(2, MONDAY + timedelta(days=1), minutes=60))
    [violation] = validate(schedule, LIVER, CTX)
    assert violation.code == "session_length" and violation.fraction == 2
    assert "60 min" in violation.message and "45" in violation.message


def test_weekday() -> None:
    saturday = MONDAY + timedelta(days=5)
    schedule = liver_week(f5=frac(5, saturday))
    found = validate(schedule, LIVER, CTX)
    assert ("weekday", 5) in {(v.code, v.fraction) for v in found}
    assert any("Saturday" in v.message for v in found if v.code == "weekday")


def test_start_weekday() -> None:
    rules = replace(LIVER, start_weekdays=frozenset({0, 1}))  # Monday or Tuesday only
    assert validate(liver_week(), rules, CTX) == []
    wednesday = MONDAY + timedelta(days=2)
    late_start = Schedule(
        (frac(1, wednesday), *(frac(n, wednesday + timedelta(days=n)) for n in (2, 3, 4, 5)))
    )  # Wed, Fri, Sat, Sun, Mon: only the start weekday matters here
    [violation] = [v for v in validate(late_start, rules, CTX) if v.code == "start_weekday"]
    assert violation.fraction == 1 and "Wednesday" in violation.message


def test_closed_date_names_the_holiday() -> None:
    monday = date(2026, 11, 23)
    schedule = Schedule(
        (
            frac(1, monday),
            frac(2, monday + timedelta(days=1)),
            frac(3, monday + timedelta(days=2)),
            frac(4, THANKSGIVING),
            frac(5, THANKSGIVING + timedelta(days=1)),
        )
    )
    [violation] = validate(schedule, LIVER, CTX)
    assert violation.code == "closed_date" and violation.fraction == 4
    assert "Thanksgiving Day" in violation.message


def test_outside_department_hours() -> None:
    schedule = liver_week(f1=frac(1, MONDAY, 18, 30))  # 60 min: ends 19:30, after closing
    [violation] = validate(schedule, LIVER, CTX)
    assert violation.code == "outside_hours" and "18:30" in violation.message


def test_outside_linac_own_hours() -> None:
    # The department opens at 07:00, but linac 2 only at 08:00.
    schedule = liver_week(f3=frac(3, MONDAY + timedelta(days=2), 7, 0, linac=2))
    assert codes(schedule) == {"outside_hours"}


def test_capability_and_unknown_linac() -> None:
    schedule = liver_week(
        f2=frac(2, MONDAY + timedelta(days=1), linac=3),
        f3=frac(3, MONDAY + timedelta(days=2), linac=99),
    )
    found = {(v.code, v.fraction) for v in validate(schedule, LIVER, CTX)}
    assert found == {("capability", 2), ("capability", 3)}


def test_linac_busy() -> None:
    busy_start = localize(datetime(2026, 3, 4, 9, 30), NY)
    ctx = SearchContext(
        CALENDAR, LINACS, {1: [Interval(busy_start, busy_start + timedelta(hours=1))]}
    )
    [violation] = validate(liver_week(), LIVER, ctx)
    assert violation.code == "linac_busy" and violation.fraction == 3
    assert "TrueBeam 1" in violation.message


def test_linac_busy_long_downtime_starting_earlier() -> None:
    # A week-long downtime that began before the course must still be found.
    down = localize(datetime(2026, 2, 27, 7, 0), NY)
    short = localize(datetime(2026, 3, 2, 7, 0), NY)
    ctx = SearchContext(
        CALENDAR,
        LINACS,
        {
            1: [
                Interval(down, down + timedelta(days=8)),
                Interval(short, short + timedelta(minutes=30)),
            ]
        },
    )
    assert {v.fraction for v in validate(liver_week(), LIVER, ctx)} == {1, 2, 3, 4, 5}


def test_patient_busy() -> None:
    other = localize(datetime(2026, 3, 5, 9, 15), NY)
    ctx = SearchContext(
        CALENDAR, LINACS, patient_busy=[Interval(other, other + timedelta(hours=1))]
    )
    [violation] = validate(liver_week(), LIVER, ctx)
    assert violation.code == "patient_busy" and violation.fraction == 4


def test_self_overlap() -> None:
    rules = replace(LIVER, min_interval_days=0)
    schedule = liver_week(f2=frac(2, MONDAY, 9, 30, linac=2))
    assert "self_overlap" in codes(schedule, rules)


def test_order() -> None:
    rules = Rules(5, min_interval_days=0)
    schedule = liver_week(
        f2=frac(2, MONDAY + timedelta(days=2)), f3=frac(3, MONDAY + timedelta(days=1))
    )
    assert "order" in codes(schedule, rules)


def test_min_hours_between_counts_real_hours_across_spring_forward() -> None:
    # Saturday 09:00 EST to Monday 09:00 EDT is 47 real hours, not 48.
    rules = replace(LUNG_PERIPHERAL, weekdays=ALL_WEEKDAYS, min_overall_days=1)
    calendar = Calendar(NY, OpeningHours({d: (time(7), time(19)) for d in range(7)}))
    ctx = SearchContext(calendar, LINACS)
    saturday = date(2026, 3, 7)
    schedule = Schedule(
        (
            frac(1, saturday, rules=rules),
            frac(2, saturday + timedelta(days=2), rules=rules),
            frac(3, saturday + timedelta(days=4), rules=rules),
        )
    )
    [violation] = validate(schedule, rules, ctx)
    assert violation.code == "min_hours_between" and violation.fraction == 2
    assert "47 h" in violation.message
    later = Schedule(
        (
            schedule.fractions[0],
            frac(2, saturday + timedelta(days=2), 10, rules=rules),
            frac(3, saturday + timedelta(days=4), 10, rules=rules),
        )
    )
    assert validate(later, rules, ctx) == []


def test_min_interval_days_uses_local_dates() -> None:
    schedule = Schedule(
        (
            frac(1, MONDAY, rules=LUNG_PERIPHERAL),
            frac(2, MONDAY + timedelta(days=3), rules=LUNG_PERIPHERAL),
            frac(3, MONDAY + timedelta(days=4), 18, rules=LUNG_PERIPHERAL),
        )
    )
    found = {(v.code, v.fraction) for v in validate(schedule, LUNG_PERIPHERAL, CTX)}
    assert ("min_interval_days", 3) in found


def test_max_interval_days() -> None:
    schedule = liver_week(
        f4=frac(4, MONDAY + timedelta(days=7)), f5=frac(5, MONDAY + timedelta(days=8))
    )
    found = validate(schedule, LIVER, CTX)
    assert [(v.code, v.fraction) for v in found] == [("max_interval_days", 4)]
    assert "5 days apart" in found[0].message


def test_min_overall_days() -> None:
    schedule = Schedule(
        tuple(
            frac(n, MONDAY + timedelta(days=2 * (n - 1)), rules=LUNG_PERIPHERAL) for n in (1, 2, 3)
        )
    )
    assert codes(schedule, LUNG_PERIPHERAL) == {"min_overall_days"}


def test_max_overall_days_is_inclusive() -> None:
    rules = Rules(3, min_interval_days=2, max_interval_days=5, max_overall_days=7)
    wed = MONDAY + timedelta(days=2)
    # Wednesday to the next Tuesday is 7 days counting both ends: allowed.
    ok = Schedule(
        (frac(1, wed), frac(2, wed + timedelta(days=2)), frac(3, wed + timedelta(days=6)))
    )
    assert validate(ok, rules, CTX) == []
    too_long = Schedule(
        (frac(1, wed), frac(2, wed + timedelta(days=5)), frac(3, wed + timedelta(days=7)))
    )
    [violation] = validate(too_long, rules, CTX)
    assert violation.code == "max_overall_days" and "8 days" in violation.message


def test_messages_name_fraction_and_local_time() -> None:
    schedule = liver_week(f2=frac(2, MONDAY + timedelta(days=1), minutes=50))
    [violation] = validate(schedule, LIVER, CTX)
    assert "fraction 2" in violation.message
    assert "Tue 3 Mar 2026 09:00 EST" in violation.message


def test_every_code_is_known() -> None:
    assert len(CODES) == 18


@pytest.mark.parametrize("offset_hours", [0, 3, 30, 24 * 6])
def test_busy_index_free_and_overlapping(offset_hours: int) -> None:
    base = datetime(2026, 3, 2, 12, tzinfo=UTC) + timedelta(hours=offset_hours)
    spans = [
        Interval(base + timedelta(hours=2), base + timedelta(hours=3)),
        Interval(base, base + timedelta(hours=1)),
        Interval(base + timedelta(minutes=30), base + timedelta(minutes=90)),
    ]
    index = BusyIndex(spans)
    assert index.overlapping(base, base + timedelta(hours=4)) == [
        (base, base + timedelta(minutes=90)),
        (base + timedelta(hours=2), base + timedelta(hours=3)),
    ]
    assert index.free(base - timedelta(hours=1), base + timedelta(hours=4)) == [
        (base - timedelta(hours=1), base),
        (base + timedelta(minutes=90), base + timedelta(hours=2)),
        (base + timedelta(hours=3), base + timedelta(hours=4)),
    ]
