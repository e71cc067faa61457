"""The department week calendar: 6 linacs holding 500 fractions, rendered on the server.

Target (issue 4): the week view renders in <= 150 ms on the server. A fresh database per
backend is migrated and seeded with one busy week: 100 five-fraction courses of distinct
patients, Monday to Friday at the same time on the same linac, spread over 6 SBRT linacs
(about 17 sessions a linac a day, in opening hours 06:00-21:00), plus one downtime block per
linac per day. A viewer signs in through the login form and the page is fetched through the
Flask test client (routing, session, role check, queries, audit entry, template: everything
but the network), after a warm-up.

Timed in turn, each iteration:

- ``week``: ``GET /calendar/week?start=<that Monday>`` (500 fraction blocks);
- ``empty week``: the same page for a week without bookings (the page's fixed cost);
- ``baseline``: a bare SELECT of the week's fraction rows with the course, patient and
  protocol columns the page shows, through the app's engine (the cost of "just read it");
- ``day``: ``GET /calendar/day`` for the Wednesday (for information).

Run: ``.venv/bin/python -m bench.calendar`` (``--no-postgresql``, ``--no-sqlite``, ``-n``).
Prints the figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import re
import secrets
import tempfile
import time as clock
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from bench import db
from bench.seed import insert_patients, next_monday
from bench.stats import summary_ms
from bootstrap import make_engine
from config import load_settings
from scheduler import accounts
from scheduler.context import local_day_bounds
from scheduler.models import (
    Course,
    CourseStatus,
    Department,
    Downtime,
    Fraction,
    FractionStatus,
    Linac,
    Patient,
    Protocol,
)
from scheduler.protocols import DEFAULT_PROTOCOLS
from web import create_app
from web.db import SESSION_FACTORY_KEY

TIMEZONE = "America/New_York"
LINACS = 6
COURSES = 100  # x 5 fractions = 500
SESSION_MINUTES = 45
SLOT_MINUTES = 50  # 17 slots from 06:00 end by 20:15
OPENS, CLOSES = time(6, 0), time(21, 0)
TARGET_MS = 150.0
PASSWORD = "bench-calendar-password"


@dataclass(frozen=True)
class CalendarResult:
    backend: str
    monday: date
    fractions: int
    blocks_rendered: int
    week: dict[str, float]
    empty_week: dict[str, float]
    baseline: dict[str, float]
    day: dict[str, float]
    queries_per_week_page: int

    @property
    def ratio_p50(self) -> float:
        return self.week["p50"] / self.baseline["p50"]

    @property
    def ratio_p95(self) -> float:
        return self.week["p95"] / self.baseline["p95"]


def busy_week_start() -> date:
    """A Monday a few weeks ahead whose Monday-Friday holds no US public holiday."""
    monday = next_monday(datetime.now(UTC).date() + timedelta(days=14))
    public = holidays.country_holidays("US", years=range(monday.year, monday.year + 2))
    while any(monday + timedelta(days=i) in public for i in range(5)):
        monday += timedelta(days=7)
    return monday


def seed_week(url: str, monday: date) -> int:
    """The department, 6 SBRT linacs, 500 fractions and the downtimes; returns the fraction
    count as stored."""
    zone = ZoneInfo(TIMEZONE)
    engine = make_engine(url)
    now = datetime.now(UTC)
    try:
        with Session(engine) as session:
            department = Department(
                name="Calendar Benchmark",
                timezone=TIMEZONE,
                holiday_country="US",
                opening_hours={
                    str(d): [OPENS.strftime("%H:%M"), CLOSES.strftime("%H:%M")] for d in range(5)
                },
            )
            session.add(department)
            session.flush()
            linacs = [
                Linac(
                    department_id=department.id,
                    name=f"Linac {i + 1}",
                    capabilities=["sbrt", "cbct", "gating"],
                    beam_group="a" if i < 2 else None,
                )
                for i in range(LINACS)
            ]
            spec = next(p for p in DEFAULT_PROTOCOLS if p["code"] == "liver-5fx")
            protocol = Protocol(**spec)
            session.add_all([*linacs, protocol])
            session.flush()
            linac_ids = [linac.id for linac in linacs]
            department_id, protocol_id = department.id, protocol.id
            # Downtime in each linac's evening, after its last session.
            session.add_all(
                Downtime(
                    linac_id=linac_id,
                    starts_at=datetime.combine(monday + timedelta(days=d), time(20, 15), zone),
                    ends_at=datetime.combine(monday + timedelta(days=d), time(21, 0), zone),
                    kind="planned",
                    reason="Daily QA",
                )
                for linac_id in linac_ids
                for d in range(5)
            )
            accounts.create_user(
                session,
                email="viewer@bench.example",
                name="Viewer",
                role="viewer",
                password=PASSWORD,
                # Calendars show a viewer only their departments' bookings.
                department_ids=[department_id],
            )
            session.commit()
        with engine.begin() as conn:
            patients = insert_patients(conn, department_id, COURSES, "C")
            course_ids = list(
                conn.execute(
                    sa.insert(Course).returning(Course.id, sort_by_parameter_order=True),
                    [
                        {
                            "patient_id": p,
                            "protocol_id": protocol_id,
                            "priority": 3,
                            "status": CourseStatus.BOOKED.value,
                            "notes": "",
                            "plan_approved_at": now,
                            "physics_qa_at": now,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for p in patients
                    ],  # fmt: skip
                ).scalars()
            )
            rows = []
            for i, (course_id, patient_id) in enumerate(zip(course_ids, patients, strict=True)):
                linac_id, slot = linac_ids[i % LINACS], i // LINACS
                for number in range(1, 6):
                    day = monday + timedelta(days=number - 1)
                    start = datetime.combine(day, OPENS, zone) + timedelta(
                        minutes=slot * SLOT_MINUTES
                    )
                    rows.append(
                        {"course_id": course_id, "patient_id": patient_id, "linac_id": linac_id,
                         "number": number, "starts_at": start.astimezone(UTC),
                         "ends_at": (start + timedelta(minutes=SESSION_MINUTES)).astimezone(UTC),
                         "status": FractionStatus.BOOKED.value, "version": 1,
                         "created_at": now, "updated_at": now}
                    )  # fmt: skip
            conn.execute(sa.insert(Fraction), rows)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(sa.text("ANALYZE"))
        with engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(Fraction))
    finally:
        engine.dispose()


def _sign_in(client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, "login page without a CSRF field"
    response = client.post(
        "/login",
        data={"csrf_token": token.group(1), "email": "viewer@bench.example", "password": PASSWORD},
    )
    if response.status_code != 302:
        raise RuntimeError(f"sign-in failed with {response.status_code}")


def _baseline_query(monday: date) -> sa.Select:
    start, end = local_day_bounds(TIMEZONE, monday, monday + timedelta(days=6))
    return (
        sa.select(
            Fraction.course_id,
            Fraction.linac_id,
            Fraction.number,
            Fraction.starts_at,
            Fraction.ends_at,
            Fraction.status,
            Protocol.code,
            Protocol.fractions,
            Patient.given_name,
            Patient.family_name,
            Patient.mrn,
        )  # fmt: skip
        .join(Course, Course.id == Fraction.course_id)
        .join(Protocol, Protocol.id == Course.protocol_id)
        .join(Patient, Patient.id == Fraction.patient_id)
        .where(Fraction.starts_at < end, Fraction.ends_at > start)
        .order_by(Fraction.starts_at, Fraction.linac_id)
    )


def run(url: str, backend: str, *, iterations: int = 40, warmup: int = 5) -> CalendarResult:
    monday = busy_week_start()
    stored = seed_week(url, monday)
    with tempfile.TemporaryDirectory(prefix="bench-calendar-") as instance:
        settings = load_settings(
            {
                "DATABASE_URL": url,
                "BROKER_URL": "memory://",  # nothing here sends messages
                "SECRET_KEY": secrets.token_urlsafe(32),
                "INSTANCE_DIR": instance,
            }
        )
        app = create_app(settings)
        client = app.test_client()
        _sign_in(client)
        week_url = f"/calendar/week?start={monday}"
        empty_url = f"/calendar/week?start={monday - timedelta(days=28)}"
        day_url = f"/calendar/day?date={monday + timedelta(days=2)}"
        engine = make_engine(url)
        query = _baseline_query(monday)

        def fetch(path: str) -> str:
            response = client.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"{path} answered {response.status_code}")
            return response.get_data(as_text=True)

        def baseline() -> None:
            with Session(engine) as session:
                session.execute(query).all()

        # The app's own engine (its pool is private to the app): statements are counted there.
        app_engine = app.extensions[SESSION_FACTORY_KEY].kw["bind"]
        statements: list[str] = []

        def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
            statements.append(statement)

        try:
            html = fetch(week_url)
            blocks = html.count('class="blk blk-fraction')
            for _ in range(warmup):
                fetch(week_url), fetch(empty_url), fetch(day_url), baseline()
            times: dict[str, list[float]] = {"week": [], "empty": [], "baseline": [], "day": []}
            for _ in range(iterations):
                # Interleaved, so a burst of load on the machine hits every figure alike.
                for name, action in (
                    ("week", lambda: fetch(week_url)),
                    ("empty", lambda: fetch(empty_url)),
                    ("baseline", baseline),
                    ("day", lambda: fetch(day_url)),
                ):
                    started = clock.perf_counter()
                    action()
                    times[name].append(clock.perf_counter() - started)
            sa.event.listen(app_engine, "before_cursor_execute", count)
            fetch(week_url)
            sa.event.remove(app_engine, "before_cursor_execute", count)
        finally:
            engine.dispose()
            app_engine.dispose()
    return CalendarResult(
        backend=backend,
        monday=monday,
        fractions=stored,
        blocks_rendered=blocks,
        week=summary_ms(times["week"]),
        empty_week=summary_ms(times["empty"]),
        baseline=summary_ms(times["baseline"]),
        day=summary_ms(times["day"]),
        queries_per_week_page=len(statements),
    )


def report(results: list[CalendarResult]) -> str:
    lines = [
        "| backend | what | n | p50 ms | p95 ms |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        for name, figures in (
            (f"week view, {r.blocks_rendered} fraction blocks", r.week),
            ("week view, empty week", r.empty_week),
            ("baseline: bare SELECT of the week's rows", r.baseline),
            ("day view (Wednesday, information)", r.day),
        ):
            lines.append(
                f"| {r.backend} | {name} | {figures['n']} | {figures['p50']:.1f} | "
                f"{figures['p95']:.1f} |"
            )
    lines += ["", "| backend | figure | value | target |", "|---|---|---|---|"]
    for r in results:
        met = "met" if r.week["p95"] <= TARGET_MS else "NOT met"
        lines += [
            f"| {r.backend} | week view p95 | {r.week['p95']:.1f} ms | <= {TARGET_MS:.0f} ms "
            f"({met}) |",
            f"| {r.backend} | ratio week / baseline, p50 / p95 | {r.ratio_p50:.1f} / "
            f"{r.ratio_p95:.1f} | information |",
            f"| {r.backend} | ratio week / empty week, p50 | "
            f"{r.week['p50'] / r.empty_week['p50']:.1f} | information |",
            f"| {r.backend} | SQL statements per week page | {r.queries_per_week_page} | "
            "constant |",
        ]
    return "\n".join(lines)


def run_all(
    *,
    postgresql: bool = True,
    sqlite: bool = True,
    iterations: int = 40,
    on_postgresql: Callable[[str], None] = lambda url: None,
) -> list[CalendarResult]:
    """Each backend in a database of its own, created for the run and dropped after it.

    ``on_postgresql`` is called with the PostgreSQL URL while that database exists (to read
    the server's version, say).
    """
    results = []
    if postgresql:
        print("PostgreSQL: creating, migrating and seeding a busy week ...", flush=True)
        url = db.create_postgres_database()
        try:
            on_postgresql(url)
            results.append(run(url, "postgresql", iterations=iterations))
        finally:
            db.drop_postgres_database(url)
    if sqlite:
        print("SQLite: creating, migrating and seeding a busy week ...", flush=True)
        url, path = db.create_sqlite_database()
        try:
            results.append(run(url, "sqlite", iterations=iterations))
        finally:
            db.drop_sqlite_database(path)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calendar")
    parser.add_argument("--no-postgresql", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("-n", "--iterations", type=int, default=40)
    args = parser.parse_args(argv)
    results = run_all(
        postgresql=not args.no_postgresql, sqlite=not args.no_sqlite, iterations=args.iterations
    )
    print()
    print(report(results))
    if results:
        print(
            f"\nWeek of {results[0].monday}; pages fetched through the Flask test client, "
            "signed in as a viewer; interleaved, after a warm-up."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
