"""Which patient messages a course needs, and when they are due.

Pure functions over the snapshots in ``notifications.types``: no database, no clock (``now`` is
always passed in), so every rule is tested directly. The outbox turns the returned
``PlannedReminder`` values into rows; their ``dedupe_key`` makes writing a plan twice harmless.

Timing rules, all in the PATIENT's zone:

* Fraction reminders (DAY_BEFORE, SAME_DAY) are due an offset before the fraction; which of
  them are on and their offsets are the course's cadence (``ReminderSettings``: the
  department's, overridden per protocol). The offset is taken on the wall clock, so a
  day-before reminder for a 09:00 session arrives at 09:00 the day before even across a DST
  change (a result inside a spring-forward gap is read leniently).
* The message window (default 08:00-21:00) is half-open, ``[window_start, window_end)``. A due
  time outside it moves EARLIER, to one minute before the window closed on the latest allowed
  day (see :func:`apply_message_window`). It never moves past the fraction.
* Every reminder goes out under a label that is true when it arrives. A DAY_BEFORE reminder is
  always sent inside the window of the local day before the session: a time outside that day's
  window is brought to its nearest edge (for a 07:00 session with a 24 h offset: 08:00 the day
  before, not 20:59 two days before). A SAME_DAY reminder is sent on the session's local day
  or not at all: when quiet hours would move it to the evening before (an early-morning
  session), it is merged into that evening's day-before reminder (dropped when the course has
  day-before reminders, sent as the day-before reminder when it has none).
* A patient gets at most one reminder per local evening (from ``EVENING_STARTS`` until the
  window closes): a same-day reminder that would share its evening with the next session's
  day-before reminder is dropped; the day-before one carries the preparation. The choice
  depends only on the course's fractions, never on ``now``, so re-planning is stable.
* A fraction reminder whose window-adjusted time has already passed when it is planned (a
  booking, move or readiness change close to the fraction) is dropped, not sent late. Every
  such plan comes with a notice (the booking confirmation or the change notice) that tells the
  patient the same things at about the same moment, so a late reminder would only be a second
  message at once; and after a re-plan of an unchanged time the passed reminder was already
  sent under the previous version.
* Notices (CONFIRMATION, CHANGE, CANCELLATION) are due when the change happens. Inside the
  window they go now. In quiet hours they wait for the window to open, unless that would leave
  the patient less than the same-day offset before the affected appointment: then they go at
  that point (or now, if it has passed). Knowing about a change before leaving home beats a
  quiet night (a 7 a.m. linac fault must reach patients before they travel).

Nothing is planned for a fraction that has started, or is not active (cancelled, completed,
missed). Every planned reminder's ``due_at`` is >= ``now`` and before the fraction it concerns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Any

from notifications.types import (
    Channel,
    CourseSnapshot,
    FractionSnapshot,
    Kind,
    PatientSnapshot,
    PlannedReminder,
)
from scheduler.timeutil import local_to_utc, to_local

# Statuses of a fraction that will still happen (mirrors scheduler.models.ACTIVE_FRACTION_SQL;
# repeated here so the policy stays free of SQLAlchemy imports).
ACTIVE_STATUSES = frozenset({"tentative", "booked", "confirmed"})

# Moving a message out of quiet hours lands it this long before the window closes: the latest
# whole minute that is still inside the window.
_WINDOW_END_MARGIN = timedelta(minutes=1)
# Reminders due from this local time until the window closes count as one evening's: a patient
# gets at most one of them (see the module docstring).
EVENING_STARTS = time(17, 0)
# The fraction reminders, in the order a patient receives them before a session.
FRACTION_REMINDER_KINDS = (Kind.DAY_BEFORE, Kind.SAME_DAY)


# --- channels ---------------------------------------------------------------------------------


def allowed_channels(patient: PatientSnapshot) -> list[Channel]:
    """The channels this patient may be messaged on: recorded consent and an address."""
    channels = []
    if patient.sms_allowed and patient.phone_e164:
        channels.append(Channel.SMS)
    if patient.email_allowed and patient.email:
        channels.append(Channel.EMAIL)
    return channels


# --- the message window -----------------------------------------------------------------------


def _check_window(window_start: time, window_end: time) -> None:
    # An overnight window (e.g. 20:00-02:00) is not a quiet-hours policy anyone asked for, and
    # it would make "move earlier" ambiguous; refuse it rather than guess.
    if not window_start < window_end:
        raise ValueError(f"message window must start before it ends: {window_start}-{window_end}")


def in_message_window(instant: datetime, *, tz: str, window_start: time, window_end: time) -> bool:
    """Whether ``instant``'s wall-clock time in ``tz`` lies in ``[window_start, window_end)``."""
    _check_window(window_start, window_end)
    wall = to_local(instant, tz).time()
    return window_start <= wall < window_end


