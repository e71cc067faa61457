"""Staff pages: the department calendar (week and day, one column per linac), a linac's week,
and the utilisation strip (booked vs open SBRT minutes per day).

Everything is rendered on the server without JavaScript. Blocks in the time grids are placed
with a small fixed set of CSS classes (``rs-N`` grid-row start, ``rl-N`` row span, 15-minute
rows) because the Content-Security-Policy forbids inline styles. One query reads the week's
fractions with their course, patient and protocol columns, one the downtimes, one the
closures: the page costs the same whether the week holds 5 fractions or 500.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, render_template, request, url_for
from markupsafe import Markup, escape
from sqlalchemy.orm import Session, selectinload

from scheduler import access
from scheduler.context import (
    department_calendar,
    local_day_bounds,
    opening_hours,
    physicist_cover,
)
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    HELD_FRACTION_STATUSES,
    Course,
    CourseStatus,
    Department,
    Downtime,
    Fraction,
    FractionStatus,
    Linac,
    Patient,
    Protocol,
    Role,
)
from scheduler.rules import CoverIndex
from scheduler.timeutil import days_between, local_window, zone
from scheduler.types import OpeningHours, Rules
from web import audit, params
from web.auth import session_user_id
from web.db import get_session
from web.ui import role_required

bp = Blueprint("calendar", __name__)

SLOT_MINUTES = 15  # one grid row; the CSS defines rs-1..rs-97 and rl-1..rl-96
SLOTS_PER_DAY = 24 * 60 // SLOT_MINUTES
# Shown and counted as booked time; a missed session did not use the machine, a cancelled
# one freed it.
SHOWN_STATUSES = (
    FractionStatus.TENTATIVE,
    FractionStatus.BOOKED,
    FractionStatus.CONFIRMED,
    FractionStatus.COMPLETED,
    FractionStatus.MISSED,
)
BOOKED_STATUSES = frozenset(SHOWN_STATUSES) - {FractionStatus.MISSED}
DEFAULT_WINDOW = (7 * 60, 19 * 60)  # grid hours when nothing is open that day


# --- values the templates render -------------------------------------------------------------


@dataclass(frozen=True)
class Utilisation:
    """Booked vs open SBRT minutes (open = opening hours minus downtime)."""

    booked: int
    open: int

    def __add__(self, other: Utilisation) -> Utilisation:
        return Utilisation(self.booked + other.booked, self.open + other.open)

    @property
    def percent(self) -> int | None:
        return round(100 * self.booked / self.open) if self.open else None

    @property
    def bar_class(self) -> str:
        """w-0 .. w-100 in steps of 5 (a bar of generated widths: no inline style)."""
        pct = self.percent
        if pct is None:
            return "w-0" if not self.booked else "w-100 over"
        step = min(100, 5 * round(pct / 5))
        return f"w-{step}" + (" over" if pct > 100 else "")


@dataclass(slots=True)
class Block:
    """One thing on the calendar: a fraction, a downtime, or the "now" line."""

    kind: str  # fraction | downtime | now
    linac_id: int
    day: date
    start: datetime  # local, aware
    end: datetime  # local, aware (clipped to the day for downtime)
    # Markup: escaped once when the block is made (a patient's 5 blocks share one escape).
    css: Markup = Markup("")
    href: Markup | None = None
    who: Markup = Markup("")
    what: Markup = Markup("")
    note: Markup = Markup("")
    row: str = ""  # "rs-N rl-M", set when laid out on a time grid

    @property
    def times(self) -> str:
        # Arithmetic rather than strftime: this runs for every one of hundreds of blocks.
        start, end = self.start, self.end
        until = "24:00" if end.date() > self.day else f"{end.hour:02d}:{end.minute:02d}"
        return f"{start.hour:02d}:{start.minute:02d}–{until}"

    def html(self) -> Markup:
        """The block's markup (its text fields hold escaped markup already).

        Built here rather than by a template macro: a week holds hundreds of blocks, and a
        macro call each cost more than the rest of the page together (bench/calendar.py).
        """
        css = f"{self.css} {self.row}" if self.row else self.css
        if self.kind == "now":
            return Markup(f'<div class="{css}" role="note"><span>{self.who}</span></div>')
        inner = (
            f'<span class="blk-time">{self.times}</span> <span class="blk-who">{self.who}</span>'
            + (f' <span class="blk-what">{self.what}</span>' if self.what else "")
            + (f' <span class="blk-note">{self.note}</span>' if self.note else "")
        )
        if self.href:
            return Markup(f'<a class="blk {css}" href="{self.href}">{inner}</a>')
        return Markup(f'<div class="blk {css}">{inner}</div>')


@dataclass
class Column:
    """A column of a time grid: one linac (day view) or one day (linac week view)."""

    heading: str
    href: str | None
    day: date
    blocks: list[Block]
    utilisation: Utilisation | None
    closed_name: str | None = None
    is_today: bool = False
    shading: list[str] = field(default_factory=list)  # row classes of closed stretches
    note: str = ""
    physicists: str = ""  # the day's physicist cover, on a column per day


@dataclass(frozen=True)
class Grid:
    first_minute: int
    last_minute: int

    @property
    def rows(self) -> int:
        return (self.last_minute - self.first_minute) // SLOT_MINUTES

    def place(self, start_minute: int, end_minute: int) -> str:
        """The row classes for local minutes [start, end) of the day, clipped to the grid."""
        lo = max(start_minute, self.first_minute)
        hi = min(end_minute, self.last_minute)
        first = (lo - self.first_minute) // SLOT_MINUTES + 1
        last = math.ceil((hi - self.first_minute) / SLOT_MINUTES) + 1
        first = min(first, self.rows)
        return f"rs-{first} rl-{max(1, last - first)}"


# --- reading ----------------------------------------------------------------------------------


@dataclass
class Week:
    """What the calendar pages need about some local days of some linacs."""

    department: Department
    linacs: list[Linac]
    days: list[date]
    closed: dict[date, str]
    fractions: list[Block]
    downtimes: list[Block]
    utilisation: dict[tuple[int, date], Utilisation]
    hours: dict[int, OpeningHours]
    today: date
    now: datetime  # local
    # Per day, the physicist cover and the supervised sessions booked, in words (empty when
    # the department keeps no physicist roster).
    physicists: dict[date, str] = field(default_factory=dict)

    def blocks(self, linac_id: int, day: date) -> list[Block]:
        return self._by_cell.get((linac_id, day), [])

    def __post_init__(self) -> None:
        cells: dict[tuple[int, date], list[Block]] = defaultdict(list)
        for block in (*self.downtimes, *self.fractions):
            cells[(block.linac_id, block.day)].append(block)
        for blocks in cells.values():
            # Downtime before a fraction starting at the same time: it is drawn underneath.
            blocks.sort(key=lambda b: (b.start, b.kind != "downtime"))
        self._by_cell = cells

    def cell(self, linac_id: int, day: date) -> list[Block]:
        """A week-table cell: its blocks, with the "now" marker in time order on today."""
        blocks = self.blocks(linac_id, day)
        if day != self.today:
            return blocks
        now = Block("now", linac_id, day, self.now, self.now, css=Markup("now-marker"),
                    who=escape(f"now {self.now:%H:%M}"))  # fmt: skip
        later = next((i for i, b in enumerate(blocks) if b.start > self.now), len(blocks))
        return [*blocks[:later], now, *blocks[later:]]

    def day_utilisation(self, day: date) -> Utilisation:
        total = Utilisation(0, 0)
        for linac in self.linacs:
            total += self.utilisation.get((linac.id, day), Utilisation(0, 0))
        return total

    def window(self, linac: Linac, day: date) -> tuple[int, int] | None:
        """Local opening minutes of a linac on a day (None: closed)."""
        if day in self.closed:
            return None
        hours = self.hours[linac.id].window(day.weekday())
        if hours is None:
            return None
        return hours[0].hour * 60 + hours[0].minute, hours[1].hour * 60 + hours[1].minute


def _initials(given: str, family: str) -> str:
    given, family = given.strip(), family.strip()
    return (f"{given[0].upper()}." if given else "") + (f"{family[0].upper()}." if family else "")


def _is_sbrt(linac: Linac) -> bool:
    return "sbrt" in (linac.capabilities or [])


def _local_pieces(
    start: datetime, end: datetime, tz: str, days: Sequence[date]
) -> Iterable[tuple[date, datetime, datetime]]:
    """(local day, local start, local end) of an interval, cut at local midnights."""
    zi = zone(tz)
    local_start, local_end = start.astimezone(zi), end.astimezone(zi)
    day = local_start.date()
    while day <= days[-1]:
        next_midnight = datetime.combine(day + timedelta(days=1), time.min, zi)
        piece_start = max(local_start, datetime.combine(day, time.min, zi))
        piece_end = min(local_end, next_midnight)
        if piece_start >= local_end:
            break
        if day >= days[0]:
            yield day, piece_start, piece_end
        day += timedelta(days=1)


def _merged_minutes(intervals: list[tuple[datetime, datetime]]) -> int:
    total, cursor = 0.0, None
    for start, end in sorted(intervals):
        if cursor is not None and start < cursor:
            start = cursor
        if end > start:
            total += (end - start).total_seconds()
            cursor = end if cursor is None else max(cursor, end)
    return int(total // 60)


# A course short of fractions is incomplete, or flagged for review when it cannot be rebooked.
MAYBE_INCOMPLETE_STATUSES = frozenset({CourseStatus.INCOMPLETE, CourseStatus.NEEDS_REVIEW})


def incomplete_courses(session: Session, course_ids: Iterable[int]) -> set[int]:
    """Which of these courses hold fewer fractions than prescribed (one query, none if empty)."""
    course_ids = set(course_ids)
    if not course_ids:
        return set()
    held = (
        sa.select(sa.func.count(sa.distinct(Fraction.number)))
        .where(Fraction.course_id == Course.id, Fraction.status.in_(HELD_FRACTION_STATUSES))
        .scalar_subquery()
    )
    prescribed = sa.func.coalesce(Course.prescribed_fractions, Protocol.fractions)
    return set(
        session.scalars(
            sa.select(Course.id)
            .join(Protocol, Protocol.id == Course.protocol_id)
            .where(Course.id.in_(course_ids), held < prescribed)
        )
    )


def load_week(
    session: Session,
    department: Department,
    first: date,
    last: date,
    *,
    linac_ids: Sequence[int] | None = None,
) -> Week:
    tz = department.timezone
    linacs = [
        linac
        for linac in department.linacs
        if linac.active and (linac_ids is None or linac.id in linac_ids)
    ]
    ids = [linac.id for linac in linacs]
    days = days_between(first, last)
    start, end = local_day_bounds(tz, first, last)
    zi = zone(tz)
    # One query for every fraction with what its block shows: columns, not ORM objects, so
    # 500 blocks cost one round trip and no identity-map bookkeeping.
    rows = session.execute(
        sa.select(
            Fraction.course_id,
            Fraction.linac_id,
            Fraction.number,
            Fraction.starts_at,
            Fraction.ends_at,
            Fraction.status,
            Protocol.code,
            Protocol.fractions,
            Protocol.capabilities,
            Patient.given_name,
            Patient.family_name,
            Patient.mrn,
            Course.status,
        )
        .join(Course, Course.id == Fraction.course_id)
        .join(Protocol, Protocol.id == Course.protocol_id)
        .join(Patient, Patient.id == Fraction.patient_id)
        .where(
            Fraction.linac_id.in_(ids),
            Fraction.status.in_(SHOWN_STATUSES),
            Fraction.starts_at < end,
            Fraction.ends_at > start,
        )
        .order_by(Fraction.starts_at, Fraction.linac_id)
    ).all()
    downtime_rows = session.execute(
        sa.select(
            Downtime.linac_id, Downtime.starts_at, Downtime.ends_at, Downtime.kind, Downtime.reason
        ).where(Downtime.linac_id.in_(ids), Downtime.starts_at < end, Downtime.ends_at > start)
    ).all()
    calendar = department_calendar(session, department, first, last)
    incomplete = incomplete_courses(
        session, {row[0] for row in rows if row[-1] in MAYBE_INCOMPLETE_STATUSES}
    )

    escaped: dict[str, Markup] = {}

    def esc(text: str) -> Markup:
        """Escape once per distinct text (a course's five blocks share their strings)."""
        value = escaped.get(text)
        if value is None:
            value = escaped[text] = escape(text)
        return value

    cover = physicist_cover(session, department, first, last)
    cover_index = CoverIndex(cover, tz) if cover is not None else None
    supervised_kinds: dict[tuple[str, ...], Rules] = {}

    def supervised(capabilities: list[str], number: int) -> bool:
        if cover is None:
            return False
        key = tuple(sorted(capabilities or ()))
        rules = supervised_kinds.setdefault(key, Rules(1, capabilities=frozenset(key)))
        return cover.supervises(rules, number)

    fractions = []
    booked: dict[tuple[int, date], int] = defaultdict(int)
    for (course_id, linac_id, number, starts_at, ends_at, status, code, of, capabilities,
         given, family, mrn, _) in rows:  # fmt: skip
        local_start, local_end = starts_at.astimezone(zi), ends_at.astimezone(zi)
        day = local_start.date()
        tentative = status == FractionStatus.TENTATIVE
        note = "tentative" if tentative else ("" if status == "booked" else status)
        css = f"blk-fraction status-{status}"
        if course_id in incomplete:
            # Every session of a course short of fractions says so, wherever it is seen.
            note = f"{note} · course incomplete" if note else "course incomplete"
            css += " course-incomplete"
        if status in ACTIVE_FRACTION_STATUSES and supervised(capabilities, number):
            css += " supervised"
            assert cover_index is not None
            words = "physicist" if cover_index.kept(starts_at, ends_at) else "physicist · no cover"
            note = f"{note} · {words}" if note else words
        fractions.append(
            Block(
                kind="fraction",
                linac_id=linac_id,
                day=day,
                start=local_start,
                end=local_end,
                css=esc(css),
                href=Markup(f"/courses/{int(course_id)}"),
                who=esc(f"{_initials(given, family)} {mrn}"),
                what=esc(f"{code} · fraction {number}/{of}"),
                note=esc(note),
            )
        )
        if status in BOOKED_STATUSES:
            booked[(linac_id, day)] += int((ends_at - starts_at).total_seconds() // 60)

    downtimes = []
    down_by_linac: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for linac_id, starts_at, ends_at, kind, reason in downtime_rows:
        down_by_linac[linac_id].append((starts_at, ends_at))
        for day, piece_start, piece_end in _local_pieces(starts_at, ends_at, tz, days):
            downtimes.append(
                Block(
                    kind="downtime",
                    linac_id=linac_id,
                    day=day,
                    start=piece_start,
                    end=piece_end,
                    css=esc(f"blk-downtime downtime-{kind}"),
                    who=esc(f"Downtime ({kind})"),
                    what=esc(reason),
                )
            )

    department_hours = opening_hours(department.opening_hours) or OpeningHours({})
    hours = {linac.id: opening_hours(linac.opening_hours) or department_hours for linac in linacs}
    utilisation: dict[tuple[int, date], Utilisation] = {}
    for linac in linacs:
        if not _is_sbrt(linac):
            continue
        for day in days:
            open_minutes = 0
            window = hours[linac.id].window(day.weekday())
            if window is not None and day not in calendar.closed_reasons:
                opens, closes = local_window(day, window[0], window[1], tz)
                down = [
                    (max(s, opens), min(e, closes))
                    for s, e in down_by_linac.get(linac.id, [])
                    if s < closes and e > opens
                ]
                open_minutes = int((closes - opens).total_seconds() // 60) - _merged_minutes(down)
            utilisation[(linac.id, day)] = Utilisation(booked[(linac.id, day)], open_minutes)

    physicists: dict[date, str] = {}
    if cover is not None and cover_index is not None:
        # The whole department's supervised sessions, whichever linacs are shown.
        supervised_count: dict[date, int] = defaultdict(int)
        for interval in cover.supervised:
            supervised_count[interval.start.astimezone(zi).date()] += 1
        physicists = {d: _cover_words(cover_index, d, supervised_count[d]) for d in days}
    now = datetime.now(UTC).astimezone(zi)
    return Week(
        department=department,
        linacs=linacs,
        days=days,
        closed=dict(calendar.closed_reasons),
        fractions=fractions,
        downtimes=downtimes,
        utilisation=utilisation,
        hours=hours,
        today=now.date(),
        now=now,
        physicists=physicists,
    )


def _cover_words(index: CoverIndex, day: date, supervised: int) -> str:
    """ "Physicists: 08:00–12:00 ×2, 12:00–17:00 ×1 · 3 supervised" for one local day."""
    zi = zone(index.tz)
    blocks = [
        f"{start.astimezone(zi):%H:%M}–{end.astimezone(zi):%H:%M} ×{count}"
        for start, end, count in index.roster(day)
    ]
    cover = ", ".join(blocks) if blocks else "none rostered"
    return f"Physicists: {cover} · {supervised} supervised"


# --- request helpers --------------------------------------------------------------------------


def _department(session: Session) -> Department:
    """The department asked for (``?department=``), else the first one."""
    query = sa.select(Department).options(selectinload(Department.linacs)).order_by(Department.id)
    wanted = request.args.get("department", "")
    if wanted:
        query = query.where(Department.id == params.query_int("department", 0))
    department = session.scalars(query.limit(1)).first()
    if department is None and not wanted and access.session_scope(session) == frozenset():
        abort(404, "You are not a member of any department yet; an admin adds you to one.")
    if department is None:
        abort(404, "No department is set up yet; an admin adds one first.")
    return department


def _date_arg(name: str, today: date) -> date:
    return params.query_date(name, today)


def _today(department: Department) -> date:
    return datetime.now(UTC).astimezone(zone(department.timezone)).date()


def _audit(department: Department, first: date, last: date, **detail: Any) -> None:
    # The calendar shows many patients at once: one entry for the range, not one per patient.
    audit.record(
        "view",
        "calendar",
        None,
        actor_id=session_user_id(),
        department_id=department.id,
        first=first.isoformat(),
        last=last.isoformat(),
        **detail,
    )


def _nav_args(department: Department) -> dict[str, Any]:
    """Query arguments every calendar link carries (only when not the default)."""
    return {"department": department.id} if request.args.get("department") else {}


def _grid(week: Week, columns: Sequence[tuple[Linac, date]]) -> Grid:
    """Whole hours covering every column's opening hours and every block shown."""
    lo, hi = [], []
    for linac, day in columns:
        window = week.window(linac, day)
        if window:
            lo.append(window[0])
            hi.append(window[1])
        for block in week.blocks(linac.id, day):
            lo.append(block.start.hour * 60 + block.start.minute)
            end_minute = 1440 if block.end.date() > day else block.end.hour * 60 + block.end.minute
            hi.append(end_minute)
    first = min(lo, default=DEFAULT_WINDOW[0])
    last = max(hi, default=DEFAULT_WINDOW[1])
    first = first // 60 * 60
    last = min(1440, math.ceil(last / 60) * 60)
    if last <= first:
        last = min(1440, first + 60)
    return Grid(first, last)


def _column(
    week: Week, grid: Grid, linac: Linac, day: date, heading: str, href: str | None
) -> Column:
    blocks = []
    for block in week.blocks(linac.id, day):
        end_minute = 1440 if block.end.date() > day else block.end.hour * 60 + block.end.minute
        block.row = grid.place(block.start.hour * 60 + block.start.minute, end_minute)
        blocks.append(block)
    if day == week.today:
        minute = week.now.hour * 60 + week.now.minute
        if grid.first_minute <= minute < grid.last_minute:
            blocks.append(
                Block(
                    kind="now",
                    linac_id=linac.id,
                    day=day,
                    start=week.now,
                    end=week.now,
                    css=Markup("now-line"),
                    who=escape(f"now {week.now:%H:%M}"),
                    row=grid.place(minute, minute + 1),
                )
            )
    # Outside opening hours (or all day when closed) is shaded.
    window = week.window(linac, day)
    if window is None:
        shading = [grid.place(grid.first_minute, grid.last_minute)]
    else:
        shading = [
            grid.place(a, b)
            for a, b in ((grid.first_minute, window[0]), (window[1], grid.last_minute))
            if b > a
        ]
    return Column(
        heading=heading,
        href=href,
        day=day,
        blocks=blocks,
        utilisation=week.utilisation.get((linac.id, day)),
        closed_name=week.closed.get(day),
        is_today=day == week.today,
        shading=shading,
        note="" if _is_sbrt(linac) else "not SBRT-capable",
    )


def _hour_lines(grid: Grid) -> list[tuple[str, str]]:
    return [
        (f"{minute // 60:02d}:00", grid.place(minute, minute + 60))
        for minute in range(grid.first_minute, grid.last_minute, 60)
    ]


def _day_label(day: date) -> str:
    return f"{day:%a} {day.day} {day:%b}"


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


# --- pages ------------------------------------------------------------------------------------


@bp.get("/calendar/week")
@role_required(Role.VIEWER)
def week():
    session = get_session()
    department = _department(session)
    today = _today(department)
    first = _week_start(_date_arg("start", today))
    last = first + timedelta(days=6)
    data = load_week(session, department, first, last)
    nav = _nav_args(department)
    _audit(department, first, last, view="week")
    return render_template(
        "calendar/week.html",
        title=f"Week of {first.day} {first:%B %Y}",
        week=data,
        first=first,
        last=last,
        day_label=_day_label,
        sbrt=_is_sbrt,
        prev_url=url_for("calendar.week", start=first - timedelta(days=7), **nav),
        next_url=url_for("calendar.week", start=first + timedelta(days=7), **nav),
        today_url=url_for("calendar.week", **nav),
        day_url=lambda d: url_for("calendar.day", date=d, **nav),
        linac_url=lambda linac: url_for("calendar.linac_week", linac_id=linac.id, start=first),
        roster_url=url_for("roster.physicist_roster", department_id=department.id),
        csv_url=url_for("calendar_export.week_csv", start=first, **nav),
        timezone=department.timezone,
        nav=nav,
    )


@bp.get("/calendar/day")
@role_required(Role.VIEWER)
def day():
    session = get_session()
    department = _department(session)
    today = _today(department)
    shown = _date_arg("date", today)
    data = load_week(session, department, shown, shown)
    nav = _nav_args(department)
    grid = _grid(data, [(linac, shown) for linac in data.linacs])
    columns = [
        _column(
            data,
            grid,
            linac,
            shown,
            linac.name,
            url_for("calendar.linac_week", linac_id=linac.id, start=_week_start(shown)),
        )
        for linac in data.linacs
    ]
    _audit(department, shown, shown, view="day")
    return render_template(
        "calendar/day.html",
        title=f"{shown:%A} {shown.day} {shown:%B %Y}",
        week=data,
        shown=shown,
        grid=grid,
        hours=_hour_lines(grid),
        columns=columns,
        utilisation=data.day_utilisation(shown),
        closed_name=data.closed.get(shown),
        prev_url=url_for("calendar.day", date=shown - timedelta(days=1), **nav),
        next_url=url_for("calendar.day", date=shown + timedelta(days=1), **nav),
        today_url=url_for("calendar.day", **nav),
        week_url=url_for("calendar.week", start=_week_start(shown), **nav),
        csv_url=url_for("calendar_export.day_csv", date=shown, **nav),
        timezone=department.timezone,
        nav=nav,
    )


@bp.get("/calendar/linac/<int:linac_id>/week")
@role_required(Role.VIEWER)
def linac_week(linac_id: int):
    session = get_session()
    linac = session.get(Linac, linac_id)
    if linac is None:
        abort(404)
    department = session.scalars(
        sa.select(Department)
        .options(selectinload(Department.linacs))
        .where(Department.id == linac.department_id)
    ).one()
    today = _today(department)
    first = _week_start(_date_arg("start", today))
    last = first + timedelta(days=6)
    data = load_week(session, department, first, last, linac_ids=[linac.id])
    if not data.linacs:  # an inactive linac still has a history worth seeing
        data.linacs = [linac]
        data.hours[linac.id] = opening_hours(linac.opening_hours) or (
            opening_hours(department.opening_hours) or OpeningHours({})
        )
    grid = _grid(data, [(linac, d) for d in data.days])
    columns = [
        _column(
            data,
            grid,
            linac,
            d,
            _day_label(d),
            url_for("calendar.day", date=d, department=department.id),
        )
        for d in data.days
    ]
    for column in columns:
        column.physicists = data.physicists.get(column.day, "")
    total = Utilisation(0, 0)
    for d in data.days:
        total += data.utilisation.get((linac.id, d), Utilisation(0, 0))
    _audit(department, first, last, view="linac_week", linac_id=linac.id)
    return render_template(
        "calendar/linac_week.html",
        title=f"{linac.name}: week of {first.day} {first:%B %Y}",
        linac=linac,
        sbrt=_is_sbrt(linac),
        week=data,
        first=first,
        grid=grid,
        hours=_hour_lines(grid),
        columns=columns,
        utilisation=total,
        prev_url=url_for("calendar.linac_week", linac_id=linac.id, start=first - timedelta(7)),
        next_url=url_for("calendar.linac_week", linac_id=linac.id, start=first + timedelta(7)),
        today_url=url_for("calendar.linac_week", linac_id=linac.id),
        week_url=url_for("calendar.week", start=first, department=department.id),
        csv_url=url_for(
            "calendar_export.week_csv", start=first, department=department.id, linac=linac.id
        ),
        timezone=department.timezone,
    )
