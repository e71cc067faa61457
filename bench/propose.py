"""(a) Proposing three schedules for a 5-fraction liver course, in-process, on a busy year.

Four things are timed at each of 52 course start dates spread over the seeded year, in turn:

- ``propose``: ``services.propose_schedules`` as the API calls it (new session per call);
- ``baseline``: a bare indexed SQL fetch of the rows that call reads (the ratio propose /
  baseline says how far the service is from "just read it");
- ``context``: ``context.search_context`` alone over the same ranges;
- ``engine``: ``search.propose`` alone, with the same requests, on those contexts.

What "the rows that call reads" means is not hard-coded: a calibration call per start date
records the day ranges ``propose_schedules`` passes to ``search_context`` and the requests it
passes to the engine (``search.propose_ranked``), so the baseline follows the service when its
reading changes (it reads a first look of a few days and widens only when the ranking is not
settled there).

Then a cProfile of a few dozen ``propose_schedules`` calls says where the time goes.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time as clock
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from bench.seed import TIMEZONE, SeedResult, insert_patients
from bench.stats import percentile, summary_ms
from bootstrap import make_engine, make_session_factory
from scheduler import search, services
from scheduler.context import local_day_bounds, search_context
from scheduler.models import Course, CourseStatus, Department, UTCDateTime
from scheduler.services import proposing
from scheduler.types import ScheduleRequest, SearchContext

POINTS = 52  # course start dates: one a week over the seeded year, on varying weekdays
PROPOSALS = 3
_BASELINE = (
    "SELECT linac_id, starts_at, ends_at FROM fractions "
    "WHERE linac_id IN :linac_ids AND starts_at < :end AND ends_at > :start"
)
_BASELINE_PARAMS = (
    sa.bindparam("linac_ids", expanding=True),
    # Bound as the column type binds them: SQLite stores naive UTC text, compared as text.
    sa.bindparam("start", type_=UTCDateTime()),
    sa.bindparam("end", type_=UTCDateTime()),
)
BASELINE_SQL = sa.text(_BASELINE).bindparams(*_BASELINE_PARAMS)


@dataclass(frozen=True)
class _Point:
    course_id: int
    patient_id: int
    now: datetime
    # Filled by calibration: what one propose_schedules call reads and searches.
    reads: list[tuple[date, date]] = field(default_factory=list)
    searches: list[ScheduleRequest] = field(default_factory=list)


@dataclass
class ProposeResult:
    backend: str
    iterations: int
    warmup: int
    propose: dict[str, float]
    baseline: dict[str, float]
    context: dict[str, float]
    engine: dict[str, float]
    rows_fetched: dict[str, float]
    schedules_found: dict[int, int]
    # How many search_context reads one call makes (1, or 2 when the first look is short),
    # and the lengths in days of the ranges read.
    reads_per_call: dict[int, int]
    read_days: list[int]
    # propose_i / baseline_i of the same iteration: drift between iterations cancels out.
    paired_ratio: dict[str, float]
    baseline_plan: str = ""
    profile_calls: int = 0
    profile_total_ms: float = 0.0
    profile_key: list[tuple[str, float]] = field(default_factory=list)
    profile_groups: list[tuple[str, float]] = field(default_factory=list)
    profile_top: str = ""

    @property
    def ratio_p95(self) -> float:
        return self.propose["p95"] / self.baseline["p95"]

    @property
    def ratio_p50(self) -> float:
        return self.propose["p50"] / self.baseline["p50"]


def _points(session: Session, seed: SeedResult) -> list[_Point]:
    """One draft liver course per start date, with the engine's inputs prebuilt."""
    zone = ZoneInfo(TIMEZONE)
    protocol_id = seed.protocol_ids["liver-5fx"]
    conn = session.connection()
    # A fresh MRN prefix per call, so the benchmark can run twice on one database.
    patient_ids = insert_patients(conn, seed.department_id, POINTS, f"P{uuid.uuid4().hex[:8]}-")
    course_ids = list(
        conn.execute(
            sa.insert(Course).returning(Course.id, sort_by_parameter_order=True),
            [
                {"patient_id": pid, "protocol_id": protocol_id, "status": CourseStatus.DRAFT}
                for pid in patient_ids
            ],
        ).scalars()
    )
    session.commit()
    points = []
    for i, (course_id, patient_id) in enumerate(zip(course_ids, patient_ids, strict=True)):
        # Weekly, shifted a day each week so every weekday is a start date in turn; at 06:00
        # local, before opening, so the day itself can still be proposed.
        day = seed.first_day + timedelta(days=7 * i + i % 5)
        now = datetime.combine(day, time(6, 0), zone).astimezone(UTC)
        points.append(_Point(course_id, patient_id, now))
    session.rollback()
    return points


