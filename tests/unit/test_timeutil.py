"""Local wall-clock time <-> UTC, including the America/New_York DST changes of 2026."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.timeutil import (
    AmbiguousLocalTime,
    NonexistentLocalTime,
    format_day,
    format_local,
    local_date,
    local_minutes,
    local_to_utc,
    local_window,
    localize,
    to_local,
)

NY = "America/New_York"


def test_localize_winter_and_summer_offsets() -> None:
    assert localize(datetime(2026, 1, 15, 9, 0), NY) == datetime(2026, 1, 15, 14, 0, tzinfo=UTC)
    assert localize(datetime(2026, 7, 15, 9, 0), NY) == datetime(2026, 7, 15, 13, 0, tzinfo=UTC)


def test_localize_rejects_spring_forward_gap() -> None:
    with pytest.raises(NonexistentLocalTime):
        localize(datetime(2026, 3, 8, 2, 30), NY)
    # Choosing an occurrence does not make a time that never happens exist.
    for fold in (0, 1):
        with pytest.raises(NonexistentLocalTime):
            localize(datetime(2026, 3, 8, 2, 30), NY, fold=fold)


def test_localize_flags_fall_back_overlap_as_ambiguous() -> None:
    with pytest.raises(AmbiguousLocalTime):
        localize(datetime(2026, 11, 1, 1, 30), NY)


def test_localize_ambiguous_time_with_explicit_fold() -> None:
    first = localize(datetime(2026, 11, 1, 1, 30), NY, fold=0)
    second = localize(datetime(2026, 11, 1, 1, 30), NY, fold=1)
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # EDT, UTC-4
    assert second == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # EST, UTC-5


def test_localize_fold_is_harmless_on_ordinary_times() -> None:
    assert localize(datetime(2026, 3, 9, 9, 0), NY, fold=1) == datetime(
        2026, 3, 9, 13, 0, tzinfo=UTC
    )


def test_localize_rejects_aware_input_and_bad_fold() -> None:
    with pytest.raises(ValueError):
        localize(datetime(2026, 1, 1, 9, 0, tzinfo=UTC), NY)
    with pytest.raises(ValueError):
        localize(datetime(2026, 1, 1, 9, 0), NY, fold=2)


def test_local_to_utc_is_lenient_in_the_gap() -> None:
    # 02:30 does not exist; the lenient form moves it forward by the hour the clocks skip.
    assert to_local(local_to_utc(datetime(2026, 3, 8, 2, 30), NY), NY).hour == 3


def test_local_date_and_minutes_around_midnight() -> None:
    late = datetime(2026, 3, 10, 3, 30, tzinfo=UTC)  # 23:30 EDT the day before
    assert local_date(late, NY) == date(2026, 3, 9)
    assert local_minutes(late, NY) == 23 * 60 + 30


def test_local_window_across_dst_keeps_local_hours() -> None:
    before = local_window(date(2026, 3, 6), time(9), time(17), NY)
    after = local_window(date(2026, 3, 9), time(9), time(17), NY)
    assert before[0].hour == 14 and after[0].hour == 13
    assert to_local(before[0], NY).hour == to_local(after[0], NY).hour == 9


def test_formatting() -> None:
    assert format_day(date(2026, 3, 3)) == "3 March"
    assert format_local(datetime(2026, 3, 9, 13, 0, tzinfo=UTC), NY) == "Mon 9 Mar 2026 09:00 EDT"


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1)),
)
def test_localize_round_trips_or_raises(naive: datetime) -> None:
    try:
        instant = localize(naive, NY)
    except NonexistentLocalTime:
        assert naive.date() == date(2026, 3, 8) and naive.hour == 2
        return
    except AmbiguousLocalTime:
        assert naive.date() == date(2026, 11, 1) and naive.hour == 1
        return
    assert instant.tzinfo is UTC
    assert to_local(instant, NY).replace(tzinfo=None) == naive


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=365 * 24 * 4))
def test_local_date_matches_the_wall_clock(quarter_hours: int) -> None:
    instant = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=15 * quarter_hours)
    local = to_local(instant, NY)
    assert local_date(instant, NY) == local.date()
    assert local_minutes(instant, NY) == local.hour * 60 + local.minute
