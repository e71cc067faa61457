"""Read a finished simulation run back from its directory, and the figures derived from it.

Only the run's files are read (summary.json, courses.csv, weekly.csv), so a report can be
drawn again, or two runs compared, long after the throwaway database is gone.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SUMMARY_FILE = "summary.json"
COURSES_FILE = "courses.csv"
WEEKLY_FILE = "weekly.csv"

COURSE_COLUMNS = (
    "course_id",
    "protocol",
    "ready_date",
    "priority",
    "fraction_number",
    "linac",
    "starts_at",
    "ends_at",
    "status",
)
WEEKLY_COLUMNS = ("week_start", "linac", "sbrt_capable", "open_minutes", "booked_minutes")

UNBOOKED = "unbooked"
# A cancelled row never held the patient's place; an unbooked course has no fraction at all.
# A missed fraction still was the start the department offered, so it counts for the wait.
NOT_A_START = frozenset({"cancelled", UNBOOKED})
# Minutes a course asks of the linacs: the fractions it holds or has had.
DEMAND_STATUSES = frozenset({"tentative", "booked", "confirmed", "completed"})


class RunFilesError(Exception):
    """A run's directory lacks a file, or a file cannot be read as the contract describes."""


@dataclass(frozen=True)
class FractionRow:
    """One row of courses.csv: a fraction, or a course that was never booked."""

    course_id: str
    protocol: str
    ready_date: date
    priority: int | None
    fraction_number: int | None
    linac: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    status: str
    arrival_date: date | None = None
    preferred_window: tuple[time, time] | None = None
    in_metrics: bool = True

    @property
    def minutes(self) -> float:
        if self.starts_at is None or self.ends_at is None:
            return 0.0
        return (self.ends_at - self.starts_at).total_seconds() / 60


@dataclass(frozen=True)
class WeekRow:
    """One row of weekly.csv: a linac's open and booked minutes in the week from Monday."""

    week_start: date
    linac: str
    sbrt_capable: bool
    open_minutes: float
    booked_minutes: float


@dataclass(frozen=True)
class RunData:
    """Everything a finished run wrote, parsed."""

    out_dir: Path
    summary: dict[str, Any]
    fractions: tuple[FractionRow, ...]
    weekly: tuple[WeekRow, ...]
    timezone: tzinfo

    @property
    def scenario_name(self) -> str:
        return str(self.summary.get("scenario_name") or "Unnamed scenario")

    @property
    def policy(self) -> str:
        return str(self.summary.get("policy") or "")

    @property
    def seed(self) -> Any:
        return self.summary.get("seed")

    @property
    def period(self) -> dict[str, Any]:
        period = self.summary.get("period")
        return period if isinstance(period, dict) else {}

    @property
    def warmup_end(self) -> date | None:
        """The first day whose ready courses are measured, if the period is known."""
        start = _optional_date(self.period.get("start"))
        if start is None:
            return None
        return start + timedelta(days=int(self.period.get("warmup_days") or 0))


@dataclass(frozen=True)
class CourseWait:
    course_id: str
    ready_date: date
    first_fraction_date: date
    in_metrics: bool

    @property
    def days(self) -> int:
        return (self.first_fraction_date - self.ready_date).days


@dataclass(frozen=True)
class WeekArrivals:
    """Courses whose ready date falls in the week, and the linac minutes they ask for."""

    week_start: date
    courses: int
    demand_minutes: float


@dataclass(frozen=True)
class WeekCapacity:
    """Open and booked minutes on the SBRT-capable linacs in one week."""

    week_start: date
    open_minutes: float
    booked_minutes: float