def _paired(timings: dict[str, list[float]]) -> list[float]:
    return [p / b for p, b in zip(timings["propose"], timings["baseline"], strict=True)]


def _context(session: Session, seed: SeedResult, p: _Point, lo: date, hi: date) -> SearchContext:
    department = session.get(
        Department, seed.department_id, options=[selectinload(Department.linacs)]
    )
    assert department is not None
    return search_context(
        session, department, lo, hi, patient_id=p.patient_id, exclude_course_id=p.course_id
    )


def _calibrate(factory, points: list[_Point]) -> None:  # type: ignore[no-untyped-def]
    """Record, per point, the ranges propose_schedules reads and the requests it searches."""
    # search.propose goes through search.propose_ranked: spying on that one sees every search.
    real_context, real_ranked = proposing.search_context, search.propose_ranked
    for p in points:

        def context_spy(session, department, first, last, *args, p=p, **kwargs):  # type: ignore[no-untyped-def]
            p.reads.append((first, last))
            return real_context(session, department, first, last, *args, **kwargs)

        def ranked_spy(request, ctx, p=p):  # type: ignore[no-untyped-def]
            p.searches.append(request)
            return real_ranked(request, ctx)

        proposing.search_context, search.propose_ranked = context_spy, ranked_spy
        try:
            with factory() as session:
                services.propose_schedules(session, p.course_id, count=PROPOSALS, now=p.now)
        finally:
            proposing.search_context, search.propose_ranked = real_context, real_ranked


