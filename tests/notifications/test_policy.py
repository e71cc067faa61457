"""The reminder policy: which messages, on which channels, at which local times.

Pure tests (no database, no clock): ``now`` is an argument. The DST weeks of
America/New_York (2026-03-08, 2026-11-01) and Europe/Madrid, and the 20:59/21:00/21:01 edges of
the default message window, are covered both by examples and by hypothesis.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from notifications.policy import (
    EVENING_STARTS,
    FRACTION_REMINDER_KINDS,
    allowed_channels,
    apply_message_window,
    in_message_window,
    next_window_opening,
    plan_change_notice,
    plan_course_cancellation,
    plan_for_booking,
    plan_for_fraction,
)
from notifications.types import (
    Channel,
    CourseSnapshot,
    FractionSnapshot,
    Kind,
    PatientSnapshot,
    ReminderSettings,
)
from scheduler.timeutil import local_to_utc, localize, to_local

NY = "America/New_York"
LA = "America/Los_Angeles"
MADRID = "Europe/Madrid"
WINDOW = {"window_start": time(8, 0), "window_end": time(21, 0)}
FAR = datetime(2100, 1, 1, tzinfo=UTC)


def ny(*args: int) -> datetime:
    """A New York wall-clock time (unambiguous in these tests) as UTC."""
    return localize(datetime(*args), NY)


def patient(**changes: object) -> PatientSnapshot:
    base = PatientSnapshot(
        id=1,
        given_name="Ana",
        language="en",
        timezone=NY,
        phone_e164="+15550100001",
        email="ana@example.org",
        sms_allowed=True,
        email_allowed=True,
    )
    return replace(base, **changes)


def fraction(number: int, starts_at: datetime, **changes: object) -> FractionSnapshot:
    base = FractionSnapshot(
        id=100 + number,
        number=number,
        version=1,
        status="booked",
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=45),
        linac_name="Linac 2",
    )
    return replace(base, **changes)


def course(
    starts: list[datetime] | None = None,
    *,
    pat: PatientSnapshot | None = None,
    ready: bool = True,
    reminder_settings: ReminderSettings | None = None,
    fractions: tuple[FractionSnapshot, ...] | None = None,
) -> CourseSnapshot:
    if fractions is None:
        fractions = tuple(fraction(i + 1, s) for i, s in enumerate(starts or []))
    return CourseSnapshot(
        id=7,
        patient=pat or patient(),
        fractions=fractions,
        fraction_count=len(fractions),
        ready_to_treat=ready,
        clinic_name="Riverside Clinic",
        clinic_phone="+15550100000",
        department_timezone=NY,
        prep_instructions="Arrive 20 minutes early.",
        settings=reminder_settings or ReminderSettings(),
    )


def by_kind(reminders, kind: Kind, channel: Channel = Channel.SMS):
    return [r for r in reminders if r.kind is kind and r.channel is channel]


# --- the message window: edges ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        (ny(2026, 6, 10, 20, 59), ny(2026, 6, 10, 20, 59)),  # last minute inside: kept
        (ny(2026, 6, 10, 21, 0), ny(2026, 6, 10, 20, 59)),  # the end is outside: earlier
        (ny(2026, 6, 10, 21, 1), ny(2026, 6, 10, 20, 59)),
        (ny(2026, 6, 10, 23, 59), ny(2026, 6, 10, 20, 59)),
        (ny(2026, 6, 10, 8, 0), ny(2026, 6, 10, 8, 0)),  # the start is inside: kept
        (ny(2026, 6, 10, 7, 59), ny(2026, 6, 9, 20, 59)),  # before the start: previous evening
        (ny(2026, 6, 10, 0, 0), ny(2026, 6, 9, 20, 59)),
    ],
)
def test_window_edges(due: datetime, expected: datetime) -> None:
    assert apply_message_window(due, tz=NY, deadline=FAR, **WINDOW) == expected


@pytest.mark.parametrize(
    ("due", "expected_utc"),
    [
        # Spring forward, 2026-03-08: 07:00 EDT -> 20:59 EST on the 7th.
        (ny(2026, 3, 8, 7, 0), datetime(2026, 3, 8, 1, 59, tzinfo=UTC)),
        # 21:01 EDT on the 8th -> 20:59 EDT the same day.
        (ny(2026, 3, 8, 21, 1), datetime(2026, 3, 9, 0, 59, tzinfo=UTC)),
        # Kept across the change: 08:00 EDT on the 8th.
        (ny(2026, 3, 8, 8, 0), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        # Fall back, 2026-11-01: 06:00 EST -> 20:59 EDT on 31 October.
        (ny(2026, 11, 1, 6, 0), datetime(2026, 11, 1, 0, 59, tzinfo=UTC)),
        # 21:01 EST on the 1st -> 20:59 EST the same day.
        (ny(2026, 11, 1, 21, 1), datetime(2026, 11, 2, 1, 59, tzinfo=UTC)),
        # Inside the repeated hour (01:30 EDT, first occurrence): previous evening, EDT.
        (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 0, 59, tzinfo=UTC)),
        # Inside the repeated hour, second occurrence (01:30 EST): the same evening.
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), datetime(2026, 11, 1, 0, 59, tzinfo=UTC)),
    ],
)
def test_window_on_dst_days(due: datetime, expected_utc: datetime) -> None:
    moved = apply_message_window(due, tz=NY, deadline=FAR, **WINDOW)
    assert moved == expected_utc
    assert in_message_window(moved, tz=NY, **WINDOW)
    assert to_local(moved, NY).time() in (time(20, 59), time(8, 0))


def test_window_never_moves_past_the_deadline() -> None:
    due = ny(2026, 6, 10, 21, 30)
    assert apply_message_window(due, tz=NY, deadline=ny(2026, 6, 10, 21, 0), **WINDOW) == ny(
        2026, 6, 10, 20, 59
    )
    # The deadline is exclusive: a message at the fraction's start is too late.
    assert apply_message_window(due, tz=NY, deadline=ny(2026, 6, 10, 20, 59), **WINDOW) is None
    kept = ny(2026, 6, 10, 12, 0)
    assert apply_message_window(kept, tz=NY, deadline=kept, **WINDOW) is None


def test_window_is_read_in_the_given_zone() -> None:
    # 22:00 in New York is 19:00 in Los Angeles: quiet for one, inside for the other.
    due = ny(2026, 6, 10, 22, 0)
    assert apply_message_window(due, tz=LA, deadline=FAR, **WINDOW) == due
    assert apply_message_window(due, tz=NY, deadline=FAR, **WINDOW) == ny(2026, 6, 10, 20, 59)


def test_overnight_window_is_refused() -> None:
    with pytest.raises(ValueError):
        apply_message_window(
            ny(2026, 6, 10, 12), tz=NY, window_start=time(21), window_end=time(8), deadline=FAR
        )


def test_next_window_opening() -> None:
    assert next_window_opening(ny(2026, 6, 10, 12), tz=NY, **WINDOW) == ny(2026, 6, 10, 12)
    assert next_window_opening(ny(2026, 6, 10, 6), tz=NY, **WINDOW) == ny(2026, 6, 10, 8)
    assert next_window_opening(ny(2026, 6, 10, 21), tz=NY, **WINDOW) == ny(2026, 6, 11, 8)
    # Across spring forward the night is an hour shorter; 08:00 is still 08:00 local.
    assert next_window_opening(ny(2026, 3, 7, 22), tz=NY, **WINDOW) == ny(2026, 3, 8, 8)


# Minutes of a day, and DST-week days in zones with different change dates.
DST_DAYS = [
    *(date(2026, 3, 5) + timedelta(days=i) for i in range(8)),
    *(date(2026, 10, 29) + timedelta(days=i) for i in range(8)),
    *(date(2026, 3, 26) + timedelta(days=i) for i in range(6)),
    *(date(2026, 10, 22) + timedelta(days=i) for i in range(6)),
]
ZONES = [NY, LA, MADRID, "Australia/Sydney", "UTC"]
windows = st.tuples(st.integers(5 * 60, 10 * 60), st.integers(18 * 60, 23 * 60)).map(
    lambda w: (time(w[0] // 60, w[0] % 60), time(w[1] // 60, w[1] % 60))
)


@st.composite
def local_instants(draw):
    tz = draw(st.sampled_from(ZONES))
    day = draw(st.sampled_from(DST_DAYS))
    minute = draw(st.integers(0, 24 * 60 - 1))
    wall = datetime.combine(day, time(minute // 60, minute % 60))
    return tz, local_to_utc(wall, tz)


@settings(max_examples=300, deadline=None)
@given(local_instants(), windows)
def test_window_moves_to_the_latest_allowed_minute(instant, window) -> None:
    tz, due = instant
    start, end = window
    moved = apply_message_window(due, tz=tz, window_start=start, window_end=end, deadline=FAR)
    assert moved is not None
    assert moved <= due
    assert in_message_window(moved, tz=tz, window_start=start, window_end=end)
    if moved != due:
        # Nothing inside the window between the moved time and the due time: it is the latest.
        probe = moved + timedelta(minutes=1)
        while probe <= due:
            assert not in_message_window(probe, tz=tz, window_start=start, window_end=end)
            probe += timedelta(minutes=7)


# --- channels ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, [Channel.SMS, Channel.EMAIL]),
        ({"sms_allowed": False}, [Channel.EMAIL]),  # no consent, opted out or flagged
        ({"phone_e164": None}, [Channel.EMAIL]),
        ({"email_allowed": False}, [Channel.SMS]),
        ({"email": None}, [Channel.SMS]),
        ({"sms_allowed": False, "email_allowed": False}, []),
    ],
)
def test_channels_follow_consent(changes: dict, expected: list[Channel]) -> None:
    assert allowed_channels(patient(**changes)) == expected
    c = course([ny(2026, 6, 15, 10)], pat=patient(**changes))
    plan = plan_for_booking(c, now=ny(2026, 6, 1, 12), event_id=1)
    assert {r.channel for r in plan} == set(expected)


# --- booking plans ----------------------------------------------------------------------------


def test_booking_plan_for_a_five_fraction_course() -> None:
    starts = [ny(2026, 6, d, 10, 30) for d in (15, 17, 19, 22, 24)]
    now = ny(2026, 6, 1, 12)
    plan = plan_for_booking(course(starts), now=now, event_id=42)

    assert len(plan) == 2 * (1 + 2 * 5)
    confirmations = by_kind(plan, Kind.CONFIRMATION)
    assert [r.due_at for r in confirmations] == [now]
    assert confirmations[0].dedupe_key == "course:7:confirmation:42:sms"
    assert confirmations[0].fraction_id is None
    preps = by_kind(plan, Kind.DAY_BEFORE, Channel.EMAIL)
    assert [r.due_at for r in preps] == [s - timedelta(days=1) for s in starts]
    same_day = by_kind(plan, Kind.SAME_DAY)
    assert [r.due_at for r in same_day] == [s - timedelta(hours=2) for s in starts]
    assert same_day[0].dedupe_key == "fraction:101:same_day:v1:sms"
    assert same_day[0].fraction_version == 1
    assert len({r.dedupe_key for r in plan}) == len(plan)


def test_same_day_reminder_that_cannot_go_out_on_the_day_is_merged_into_the_day_before_one() -> (
    None
):
    start = ny(2026, 6, 16, 8, 30)  # 2 h before is 06:30: quiet, and 20:59 is the evening before
    plan = plan_for_fraction(course([start]), course([start]).fractions[0], now=ny(2026, 6, 1))
    assert by_kind(plan, Kind.SAME_DAY) == []
    assert [r.due_at for r in by_kind(plan, Kind.DAY_BEFORE)] == [ny(2026, 6, 15, 8, 30)]


def test_without_day_before_reminders_an_early_session_gets_one_under_its_true_label() -> None:
    start = ny(2026, 6, 16, 8, 30)
    c = course([start], reminder_settings=ReminderSettings(day_before=False))
    plan = plan_for_fraction(c, c.fractions[0], now=ny(2026, 6, 1))
    assert by_kind(plan, Kind.SAME_DAY) == []
    assert [r.due_at for r in by_kind(plan, Kind.DAY_BEFORE, Channel.SMS)] == [
        ny(2026, 6, 15, 20, 59)
    ]


def test_a_day_before_reminder_is_sent_on_the_day_before_inside_its_window() -> None:
    early = ny(2026, 6, 16, 7, 0)  # 24 h before is 07:00 the day before: quiet
    c = course([early])
    plan = plan_for_fraction(c, c.fractions[0], now=ny(2026, 6, 1))
    # Not 20:59 two evenings before, which would not be "the day before" any more.
    assert by_kind(plan, Kind.DAY_BEFORE)[0].due_at == ny(2026, 6, 15, 8, 0)
    late = ny(2026, 6, 16, 10, 0)
    c = course([late], reminder_settings=ReminderSettings(day_before_minutes_before=48 * 60))
    plan = plan_for_fraction(c, c.fractions[0], now=ny(2026, 6, 1))
    assert by_kind(plan, Kind.DAY_BEFORE)[0].due_at == ny(2026, 6, 15, 8, 0)
    c = course([late], reminder_settings=ReminderSettings(day_before_minutes_before=12 * 60))
    plan = plan_for_fraction(c, c.fractions[0], now=ny(2026, 6, 1))
    assert by_kind(plan, Kind.DAY_BEFORE)[0].due_at == ny(2026, 6, 15, 20, 59)


def test_a_same_day_reminder_gives_way_to_the_next_sessions_day_before_one_in_the_evening() -> None:
    # 20:00 Monday (same-day at 18:00) then 18:30 Tuesday (day-before at 18:30 Monday).
    starts = [ny(2026, 6, 15, 20, 0), ny(2026, 6, 16, 18, 30)]
    c = course(starts)
    plan = plan_for_booking(c, now=ny(2026, 6, 1), event_id=1)
    sms = [r for r in plan if r.channel is Channel.SMS and r.kind in FRACTION_REMINDER_KINDS]
    monday_evening = [r for r in sms if to_local(r.due_at, NY).date() == date(2026, 6, 15)]
    assert [(r.kind, r.fraction_id) for r in monday_evening] == [(Kind.DAY_BEFORE, 102)]
    # Its same-day reminder comes back when the next session no longer shares the evening.
    c = course([starts[0], ny(2026, 6, 17, 18, 30)])
    plan = plan_for_fraction(c, c.fractions[0], now=ny(2026, 6, 1))
    assert [r.due_at for r in by_kind(plan, Kind.SAME_DAY, Channel.SMS)] == [ny(2026, 6, 15, 18)]


def test_prep_offset_is_wall_clock_across_dst() -> None:
    # A Sunday fraction on the spring-forward day: the day-before reminder keeps 10:00 local,
    # though only 23 real hours separate them.
    spring = ny(2026, 3, 8, 10, 0)
    fall = ny(2026, 11, 1, 10, 0)  # 25 real hours after 10:00 on 31 October
    for start, expected in ((spring, ny(2026, 3, 7, 10)), (fall, ny(2026, 10, 31, 10))):
        c = course([start])
        plan = plan_for_fraction(c, c.fractions[0], now=start - timedelta(days=10))
        assert by_kind(plan, Kind.DAY_BEFORE)[0].due_at == expected
        assert by_kind(plan, Kind.SAME_DAY)[0].due_at == start - timedelta(hours=2)


def test_offsets_come_from_the_protocol_settings() -> None:
    start = ny(2026, 6, 16, 14, 0)
    s = ReminderSettings(day_before_minutes_before=26 * 60, same_day_minutes_before=180)
    c = course([start], reminder_settings=s)
    plan = plan_for_fraction(c, c.fractions[0], now=ny(2026, 6, 1))
    assert by_kind(plan, Kind.DAY_BEFORE)[0].due_at == ny(2026, 6, 15, 12)
    assert by_kind(plan, Kind.SAME_DAY)[0].due_at == ny(2026, 6, 16, 11)


def test_window_uses_the_patients_zone_not_the_departments() -> None:
    start = ny(2026, 6, 16, 9, 0)  # 06:00 in Los Angeles
    c = course([start], pat=patient(timezone=LA))
    plan = plan_for_fraction(c, c.fractions[0], now=ny(2026, 6, 1))
    # 2 h before is 04:00 LA, too early on the day: merged into the day-before reminder, which
    # is moved from 06:00 LA into the window (08:00 LA, 11:00 New York).
    assert by_kind(plan, Kind.SAME_DAY) == []
    assert by_kind(plan, Kind.DAY_BEFORE)[0].due_at == ny(2026, 6, 15, 11, 0)


def test_nothing_for_past_started_or_inactive_fractions() -> None:
    now = ny(2026, 6, 10, 12)
    fractions = (
        fraction(1, ny(2026, 6, 8, 10), status="completed"),
        fraction(2, ny(2026, 6, 10, 12)),  # starts right now: too late for anything
        fraction(3, ny(2026, 6, 12, 10), status="cancelled"),
        fraction(4, ny(2026, 6, 15, 10), status="missed"),
    )
    c = course(fractions=fractions)
    assert plan_for_booking(c, now=now, event_id=1) == []
    for f in fractions:
        assert plan_for_fraction(c, f, now=now) == []


def test_booking_plan_skips_past_fractions_and_confirms_the_rest() -> None:
    now = ny(2026, 6, 10, 12)
    c = course([ny(2026, 6, 9, 10), ny(2026, 6, 12, 10)])
    plan = plan_for_booking(c, now=now, event_id=1)
    assert {r.fraction_id for r in plan} == {None, 102}
    assert by_kind(plan, Kind.CONFIRMATION)[0].context["fraction_ids"] == [102]


# --- late planning ----------------------------------------------------------------------------


def test_late_booking_in_quiet_hours() -> None:
    # Booked at 22:00 for 09:00 tomorrow. The window opens at 08:00, leaving less than the
    # 2 h lead, so the confirmation goes at 07:00; prep (09:00 today) and same-day (20:59
    # today) have passed and are not sent late: the confirmation carries what they would.
    now = ny(2026, 6, 15, 22)
    plan = plan_for_booking(course([ny(2026, 6, 16, 9)]), now=now, event_id=1)
    assert [(r.kind, r.due_at) for r in plan if r.channel is Channel.SMS] == [
        (Kind.CONFIRMATION, ny(2026, 6, 16, 7))
    ]


def test_late_booking_waits_for_the_window_when_there_is_time() -> None:
    now = ny(2026, 6, 15, 22)
    plan = plan_for_booking(course([ny(2026, 6, 16, 15)]), now=now, event_id=1)
    assert [(r.kind, r.due_at) for r in plan if r.channel is Channel.SMS] == [
        (Kind.CONFIRMATION, ny(2026, 6, 16, 8)),
        (Kind.SAME_DAY, ny(2026, 6, 16, 13)),
    ]


def test_booking_shortly_before_the_fraction_sends_only_the_confirmation() -> None:
    now = ny(2026, 6, 16, 10)
    plan = plan_for_booking(course([ny(2026, 6, 16, 11, 30)]), now=now, event_id=1)
    assert [(r.kind, r.due_at) for r in plan if r.channel is Channel.SMS] == [
        (Kind.CONFIRMATION, now)
    ]


# --- change and cancellation notices ---------------------------------------------------------


def side(at: datetime, linac: str = "Linac 2") -> dict[str, object]:
    return {"starts_at": at.isoformat(), "linac_name": linac}


def test_change_notice_carries_before_and_after() -> None:
    c = course([ny(2026, 6, 16, 14)])
    now = ny(2026, 6, 10, 12)
    plan = plan_change_notice(
        c,
        101,
        before=side(ny(2026, 6, 16, 10), "Linac 1"),
        after={"starts_at": ny(2026, 6, 16, 14), "linac_name": "Linac 2"},  # datetime accepted
        version=3,
        now=now,
    )
    assert [r.channel for r in plan] == [Channel.SMS, Channel.EMAIL]
    notice = plan[0]
    assert notice.kind is Kind.CHANGE
    assert notice.due_at == now
    assert notice.fraction_version == 3
    assert notice.dedupe_key == "fraction:101:change:v3:sms"
    assert notice.context["before"] == side(ny(2026, 6, 16, 10), "Linac 1")
    assert notice.context["after"]["starts_at"] == ny(2026, 6, 16, 14).isoformat()
    assert notice.context["fraction_number"] == 1


def test_change_notice_dedupe_key_follows_the_version() -> None:
    c = course([ny(2026, 6, 16, 14)])
    kwargs = {"before": side(ny(2026, 6, 16, 10)), "after": side(ny(2026, 6, 16, 14))}
    first = plan_change_notice(c, 101, version=2, now=ny(2026, 6, 10), **kwargs)
    second = plan_change_notice(c, 101, version=3, now=ny(2026, 6, 10), **kwargs)
    assert {r.dedupe_key for r in first}.isdisjoint({r.dedupe_key for r in second})
    again = plan_change_notice(c, 101, version=2, now=ny(2026, 6, 11), **kwargs)
    assert [r.dedupe_key for r in again] == [r.dedupe_key for r in first]


def test_linac_fault_at_seven_reaches_patients_before_they_leave() -> None:
    # Moved at 07:00 from 09:00 to 11:00: waiting for the 08:00 window would leave 1 h before
    # the old time, under the 2 h lead, so it goes now.
    now = ny(2026, 6, 16, 7)
    c = course([ny(2026, 6, 16, 11)])
    plan = plan_change_notice(
        c, 101, before=side(ny(2026, 6, 16, 9)), after=side(ny(2026, 6, 16, 11)), version=2, now=now
    )
    assert {r.due_at for r in plan} == {now}


def test_overnight_replan_waits_until_the_lead_before_the_earlier_time() -> None:
    now = ny(2026, 6, 16, 2)
    c = course([ny(2026, 6, 16, 11)])
    plan = plan_change_notice(
        c, 101, before=side(ny(2026, 6, 16, 9)), after=side(ny(2026, 6, 16, 11)), version=2, now=now
    )
    assert {r.due_at for r in plan} == {ny(2026, 6, 16, 7)}


def test_change_notice_in_quiet_hours_waits_for_the_window() -> None:
    now = ny(2026, 6, 15, 23)
    c = course([ny(2026, 6, 18, 11)])
    plan = plan_change_notice(
        c,
        101,
        before=side(ny(2026, 6, 17, 11)),
        after=side(ny(2026, 6, 18, 11)),
        version=2,
        now=now,
    )
    assert {r.due_at for r in plan} == {ny(2026, 6, 16, 8)}


def test_change_notice_for_appointments_already_over_is_not_sent() -> None:
    c = course([ny(2026, 6, 1, 11)])
    plan = plan_change_notice(
        c, 101, before=side(ny(2026, 6, 1, 9)), after=side(ny(2026, 6, 1, 11)), version=2,
        now=ny(2026, 6, 2),
    )  # fmt: skip
    assert plan == []
    with pytest.raises(ValueError):
        plan_change_notice(c, 101, before=None, after=None, version=2, now=ny(2026, 6, 2))


def test_cancelled_fraction_notice() -> None:
    c = course([ny(2026, 6, 18, 11)])
    plan = plan_change_notice(
        c,
        101,
        before=side(ny(2026, 6, 18, 11)),
        after=None,
        version=4,
        now=ny(2026, 6, 10, 12),
        cancelled=True,
    )
    assert {r.kind for r in plan} == {Kind.CANCELLATION}
    assert plan[0].dedupe_key == "fraction:101:cancellation:v4:sms"
    assert plan[0].context["after"] is None


def test_course_cancellation_lists_the_appointments_still_ahead() -> None:
    now = ny(2026, 6, 10, 12)
    starts = [ny(2026, 6, 8, 10), ny(2026, 6, 12, 10), ny(2026, 6, 15, 10)]
    c = course(starts)
    plan = plan_course_cancellation(c, now=now, event_id=9)
    assert [r.dedupe_key for r in plan] == [
        "course:7:cancellation:9:sms",
        "course:7:cancellation:9:email",
    ]
    cancelled = plan[0].context["cancelled"]
    assert [c["starts_at"] for c in cancelled] == [s.isoformat() for s in starts[1:]]
    assert plan_course_cancellation(c, now=ny(2026, 6, 20), event_id=9) == []


# --- readiness --------------------------------------------------------------------------------


def test_first_fraction_awaits_readiness_until_the_course_is_ready() -> None:
    starts = [ny(2026, 6, 15, 10), ny(2026, 6, 17, 10)]
    now = ny(2026, 6, 1)
    for ready in (False, True):
        plan = plan_for_booking(course(starts, ready=ready), now=now, event_id=1)
        flags = {
            r.fraction_id: r.context["awaiting_readiness"]
            for r in plan
            if r.kind is Kind.DAY_BEFORE
        }
        assert flags == {101: not ready, 102: False}
        assert by_kind(plan, Kind.CONFIRMATION)[0].context["awaiting_readiness"] is (not ready)


# --- properties over random courses in DST weeks ---------------------------------------------


@st.composite
def courses(draw, *, first_after: datetime | None = None, any_cadence: bool = False):
    tz = draw(st.sampled_from(ZONES))
    start_day = draw(st.sampled_from(DST_DAYS))
    count = draw(st.integers(1, 5))
    gaps = draw(st.lists(st.integers(1, 3), min_size=count, max_size=count))
    minutes = draw(st.lists(st.integers(0, 24 * 60 - 1), min_size=count, max_size=count))
    window_start, window_end = draw(windows)
    reminder_settings = ReminderSettings(
        day_before_minutes_before=draw(st.sampled_from([12 * 60, 24 * 60, 36 * 60, 48 * 60])),
        same_day_minutes_before=draw(st.sampled_from([60, 120, 180])),
        window_start=window_start,
        window_end=window_end,
        day_before=draw(st.booleans()) if any_cadence else True,
        same_day=draw(st.booleans()) if any_cadence else True,
    )
    fractions = []
    day = start_day
    for number, (gap, minute) in enumerate(zip(gaps, minutes, strict=True), start=1):
        wall = datetime.combine(day, time(minute // 60, minute % 60))
        fractions.append(fraction(number, local_to_utc(wall, tz)))
        day += timedelta(days=gap)
    pat = patient(
        timezone=tz,
        sms_allowed=draw(st.booleans()),
        email_allowed=draw(st.booleans()),
        phone_e164=draw(st.sampled_from(["+15550100001", None])),
    )
    return course(
        fractions=tuple(fractions),
        pat=pat,
        ready=draw(st.booleans()),
        reminder_settings=reminder_settings,
    )


def in_window(c: CourseSnapshot, instant: datetime) -> bool:
    s = c.settings
    return in_message_window(
        instant, tz=c.patient.timezone, window_start=s.window_start, window_end=s.window_end
    )


@settings(max_examples=200, deadline=None)
@given(courses(), st.integers(3 * 24 * 60, 10 * 24 * 60))
def test_booked_ahead_every_reminder_is_in_the_window_and_before_its_fraction(
    c: CourseSnapshot, lead_minutes: int
) -> None:
    now = c.fractions[0].starts_at - timedelta(minutes=lead_minutes)
    plan = plan_for_booking(c, now=now, event_id=5)
    channels = allowed_channels(c.patient)

    assert len({r.dedupe_key for r in plan}) == len(plan)
    assert {r.channel for r in plan} == set(channels)
    if Channel.SMS in channels:
        assert c.patient.sms_allowed and c.patient.phone_e164
    # One confirmation per channel, a day-before reminder per fraction per channel, and at
    # most one same-day reminder (those that cannot go out on the day are merged).
    counts = Counter((r.kind, r.fraction_id, r.channel) for r in plan)
    expected = {(Kind.CONFIRMATION, None, ch) for ch in channels} | {
        (Kind.DAY_BEFORE, f.id, ch) for f in c.fractions for ch in channels
    }
    assert expected <= set(counts)
    assert set(counts) - expected <= {
        (Kind.SAME_DAY, f.id, ch) for f in c.fractions for ch in channels
    }
    assert set(counts.values()) <= {1}

    starts = {f.id: f.starts_at for f in c.fractions}
    for r in plan:
        assert r.due_at >= now
        assert in_window(c, r.due_at), (r, to_local(r.due_at, c.patient.timezone))
        if r.fraction_id is not None:
            assert r.due_at < starts[r.fraction_id]
            session_day = to_local(starts[r.fraction_id], c.patient.timezone).date()
            sent_day = to_local(r.due_at, c.patient.timezone).date()
            if r.kind is Kind.SAME_DAY:
                # Never later than the nominal offset: quiet hours only move it earlier.
                lead = timedelta(minutes=c.settings.same_day_minutes_before - 60)
                assert r.due_at <= starts[r.fraction_id] - lead  # within a DST hour
                assert sent_day == session_day
            else:
                assert sent_day == session_day - timedelta(days=1)


@settings(max_examples=300, deadline=None)
@given(courses(), st.integers(-24 * 60, 4 * 24 * 60))
def test_planned_late_nothing_is_after_its_fraction_or_before_now(
    c: CourseSnapshot, minutes_before_first: int
) -> None:
    now = c.fractions[0].starts_at - timedelta(minutes=minutes_before_first)
    plan = plan_for_booking(c, now=now, event_id=5)
    upcoming = [f for f in c.fractions if f.starts_at > now]
    starts = {f.id: f.starts_at for f in c.fractions}
    lead = timedelta(minutes=c.settings.same_day_minutes_before)

    assert len({r.dedupe_key for r in plan}) == len(plan)
    assert {r.fraction_id for r in plan} <= {None} | {f.id for f in upcoming}
    if not upcoming:
        assert plan == []
    counts = Counter((r.kind, r.fraction_id, r.channel) for r in plan)
    assert set(counts.values()) <= {1}
    for r in plan:
        assert r.due_at >= now
        if r.kind is Kind.CONFIRMATION:
            deadline = upcoming[0].starts_at
            assert r.due_at < deadline
            if not in_window(c, r.due_at):
                # Quiet hours only when waiting for the window would leave less than the lead.
                s = c.settings
                opening = next_window_opening(
                    now, tz=c.patient.timezone, window_start=s.window_start, window_end=s.window_end
                )
                assert opening > deadline - lead
                assert r.due_at == max(now, deadline - lead)
        else:
            assert r.due_at < starts[r.fraction_id]
            assert in_window(c, r.due_at)


@settings(max_examples=200, deadline=None)
@given(courses(), st.integers(-6 * 60, 3 * 24 * 60), st.integers(-3 * 24 * 60, 3 * 24 * 60))
def test_change_notices_are_never_after_the_earlier_appointment(
    c: CourseSnapshot, now_offset: int, move_minutes: int
) -> None:
    assume(move_minutes != 0)
    f = c.fractions[0]
    now = f.starts_at - timedelta(minutes=now_offset)
    after_start = f.starts_at + timedelta(minutes=move_minutes)
    plan = plan_change_notice(
        c, f.id, before=side(f.starts_at), after=side(after_start), version=2, now=now
    )
    ahead = [t for t in (f.starts_at, after_start) if t > now]
    if not ahead:
        assert plan == []
        return
    assert {r.channel for r in plan} == set(allowed_channels(c.patient))
    for r in plan:
        assert now <= r.due_at < min(ahead)


# --- cadence: one reminder text per evening, true labels ----------------------------------------


def _evening_of(c: CourseSnapshot, instant: datetime) -> date | None:
    local = to_local(instant, c.patient.timezone)
    return local.date() if local.time() >= EVENING_STARTS else None


@settings(max_examples=300, deadline=None)
@given(courses(any_cadence=True), st.integers(0, 10 * 24 * 60))
def test_at_most_one_reminder_text_per_evening_and_no_same_day_reminder_on_another_day(
    c: CourseSnapshot, lead_minutes: int
) -> None:
    now = c.fractions[0].starts_at - timedelta(minutes=lead_minutes)
    plan = plan_for_booking(c, now=now, event_id=5)
    tz = c.patient.timezone
    starts = {f.id: f.starts_at for f in c.fractions}
    texts = [r for r in plan if r.channel is Channel.SMS and r.kind in FRACTION_REMINDER_KINDS]
    evenings = Counter(_evening_of(c, r.due_at) for r in texts)
    evenings.pop(None, None)
    assert set(evenings.values()) <= {1}, [(r.kind, to_local(r.due_at, tz)) for r in texts]
    for r in plan:
        if r.kind is Kind.SAME_DAY:
            assert c.settings.same_day
            assert to_local(r.due_at, tz).date() == to_local(starts[r.fraction_id], tz).date()
        if r.kind is Kind.DAY_BEFORE:
            sent_day = to_local(r.due_at, tz).date()
            assert sent_day == to_local(starts[r.fraction_id], tz).date() - timedelta(days=1)
    if not (c.settings.day_before or c.settings.same_day):
        assert not [r for r in plan if r.kind in FRACTION_REMINDER_KINDS]


@pytest.mark.parametrize("tz", [NY, MADRID])
@pytest.mark.parametrize(
    "monday",
    [date(2026, 3, 2), date(2026, 3, 9), date(2026, 10, 26), date(2026, 11, 2), date(2026, 6, 15)],
)
@pytest.mark.parametrize("session_time", [time(7, 0), time(8, 30), time(9, 45)])
def test_a_morning_monday_to_friday_course_gets_one_reminder_per_session_and_evening(
    tz: str, monday: date, session_time: time
) -> None:
    starts = [
        local_to_utc(datetime.combine(monday + timedelta(days=i), session_time), tz)
        for i in range(5)
    ]
    c = course(starts, pat=patient(timezone=tz))
    plan = plan_for_booking(c, now=starts[0] - timedelta(days=7), event_id=1)
    for channel in Channel:
        sent = [r for r in plan if r.channel is channel]
        # A confirmation and one day-before reminder per session: 6. The previous policy
        # planned 11 (it also sent each "same day" reminder at 20:59 the evening before).
        assert len(sent) == 6, [(r.kind, to_local(r.due_at, tz)) for r in sent]
        assert Counter(r.kind for r in sent) == {Kind.CONFIRMATION: 1, Kind.DAY_BEFORE: 5}
    texts = [r for r in plan if r.channel is Channel.SMS and r.kind is Kind.DAY_BEFORE]
    days = [to_local(r.due_at, tz).date() for r in texts]
    assert days == [monday + timedelta(days=i - 1) for i in range(5)]


@pytest.mark.parametrize("tz", [NY, MADRID])
@pytest.mark.parametrize("monday", [date(2026, 3, 2), date(2026, 10, 26), date(2026, 6, 15)])
def test_an_afternoon_course_keeps_both_reminders_of_each_session(tz: str, monday: date) -> None:
    starts = [
        local_to_utc(datetime.combine(monday + timedelta(days=i), time(14, 0)), tz)
        for i in range(5)
    ]
    c = course(starts, pat=patient(timezone=tz))
    plan = plan_for_booking(c, now=starts[0] - timedelta(days=7), event_id=1)
    sms = [r for r in plan if r.channel is Channel.SMS]
    assert Counter(r.kind for r in sms) == {
        Kind.CONFIRMATION: 1,
        Kind.DAY_BEFORE: 5,
        Kind.SAME_DAY: 5,
    }
    assert {to_local(r.due_at, tz).time() for r in by_kind(plan, Kind.SAME_DAY)} == {time(12, 0)}


@pytest.mark.parametrize(
    ("cadence", "kinds"),
    [
        (ReminderSettings(day_before=False), {Kind.SAME_DAY}),
        (ReminderSettings(same_day=False), {Kind.DAY_BEFORE}),
        (ReminderSettings(day_before=False, same_day=False), set()),
        (ReminderSettings(), {Kind.DAY_BEFORE, Kind.SAME_DAY}),
    ],
)
def test_the_cadence_says_which_reminders_a_session_gets(
    cadence: ReminderSettings, kinds: set[Kind]
) -> None:
    c = course([ny(2026, 6, 16, 14, 0)], reminder_settings=cadence)
    plan = plan_for_fraction(c, c.fractions[0], now=ny(2026, 6, 1))
    assert {r.kind for r in plan} == kinds
