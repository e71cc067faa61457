"""(b) Booking whole 5-fraction liver courses over HTTP in one request each, 8 clients at once,
on PostgreSQL.

The real app runs under gunicorn (4 sync workers) as a subprocess. The draft courses (one per
new patient) are written to the database before the clock starts. Each client thread, with its
own ``requests.Session`` and a scheduler's bearer token, then books course after course with
one ``POST /api/v1/courses/{id}/booking`` of ``{"best": true}``: the server proposes, books
and, when another client took its choice first, looks again itself (the audit entry of each
booking counts those lost races). The baseline is ``POST /bench/insert`` (bench/app.py) from the
same 8 clients for as long as the booking phase took: the same stack writing one row.

Courses are ready to treat on dates spread over four weeks after the seeded year, a quiet
horizon, so proposals succeed and the contention measured is the clients' own.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time as clock
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench.db import OUT_DIR, REPO_ROOT, overlap_counts
from bench.seed import SeedResult, insert_patients
from bench.stats import percentile
from bootstrap import make_engine
from scheduler import accounts, unit_of_work
from scheduler.models import AuditEntry, Course, CourseStatus, Fraction, Patient

CLIENTS = 8
WORKERS = 4
COURSES = 200
WARMUP_COURSES = CLIENTS
PHASE_LIMIT_SECONDS = 120.0
READY_SPREAD_DAYS = 28
REQUEST_TIMEOUT = 60


@dataclass
class BookingResult:
    clients: int
    workers: int
    courses_wanted: int
    courses_booked: int = 0
    seconds: float = 0.0
    lost_races: int = 0  # looks again the server made after another client took its choice
    failures: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    baseline_requests: int = 0
    baseline_seconds: float = 0.0
    baseline_failures: dict[str, int] = field(default_factory=dict)
    baseline_latencies: list[float] = field(default_factory=list)
    # Per endpoint (and outcome): (client-side seconds, server-side ms from Server-Timing).
    calls: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    overlaps: dict[str, int] = field(default_factory=dict)
    bench_fractions: int = 0
    bench_courses_complete: int = 0
    server_log: str = ""

    @property
    def courses_per_s(self) -> float:
        return self.courses_booked / self.seconds if self.seconds else 0.0

    @property
    def baseline_rps(self) -> float:
        return self.baseline_requests / self.baseline_seconds if self.baseline_seconds else 0.0

    @property
    def ratio(self) -> float:
        return self.courses_per_s / self.baseline_rps if self.baseline_rps else 0.0

    def latency_ms(self, pct: float) -> float:
        return percentile([s * 1000 for s in self.latencies], pct)

    def baseline_latency_ms(self, pct: float) -> float:
        return percentile([s * 1000 for s in self.baseline_latencies], pct)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    instance = OUT_DIR / "instance"
    instance.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": secrets.token_urlsafe(32),
        "INSTANCE_DIR": str(instance),
        "BROKER_URL": "memory://",  # nothing here sends messages; never touch a real broker
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-w",
        str(WORKERS),
        "-b",
        f"127.0.0.1:{port}",
        "--timeout",
        "120",
        "--graceful-timeout",
        "5",
        # Its default path is shared by every gunicorn of this user on the machine.
        "--no-control-socket",
        "--error-logfile",
        str(log),
        "bench.app:create_bench_app()",
    ]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL)


# On a machine shared with other work, importing the app in each worker can take a while.
READY_LIMIT_SECONDS = 120.0


def _wait_ready(
    proc: subprocess.Popen[bytes], base: str, limit: float = READY_LIMIT_SECONDS
) -> None:
    deadline = clock.monotonic() + limit
    while clock.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {proc.returncode}")
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        clock.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer /healthz within {limit:.0f} s")


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: the master stops its workers and exits
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class _Flow:
    """The client side of the booking flow, shared by the client threads."""

    def __init__(self, base: str, token: str, courses: list[int], deadline: float) -> None:
        self.base = f"{base}/api/v1"
        self.token = token
        self.courses = courses
        self.deadline = deadline
        self.lock = threading.Lock()
        self.next = 0
        self.booked = 0
        self.failures: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.calls: dict[str, list[tuple[float, float]]] = {}

    def _take(self) -> int | None:
        with self.lock:
            if self.next >= len(self.courses) or clock.monotonic() > self.deadline:
                return None
            self.next += 1
            return self.courses[self.next - 1]

    def client(self) -> None:
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {self.token}"
        while (course_id := self._take()) is not None:
            started = clock.perf_counter()
            r = http.post(
                f"{self.base}/courses/{course_id}/booking",
                json={"best": True},
                timeout=REQUEST_TIMEOUT,
            )
            elapsed = clock.perf_counter() - started
            kind = "POST /courses/{id}/booking best"
            _record(self.calls, self.lock, f"{kind} ({r.status_code})", started, r)
            with self.lock:
                if r.status_code == 201:
                    self.booked += 1
                    self.latencies.append(elapsed)
                else:
                    problem = r.json().get("type", "") if r.content else ""
                    self.failures[f"HTTP {r.status_code} {problem}".strip()] += 1


def _record(
    calls: dict[str, list[tuple[float, float]]],
    lock: threading.Lock,
    kind: str,
    started: float,
    response: requests.Response,
) -> None:
    elapsed = clock.perf_counter() - started
    timing = response.headers.get("Server-Timing", "")
    server_ms = float(timing.partition("dur=")[2] or "nan")
    with lock:
        calls.setdefault(kind, []).append((elapsed, server_ms))


def _run_threads(target: Callable[[], None]) -> float:
    threads = [threading.Thread(target=target, daemon=True) for _ in range(CLIENTS)]
    started = clock.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clock.perf_counter() - started


def _baseline(base: str, token: str, seconds: float, out: BookingResult) -> None:
    lock = threading.Lock()
    failures: Counter[str] = Counter()
    latencies: list[float] = []
    count = 0
    deadline = clock.monotonic() + seconds

    def client() -> None:
        nonlocal count
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        mine: list[float] = []
        while clock.monotonic() < deadline:
            started = clock.perf_counter()
            r = http.post(f"{base}/bench/insert", timeout=REQUEST_TIMEOUT)
            elapsed = clock.perf_counter() - started
            _record(out.calls, lock, f"POST /bench/insert ({r.status_code})", started, r)
            if r.status_code == 201:
                mine.append(elapsed)
            else:
                with lock:
                    failures[f"HTTP {r.status_code}"] += 1
        with lock:
            latencies.extend(mine)
            count += len(mine)

    out.baseline_seconds = _run_threads(client)
    out.baseline_requests = count
    out.baseline_failures = dict(failures)
    out.baseline_latencies = latencies


def run(url: str, seed: SeedResult, *, courses: int = COURSES) -> BookingResult:
    out = BookingResult(clients=CLIENTS, workers=WORKERS, courses_wanted=courses)
    engine = make_engine(url)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    log = OUT_DIR / "gunicorn.log"
    log.unlink(missing_ok=True)
    proc: subprocess.Popen[bytes] | None = None
    course_ids: list[int] = []
    try:
        with Session(engine) as session, unit_of_work.transaction(session):
            # A member of the seeded department: the API shows a scheduler only theirs.
            user = accounts.create_user(
                session,
                email="bench@bench.example",
                name="Bench client",
                role="scheduler",
                department_ids=[seed.department_id],
            )
            token = accounts.create_api_token(session, user.id, "bench")
        with engine.begin() as conn:
            patients = insert_patients(conn, seed.department_id, WARMUP_COURSES + courses, "H")
            horizon = seed.last_day + timedelta(days=7)
            course_ids = list(
                conn.execute(
                    sa.insert(Course).returning(Course.id, sort_by_parameter_order=True),
                    [
                        {
                            "patient_id": patient_id,
                            "protocol_id": seed.protocol_ids["liver-5fx"],
                            "status": CourseStatus.DRAFT,
                            "ready_to_treat_on": horizon + timedelta(days=i % READY_SPREAD_DAYS),
                        }
                        for i, patient_id in enumerate(patients)
                    ],
                ).scalars()
            )
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        proc = _start_server(url, port, log)
        _wait_ready(proc, base)

        # Warm-up: every worker imports lazily and fills its SQL compilation cache on first
        # use; one course per client and a few inserts get that out of the measurement.
        warm = _Flow(
            base, token, course_ids[:WARMUP_COURSES], clock.monotonic() + PHASE_LIMIT_SECONDS
        )
        _run_threads(warm.client)
        _baseline(base, token, 2.0, BookingResult(CLIENTS, WORKERS, 0))

        flow = _Flow(
            base, token, course_ids[WARMUP_COURSES:], clock.monotonic() + PHASE_LIMIT_SECONDS
        )
        out.seconds = _run_threads(flow.client)
        out.courses_booked = flow.booked
        out.failures = dict(flow.failures)
        out.latencies = flow.latencies
        out.calls = flow.calls

        _baseline(base, token, min(out.seconds, PHASE_LIMIT_SECONDS), out)
    finally:
        if proc is not None:
            _stop_server(proc)
        if log.exists():
            out.server_log = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    try:
        out.overlaps = overlap_counts(engine)
        bench_patients = sa.select(Patient.id).where(Patient.mrn.like("H%"))
        with engine.connect() as conn:
            out.bench_fractions = conn.scalar(
                sa.select(sa.func.count())
                .select_from(Fraction)
                .where(Fraction.patient_id.in_(bench_patients))
            )
            per_course = (
                sa.select(Course.id)
                .join(Fraction, Fraction.course_id == Course.id)
                .where(Course.patient_id.in_(bench_patients), Course.status == "booked")
                .group_by(Course.id)
                .having(sa.func.count(Fraction.id) == 5)
            )
            out.bench_courses_complete = conn.scalar(
                sa.select(sa.func.count()).select_from(per_course.subquery())
            )
            measured = set(course_ids[WARMUP_COURSES:])
            out.lost_races = sum(
                detail.get("lost_races", 0)
                for subject_id, detail in conn.execute(
                    sa.select(AuditEntry.subject_id, AuditEntry.detail).where(
                        AuditEntry.action == "book", AuditEntry.subject_type == "course"
                    )
                )
                if subject_id in measured
            )
    finally:
        engine.dispose()
    return out
