"""Converting between UTC instants and a department's local wall-clock time.

Everything stored is aware UTC; opening hours, dates and what people type are local. The
strict :func:`localize` is for human input (a nonexistent time is rejected, an ambiguous one
must be chosen); :func:`local_to_utc` is the lenient form the engine uses for opening hours.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


class NonexistentLocalTime(ValueError):
    """The local time falls in a spring-forward gap: clocks never show it."""


class AmbiguousLocalTime(ValueError):
    """The local time occurs twice (fall back); the caller must choose with ``fold``."""


def zone(tz: str) -> ZoneInfo:
    """The IANA zone ``tz`` (ZoneInfo caches instances, so this is cheap to repeat)."""
    return ZoneInfo(tz)


def _require_naive(value: datetime) -> None:
    if value.tzinfo is not None:
        raise ValueError(f"expected a naive local datetime, got {value.isoformat()}")


def localize(naive_local: datetime, tz: str, *, fold: int | None = None) -> datetime:
    """The UTC instant a naive local time in ``tz`` denotes.

    Raises NonexistentLocalTime in a spring-forward gap (whatever ``fold`` says) and
    AmbiguousLocalTime in a fall-back overlap unless ``fold`` (0 = first, 1 = second
    occurrence) is given.
    """
    _require_naive(naive_local)
    if fold not in (None, 0, 1):
        raise ValueError(f"fold must be 0, 1 or None, not {fold!r}")
    zi = zone(tz)
    first = naive_local.replace(tzinfo=zi, fold=0)
    second = naive_local.replace(tzinfo=zi, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first.astimezone(UTC)
    # The offsets differ: either a gap (neither reading round-trips) or an overlap (both do).
    round_trip = first.astimezone(UTC).astimezone(zi).replace(tzinfo=None, fold=0)
    if round_trip != naive_local.replace(fold=0):
        raise NonexistentLocalTime(
            f"{naive_local:%Y-%m-%d %H:%M} does not exist in {tz} (clocks spring forward)"
        )
    if fold is None:
        raise AmbiguousLocalTime(
            f"{naive_local:%Y-%m-%d %H:%M} occurs twice in {tz} (clocks fall back); "
            "choose the first or second occurrence"
        )
    return (second if fold else first).astimezone(UTC)


def local_to_utc(naive_local: datetime, tz: str) -> datetime:
    """Lenient :func:`localize` for configured times: a gap moves forward, an overlap takes
    the first occurrence (PEP 495 ``fold=0`` semantics)."""
    _require_naive(naive_local)
    return naive_local.replace(tzinfo=zone(tz), fold=0).astimezone(UTC)


def to_local(instant: datetime, tz: str) -> datetime:
    """``instant`` (aware) as an aware datetime in ``tz``."""
    if instant.tzinfo is None:
        raise ValueError(f"expected an aware datetime, got {instant.isoformat()}")
    return instant.astimezone(zone(tz))


def local_date(instant: datetime, tz: str) -> date:
    """The local calendar date of ``instant`` in ``tz``."""
    return to_local(instant, tz).date()


def local_minutes(instant: datetime, tz: str) -> int:
    """Minutes since local midnight of ``instant``'s wall-clock time in ``tz``."""
    local = to_local(instant, tz)
    return local.hour * 60 + local.minute


def local_window(day: date, opens: time, closes: time, tz: str) -> tuple[datetime, datetime]:
    """The UTC instants ``opens`` and ``closes`` on local ``day`` (lenient across DST)."""
    return (
        local_to_utc(datetime.combine(day, opens), tz),
        local_to_utc(datetime.combine(day, closes), tz),
    )


def format_local(instant: datetime, tz: str) -> str:
    """A short human form such as ``Mon 9 Mar 2026 09:00 EDT``."""
    local = to_local(instant, tz)
    return f"{local:%a} {local.day} {local:%b %Y %H:%M} {local.tzname()}"


def format_day(day: date) -> str:
    """A short human date such as ``3 March`` (no platform-specific strftime flags)."""
    return f"{day.day} {day:%B}"


def days_between(start: date, end: date) -> list[date]:
    """Every date from ``start`` to ``end`` inclusive (empty when end < start)."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]
