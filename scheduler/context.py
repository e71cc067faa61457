"""Translate database rows into the engine's plain values (SearchContext, Rules, Calendar).

One query for the linacs' bookings and downtime, the patient's other bookings and the
department's closures over the whole window keeps proposals fast however many months of
bookings the department holds.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    Closure,
    Course,
    Department,
    Downtime,
    Fraction,
    Linac,
    Protocol,
    RosterBlock,
    RosterException,
    UTCDateTime,
)
from scheduler.types import (
    Calendar,
    Interval,
    LinacSpec,
    OpeningHours,
    PhysicistCover,
    Rules,
    SearchContext,
)


def rules_from_protocol(protocol: Protocol) -> Rules:
    return Rules(
        fractions=protocol.fractions,
        min_hours_between=float(protocol.min_hours_between or 0),
        min_interval_days=protocol.min_interval_days,
        max_interval_days=protocol.max_interval_days,
        min_overall_days=protocol.min_overall_days,
        max_overall_days=protocol.max_overall_days,
        weekdays=frozenset(protocol.weekdays),
        start_weekdays=(
            frozenset(protocol.start_weekdays) if protocol.start_weekdays is not None else None
        ),
        first_session_minutes=protocol.first_session_minutes,
        session_minutes=protocol.session_minutes,
        capabilities=frozenset(protocol.capabilities),
    )


def opening_hours(spec: dict | None) -> OpeningHours | None:
    """{"0": ["07:00", "19:00"], ...} -> OpeningHours (None stays None)."""
    if spec is None:
        return None
    return OpeningHours(
        {
            int(day): (time.fromisoformat(opens), time.fromisoformat(closes))
            for day, (opens, closes) in spec.items()
        }
    )


@functools.lru_cache(maxsize=64)
def public_holidays(country: str, subdivision: str | None, year: int) -> dict[date, str]:
    """One year's public holidays; building them is costly and they never change."""
    return dict(holidays.country_holidays(country, subdiv=subdivision, years=year).items())


def department_calendar(
    session: Session, department: Department, first: date, last: date
) -> Calendar:
    """Hours plus every public holiday and local closure between two local dates."""
    closures = session.scalars(
        sa.select(Closure).where(
            Closure.department_id == department.id, Closure.day >= first, Closure.day <= last
        )
    )
    return _calendar(department, first, last, {c.day: c.reason for c in closures})


def _calendar(
    department: Department, first: date, last: date, closures: dict[date, str]
) -> Calendar:
    """The Calendar of local days first..last, given the department's closures in them."""
    closed: dict[date, str] = {}
    if department.holiday_country:
        for year in range(first.year, last.year + 1):
            public = public_holidays(
                department.holiday_country, department.holiday_subdivision, year
            )
            closed.update({day: name for day, name in public.items() if first <= day <= last})
    closed.update(closures)
    return Calendar(
        timezone=department.timezone,
        hours=opening_hours(department.opening_hours) or OpeningHours({}),
        closed_dates=frozenset(closed),
        closed_reasons=closed,
    )


def linac_specs(linacs: Iterable[Linac]) -> tuple[LinacSpec, ...]:
    return tuple(
        LinacSpec(
            id=linac.id,
            name=linac.name,
            capabilities=frozenset(linac.capabilities),
            beam_group=linac.beam_group,
            hours=opening_hours(linac.opening_hours),
        )
        for linac in linacs
        if linac.active
    )


def local_day_bounds(tz: str, first: date, last: date) -> tuple[datetime, datetime]:
    """UTC instants covering local days first..last inclusive."""
    zone = ZoneInfo(tz)
    start = datetime.combine(first, time.min, zone).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, zone).astimezone(UTC)
    return start, end


# Row kinds of the one query a SearchContext is read with.
_LINAC, _PATIENT, _CLOSURE = 0, 1, 2
# Its rows' order: kind, linac, start, end (on SQLite the times are its canonical text, which
# sorts as they do). Closures come last, in no particular order.
_ROW_ORDER = operator.itemgetter(0, 1, 2, 3)


def _raw(column: Any) -> Any:
    """The column as the driver returns it: no per-value result processing.

    PostgreSQL's driver returns aware datetimes already. SQLite returns its canonical
    naive-UTC text, which :func:`_utc_from_text` turns into datetimes far more cheaply than
    the generic type processing (often a thousand rows per proposal).
    """
    return sa.type_coerce(column, NullType())


def _none(type_: Any) -> Any:
    # Typed, so that PostgreSQL resolves the UNION ALL's column types branch by branch.
    return _raw(sa.cast(sa.null(), type_))