def run(
    url: str, seed: SeedResult, *, iterations: int = 208, warmup: int = 26, profile_calls: int = 40
) -> ProposeResult:
    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        with factory() as session:
            points = _points(session, seed)
            department = session.get(
                Department, seed.department_id, options=[selectinload(Department.linacs)]
            )
            assert department is not None
        linac_ids = [linac.id for linac in department.linacs if linac.active]
        _calibrate(factory, points)
        kinds = ("propose", "baseline", "ctx", "engine")
        timings: dict[str, list[float]] = {k: [] for k in kinds}
        rows: list[float] = []
        found: Counter[int] = Counter()
        reads: Counter[int] = Counter()
        for i in range(warmup + iterations):
            p = points[i % len(points)]
            # Interleaved, so drift on a noisy machine hits all measurements alike.
            t0 = clock.perf_counter()
            fetched = 0
            with factory() as session:
                for lo, hi in p.reads:
                    start, end = local_day_bounds(TIMEZONE, lo, hi)
                    params = {"linac_ids": linac_ids, "start": start, "end": end}
                    fetched += len(session.execute(BASELINE_SQL, params).all())
            t1 = clock.perf_counter()
            with factory() as session:
                result = services.propose_schedules(
                    session, p.course_id, count=PROPOSALS, now=p.now
                )
            t2 = clock.perf_counter()
            with factory() as session:
                contexts = [_context(session, seed, p, lo, hi) for lo, hi in p.reads]
            t3 = clock.perf_counter()
            # The engine alone, on the contexts just built (built per iteration rather than
            # all in advance: 52 contexts held at once would make every full GC pass slower).
            for request, ctx in zip(p.searches, contexts, strict=False):
                search.propose(request, ctx)
            t4 = clock.perf_counter()
            del contexts
            if i < warmup:
                continue
            timings["baseline"].append(t1 - t0)
            timings["propose"].append(t2 - t1)
            timings["ctx"].append(t3 - t2)
            timings["engine"].append(t4 - t3)
            rows.append(fetched)
            found[len(result.schedules)] += 1
            reads[len(p.reads)] += 1
        out = ProposeResult(
            backend=engine.dialect.name,
            iterations=iterations,
            warmup=warmup,
            propose=summary_ms(timings["propose"]),
            baseline=summary_ms(timings["baseline"]),
            context=summary_ms(timings["ctx"]),
            engine=summary_ms(timings["engine"]),
            paired_ratio={
                "p50": percentile(_paired(timings), 50),
                "p95": percentile(_paired(timings), 95),
            },
            rows_fetched={
                "min": min(rows),
                "p50": sorted(rows)[len(rows) // 2],
                "max": max(rows),
            },
            schedules_found=dict(sorted(found.items(), reverse=True)),
            reads_per_call=dict(sorted(reads.items())),
            read_days=sorted({(hi - lo).days + 1 for p in points for lo, hi in p.reads}),
        )
        out.baseline_plan = _plan(factory, points[len(points) // 2], linac_ids)
        if profile_calls:
            _profile(out, factory, points, profile_calls)
        return out
    finally:
        engine.dispose()


def _plan(factory, point: _Point, linac_ids: list[int]) -> str:  # type: ignore[no-untyped-def]
    """The query plan the baseline gets for a mid-year range (the planner's choice)."""
    with factory() as session:
        explain = "EXPLAIN QUERY PLAN " if session.bind.dialect.name == "sqlite" else "EXPLAIN "
        rows = session.execute(
            sa.text(explain + _BASELINE).bindparams(*_BASELINE_PARAMS),
            dict(zip(("start", "end"), local_day_bounds(TIMEZONE, *point.reads[-1]), strict=True))
            | {"linac_ids": linac_ids},
        ).all()
    return "\n".join(str(row[-1]) for row in rows)


# Where a profiled function's own time is counted: by the file it is defined in.
_GROUPS = [
    ("engine: scheduler/search.py, rules.py", ("scheduler/search.py", "scheduler/rules.py")),
    ("context: scheduler/context.py, types.py", ("scheduler/context.py", "scheduler/types.py")),
    ("scheduler/timeutil.py", ("scheduler/timeutil.py",)),
    ("scheduler/services/", ("scheduler/services/",)),
    ("holidays package", ("/holidays/",)),
    ("SQLAlchemy", ("/sqlalchemy/",)),
    ("DB driver (psycopg / sqlite3)", ("/psycopg", "sqlite3")),
    ("zoneinfo, datetime", ("zoneinfo", "datetime")),
]
_KEY_FUNCTIONS = [
    ("services/proposing.py", "propose_schedules"),
    ("services/common.py", "_get_course"),
    ("services/common.py", "_department_of"),
    ("context.py", "search_context"),
    ("context.py", "department_calendar"),
    ("search.py", "propose"),
    ("search.py", "propose_ranked"),
    ("search.py", "explain"),
    ("search.py", "_compute_slots"),
    ("search.py", "_schedule"),
]


def _profile(out: ProposeResult, factory, points: list[_Point], calls: int) -> None:  # type: ignore[no-untyped-def]
    profiler = cProfile.Profile()
    for i in range(calls):
        p = points[(i * 7) % len(points)]  # a spread of start dates, not the first few
        with factory() as session:
            profiler.enable()
            services.propose_schedules(session, p.course_id, count=PROPOSALS, now=p.now)
            profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in entries.values())
    groups: Counter[str] = Counter()
    for (filename, _line, name), (_cc, _nc, tt, _ct, _callers) in entries.items():
        label = "other Python and C builtins"
        where = filename if filename != "~" else name
        for group, needles in _GROUPS:
            if any(n in where for n in needles):
                label = group
                break
        groups[label] += tt
    key = []
    for suffix, func in _KEY_FUNCTIONS:
        cum = sum(
            ct
            for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in entries.items()
            if name == func and filename.endswith("scheduler/" + suffix)
        )
        key.append((f"{suffix.removesuffix('.py')}.{func}", cum / calls * 1000))
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats("tottime").print_stats(15)
    lines = buffer.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    out.profile_calls = calls
    out.profile_total_ms = total / calls * 1000
    out.profile_key = key
    out.profile_groups = [(g, t / total) for g, t in groups.most_common()]
    out.profile_top = "\n".join(line.rstrip() for line in lines[start:] if line.strip())