def apply_message_window(
    due_at: datetime,
    *,
    tz: str,
    window_start: time,
    window_end: time,
    deadline: datetime,
) -> datetime | None:
    """Move ``due_at`` out of quiet hours, earlier only; None when it cannot beat ``deadline``.

    Inside ``[window_start, window_end)`` (wall clock in ``tz``) the time is kept. Otherwise it
    becomes one minute before the window's end on the latest day whose window closes at or
    before ``due_at``: 21:30 -> 20:59 the same day, 06:00 -> 20:59 the previous day (with the
    default window). That instant is inside the window and earlier than ``due_at``.
    The result must be strictly before ``deadline`` (the fraction's start), else None.
    Whether the result already lies in the past is the caller's business (see the module doc).
    """
    _check_window(window_start, window_end)
    local = to_local(due_at, tz)
    wall = local.time()
    if window_start <= wall < window_end:
        moved = due_at
    else:
        day = local.date() if wall >= window_end else local.date() - timedelta(days=1)
        # Through UTC so the minute is subtracted from a real instant, whatever DST does that day.
        moved = local_to_utc(datetime.combine(day, window_end), tz) - _WINDOW_END_MARGIN
    return moved if moved < deadline else None


def next_window_opening(
    instant: datetime, *, tz: str, window_start: time, window_end: time
) -> datetime:
    """The earliest instant at or after ``instant`` that lies inside the message window."""
    _check_window(window_start, window_end)
    local = to_local(instant, tz)
    wall = local.time()
    if window_start <= wall < window_end:
        return instant
    day = local.date() if wall < window_start else local.date() + timedelta(days=1)
    return local_to_utc(datetime.combine(day, window_start), tz)


# --- due times --------------------------------------------------------------------------------


def _offset_before(start: datetime, minutes: int, tz: str) -> datetime:
    """``minutes`` before ``start`` on the wall clock of ``tz`` (lenient in a DST gap)."""
    wall = to_local(start, tz).replace(tzinfo=None) - timedelta(minutes=minutes)
    due = local_to_utc(wall, tz)
    # A wall-clock result in a spring-forward gap is read forward and could, for a tiny offset,
    # land at or after the start; the absolute offset is the safe reading then.
    return due if due < start else start - timedelta(minutes=minutes)


def _window_on(
    day: date, tz: str, window_start: time, window_end: time
) -> tuple[datetime, datetime]:
    """The first and the last minute of the message window on local ``day``, as UTC instants."""
    opens = local_to_utc(datetime.combine(day, window_start), tz)
    last = local_to_utc(datetime.combine(day, window_end), tz) - _WINDOW_END_MARGIN
    return opens, last


def _day_before_at(
    course: CourseSnapshot, fraction: FractionSnapshot, candidate: datetime
) -> datetime:
    """``candidate`` brought inside the window of the local day before ``fraction``'s day."""
    s = course.settings
    tz = course.patient.timezone
    session_day = to_local(fraction.starts_at, tz).date()
    opens, last = _window_on(session_day - timedelta(days=1), tz, s.window_start, s.window_end)
    return min(max(candidate, opens), last)