@functools.lru_cache(maxsize=8)
def _context_statement(patient: bool, exclude_course: bool) -> Any:
    """Bookings, downtime, the patient's other bookings and the department's closures in
    one round trip. Unordered: :func:`_read` sorts the rows (so that each linac's and the
    patient's intervals come sorted) in less time than the database's sort of the union took.

    Built once per shape, so that each call pays neither building nor cache-key generation.
    """
    start, end = (
        sa.bindparam("start", type_=UTCDateTime()),
        sa.bindparam("end", type_=UTCDateTime()),
    )
    linac_ids = sa.bindparam("linac_ids", expanding=True)
    active = Fraction.status.in_(ACTIVE_FRACTION_STATUSES)
    overlapping = sa.and_(Fraction.starts_at < end, Fraction.ends_at > start)
    other_course = (
        Fraction.course_id != sa.bindparam("exclude_course_id") if exclude_course else sa.true()
    )
    no_day, no_reason = _none(Closure.day.type), _none(Closure.reason.type)

    def kind(value: int) -> Any:
        return sa.literal_column(str(value), sa.Integer).label("kind")

    parts = [
        sa.select(
            kind(_LINAC),
            Fraction.linac_id.label("linac_id"),
            _raw(Fraction.starts_at).label("starts_at"),
            _raw(Fraction.ends_at).label("ends_at"),
            no_day.label("day"),
            no_reason.label("reason"),
        ).where(Fraction.linac_id.in_(linac_ids), active, overlapping, other_course),
        sa.select(
            kind(_LINAC),
            Downtime.linac_id,
            _raw(Downtime.starts_at),
            _raw(Downtime.ends_at),
            no_day,
            no_reason,
        ).where(
            Downtime.linac_id.in_(linac_ids), Downtime.starts_at < end, Downtime.ends_at > start
        ),
    ]
    if patient:
        parts.append(
            sa.select(
                kind(_PATIENT),
                Fraction.linac_id,
                _raw(Fraction.starts_at),
                _raw(Fraction.ends_at),
                no_day,
                no_reason,
            ).where(
                Fraction.patient_id == sa.bindparam("patient_id"), active, overlapping, other_course
            )
        )
    no_time = _none(Fraction.starts_at.type)
    parts.append(
        sa.select(
            kind(_CLOSURE),
            _none(Fraction.linac_id.type),
            no_time,
            no_time,
            _raw(Closure.day),
            _raw(Closure.reason),
        ).where(
            Closure.department_id == sa.bindparam("department_id"),
            Closure.day >= sa.bindparam("first", type_=sa.Date()),
            Closure.day <= sa.bindparam("last", type_=sa.Date()),
        )
    )
    return sa.union_all(*parts)


def _utc_from_text(text: str) -> datetime:
    """SQLite's stored naive-UTC text as an aware UTC datetime."""
    try:
        return datetime.fromisoformat(text + "+00:00")
    except ValueError:  # not the canonical form: parse it as it is
        value = datetime.fromisoformat(text)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _text_intervals() -> Callable[[str, str], Interval]:
    """Intervals from SQLite's text; a booking's end is often the next one's start, so each
    distinct text is parsed once per read."""
    utc = functools.cache(_utc_from_text)
    return lambda starts_at, ends_at: Interval(utc(starts_at), utc(ends_at))


def _read(
    session: Session,
    linac_ids: Sequence[int],
    start: datetime,
    end: datetime,
    *,
    patient_id: int | None,
    exclude_course_id: int | None,
    department_id: int,
    first: date,
    last: date,
) -> tuple[dict[int, list[Interval]], list[Interval], dict[date, str]]:
    params: dict[str, Any] = {
        "linac_ids": list(linac_ids),
        "start": start,
        "end": end,
        "department_id": department_id,
        "first": first,
        "last": last,
    }
    if patient_id is not None:
        params["patient_id"] = patient_id
    if exclude_course_id is not None:
        params["exclude_course_id"] = exclude_course_id
    statement = _context_statement(patient_id is not None, exclude_course_id is not None)
    rows = sorted(session.execute(statement, params).all(), key=_ROW_ORDER)
    by_linac: dict[int, list[Interval]] = {}
    patient: list[Interval] = []
    closed: dict[date, str] = {}
    sqlite = session.get_bind().dialect.name == "sqlite"
    interval: Callable[[Any, Any], Interval] = _text_intervals() if sqlite else Interval
    current_id: int | None = None
    current: list[Interval] = []
    for kind, linac_id, starts_at, ends_at, day, reason in rows:
        if kind == _LINAC:
            if linac_id != current_id:
                current_id, current = linac_id, by_linac.setdefault(linac_id, [])
            current.append(interval(starts_at, ends_at))
        elif kind == _PATIENT:
            patient.append(interval(starts_at, ends_at))
        else:
            closed[day if isinstance(day, date) else date.fromisoformat(day)] = reason
    return by_linac, patient, closed


