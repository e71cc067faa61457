"""A busy department: 12 months of SBRT bookings at about 85% of the linacs' opening hours.

The bookings are real Fraction rows of booked courses of distinct patients, generated the way a
department fills up: every open day each SBRT linac first takes the next fraction of the courses
already running on it (no earlier than the protocol's minimum interval after the previous one),
then starts new courses until the day is about 85% full. Sessions sit on the 15-minute grid from
opening time, as a booking office would place them, with the free time spread randomly between
them. One patient per course and one linac per course, fractions on different days: no two
active fractions overlap on a linac or for a patient, so the exclusion constraints accept
every row. Rows are written with SQLAlchemy Core executemany for speed.
"""

from __future__ import annotations

import random
import time as clock
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import sqlalchemy as sa
from sqlalchemy.orm import Session

from bootstrap import make_engine
from scheduler.models import (
    Course,
    CourseStatus,
    Department,
    Fraction,
    FractionStatus,
    Linac,
    Patient,
    Protocol,
)
from scheduler.protocols import DEFAULT_PROTOCOLS, PREP_INSTRUCTIONS

TIMEZONE = "America/New_York"
OPENS, CLOSES = time(7, 0), time(19, 0)
DAY_MINUTES = (CLOSES.hour - OPENS.hour) * 60
GRID_MINUTES = 15
TARGET_UTILISATION = 0.85
SBRT_CAPS = ["sbrt", "cbct", "gating", "breath_hold"]
CONVENTIONAL_CAPS = ["imrt", "vmat", "cbct"]
LINACS = [
    {"name": "TrueBeam 1", "capabilities": SBRT_CAPS, "beam_group": "truebeam"},
    {"name": "TrueBeam 2", "capabilities": SBRT_CAPS, "beam_group": "truebeam"},
    {"name": "Edge", "capabilities": [*SBRT_CAPS, "srs"], "beam_group": None},
    {"name": "Versa HD", "capabilities": SBRT_CAPS, "beam_group": None},
    {"name": "Clinac iX", "capabilities": CONVENTIONAL_CAPS, "beam_group": None},
    {"name": "Unique", "capabilities": CONVENTIONAL_CAPS, "beam_group": None},
]
# Case mix of the courses started: liver, lung and prostate courses dominate SBRT lists.
PROTOCOL_WEIGHTS = {
    "liver-5fx": 3,
    "lung-peripheral-3fx": 3,
    "lung-central-5fx": 2,
    "lung-single": 1,
    "prostate-5fx": 3,
    "spine-1fx": 2,
    "spine-3fx": 1,
    "oligomets-3fx": 1,
    "oligomets-5fx": 1,
}


@dataclass(frozen=True)
class SeedResult:
    url: str
    department_id: int
    linac_ids: list[int]
    sbrt_linac_ids: list[int]
    protocol_ids: dict[str, int]
    first_day: date
    last_day: date
    open_days: int
    patients: int
    courses: int
    fractions: int
    open_minutes: int
    booked_minutes: int
    seconds: float

    @property
    def utilisation(self) -> float:
        return self.booked_minutes / self.open_minutes


@dataclass
class _Running:
    """A course under way on one linac: which fraction is next and from which day."""

    index: int
    protocol: dict
    next_number: int
    not_before: date


@dataclass
class _Plan:
    patients: int = 0
    courses: list[tuple[int, str]] = field(default_factory=list)  # (patient index, code)
    # (course index, linac index, number, starts_at, ends_at)
    fractions: list[tuple[int, int, int, datetime, datetime]] = field(default_factory=list)
    booked_minutes: int = 0


def next_monday(day: date) -> date:
    return day + timedelta(days=(7 - day.weekday()) % 7 or 7)


def open_days(first: date, last: date) -> list[date]:
    """Monday-Friday days between first and last that are not US public holidays."""
    public = holidays.country_holidays("US", years=range(first.year, last.year + 1))
    days = []
    day = first
    while day <= last:
        if day.weekday() < 5 and day not in public:
            days.append(day)
        day += timedelta(days=1)
    return days


def _session_minutes(protocol: dict, number: int) -> int:
    first = protocol.get("first_session_minutes", 60)
    rest = protocol.get("session_minutes", 45)
    return first if number == 1 else rest