def load_run(out_dir: Path) -> RunData:
    """Read summary.json, courses.csv and weekly.csv from a run's directory."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise RunFilesError(f"The run directory {out_dir} does not exist.")
    summary = _read_summary(out_dir / SUMMARY_FILE)
    return RunData(
        out_dir=out_dir,
        summary=summary,
        fractions=tuple(_read_courses(out_dir / COURSES_FILE)),
        weekly=tuple(_read_weekly(out_dir / WEEKLY_FILE)),
        timezone=_department_timezone(summary),
    )


def course_waits(run: RunData, *, measured_only: bool = True) -> list[CourseWait]:
    """Days from each booked course's ready date to its first fraction's local date.

    The local date is the department's: a 07:30 fraction in New York is that day, not the
    UTC day. Courses never booked have no wait and are left out (the summary counts them).
    """
    first_start: dict[str, datetime] = {}
    ready: dict[str, date] = {}
    measured: dict[str, bool] = {}
    for row in run.fractions:
        ready.setdefault(row.course_id, row.ready_date)
        measured.setdefault(row.course_id, row.in_metrics)
        if row.starts_at is None or row.status in NOT_A_START:
            continue
        earliest = first_start.get(row.course_id)
        if earliest is None or row.starts_at < earliest:
            first_start[row.course_id] = row.starts_at
    waits = [
        CourseWait(
            course_id=course_id,
            ready_date=ready[course_id],
            first_fraction_date=starts_at.astimezone(run.timezone).date(),
            in_metrics=measured[course_id],
        )
        for course_id, starts_at in first_start.items()
    ]
    if measured_only:
        waits = [wait for wait in waits if wait.in_metrics]
    return sorted(waits, key=lambda wait: (wait.ready_date, wait.course_id))


def wait_quantiles(days: Sequence[int]) -> dict[str, float | None]:
    """Median, 90th percentile and maximum of wait days (None for no courses)."""
    if not days:
        return {"median": None, "p90": None, "max": None}
    ordered = sorted(days)
    return {
        "median": float(statistics.median(ordered)),
        "p90": percentile(ordered, 0.9),
        "max": float(ordered[-1]),
    }


def percentile(ordered: Sequence[float], share: float) -> float:
    """Linear-interpolated percentile of sorted values (the definition numpy uses by default)."""
    if not ordered:
        raise ValueError("percentile of no values")
    position = (len(ordered) - 1) * share
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return float(ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower))


def week_start(day: date) -> date:
    """The Monday of the week holding ``day``."""
    return day - timedelta(days=day.weekday())


def run_weeks(run: RunData) -> list[date]:
    """Every Monday of the run: those of weekly.csv, else those the courses touch."""
    weeks = {row.week_start for row in run.weekly}
    if not weeks:
        weeks = {week_start(row.ready_date) for row in run.fractions}
    return sorted(weeks)


def weekly_arrivals(run: RunData) -> list[WeekArrivals]:
    """Per week of the run: courses that became ready, and the minutes their fractions take.

    Demand is counted in the week a course becomes ready, so it can be set against the
    capacity the department had when those patients were waiting to start.
    """
    courses: dict[date, set[str]] = defaultdict(set)
    minutes: dict[date, float] = defaultdict(float)
    for row in run.fractions:
        week = week_start(row.ready_date)
        courses[week].add(row.course_id)
        if row.status in DEMAND_STATUSES:
            minutes[week] += row.minutes
    weeks = sorted(set(run_weeks(run)) | set(courses))
    return [WeekArrivals(week, len(courses[week]), minutes[week]) for week in weeks]


def weekly_sbrt_capacity(run: RunData) -> list[WeekCapacity]:
    """Per week: open and booked minutes summed over the SBRT-capable linacs."""
    open_minutes: dict[date, float] = defaultdict(float)
    booked_minutes: dict[date, float] = defaultdict(float)
    for row in run.weekly:
        if row.sbrt_capable:
            open_minutes[row.week_start] += row.open_minutes
            booked_minutes[row.week_start] += row.booked_minutes
    return [WeekCapacity(week, open_minutes[week], booked_minutes[week]) for week in run_weeks(run)]


def weekly_utilisation(run: RunData) -> dict[str, list[tuple[date, float | None]]]:
    """Per SBRT-capable linac, in name order: booked / open minutes per week (None: closed)."""
    by_linac: dict[str, list[tuple[date, float | None]]] = defaultdict(list)
    for row in sorted(run.weekly, key=lambda row: (row.linac, row.week_start)):
        if not row.sbrt_capable:
            continue
        share = row.booked_minutes / row.open_minutes if row.open_minutes > 0 else None
        by_linac[row.linac].append((row.week_start, share))
    return dict(sorted(by_linac.items()))


# ---- reading the files -----------------------------------------------------------------------


def _read_summary(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as error:
        raise RunFilesError(
            f"{path.name} in {path.parent} is not valid JSON (line {error.lineno}: {error.msg})."
        ) from error
    if not isinstance(summary, dict):
        raise RunFilesError(f"{path.name} in {path.parent} must hold a JSON object.")
    return summary


def _department_timezone(summary: dict[str, Any]) -> tzinfo:
    name = summary.get("department_timezone")
    if not name:
        return UTC
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise RunFilesError(
            f"{SUMMARY_FILE}: department_timezone {name!r} is not a known time zone."
        ) from error


def _read_courses(path: Path) -> Iterable[FractionRow]:
    for line, record in _csv_records(path, COURSE_COLUMNS):
        field = _FieldReader(path.name, line, record)
        status = field.text("status", required=True)
        yield FractionRow(
            course_id=field.text("course_id", required=True),
            protocol=field.text("protocol"),
            ready_date=field.date("ready_date", required=True),
            priority=field.integer("priority"),
            fraction_number=field.integer("fraction_number"),
            linac=field.text("linac") or None,
            starts_at=field.instant("starts_at", required=status != UNBOOKED),
            ends_at=field.instant("ends_at", required=status != UNBOOKED),
            status=status,
            arrival_date=field.date("arrival_date"),
            preferred_window=field.window("preferred_window"),
            in_metrics=field.flag("in_metrics", default=True),
        )


def _read_weekly(path: Path) -> Iterable[WeekRow]:
    for line, record in _csv_records(path, WEEKLY_COLUMNS):
        field = _FieldReader(path.name, line, record)
        yield WeekRow(
            week_start=field.date("week_start", required=True),
            linac=field.text("linac", required=True),
            sbrt_capable=field.flag("sbrt_capable", default=False),
            open_minutes=field.number("open_minutes"),
            booked_minutes=field.number("booked_minutes"),
        )


def _read_text(path: Path) -> str:
    # newline="" keeps line breaks inside quoted CSV cells as written; utf-8-sig accepts a
    # byte-order mark from a spreadsheet that saved the file again.
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            return file.read()
    except FileNotFoundError as error:
        raise RunFilesError(f"{path.name} is missing from the run directory {path.parent}.") from (
            error
        )
    except (OSError, UnicodeDecodeError) as error:
        raise RunFilesError(f"{path.name} in {path.parent} cannot be read: {error}.") from error


def _csv_records(path: Path, columns: Sequence[str]) -> Iterable[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    header = reader.fieldnames or []
    missing = [column for column in columns if column not in header]
    if missing:
        raise RunFilesError(
            f"{path.name} in {path.parent} lacks the column(s) {', '.join(missing)}."
        )
    for record in reader:
        if None in record:  # more cells than the header names
            raise RunFilesError(f"{path.name} line {reader.line_num}: more cells than columns.")
        yield reader.line_num, record


class _FieldReader:
    """Parses one CSV record's cells, naming file, line and column in every error."""

    def __init__(self, file: str, line: int, record: dict[str, str | None]) -> None:
        self.file, self.line, self.record = file, line, record

    def _cell(self, column: str, required: bool) -> str:
        value = (self.record.get(column) or "").strip()
        if required and not value:
            raise self._error(column, value, "is empty")
        return value

    def _error(self, column: str, value: str, problem: str) -> RunFilesError:
        shown = f" {value!r}" if value else ""
        return RunFilesError(f"{self.file} line {self.line}: {column}{shown} {problem}.")

    def text(self, column: str, *, required: bool = False) -> str:
        return self._cell(column, required)

    def date(self, column: str, *, required: bool = False) -> date | None:
        value = self._cell(column, required)
        if not value:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise self._error(column, value, "is not a date (YYYY-MM-DD)") from None

    def instant(self, column: str, *, required: bool = False) -> datetime | None:
        value = self._cell(column, required)
        if not value:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise self._error(column, value, "is not an ISO 8601 date-time") from None
        if parsed.utcoffset() is None:
            raise self._error(column, value, "has no UTC offset")
        return parsed

    def integer(self, column: str) -> int | None:
        value = self._cell(column, False)
        if not value:
            return None
        try:
            return int(value)
        except ValueError:
            raise self._error(column, value, "is not a whole number") from None

    def number(self, column: str) -> float:
        value = self._cell(column, True)
        try:
            number = float(value)
        except ValueError:
            raise self._error(column, value, "is not a number") from None
        if number != number or number < 0:  # NaN or negative minutes
            raise self._error(column, value, "is not a number of minutes")
        return number

    def flag(self, column: str, *, default: bool) -> bool:
        value = self._cell(column, False).lower()
        if not value:
            return default
        if value in {"1", "true", "yes"}:
            return True
        if value in {"0", "false", "no"}:
            return False
        raise self._error(column, value, "is not 1 or 0")

    def window(self, column: str) -> tuple[time, time] | None:
        value = self._cell(column, False)
        if not value:
            return None
        try:
            start, end = value.split("-")
            return time.fromisoformat(start), time.fromisoformat(end)
        except ValueError:
            raise self._error(column, value, "is not a time window HH:MM-HH:MM") from None


def _optional_date(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
