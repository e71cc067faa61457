"""Solve time of the batch optimiser on a realistic department, without a database.

    .venv/bin/python -m bench.optimiser --courses 5 --spread-days 1
    .venv/bin/python -m bench.optimiser --courses 50 --spread-days 14
    .venv/bin/python -m bench.optimiser --database postgresql --courses 5


The department: America/New_York, 4 SBRT-capable linacs open Monday-Friday 08:00-18:00,
already booked to ``--load`` of their time over the next weeks (45-minute sessions on the
15-minute grid, at random), optionally a roster of ``--physicists`` present 08:00-18:00. The
courses: the default SBRT protocols at random, priority 1/2/3 with shares 10/20/70 %, a fifth
with a preferred morning or afternoon, ready on a random working day of the next
``--spread-days`` days. Every schedule found is checked with ``validate``.

With ``--database sqlite|postgresql`` it measures ``plan_courses`` instead, database read
included, in the benchmark's busy department (bench/seed.py: 4 SBRT linacs open 07:00-19:00,
booked to about 85 % for ``--months``), then books every plan with ``book_course`` and counts
refusals and overlapping fractions.
"""

from __future__ import annotations

import argparse
import random
import time as wallclock
from datetime import UTC, date, datetime, time, timedelta

from scheduler.optimiser.model import (
    CourseToPlace,
    Problem,
    course_points,
    greedy,
    solve,
    supervision_breaches,
)
from scheduler.protocols import DEFAULT_PROTOCOLS
from scheduler.rules import validate
from scheduler.timeutil import local_date, local_window
from scheduler.types import (
    Calendar,
    Interval,
    LinacSpec,
    OpeningHours,
    PhysicistCover,
    Rules,
    SearchContext,
)

TZ = "America/New_York"
SBRT = frozenset({"sbrt", "cbct", "gating", "breath_hold"})
START = date(2027, 1, 4)  # a Monday


def rules_of(spec: dict) -> Rules:
    return Rules(
        fractions=spec["fractions"],
        min_hours_between=float(spec.get("min_hours_between") or 0),
        min_interval_days=spec.get("min_interval_days", 1),
        max_interval_days=spec.get("max_interval_days"),
        min_overall_days=spec.get("min_overall_days"),
        max_overall_days=spec.get("max_overall_days"),
        weekdays=frozenset(spec.get("weekdays", range(5))),
        start_weekdays=(
            frozenset(spec["start_weekdays"]) if spec.get("start_weekdays") is not None else None
        ),
        first_session_minutes=spec["first_session_minutes"],
        session_minutes=spec["session_minutes"],
        capabilities=frozenset(spec["capabilities"]),
    )


def department(
    rng: random.Random, load: float, weeks: int, physicists: int
) -> tuple[Calendar, tuple, dict, PhysicistCover | None]:
    hours = OpeningHours({d: (time(8), time(18)) for d in range(5)})
    calendar = Calendar(TZ, hours)
    linacs = tuple(LinacSpec(i, f"SBRT {i}", SBRT) for i in range(1, 5))
    busy: dict[int, list[Interval]] = {}
    for linac in linacs:
        for k in range(weeks * 7):
            day = START + timedelta(days=k)
            if day.weekday() >= 5:
                continue
            opens, _ = local_window(day, time(8), time(18), TZ)
            slots = list(range(0, 600 - 45 + 1, 15))
            taken: list[Interval] = []
            target = load * 600
            booked = 0
            rng.shuffle(slots)
            for minute in slots:
                if booked >= target:
                    break
                candidate = Interval(
                    opens + timedelta(minutes=minute), opens + timedelta(minutes=minute + 45)
                )
                if any(candidate.overlaps(t) for t in taken):
                    continue
                taken.append(candidate)
                booked += 45
            busy[linac.id] = sorted([*busy.get(linac.id, []), *taken], key=lambda iv: iv.start)
    cover = None
    if physicists:
        cover = PhysicistCover(
            by_weekday={d: ((time(8), time(18), physicists),) for d in range(5)},
        )
    return calendar, linacs, busy, cover