def _free_pieces(minutes: int, rng: random.Random) -> list[int]:
    """Split a day's free time into the holes a booked-up list has.

    Sessions are booked back to back, so free time is mostly whole session slots that were
    never filled or were cancelled (45 or 60 minutes); only what is left over comes as
    15-minute fragments. Scattering all free time in 15-minute fragments instead leaves almost
    no hole a 60-minute first session fits in, at any utilisation above about 80%.
    """
    pieces = []
    while minutes >= 45:
        piece = 60 if minutes >= 60 and rng.random() < 0.5 else 45
        pieces.append(piece)
        minutes -= piece
    pieces += [GRID_MINUTES] * (minutes // GRID_MINUTES)
    return pieces


def _plan(days: list[date], linac_count: int, rng: random.Random) -> _Plan:
    """Which sessions each SBRT linac holds on each open day, as courses of patients."""
    by_code = {p["code"]: p for p in DEFAULT_PROTOCOLS}
    codes = list(PROTOCOL_WEIGHTS)
    weights = [PROTOCOL_WEIGHTS[c] for c in codes]
    zone = ZoneInfo(TIMEZONE)
    plan = _Plan()
    running: list[deque[_Running]] = [deque() for _ in range(linac_count)]
    # Error diffusion: each day aims at 85% plus what earlier days fell short of (or minus
    # what they overshot), so the year averages 85% although sessions come in 45-90 minutes.
    carry = [0.0] * linac_count
    for day in days:
        opens = datetime.combine(day, OPENS, zone)
        for linac in range(linac_count):
            target = TARGET_UTILISATION * DAY_MINUTES + carry[linac]
            sessions: list[tuple[int, int, int]] = []  # (course index, number, minutes)
            used = 0
            # Running courses first: a started course must go on.
            waiting: deque[_Running] = deque()
            while running[linac]:
                course = running[linac].popleft()
                minutes = _session_minutes(course.protocol, course.next_number)
                if course.not_before <= day and used + minutes <= target:
                    sessions.append((course.index, course.next_number, minutes))
                    used += minutes
                    course.next_number += 1
                    course.not_before = day + timedelta(days=course.protocol["min_interval_days"])
                    if course.next_number <= course.protocol["fractions"]:
                        waiting.append(course)
                else:
                    waiting.append(course)
            running[linac] = waiting
            # Then new courses, while a first session still brings the day closer to target.
            while True:
                code = rng.choices(codes, weights)[0]
                protocol = by_code[code]
                minutes = _session_minutes(protocol, 1)
                if used + minutes > DAY_MINUTES or abs(target - used - minutes) >= abs(
                    target - used
                ):
                    break
                index = len(plan.courses)
                plan.courses.append((plan.patients, code))
                plan.patients += 1
                sessions.append((index, 1, minutes))
                used += minutes
                if protocol["fractions"] > 1:
                    running[linac].append(
                        _Running(
                            index, protocol, 2, day + timedelta(days=protocol["min_interval_days"])
                        )
                    )
            carry[linac] = target - used
            plan.booked_minutes += used
            # Lay the day out: sessions in random order, the free time between them (before
            # the first and after the last too) in the pieces a booking office leaves.
            rng.shuffle(sessions)
            gaps = [0] * (len(sessions) + 1)
            for piece in _free_pieces(DAY_MINUTES - used, rng):
                gaps[rng.randrange(len(gaps))] += piece
            cursor = 0
            for (course_index, number, minutes), gap in zip(sessions, gaps, strict=False):
                cursor += gap
                start = (opens + timedelta(minutes=cursor)).astimezone(UTC)
                end = (opens + timedelta(minutes=cursor + minutes)).astimezone(UTC)
                plan.fractions.append((course_index, linac, number, start, end))
                cursor += minutes
    return plan


def _reference_data(session: Session) -> tuple[Department, list[Linac], dict[str, int]]:
    department = Department(
        name="Benchmark Radiation Oncology",
        timezone=TIMEZONE,
        phone="+12125550100",
        holiday_country="US",
        opening_hours={
            str(d): [OPENS.strftime("%H:%M"), CLOSES.strftime("%H:%M")] for d in range(5)
        },
    )
    session.add(department)
    session.flush()
    linacs = [Linac(department_id=department.id, **spec) for spec in LINACS]
    session.add_all(linacs)
    protocols = [
        Protocol(**spec, prep_instructions=PREP_INSTRUCTIONS[spec.get("site", "generic")])
        for spec in DEFAULT_PROTOCOLS
    ]
    session.add_all(protocols)
    session.commit()
    return department, linacs, {p.code: p.id for p in protocols}


def insert_patients(conn: sa.Connection, department_id: int, count: int, prefix: str) -> list[int]:
    """``count`` patients in one executemany; their ids in order."""
    now = datetime.now(UTC)
    rows = [
        {
            "department_id": department_id,
            "mrn": f"{prefix}{i:06d}",
            "given_name": "Bench",
            "family_name": f"Patient {prefix}{i}",
            "language": "en",
            "sms_consent": False,
            "sms_opted_out": False,
            "email_consent": False,
            "created_at": now,
        }
        for i in range(count)
    ]
    if not rows:
        return []
    # insertmanyvalues batches the rows and, sorted by parameter order, returns ids in order.
    result = conn.execute(
        sa.insert(Patient).returning(Patient.id, sort_by_parameter_order=True), rows
    )
    return list(result.scalars())


def seed(
    url: str, *, first_day: date | None = None, months: int = 12, rng_seed: int = 1
) -> SeedResult:
    """Create the department and its year of bookings in the (migrated, empty) database."""
    started = clock.perf_counter()
    first_day = first_day or next_monday(datetime.now(UTC).date())
    last_day = first_day + timedelta(days=round(months * 365.25 / 12) - 1)
    days = open_days(first_day, last_day)
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            department, linacs, protocol_ids = _reference_data(session)
            department_id = department.id
            linac_ids = [linac.id for linac in linacs]
            sbrt = [linac.id for linac in linacs if "sbrt" in linac.capabilities]
        plan = _plan(days, len(sbrt), random.Random(rng_seed))
        now = datetime.now(UTC)
        with engine.begin() as conn:
            patient_ids = insert_patients(conn, department_id, plan.patients, "B")
            course_rows = [
                {
                    "patient_id": patient_ids[patient],
                    "protocol_id": protocol_ids[code],
                    "status": CourseStatus.BOOKED.value,
                    "priority": 3,
                    "notes": "",
                    "plan_approved_at": now,
                    "physics_qa_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for patient, code in plan.courses
            ]
            course_ids = list(
                conn.execute(
                    sa.insert(Course).returning(Course.id, sort_by_parameter_order=True),
                    course_rows,
                ).scalars()
            )
            conn.execute(
                sa.insert(Fraction),
                [
                    {
                        "course_id": course_ids[course],
                        "patient_id": patient_ids[plan.courses[course][0]],
                        "linac_id": sbrt[linac],
                        "number": number,
                        "starts_at": start,
                        "ends_at": end,
                        "status": FractionStatus.BOOKED.value,
                        "version": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for course, linac, number, start, end in plan.fractions
                ],
            )
        if engine.dialect.name == "postgresql":
            # Statistics as a long-running database would have them, so the planner picks the
            # plans it would pick in production (committed: ANALYZE's results are transactional).
            with engine.begin() as conn:
                conn.execute(sa.text("ANALYZE"))
        booked = _booked_minutes(engine, sbrt, first_day, last_day)
    finally:
        engine.dispose()
    return SeedResult(
        url=url,
        department_id=department_id,
        linac_ids=linac_ids,
        sbrt_linac_ids=sbrt,
        protocol_ids=protocol_ids,
        first_day=first_day,
        last_day=last_day,
        open_days=len(days),
        patients=plan.patients,
        courses=len(plan.courses),
        fractions=len(plan.fractions),
        open_minutes=len(days) * DAY_MINUTES * len(sbrt),
        booked_minutes=booked,
        seconds=clock.perf_counter() - started,
    )


def _booked_minutes(engine: sa.Engine, linac_ids: list[int], first: date, last: date) -> int:
    """Booked minutes on the SBRT linacs, measured from the stored rows (not from the plan)."""
    zone = ZoneInfo(TIMEZONE)
    start = datetime.combine(first, time.min, zone)
    end = datetime.combine(last + timedelta(days=1), time.min, zone)
    query = sa.select(Fraction.starts_at, Fraction.ends_at).where(
        Fraction.linac_id.in_(linac_ids),
        Fraction.status == FractionStatus.BOOKED.value,
        Fraction.starts_at >= start,
        Fraction.starts_at < end,
    )
    with engine.connect() as conn:
        return sum(int((e - s).total_seconds()) // 60 for s, e in conn.execute(query))