def roster_cover(
    session: Session, department: Department, first: date, last: date
) -> PhysicistCover | None:
    """The department's physicist roster for local days first..last, with no sessions booked
    yet (None: the department keeps no roster, so supervision limits nothing)."""
    if not department.physicist_roster_enabled:
        return None
    by_weekday: dict[int, list[tuple[time, time, int]]] = {}
    for block in session.scalars(
        sa.select(RosterBlock).where(RosterBlock.department_id == department.id)
    ):
        by_weekday.setdefault(block.weekday, []).append(
            (time.fromisoformat(block.starts), time.fromisoformat(block.ends), block.physicists)
        )
    exceptions: dict[date, list[tuple[time, time, int]]] = {}
    for row in session.scalars(
        sa.select(RosterException).where(
            RosterException.department_id == department.id,
            RosterException.day >= first,
            RosterException.day <= last,
        )
    ):
        exceptions.setdefault(row.day, []).append(
            (time.fromisoformat(row.starts), time.fromisoformat(row.ends), row.physicists)
        )
    return PhysicistCover(
        by_weekday={d: sorted(blocks) for d, blocks in by_weekday.items()},
        exceptions={d: sorted(blocks) for d, blocks in exceptions.items()},
        every_fraction=department.physicist_every_fraction,
    )


@dataclass(frozen=True)
class SupervisedSession:
    """A booked fraction that needs a physicist."""

    fraction_id: int
    course_id: int
    number: int
    linac_id: int
    interval: Interval


def supervised_sessions(
    session: Session,
    department: Department,
    cover: PhysicistCover,
    start: datetime,
    end: datetime,
    *,
    exclude_course_id: int | None = None,
) -> list[SupervisedSession]:
    """The department's active fractions overlapping [start, end) that ``cover`` supervises,
    sorted by start."""
    linac_ids = sa.select(Linac.id).where(Linac.department_id == department.id)
    query = (
        sa.select(
            Fraction.id,
            Fraction.course_id,
            Fraction.number,
            Fraction.linac_id,
            Fraction.starts_at,
            Fraction.ends_at,
            Protocol.capabilities,
        )
        .join(Course, Course.id == Fraction.course_id)
        .join(Protocol, Protocol.id == Course.protocol_id)
        .where(
            Fraction.linac_id.in_(linac_ids),
            Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
            Fraction.starts_at < end,
            Fraction.ends_at > start,
        )
        .order_by(Fraction.starts_at, Fraction.id)
    )
    if not cover.every_fraction:
        query = query.where(Fraction.number == 1)
    if exclude_course_id is not None:
        query = query.where(Fraction.course_id != exclude_course_id)
    found = []
    kinds: dict[tuple[str, ...], Rules] = {}
    for fraction_id, course_id, number, linac_id, starts_at, ends_at, caps in session.execute(
        query
    ):
        key = tuple(sorted(caps or ()))
        rules = kinds.setdefault(key, Rules(1, capabilities=frozenset(key)))
        if cover.supervises(rules, number):
            found.append(
                SupervisedSession(
                    fraction_id, course_id, number, linac_id, Interval(starts_at, ends_at)
                )
            )
    return found


def hold_physicist_roster(session: Session, department: Department) -> None:
    """Serialise the writers that place supervised sessions in ``department``: the row lock
    is held to the end of the transaction, so two bookings cannot both take the last free
    physicist. PostgreSQL only (a SQLite transaction holds the database's write lock from its
    start); nothing to hold for a department without a roster."""
    if not department.physicist_roster_enabled:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            sa.select(Department.id).where(Department.id == department.id).with_for_update()
        )


def physicist_cover(
    session: Session,
    department: Department,
    first: date,
    last: date,
    *,
    exclude_course_id: int | None = None,
) -> PhysicistCover | None:
    """The roster of local days first..last with the supervised sessions booked in them
    (the course ``exclude_course_id`` left out: it is the one being planned)."""
    cover = roster_cover(session, department, first, last)
    if cover is None:
        return None
    start, end = local_day_bounds(department.timezone, first, last)
    booked = supervised_sessions(
        session, department, cover, start, end, exclude_course_id=exclude_course_id
    )
    return replace(cover, supervised=tuple(s.interval for s in booked))


def search_context(
    session: Session,
    department: Department,
    first: date,
    last: date,
    *,
    patient_id: int | None = None,
    exclude_course_id: int | None = None,
) -> SearchContext:
    """Everything the engine needs about local days first..last for one department.

    One round trip: the closures are read with the bookings, so a closure just added is
    seen by the next proposal.
    """
    linacs = linac_specs(department.linacs)
    start, end = local_day_bounds(department.timezone, first, last)
    linac_busy, patient, closures = _read(
        session,
        [spec.id for spec in linacs],
        start,
        end,
        patient_id=patient_id,
        exclude_course_id=exclude_course_id,
        department_id=department.id,
        first=first,
        last=last,
    )
    return SearchContext(
        calendar=_calendar(department, first, last, closures),
        linacs=linacs,
        linac_busy=linac_busy,
        patient_busy=patient,
        physicists=physicist_cover(
            session, department, first, last, exclude_course_id=exclude_course_id
        ),
    )