def courses(rng: random.Random, count: int, spread_days: int) -> tuple[CourseToPlace, ...]:
    days = [
        START + timedelta(days=k)
        for k in range(spread_days + 7)
        if (START + timedelta(days=k)).weekday() < 5
    ][: max(1, spread_days * 5 // 7)]
    specs = [spec for spec in DEFAULT_PROTOCOLS if "sbrt" in spec["capabilities"]]
    out = []
    for key in range(count):
        window = None
        if rng.random() < 0.2:
            window = rng.choice([(time(8), time(12)), (time(13), time(17))])
        out.append(
            CourseToPlace(
                key=key,
                rules=rules_of(rng.choice(specs)),
                earliest=rng.choice(days),
                not_before=datetime.combine(START, time(0)).astimezone(),
                priority=rng.choices([1, 2, 3], weights=[10, 20, 70])[0],
                preferred_window=window,
                patient=key,
                horizon_days=42,
            )
        )
    return tuple(out)


def database_run(args: argparse.Namespace) -> None:
    from sqlalchemy.orm import Session

    from bench import db
    from bench.seed import insert_patients, seed
    from bootstrap import make_engine
    from scheduler import services, unit_of_work
    from scheduler.models import Course, CourseStatus
    from scheduler.optimiser import CourseRequest, plan_courses

    if args.database == "postgresql":
        url, path = db.create_postgres_database(), None
    else:
        url, path = db.create_sqlite_database()
    engine = make_engine(url)
    try:
        world = seed(url, first_day=START, months=args.months, rng_seed=args.seed)
        rng = random.Random(args.seed)
        codes = sorted(world.protocol_ids)
        with engine.begin() as conn:
            patients = insert_patients(conn, world.department_id, args.courses, "P")
        now = datetime.combine(START + timedelta(days=21), time(12), tzinfo=UTC)
        with Session(engine) as session:
            courses = [
                Course(
                    patient_id=patient,
                    protocol_id=world.protocol_ids[rng.choice(codes)],
                    status=CourseStatus.DRAFT,
                    priority=rng.choices([1, 2, 3], weights=[10, 20, 70])[0],
                    plan_approved_at=now,
                    physics_qa_at=now,
                    ready_to_treat_on=(
                        now + timedelta(days=rng.randrange(args.spread_days))
                    ).date(),
                )
                for patient in patients
            ]
            session.add_all(courses)
            session.commit()
            requests = [CourseRequest(c.id) for c in courses]
            started = wallclock.perf_counter()
            plans = plan_courses(
                session, world.department_id, requests, now=now, time_limit_seconds=args.seconds
            )
            planned_in = wallclock.perf_counter() - started
            ready = {c.id: c.ready_to_treat_on for c in courses}
            waits = sorted(
                (local_date(plan.first_start, TZ) - ready[course_id]).days
                for course_id, plan in plans.items()
            )
            session.rollback()
            refused = 0
            for course_id, schedule in plans.items():
                placements = [
                    services.Placement(f.number, f.linac_id, f.start) for f in schedule.fractions
                ]
                try:
                    unit_of_work.run(
                        session,
                        lambda c=course_id, p=placements: services.book_course(
                            session, c, p, now=now
                        ),
                    )
                except Exception as exc:  # a refusal is what this run counts
                    refused += 1
                    print(f"course {course_id} refused: {exc}")
        overlaps = db.overlap_counts(engine)
        print(
            f"{args.database}: {world.fractions} fractions booked over {args.months} month(s) "
            f"({world.booked_minutes / world.open_minutes:.0%} of SBRT hours); "
            f"plan_courses for {args.courses} draft courses ready over {args.spread_days} "
            f"day(s), limit {args.seconds:g} s: planned {len(plans)} in {planned_in:.2f} s "
            f"(wait days median {waits[len(waits) // 2] if waits else '-'}, "
            f"max {waits[-1] if waits else '-'}); "
            f"booked {len(plans) - refused}, refused {refused}; overlaps {overlaps}"
        )
    finally:
        engine.dispose()
        if path is None:
            db.drop_postgres_database(url)
        else:
            db.drop_sqlite_database(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--courses", type=int, default=5)
    parser.add_argument("--spread-days", type=int, default=1)
    parser.add_argument("--load", type=float, default=0.6)
    parser.add_argument("--physicists", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slack-days", type=int, default=None)
    parser.add_argument("--wall-clock", action="store_true", help="limit by wall time")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default=None)
    parser.add_argument("--months", type=int, default=3)
    args = parser.parse_args()
    if args.database:
        database_run(args)
        return
    rng = random.Random(args.seed)
    calendar, linacs, busy, cover = department(rng, args.load, 10, args.physicists)
    problem = Problem(
        calendar=calendar,
        linacs=linacs,
        courses=courses(rng, args.courses, args.spread_days),
        linac_busy=busy,
        physicists=cover,
    )
    started = wallclock.perf_counter()
    first = greedy(problem)
    greedy_seconds = wallclock.perf_counter() - started
    greedy_wait = sum(
        course_points(c, first[c.key], TZ)[0] for c in problem.courses if c.key in first
    )
    solution = solve(
        problem,
        time_limit_seconds=args.seconds,
        slack_days=args.slack_days,
        deterministic=not args.wall_clock,
    )
    invalid = 0
    for course in problem.courses:
        schedule = solution.schedules.get(course.key)
        if schedule is None:
            continue
        ctx = SearchContext(calendar, linacs, busy)
        invalid += bool(validate(schedule, course.rules, ctx))
    if cover is not None:
        sessions = [
            f.interval
            for c in problem.courses
            if c.key in solution.schedules
            for f in solution.schedules[c.key].fractions
            if cover.supervises(c.rules, f.number)
        ]
        invalid += len(supervision_breaches(cover, TZ, sessions))
    print(
        f"courses {args.courses} over {args.spread_days} day(s), load {args.load:.0%}, "
        f"physicists {args.physicists or 'no roster'}, limit {args.seconds:g} s, "
        f"slack {args.slack_days}: "
        f"{solution.status}, placed {len(solution.schedules)}/{args.courses}, "
        f"weighted wait {solution.weighted_wait} (one by one: {greedy_wait}, "
        f"{len(first)} placed, {greedy_seconds:.2f} s), disturbance {solution.disturbance}, "
        f"invalid {invalid}, wall {solution.wall_seconds:.2f} s"
    )


if __name__ == "__main__":
    main()