def fraction_reminder_times(
    course: CourseSnapshot, fraction: FractionSnapshot
) -> dict[Kind, datetime]:
    """When each fraction reminder of ``fraction`` goes out under the course's cadence.

    Independent of ``now`` (the caller drops what has passed). A same-day reminder that
    cannot go out on the session's day is merged into the day-before one (see the module
    docstring); so is one sharing its evening with the next session's day-before reminder.
    """
    s = course.settings
    tz = course.patient.timezone
    start = fraction.starts_at
    times: dict[Kind, datetime] = {}
    if s.day_before:
        times[Kind.DAY_BEFORE] = _day_before_at(
            course, fraction, _offset_before(start, s.day_before_minutes_before, tz)
        )
    if s.same_day:
        placed = apply_message_window(
            _offset_before(start, s.same_day_minutes_before, tz),
            tz=tz,
            window_start=s.window_start,
            window_end=s.window_end,
            deadline=start,
        )
        on_the_day = (
            placed is not None and to_local(placed, tz).date() == to_local(start, tz).date()
        )
        if on_the_day and placed is not None:
            if not _evening_has_a_day_before_reminder(course, fraction, placed):
                times[Kind.SAME_DAY] = placed
        elif Kind.DAY_BEFORE not in times:
            # No day-before reminder to merge into: this one becomes it, under its true label.
            times[Kind.DAY_BEFORE] = _day_before_at(
                course, fraction, placed if placed is not None else start
            )
    return times


def _evening(moment: datetime, course: CourseSnapshot) -> date | None:
    """The local day whose evening ``moment`` falls in; None when it is not in an evening."""
    local = to_local(moment, course.patient.timezone)
    return local.date() if local.time() >= EVENING_STARTS else None


def _evening_has_a_day_before_reminder(
    course: CourseSnapshot, fraction: FractionSnapshot, moment: datetime
) -> bool:
    """Whether another session's day-before reminder goes out in ``moment``'s evening."""
    evening = _evening(moment, course)
    if evening is None:
        return False
    for other in course.fractions:
        if other.id == fraction.id or other.status not in ACTIVE_STATUSES:
            continue
        # Only the day-before reminder can share an evening with a same-day one; computing
        # it alone (the course reduced to that fraction) never recurses into this check.
        other_times = fraction_reminder_times(replace(course, fractions=(other,)), other)
        day_before = other_times.get(Kind.DAY_BEFORE)
        if day_before is not None and _evening(day_before, course) == evening:
            return True
    return False


def _reminder_due(
    course: CourseSnapshot, fraction: FractionSnapshot, kind: Kind, now: datetime
) -> datetime | None:
    """When a DAY_BEFORE or SAME_DAY reminder for ``fraction`` is due (None: not sent at all)."""
    placed = fraction_reminder_times(course, fraction).get(kind)
    if placed is None or placed < now:
        return None  # late: the notice planned with it covers it (see the module docstring)
    return placed


def _notice_due(course: CourseSnapshot, now: datetime, deadline: datetime) -> datetime:
    """When a notice about an appointment starting at ``deadline`` (> now) is due."""
    s = course.settings
    asap = next_window_opening(
        now, tz=course.patient.timezone, window_start=s.window_start, window_end=s.window_end
    )
    latest_quiet_wait = deadline - timedelta(minutes=s.same_day_minutes_before)
    if asap <= latest_quiet_wait:
        return asap
    return max(now, latest_quiet_wait)


# --- helpers ----------------------------------------------------------------------------------


def _upcoming(fraction: FractionSnapshot, now: datetime) -> bool:
    return fraction.status in ACTIVE_STATUSES and fraction.starts_at > now


def _first_number(course: CourseSnapshot, extra: FractionSnapshot | None = None) -> int | None:
    """The number of the course's first active fraction (the one readiness gates)."""
    numbers = [f.number for f in course.fractions if f.status in ACTIVE_STATUSES]
    if extra is not None and extra.status in ACTIVE_STATUSES:
        numbers.append(extra.number)
    return min(numbers, default=None)


