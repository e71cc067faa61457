"""Part (a) of the scheduling benchmark alone, and the proposals' answers for comparison.

`python -m bench scheduling` also books 200 courses over HTTP, which takes minutes and
loads the machine; a change to proposing only needs (a), measured alternately with the code
before it on one seeded database. Commands (the database lives until `drop`):

- ``seed``: create, migrate and seed a busy-year PostgreSQL database (bench/seed.py);
- ``time``: (a) on it, as bench/propose.py measures it (no profile), one line of figures;
- ``dump FILE``: every answer of ``propose_schedules`` for a fixed set of draft courses (each
  protocol; new patients and patients with bookings of their own), start dates over the year
  and after it, and options (count, preferred window, short horizons, a later earliest date,
  a physicist roster), one JSON line per call: two versions of the code must write the same
  file (compare with ``cmp``);
- ``drop``: drop the database.

Run the code before a change from a ``git archive`` copy of it, with the same interpreter
and this file copied in, so both versions read the same database.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from bench import db, propose, seed
from bench.seed import TIMEZONE, SeedResult, insert_patients
from bootstrap import make_engine, make_session_factory
from scheduler import services
from scheduler.models import Course, CourseStatus, Department, Fraction, RosterBlock

STATE = db.OUT_DIR / "propose_check.json"
# Protocols checked again with a physicist roster (one each of 1, 3 and 5 fractions).
ROSTER_PROTOCOLS = ("liver-5fx", "lung-single", "spine-3fx")


def _save(s: SeedResult, courses: list[dict[str, Any]]) -> None:
    db.OUT_DIR.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps({"seed": asdict(s), "courses": courses}, default=str))


def _load() -> tuple[SeedResult, list[dict[str, Any]]]:
    state = json.loads(STATE.read_text())
    fields = state["seed"]
    for name in ("first_day", "last_day"):
        fields[name] = date.fromisoformat(fields[name])
    return SeedResult(**fields), state["courses"]


def _seed() -> None:
    url = db.create_postgres_database()
    s = seed.seed(url)
    _save(s, _draft_courses(s))
    print(f"{url}: {s.fractions} fractions, {s.first_day} .. {s.last_day}")


def _draft_courses(s: SeedResult) -> list[dict[str, Any]]:
    """Per protocol, draft courses of two new patients and of one with bookings of their own."""
    engine = make_engine(s.url)
    try:
        with engine.begin() as conn:
            codes = sorted(s.protocol_ids)
            new = insert_patients(conn, s.department_id, 2 * len(codes), "CHECK-")
            # Patients with the earliest bookings, spread: their sessions block their times.
            booked = conn.execute(
                sa.select(Fraction.patient_id)
                .group_by(Fraction.patient_id)
                .order_by(sa.func.min(Fraction.starts_at))
                .limit(400)
            ).scalars()
            busy = list(booked)[::40]
            courses = []
            for i, code in enumerate(codes):
                for patient_id in (new[2 * i], new[2 * i + 1], busy[i % len(busy)]):
                    course_id = conn.execute(
                        sa.insert(Course).returning(Course.id),
                        {
                            "patient_id": patient_id,
                            "protocol_id": s.protocol_ids[code],
                            "status": CourseStatus.DRAFT,
                        },
                    ).scalar_one()
                    courses.append({"code": code, "course_id": course_id})
    finally:
        engine.dispose()
    return courses


def _time() -> None:
    s, _ = _load()
    load = os.getloadavg()[0]
    a = propose.run(s.url, s, profile_calls=0)
    print(
        f"{datetime.now(UTC):%H:%M} UTC, load average {load:.2f} / {os.getloadavg()[0]:.2f}: "
        f"propose p50/p95 {a.propose['p50']:.1f}/{a.propose['p95']:.1f} ms, "
        f"baseline {a.baseline['p50']:.1f}/{a.baseline['p95']:.1f}, "
        f"context {a.context['p50']:.1f}/{a.context['p95']:.1f}, "
        f"engine {a.engine['p50']:.1f}/{a.engine['p95']:.1f}; "
        f"ratio p95 {a.ratio_p95:.2f}, p50 {a.ratio_p50:.2f}; paired median/p95 "
        f"{a.paired_ratio['p50']:.2f}/{a.paired_ratio['p95']:.2f}; reads {a.reads_per_call}"
    )


def _cases(s: SeedResult) -> Iterator[dict[str, Any]]:
    """Keyword arguments of propose_schedules: start dates over the year and after it, and
    the options on every fourth of them."""
    zone = ZoneInfo(TIMEZONE)
    days = [s.first_day + timedelta(days=7 * i + i % 5) for i in range(0, 53, 3)]
    days += [s.last_day - timedelta(days=3), s.last_day + timedelta(days=20)]
    for day in days:
        yield {"now": datetime.combine(day, time(6, 0), zone).astimezone(UTC)}
    for day in days[::4]:
        now = datetime.combine(day, time(6, 0), zone).astimezone(UTC)
        yield {"now": now, "count": 1}
        yield {"now": now, "count": 5}
        yield {"now": datetime.combine(day, time(11, 7), zone).astimezone(UTC)}
        yield {"now": now, "preferred_window": (time(9, 0), time(12, 0))}
        yield {"now": now, "horizon_days": 2}
        yield {"now": now, "horizon_days": 14, "earliest": day + timedelta(days=30)}
        yield {"now": now, "preferred_window": (time(18, 0), time(19, 0)), "horizon_days": 3}


def _add_roster(session: Any, department_id: int) -> None:
    """A thin roster, one physicist 08:00-12:00 and 13:00-17:00 on weekdays (rolled back)."""
    department = session.get(Department, department_id)
    department.physicist_roster_enabled = True
    for weekday in range(5):
        for starts, ends in (("08:00", "12:00"), ("13:00", "17:00")):
            session.add(
                RosterBlock(
                    department_id=department_id,
                    weekday=weekday,
                    starts=starts,
                    ends=ends,
                    physicists=1,
                )
            )
    session.flush()


def _dump(out: Path) -> None:
    s, courses = _load()
    engine = make_engine(s.url)
    factory = make_session_factory(engine)
    calls = 0
    try:
        with out.open("w") as f:
            for roster in (False, True):
                for course in courses:
                    if roster and course["code"] not in ROSTER_PROTOCOLS:
                        continue
                    for kwargs in _cases(s):
                        with factory() as session:
                            if roster:
                                _add_roster(session, s.department_id)
                            result = services.propose_schedules(
                                session, course["course_id"], **kwargs
                            )
                            session.rollback()
                        line = {
                            "roster": roster,
                            "course": course,
                            "kwargs": {k: str(v) for k, v in kwargs.items()},
                            "schedules": [repr(x) for x in result.schedules],
                            "explanation": repr(result.explanation),
                            "timezone": result.timezone,
                        }
                        f.write(json.dumps(line) + "\n")
                        calls += 1
    finally:
        engine.dispose()
    print(f"{calls} answers written to {out}")


def _drop() -> None:
    s, _ = _load()
    db.drop_postgres_database(s.url)
    STATE.unlink()
    print(f"dropped {s.url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.propose_check")
    parser.add_argument("command", choices=("seed", "time", "dump", "drop"))
    parser.add_argument("out", nargs="?", type=Path, help="dump: the file to write")
    args = parser.parse_args(argv)
    if args.command == "seed":
        _seed()
    elif args.command == "time":
        _time()
    elif args.command == "dump":
        if args.out is None:
            parser.error("dump needs the file to write")
        _dump(args.out)
    else:
        _drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