def awaiting_readiness(course: CourseSnapshot, fraction: FractionSnapshot) -> bool:
    """The first fraction of a course without plan approval and physics QA is not final."""
    return not course.ready_to_treat and fraction.number == _first_number(course, fraction)


def fraction_facts(fraction: FractionSnapshot) -> dict[str, object]:
    """A fraction as JSON-ready values (what a notice shows as "before" or "after")."""
    return {
        "fraction_id": fraction.id,
        "number": fraction.number,
        "starts_at": fraction.starts_at.isoformat(),
        "ends_at": fraction.ends_at.isoformat(),
        "linac_name": fraction.linac_name,
    }


def _normalise_side(side: Mapping[str, object] | None) -> dict[str, object] | None:
    """A before/after dict with ``starts_at`` as an ISO string (datetimes are accepted too)."""
    if side is None:
        return None
    out = dict(side)
    for key in ("starts_at", "ends_at"):
        value = out.get(key)
        if isinstance(value, datetime):
            out[key] = value.isoformat()
    if not isinstance(out.get("starts_at"), str):
        raise ValueError("a before/after side needs starts_at (ISO string or datetime)")
    return out


def _starts(side: Mapping[str, object] | None) -> datetime | None:
    if side is None:
        return None
    value = datetime.fromisoformat(str(side["starts_at"]))
    if value.tzinfo is None:
        raise ValueError(f"starts_at must carry its offset: {side['starts_at']}")
    return value


def _sorted(reminders: Iterable[PlannedReminder]) -> list[PlannedReminder]:
    kinds, channels = list(Kind), list(Channel)
    return sorted(
        reminders, key=lambda r: (r.due_at, kinds.index(r.kind), channels.index(r.channel))
    )


# --- plans ------------------------------------------------------------------------------------


def plan_for_fraction(
    course: CourseSnapshot, fraction: FractionSnapshot, *, now: datetime
) -> list[PlannedReminder]:
    """DAY_BEFORE and SAME_DAY reminders for ``fraction``'s current version, per allowed channel."""
    if not _upcoming(fraction, now):
        return []
    context = {
        "fraction_number": fraction.number,
        "starts_at": fraction.starts_at.isoformat(),
        "linac_name": fraction.linac_name,
        "awaiting_readiness": awaiting_readiness(course, fraction),
    }
    planned = []
    for kind in FRACTION_REMINDER_KINDS:
        due = _reminder_due(course, fraction, kind, now)
        if due is None:
            continue
        for channel in allowed_channels(course.patient):
            planned.append(
                PlannedReminder(
                    kind=kind,
                    channel=channel,
                    due_at=due,
                    course_id=course.id,
                    fraction_id=fraction.id,
                    fraction_version=fraction.version,
                    dedupe_key=f"fraction:{fraction.id}:{kind}:v{fraction.version}:{channel}",
                    context=dict(context),
                )
            )
    return _sorted(planned)


def plan_for_booking(
    course: CourseSnapshot, *, now: datetime, event_id: int
) -> list[PlannedReminder]:
    """A confirmation for the booking event plus every upcoming fraction's reminders."""
    upcoming = sorted((f for f in course.fractions if _upcoming(f, now)), key=lambda f: f.starts_at)
    if not upcoming:
        return []
    planned = _confirmations(course, upcoming, now=now, tag=str(event_id), event_id=event_id)
    for fraction in upcoming:
        planned.extend(plan_for_fraction(course, fraction, now=now))
    return _sorted(planned)


def plan_fresh_link(course: CourseSnapshot, *, now: datetime, key: str) -> list[PlannedReminder]:
    """The confirmation again, on every allowed channel, to carry a new patient link.

    What staff send when the patient lost their link or it had to be revoked: the same
    message as at booking for the sessions still ahead, due as soon as the message window
    allows. ``key`` tells one such request from another (the same key is one message).
    """
    upcoming = sorted((f for f in course.fractions if _upcoming(f, now)), key=lambda f: f.starts_at)
    if not upcoming:
        return []
    return _confirmations(course, upcoming, now=now, tag=f"link-{key}", fresh_link=key)


def _confirmations(
    course: CourseSnapshot,
    upcoming: list[FractionSnapshot],
    *,
    now: datetime,
    tag: str,
    **context: Any,
) -> list[PlannedReminder]:
    """The confirmation of the ``upcoming`` sessions on every channel the patient allows, due
    as soon as the message window allows; ``tag`` names the request in the dedupe key, so one
    booking event or one fresh-link request is one message per channel."""
    due = _notice_due(course, now, upcoming[0].starts_at)
    context = {
        **context,
        "awaiting_readiness": not course.ready_to_treat,
        "fraction_ids": [f.id for f in upcoming],
    }
    return [
        PlannedReminder(
            kind=Kind.CONFIRMATION,
            channel=channel,
            due_at=due,
            course_id=course.id,
            fraction_id=None,
            fraction_version=None,
            dedupe_key=f"course:{course.id}:{Kind.CONFIRMATION}:{tag}:{channel}",
            context=dict(context),
        )
        for channel in allowed_channels(course.patient)
    ]


def plan_change_notice(
    course: CourseSnapshot,
    fraction_id: int,
    *,
    before: Mapping[str, object] | None,
    after: Mapping[str, object] | None,
    version: int,
    now: datetime,
    cancelled: bool = False,
) -> list[PlannedReminder]:
    """A CHANGE (or CANCELLATION) notice showing ``before`` -> ``after`` for one fraction.

    ``before``/``after`` hold at least ``starts_at`` (ISO string with offset) and usually
    ``linac_name``; ``before`` None means newly placed, ``after`` None means no longer placed
    (cancelled, or waiting for a human to re-plan); with ``cancelled`` the notice is a
    CANCELLATION and ``after`` is ignored. Nothing is planned when neither side is still
    ahead: a change to an appointment already over tells the patient nothing.
    """
    if before is None and after is None:
        raise ValueError("a change notice needs a before or an after")
    before_n = _normalise_side(before)
    after_n = None if cancelled else _normalise_side(after)
    ahead = [t for t in (_starts(before_n), _starts(after_n)) if t is not None and t > now]
    if not ahead:
        return []
    # The patient must hear before the earlier of the two appointments they might turn up for.
    due = _notice_due(course, now, min(ahead))
    kind = Kind.CANCELLATION if cancelled else Kind.CHANGE
    context: dict[str, object] = {"before": before_n, "after": after_n}
    number = next((f.number for f in course.fractions if f.id == fraction_id), None)
    if number is None and before_n is not None:
        number = before_n.get("number")
    if number is not None:
        context["fraction_number"] = number
    return _sorted(
        PlannedReminder(
            kind=kind,
            channel=channel,
            due_at=due,
            course_id=course.id,
            fraction_id=fraction_id,
            fraction_version=version,
            dedupe_key=f"fraction:{fraction_id}:{kind}:v{version}:{channel}",
            context=dict(context),
        )
        for channel in allowed_channels(course.patient)
    )


def plan_course_cancellation(
    course: CourseSnapshot, *, now: datetime, event_id: int
) -> list[PlannedReminder]:
    """One CANCELLATION notice for a whole course, listing the appointments no longer happening.

    Pass the snapshot taken before the fractions were cancelled (or with them marked
    cancelled): every fraction still ahead is listed whatever its status says now.
    """
    ahead = sorted((f for f in course.fractions if f.starts_at > now), key=lambda f: f.starts_at)
    if not ahead:
        return []
    due = _notice_due(course, now, ahead[0].starts_at)
    context = {"event_id": event_id, "cancelled": [fraction_facts(f) for f in ahead]}
    return _sorted(
        PlannedReminder(
            kind=Kind.CANCELLATION,
            channel=channel,
            due_at=due,
            course_id=course.id,
            fraction_id=None,
            fraction_version=None,
            dedupe_key=f"course:{course.id}:{Kind.CANCELLATION}:{event_id}:{channel}",
            context=dict(context),
        )
        for channel in allowed_channels(course.patient)
    )
