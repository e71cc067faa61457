"""Reminder benchmarks (issue 3): (a) dispatching 10,000 due reminders end to end, (b) worker
memory with 100,000 reminders scheduled over 30 days, next to a naive ETA-task design.

Everything runs as in production, on loopback: PostgreSQL, Redis as the broker, one Celery
worker (`celery -A worker worker --concurrency=2`, the Procfile's and docker-compose's command:
two pool processes) and one beat with the production tick (DISPATCH_INTERVAL_SECONDS=30), the
Twilio SDK pointed at the Twilio-compatible server of the test suite (TWILIO_BASE_URL). That
server runs in a process of its own, so its request parsing and OpenAPI checks do not share a
GIL with this process; it stamps each CreateMessage with the time it arrived.

Order: start the Twilio-compatible server, the worker, beat and the naive design's worker (on
an idle queue); enqueue the naive design's 100,000 ETA tasks in the background and seed the
database meanwhile (nothing is measured until the enqueueing is over); measure the baseline (the
provider call alone) and the send path in-process; (a) insert 10,000 reminders due over the next
60 s and wait until every one is settled (py-spy samples the worker meanwhile, when it is
installed); wait for the broker to drain; (b) take both idle RSS figures, insert 100,000 future
outbox rows (ours) and let the naive worker consume its queue, wait for two more dispatcher
ticks and for the naive worker to have taken every task, take both loaded RSS figures. Every
wait is bounded. Everything started is stopped (process groups), the Redis databases flushed
and the work directory under bench/out removed at the end, whatever happens in between (it is
kept, with the logs, when something failed); the caller drops the database.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time as clock
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench import memory
from bench.db import OUT_DIR, REPO_ROOT
from bench.seed import _reference_data
from bench.stats import percentile
from bootstrap import make_engine
from notifications.models import Reminder, ReminderStatus
from notifications.outbox import OPEN_STATUSES
from notifications.tasks import SEND_BATCH
from notifications.types import Channel, Kind
from scheduler import heartbeats
from scheduler.models import (
    Course,
    CourseStatus,
    Fraction,
    FractionStatus,
    Patient,
    WorkerHeartbeat,
)

DUE = 10_000
DUE_SPREAD_SECONDS = 60.0
DUE_LEAD_SECONDS = 3.0  # the first reminder is due this long after the rows are written
SCHEDULED = 100_000
SCHEDULED_DAYS = 30
TICK_SECONDS = 30.0
CONCURRENCY = 2
# Databases 13 and 15 belong to the test suite; the naive design uses 11 (bench/memory.py).
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
TARGET_RATE = 200.0
TARGET_P95_LAG = 45.0
MEMORY_FLAT_MB = 20.0
# Requests more than this far apart belong to different bursts (one per dispatcher tick).
BURST_GAP_SECONDS = 2.0
BASELINE_CLIENTS = 2
BASELINE_REQUESTS = 1_000  # per client
# The send path in-process (no Celery): sends after a warm-up, timed, then as many under cProfile.
PROFILE_WARMUP = 50
PROFILE_SENDS = 150
SLOT = timedelta(minutes=10)  # fractions are laid out on a 10-minute grid per linac
FROM_NUMBER = "+15005550006"
PUBLIC_BASE_URL = "https://reminders.example.org"
# Bounded waits.
START_LIMIT = 75.0  # worker and beat up, first tick run
TICKS_AFTER_LOAD = 2
ENQUEUE_LIMIT = 150.0  # (b): writing the naive design's 100,000 ETA tasks
RSS_PLATEAU_MB = 5.0  # (b): three samples 1 s apart within this: the naive worker has settled
LOAD_SETTLE_LIMIT = 150.0  # (b): two ticks after loading, naive worker has taken every task
DISPATCH_LIMIT = DUE_SPREAD_SECONDS + 4 * TICK_SECONDS + 60.0  # (a): every reminder settled
DRAIN_LIMIT = 30.0  # after (a): the broker empty again
BASELINE_LIMIT = 120.0
PROFILE_LIMIT = 180.0
ZONES = [
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Pacific/Honolulu",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Europe/Berlin",
    "Australia/Sydney",
]


@dataclass
class DispatchResult:
    reminders: int
    zone: str
    insert_seconds: float = 0.0
    finished: bool = False
    statuses: dict[str, int] = field(default_factory=dict)
    create_requests: int = 0
    patients_with_requests: int = 0
    duplicates: int = 0  # patients (one reminder each) who got more than one request
    missing: int = 0  # reminders with no request
    non_201: int = 0
    violations: list[str] = field(default_factory=list)
    provider_id_mismatches: int = 0
    other_requests: dict[str, int] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)
    # Reminders never sent count with the lag they had when the wait ended (a lower bound).
    censored_lags: list[float] = field(default_factory=list)
    # (start, end, requests), seconds since the first reminder was due.
    bursts: list[tuple[float, float, int]] = field(default_factory=list)
    last_request: float = 0.0  # seconds since the first reminder was due
    baseline_rate: float = 0.0
    baseline_requests: int = 0
    baseline_failures: int = 0
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0  # the window the CPU figures cover
    profile: ProfileSummary | None = None
    notes: list[str] = field(default_factory=list)
    worker_rss_fresh_mb: float = 0.0  # after the first tick, before (a)
    worker_rss_after_mb: float = 0.0

    @property
    def busy_seconds(self) -> float:
        return sum(end - start for start, end, _ in self.bursts)

    @property
    def rate(self) -> float:
        """Messages per second while the workers had reminders to send (sum over bursts)."""
        busy = self.busy_seconds
        return sum(n for _, _, n in self.bursts) / busy if busy else 0.0

    @property
    def overall_rate(self) -> float:
        """All messages over the time from the first due time to the last request."""
        return self.create_requests / self.last_request if self.last_request else 0.0

    @property
    def ratio(self) -> float:
        return self.rate / self.baseline_rate if self.baseline_rate else 0.0

    def lag(self, pct: float) -> float:
        return percentile(self.lags + self.censored_lags, pct)

    def lag_text(self, pct: float) -> str:
        """The lag percentile; "at least" when some reminders were never sent."""
        return ("at least " if self.censored_lags else "") + f"{self.lag(pct):.1f} s"

    @property
    def verified(self) -> bool:
        return (
            self.finished
            and self.statuses == {ReminderStatus.SENT.value: self.reminders}
            and self.create_requests == self.reminders
            and self.patients_with_requests == self.reminders
            and not self.duplicates
            and not self.missing
            and not self.non_201
            and not self.violations
            and not self.provider_id_mismatches
        )


@dataclass
class ReminderRun:
    dispatch: DispatchResult | None = None
    send_path: SendPathProfile | None = None
    memory: memory.MemoryResult | None = None
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    redis_version: str = ""


# --- the Twilio-compatible server, in a process of its own -----------------------------------


def _fake_twilio_main(conn: Connection, account_sid: str, auth_token: str) -> None:
    """Serve until told to stop; answer "reset", "dump" and "stop" over ``conn``."""
    from tests.fakes.twilio_server import start_fake_twilio  # stdlib only, no pytest

    fake = start_fake_twilio(account_sid, auth_token)
    conn.send(fake.base_url)
    while True:
        command = conn.recv()
        if command == "reset":
            fake.reset()
            conn.send(None)
        elif command == "dump":
            creates = [
                (r.at.timestamp(), r.param("To"), r.status, r.violations)
                for r in fake.create_requests
            ]
            others = Counter(
                f"{r.method} {r.operation or r.path}"
                for r in fake.requests
                if r.operation != "CreateMessage"
            )
            sids = {sid: m["to"] for sid, m in fake.messages.items()}
            conn.send((creates, dict(others), sids))
        else:
            fake.stop()
            conn.send(None)
            return


class FakeTwilioProcess:
    def __init__(self) -> None:
        self.account_sid = "AC" + secrets.token_hex(16)
        self.auth_token = secrets.token_hex(16)
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_fake_twilio_main,
            args=(child, self.account_sid, self.auth_token),
            name="fake-twilio",
            daemon=True,
        )
        self.process.start()
        if not self._conn.poll(30):
            raise RuntimeError("the Twilio-compatible server did not start within 30 s")
        self.base_url: str = self._conn.recv()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def _ask(self, command: str, limit: float = 60.0) -> Any:
        self._conn.send(command)
        if not self._conn.poll(limit):
            raise RuntimeError(f"the Twilio-compatible server did not answer {command!r}")
        return self._conn.recv()

    def reset(self) -> None:
        self._ask("reset")

    def dump(self) -> tuple[list[tuple[float, str, int, list[str]]], dict[str, int], dict]:
        return self._ask("dump")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.process.is_alive():
                self._ask("stop", limit=10)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)


# --- baseline: the provider call alone -------------------------------------------------------


def _baseline_client(
    base_url: str, account_sid: str, auth_token: str, index: int, count: int, barrier: Any
) -> tuple[float, int]:
    """Send ``count`` SMS through the product's channel as fast as one process can."""
    from notifications.channels.base import Outcome, SmsMessage
    from notifications.channels.twilio_sms import (
        DEFAULT_VALIDITY_PERIOD_SECONDS,
        TwilioSmsChannel,
    )
    from notifications.replies import status_callback_url

    channel = TwilioSmsChannel(
        account_sid,
        auth_token,
        from_number=FROM_NUMBER,
        base_url=base_url,
        validity_period_seconds=DEFAULT_VALIDITY_PERIOD_SECONDS,
    )
    body = (
        "Benchmark Radiation Onc: reminder, your visit is Tue 3 Mar, 9:00 AM. "
        "https://reminders.example.org Reply C to confirm, STOP to opt out"
    )
    callback = status_callback_url(PUBLIC_BASE_URL)
    messages = [
        SmsMessage(f"+1415{556 + index}{i:04d}", body, status_callback_url=callback)
        for i in range(count + 20)
    ]
    for message in messages[:20]:  # warm-up: connection, SDK imports
        channel.send_sms(message)
    barrier.wait(timeout=60)
    failures = 0
    started = clock.perf_counter()
    for message in messages[20:]:
        if channel.send_sms(message).outcome != Outcome.ACCEPTED:
            failures += 1
    return clock.perf_counter() - started, failures


def _baseline(fake: FakeTwilioProcess) -> tuple[float, int, int]:
    """(requests/s, requests, failures) of BASELINE_CLIENTS processes calling the channel."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(BASELINE_CLIENTS) as pool:
        barrier = manager.Barrier(BASELINE_CLIENTS)
        jobs = [
            (fake.base_url, fake.account_sid, fake.auth_token, i, BASELINE_REQUESTS, barrier)
            for i in range(BASELINE_CLIENTS)
        ]
        results = pool.starmap_async(_baseline_client, jobs).get(timeout=BASELINE_LIMIT)
    seconds = max(s for s, _ in results)
    total = BASELINE_CLIENTS * BASELINE_REQUESTS
    return total / seconds, total, sum(f for _, f in results)


# --- seeding -----------------------------------------------------------------------------------


def _zone_in_window(now: datetime) -> str:
    """A patient time zone where the whole run falls inside the default message window.

    DAY_BEFORE and SAME_DAY messages are held back outside 08:00-21:00 in the patient's zone; the
    benchmark runs at any hour, so its patients live where it is daytime now.
    """
    for name in ZONES:
        zone = ZoneInfo(name)
        start, end = now.astimezone(zone), (now + timedelta(minutes=30)).astimezone(zone)
        if start.date() == end.date() and start.time() >= time(9) and end.time() <= time(20):
            return name
    raise RuntimeError("no zone in the list has daytime now")  # cannot happen: they span 24 h


@dataclass(frozen=True)
class _Fraction:
    id: int
    course_id: int
    patient_id: int
    number: int
    starts_at: datetime
    linac_name: str


def _insert_courses(
    conn: sa.Connection,
    *,
    department_id: int,
    protocol_id: int,
    linacs: list[tuple[int, str]],
    patients: int,
    fractions_each: int,
    phone: str,
    first_slot: datetime,
    zone: str,
    prefix: str,
    now: datetime,
) -> list[_Fraction]:
    """Patients with SMS and email consent, one booked course each, its fractions on the grid.

    Fraction ``number`` of course ``c`` takes grid slot (number - 1) * patients + c, slot k on
    linac k % len(linacs): no two fractions overlap on a linac or for a patient.
    """
    patient_ids = list(
        conn.execute(
            sa.insert(Patient).returning(Patient.id, sort_by_parameter_order=True),
            [
                {
                    "department_id": department_id,
                    "mrn": f"{prefix}{i:06d}",
                    "given_name": "Alexandra",
                    "family_name": f"Bench {prefix}{i}",
                    "phone_e164": phone.format(i),
                    "email": f"patient.{prefix.lower()}{i}@example.org",
                    "language": "en",
                    "timezone": zone,
                    "sms_consent": True,
                    "sms_consent_at": now,
                    "sms_opted_out": False,
                    "email_consent": True,
                    "created_at": now,
                }
                for i in range(patients)
            ],
        ).scalars()
    )
    course_ids = list(
        conn.execute(
            sa.insert(Course).returning(Course.id, sort_by_parameter_order=True),
            [
                {
                    "patient_id": patient_id,
                    "protocol_id": protocol_id,
                    "status": CourseStatus.BOOKED.value,
                    "priority": 3,
                    "notes": "",
                    "plan_approved_at": now,
                    "physics_qa_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for patient_id in patient_ids
            ],
        ).scalars()
    )
    planned = []
    for number in range(1, fractions_each + 1):
        for c in range(patients):
            slot = (number - 1) * patients + c
            linac_id, linac_name = linacs[slot % len(linacs)]
            starts = first_slot + (slot // len(linacs)) * SLOT
            planned.append((c, number, linac_id, linac_name, starts))
    ids = conn.execute(
        sa.insert(Fraction).returning(Fraction.id, sort_by_parameter_order=True),
        [
            {
                "course_id": course_ids[c],
                "patient_id": patient_ids[c],
                "linac_id": linac_id,
                "number": number,
                "starts_at": starts,
                "ends_at": starts + SLOT,
                "status": FractionStatus.BOOKED.value,
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
            for c, number, linac_id, _, starts in planned
        ],
    ).scalars()
    return [
        _Fraction(fid, course_ids[c], patient_ids[c], number, starts, name)
        for fid, (c, number, _, name, starts) in zip(ids, planned, strict=True)
    ]


def _reminder_row(
    f: _Fraction, kind: Kind, channel: Channel, due_at: datetime, now: datetime
) -> dict[str, Any]:
    """An outbox row as notifications.policy.plan_for_fraction would plan it."""
    return {
        "dedupe_key": f"fraction:{f.id}:{kind}:v1:{channel}",
        "kind": kind.value,
        "channel": channel.value,
        "patient_id": f.patient_id,
        "course_id": f.course_id,
        "fraction_id": f.id,
        "fraction_version": 1,
        "due_at": due_at,
        "status": ReminderStatus.PENDING.value,
        "context": {
            "fraction_number": f.number,
            "starts_at": f.starts_at.isoformat(),
            "linac_name": f.linac_name,
            "awaiting_readiness": False,
        },
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


@dataclass
class _Seeded:
    due: list[_Fraction]  # (a): one fraction per patient, one SMS reminder each
    scheduled: list[_Fraction]  # (b): four reminders per fraction
    profiled: list[_Fraction]  # the in-process profile of the send path, like (a)


def _seed(engine: sa.Engine, zone: str, now: datetime) -> _Seeded:
    with Session(engine) as session:
        department, linac_rows, protocol_ids = _reference_data(session)
        department_id = department.id
        linacs = [(linac.id, linac.name) for linac in linac_rows]
    scheduled_patients = SCHEDULED // 20  # 5 fractions each, 4 reminders per fraction
    # (b)'s fractions start a day and an hour from now (its first DAY_BEFORE reminder is due in an
    # hour) and fill about 29 days; (a)'s come after them.
    first_b = (now + timedelta(days=1, hours=1)).replace(second=0, microsecond=0)
    slots_b = -(-scheduled_patients * 5 // len(linacs))
    first_a = first_b + slots_b * SLOT
    with engine.begin() as conn:
        scheduled = _insert_courses(
            conn,
            department_id=department_id,
            protocol_id=protocol_ids["liver-5fx"],
            linacs=linacs,
            patients=scheduled_patients,
            fractions_each=5,
            phone="+1646{:07d}",
            first_slot=first_b,
            zone=zone,
            prefix="S",
            now=now,
        )
        due = _insert_courses(
            conn,
            department_id=department_id,
            protocol_id=protocol_ids["spine-1fx"],
            linacs=linacs,
            patients=DUE,
            fractions_each=1,
            phone="+1212{:07d}",
            first_slot=first_a,
            zone=zone,
            prefix="D",
            now=now,
        )
        profiled = _insert_courses(
            conn,
            department_id=department_id,
            protocol_id=protocol_ids["spine-1fx"],
            linacs=linacs,
            patients=PROFILE_WARMUP + 2 * PROFILE_SENDS,
            fractions_each=1,
            phone="+1305{:07d}",
            first_slot=first_a + -(-DUE // len(linacs)) * SLOT,
            zone=zone,
            prefix="P",
            now=now,
        )
        conn.execute(sa.text("ANALYZE"))
    return _Seeded(due=due, scheduled=scheduled, profiled=profiled)


def _insert_scheduled(engine: sa.Engine, fractions: list[_Fraction]) -> float:
    """SCHEDULED pending rows: DAY_BEFORE (a day before), SAME_DAY (2 h before), SMS and email."""
    started = clock.perf_counter()
    now = datetime.now(UTC)
    rows = [
        _reminder_row(f, kind, channel, f.starts_at - before, now)
        for f in fractions
        for kind, before in (
            (Kind.DAY_BEFORE, timedelta(days=1)),
            (Kind.SAME_DAY, timedelta(hours=2)),
        )
        for channel in (Channel.SMS, Channel.EMAIL)
    ]
    assert len(rows) == SCHEDULED
    with engine.begin() as conn:
        for i in range(0, len(rows), 20_000):
            conn.execute(sa.insert(Reminder), rows[i : i + 20_000])
    return clock.perf_counter() - started


# --- processes ---------------------------------------------------------------------------------


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the pool is stopped with it
        )


def _stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL to the whole process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _heartbeat(engine: sa.Engine) -> datetime | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(WorkerHeartbeat.last_seen_at).where(WorkerHeartbeat.name == heartbeats.WORKER)
        ).scalar_one_or_none()


def _wait_for_tick(
    engine: sa.Engine, after: datetime | None, limit: float, procs: dict[str, Any]
) -> datetime:
    """The next beat tick (heartbeat newer than ``after``), within ``limit`` seconds."""
    deadline = clock.monotonic() + limit
    while clock.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"celery {name} exited with status {proc.returncode}")
        stamp = _heartbeat(engine)
        if stamp is not None and (after is None or stamp > after):
            return stamp
        clock.sleep(0.5)
    raise RuntimeError(f"no beat tick within {limit:.0f} s")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _own_cpu() -> float:
    """This process alone (its descendants are the worker, beat and the Twilio server)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


def _postgres_cpu(engine: sa.Engine) -> dict[int, float]:
    """CPU seconds of every PostgreSQL backend connected to the benchmark's database."""
    with engine.connect() as conn:
        pids = conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalars()
        return {pid: _cpu_seconds(pid) for pid in pids}


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class _CpuMeter:
    """CPU seconds spent by each part of the pipeline over a window."""

    def __init__(self, engine: sa.Engine, client: redis.Redis, pids: dict[str, int]) -> None:
        self.engine, self.client, self.pids = engine, client, pids
        self.start_wall = clock.monotonic()
        self.start = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        self.start_pg = _postgres_cpu(engine)
        self.start_redis = _redis_cpu(client)
        self.start_self = _own_cpu()

    def stop(self) -> tuple[dict[str, float], float]:
        out = {name: _cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}
        pg = _postgres_cpu(self.engine)
        out["postgresql (backends of the benchmark database)"] = sum(
            seconds - self.start_pg.get(pid, 0.0) for pid, seconds in pg.items()
        )
        out["redis-server (whole server, shared)"] = _redis_cpu(self.client) - self.start_redis
        out["benchmark process (polling)"] = _own_cpu() - self.start_self
        return out, clock.monotonic() - self.start_wall


# --- the send path alone, in-process: CPU per message and where it goes -----------------------

# Cumulative CPU of the steps of one send (cProfile with a CPU clock); "file" ends the path.
SEND_STEPS = [
    ("send_reminders, the task body", "notifications/tasks.py", "send_reminders"),
    ("prepare: load the batch, check, render", "notifications/sending.py", "prepare"),
    ("  outbox.course_snapshot", "notifications/outbox.py", "course_snapshot"),
    ("  links.new_patient_link", "scheduler/links.py", "new_patient_link"),
    ("  template_store.load_overrides", "notifications/template_store.py", "load_overrides"),
    ("  rendering.message_context", "notifications/rendering.py", "message_context"),
    ("  rendering.render", "notifications/rendering.py", "render"),
    ("mark_started: compare-and-set per message", "notifications/sending.py", "mark_started"),
    ("deliver_one: the Twilio SDK call", "notifications/sending.py", "deliver_one"),
    ("record: write the batch's outcomes", "notifications/sending.py", "record"),
    ("SQLAlchemy Session.commit (all)", "sqlalchemy/orm/session.py", "commit"),
    (
        "SQLAlchemy lazy loads (relationship attributes)",
        "sqlalchemy/orm/strategies.py",
        "_emit_lazyload",
    ),
    ("connection pool checkout (incl. pre-ping)", "sqlalchemy/pool/base.py", "_checkout"),
]


@dataclass
class SendPathProfile:
    messages: int = 0
    wall_ms: float = 0.0  # per message, not profiled
    cpu_ms: float = 0.0
    statements: float = 0.0  # SQL statements per message
    profiled: int = 0
    # (label, CPU ms, wall ms) per message, timed around each step without a profiler.
    step_times: list[tuple[str, float, float]] = field(default_factory=list)
    profiled_cpu_ms: float = 0.0  # per message, under cProfile (inflated; read the shares)
    steps: list[tuple[str, float]] = field(default_factory=list)
    groups: list[tuple[str, float]] = field(default_factory=list)
    top: list[tuple[str, float]] = field(default_factory=list)


# Steps of one send timed directly (CPU and wall clock around each call): (label, module, name).
# The module attribute is replaced by a timing wrapper in the child process only; callers look
# it up at call time, so the product code runs unchanged.
TIMED_STEPS = [
    ("prepare: load the batch, check, render", "notifications.sending", "prepare"),
    ("  outbox.course_snapshot", "notifications.outbox", "course_snapshot"),
    ("  links.new_patient_link", "scheduler.links", "new_patient_link"),
    ("  template_store.load_overrides", "notifications.template_store", "load_overrides"),
    ("  rendering.message_context", "notifications.rendering", "message_context"),
    ("  rendering.render", "notifications.rendering", "render"),
    ("mark_started: compare-and-set per message", "notifications.sending", "mark_started"),
    ("deliver_one: the Twilio SDK call", "notifications.sending", "deliver_one"),
    ("record: write the batch's outcomes", "notifications.sending", "record"),
]


def _time_steps() -> dict[str, list[float]]:
    """Wrap each TIMED_STEPS function that exists; returns label -> [CPU s, wall s, calls]."""
    import functools
    import importlib

    spent: dict[str, list[float]] = {}
    for label, module_name, name in TIMED_STEPS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        function = getattr(module, name, None)
        if function is None:
            continue
        times = spent.setdefault(label, [0.0, 0.0, 0.0])

        def timed(*args: Any, _f: Any = function, _t: list[float] = times, **kwargs: Any) -> Any:
            cpu, wall = clock.process_time(), clock.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                _t[0] += clock.process_time() - cpu
                _t[1] += clock.perf_counter() - wall
                _t[2] += 1

        setattr(module, name, functools.wraps(function)(timed))
    return spent


def _send_path_child(env: dict[str, str], ids: list[int], warmup: int) -> SendPathProfile:
    """In a fresh process with the worker's environment, send claimed reminders like the task.

    ``ids``: claimed rows; the first ``warmup`` warm up, then half are timed, half profiled,
    each in batches of the dispatcher's size (``tasks.SEND_BATCH``).
    """
    import cProfile
    import pstats

    os.environ.update(env)
    from notifications import tasks

    def send_all(chunk: list[int]) -> None:
        for first in range(0, len(chunk), tasks.SEND_BATCH):
            tasks.send_reminders.run(chunk[first : first + tasks.SEND_BATCH])

    statements = 0

    def count(*_args: Any, **_kwargs: Any) -> None:
        nonlocal statements
        statements += 1

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    spent = _time_steps()
    sends = (len(ids) - warmup) // 2
    send_all(ids[:warmup])
    out = SendPathProfile(messages=sends, profiled=sends)
    statements = 0
    for times in spent.values():
        times[:] = [0.0, 0.0, 0.0]
    wall, cpu = clock.perf_counter(), clock.process_time()
    send_all(ids[warmup : warmup + sends])
    out.wall_ms = (clock.perf_counter() - wall) * 1000 / sends
    out.cpu_ms = (clock.process_time() - cpu) * 1000 / sends
    out.statements = statements / sends
    out.step_times = [
        (label, cpu_s * 1000 / sends, wall_s * 1000 / sends)
        for label, (cpu_s, wall_s, calls) in spent.items()
        if calls  # e.g. no patient link is issued when the task passes one
    ]
    profiler = cProfile.Profile(clock.process_time)
    profiler.enable()
    send_all(ids[warmup + sends :])
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in stats.values())
    out.profiled_cpu_ms = total * 1000 / sends
    for label, path, function in SEND_STEPS:
        matches = [
            ct
            for (file, _, name), (_, _, _, ct, _) in stats.items()
            if name == function and file.endswith(path)
        ]
        if matches:
            out.steps.append((label, min(1.0, max(matches) / total)))
    groups: Counter[str] = Counter()
    top: Counter[str] = Counter()
    for (file, line, name), (_, _, tt, _, _) in stats.items():
        frame = f"{name} ({file}:{line})"
        groups[_group(frame)] += tt
        top[_short_frame(frame)] += tt
    out.groups = [(name, t / total) for name, t in groups.most_common()]
    out.top = [(name, t / total) for name, t in top.most_common(12)]
    return out


def _profile_send_path(engine: sa.Engine, seeded: _Seeded, env: dict[str, str]) -> SendPathProfile:
    """The send path in a child process, on rows written as already claimed.

    Claimed rows with a lease well in the future: the running worker's dispatcher never takes
    them, so the child sends every one of them, batch after batch.
    """
    now = datetime.now(UTC)
    rows = [
        {
            **_reminder_row(f, Kind.SAME_DAY, Channel.SMS, now - timedelta(seconds=1), now),
            "status": ReminderStatus.CLAIMED.value,
            "lease_until": now + timedelta(hours=1),
        }
        for f in seeded.profiled
    ]
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                sa.insert(Reminder).returning(Reminder.id, sort_by_parameter_order=True), rows
            ).scalars()
        )
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply_async(_send_path_child, (env, ids, PROFILE_WARMUP)).get(
            timeout=PROFILE_LIMIT
        )


# --- where the worker's time goes: py-spy, when it is installed -------------------------------

# Own time (the sampled frame itself) by where the code lives; first match wins.
PROFILE_GROUPS = [
    ("SQLAlchemy", ("/sqlalchemy/",)),
    ("psycopg (PostgreSQL driver)", ("/psycopg",)),
    ("Jinja2, MarkupSafe (templates)", ("/jinja2/", "/markupsafe/")),
    ("Twilio SDK", ("/twilio/",)),
    ("requests, urllib3 (HTTP client)", ("/requests/", "/urllib3/")),
    ("Celery, kombu, billiard, vine (task machinery)", ("/celery/", "/kombu/", "/billiard/")),
    ("redis client", ("/redis/",)),
    ("other libraries", ("site-packages",)),
    ("logging", ("/logging/",)),
    ("other stdlib (http.client, socket, zoneinfo, json, ...)", ("/lib/python3",)),
]
OUR_CODE = "our code (notifications/, scheduler/, bootstrap.py, config.py)"
# Cumulative share of the pool processes' samples (a frame anywhere in the stack).
PROFILE_STEPS = [
    ("send task: send_reminders", "send_reminders (", "/notifications/tasks.py"),
    ("  prepare: load the batch, check, render", "prepare (", "/notifications/sending.py"),
    ("    outbox.course_snapshot", "course_snapshot (", "/notifications/outbox.py"),
    ("    rendering.message_context + render", "render", "/notifications/rendering.py"),
    ("  mark_started: compare-and-set per message", "mark_started (", "/notifications/sending.py"),
    ("  deliver_one: the Twilio call", "deliver_one (", "/notifications/sending.py"),
    ("  record: write the batch's outcomes", "record (", "/notifications/sending.py"),
    ("dispatcher tick: claim_due + enqueue", "dispatch_due_reminders (", "/notifications/tasks.py"),
]


def _py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


@dataclass
class ProfileSummary:
    samples: int = 0
    main_samples: int = 0  # the worker's main process: consumer, hands messages to the pool
    pool_samples: int = 0
    rate: int = 0
    groups: list[tuple[str, float]] = field(default_factory=list)  # share of all samples
    steps: list[tuple[str, float]] = field(default_factory=list)  # share of pool samples
    top: list[tuple[str, float]] = field(default_factory=list)  # leaf functions, all samples


class _Profiler:
    """py-spy attached to the worker's process tree (non-blocking: it never pauses them)."""

    RATE = 50

    def __init__(self, binary: str, pid: int, output: Path, limit: float) -> None:
        self.pid, self.output = pid, output
        self.proc = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                "--nonblocking",
                "--function",
                "--full-filenames",
                "--rate",
                str(self.RATE),
                "--format",
                "raw",
                "--duration",
                str(int(limit)),
                "--output",
                str(output),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> ProfileSummary | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output and exits
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                _stop(self.proc, grace=0)
        if not self.output.exists():
            return None
        return summarise_profile(self.output, self.pid, self.RATE)


def summarise_profile(path: Path, main_pid: int, rate: int) -> ProfileSummary:
    """Own time by library and cumulative time of the pipeline's steps, from py-spy raw output."""
    out = ProfileSummary(rate=rate)
    groups: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # With --subprocesses a stack starts with the process chain: main;child;frames.
        frames = stack.split(";")
        process = ""
        while frames and frames[0].startswith("process "):
            process = frames.pop(0)
        if not frames:
            continue
        out.samples += count
        is_main = process.startswith(f"process {main_pid}:")
        if is_main:
            out.main_samples += count
        else:
            out.pool_samples += count
            for name, function, where in PROFILE_STEPS:
                if any(f.startswith(function) and where in f for f in frames):
                    steps[name] += count
        leaf = frames[-1]
        leaves[_short_frame(leaf)] += count
        groups[_group(leaf)] += count
    if out.samples:
        out.groups = [(name, n / out.samples) for name, n in groups.most_common()]
        out.top = [(name, n / out.samples) for name, n in leaves.most_common(15)]
    if out.pool_samples:
        out.steps = [(name, steps[name] / out.pool_samples) for name, _, _ in PROFILE_STEPS]
    return out


def _group(frame: str) -> str:
    where = frame.partition(" (")[2]
    if where.startswith(str(REPO_ROOT) + "/") and "site-packages" not in where:
        return OUR_CODE
    for name, needles in PROFILE_GROUPS:
        if any(n in where for n in needles):
            return name
    return "other (interpreter, C code)"


def _short_frame(frame: str) -> str:
    """ "name (/long/path/site-packages/pkg/mod.py:12)" -> "name (pkg/mod.py:12)"."""
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "/lib/python3.11/", str(REPO_ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where}" if where else name


# --- (b) memory ---------------------------------------------------------------------------------


def _wait_for_log(proc: subprocess.Popen[bytes], log: Path, text: str, limit: float) -> None:
    deadline = clock.monotonic() + limit
    while clock.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{log.stem} exited with status {proc.returncode}")
        if text in log.read_text(errors="replace"):
            return
        clock.sleep(0.25)
    raise RuntimeError(f"{log.stem} not ready within {limit:.0f} s")


def _drained(client: redis.Redis, limit: float) -> bool:
    """Wait until the broker holds no task, queued or taken; then let the last one finish."""
    deadline = clock.monotonic() + limit
    while clock.monotonic() < deadline:
        if client.llen("celery") == 0 and client.hlen("unacked") == 0:
            clock.sleep(2.0)
            return True
        clock.sleep(0.5)
    return False


def _measure_memory(
    engine: sa.Engine,
    seeded: _Seeded,
    worker: subprocess.Popen[bytes],
    beat: subprocess.Popen[bytes],
    naive_worker: subprocess.Popen[bytes],
    naive_client: redis.Redis,
    enqueued: tuple[int, float],
) -> memory.MemoryResult:
    """Both designs idle, then loaded with SCHEDULED reminders; the naive tasks already wait
    in Redis (enqueued while nothing was measured) and are handed to its worker here."""
    result = memory.MemoryResult(reminders=SCHEDULED, span_days=SCHEDULED_DAYS, samples=5)
    naive_count, naive_load = enqueued
    if naive_count < SCHEDULED:
        result.notes.append(
            f"naive: only {naive_count:,} of {SCHEDULED:,} tasks enqueued within the "
            f"{ENQUEUE_LIMIT:.0f} s allowed (a busy machine); its row is for those"
        )
    pids = {"ours": worker.pid, "naive": naive_worker.pid}
    idle = memory.sample_rss(pids)
    print(
        f"  idle RSS: ours {idle['ours']:.1f} MB, naive {idle['naive']:.1f} MB; loading ...",
        flush=True,
    )
    ours_load = _insert_scheduled(engine, seeded.scheduled)
    written_at = datetime.now(UTC)
    loaded_at = clock.monotonic()
    if memory.start_consuming() != 1:
        raise RuntimeError("the naive worker did not answer add_consumer")
    naive_started = clock.monotonic()
    print(
        f"  inserted {SCHEDULED} outbox rows in {ours_load:.1f} s; the naive worker is taking "
        f"its {naive_count} ETA tasks ...",
        flush=True,
    )
    # Ours: TICKS_AFTER_LOAD dispatcher ticks after the rows were written (beat sends the
    # heartbeat with each dispatch: a heartbeat one interval after the writing means two).
    # Naive: every task taken off the queue and RSS no longer growing.
    deadline = naive_started + LOAD_SETTLE_LIMIT
    procs = {"worker": worker, "beat": beat, "naive worker": naive_worker}
    enough_ticks = written_at + timedelta(seconds=TICK_SECONDS * (TICKS_AFTER_LOAD - 1))
    ticks = 0
    naive_done = False
    naive_settle = 0.0
    naive_history: list[float] = []
    backlog = (0, 0)
    while clock.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}")
        stamp = _heartbeat(engine)
        if stamp is not None and stamp > written_at:
            ticks = 1 + int((stamp - written_at).total_seconds() // TICK_SECONDS)
        if not naive_done:
            backlog = memory.naive_backlog(naive_client)
            naive_history.append(memory.tree_rss_mb(naive_worker.pid)[0])
            recent = naive_history[-3:]
            naive_done = (
                backlog[0] == 0 and len(recent) == 3 and max(recent) - min(recent) < RSS_PLATEAU_MB
            )
            naive_settle = clock.monotonic() - naive_started
        if naive_done and stamp is not None and stamp > enough_ticks:
            break
        clock.sleep(1.0)
    if not naive_done:
        result.notes.append(
            f"naive: not settled within {LOAD_SETTLE_LIMIT:.0f} s (queue {backlog[0]}, "
            f"unacknowledged {backlog[1]}); measured as it was"
        )
    if ticks < TICKS_AFTER_LOAD:
        result.notes.append(f"ours: only {ticks} dispatcher ticks after loading")
    loaded = memory.sample_rss(pids)
    backlog = memory.naive_backlog(naive_client)
    with engine.connect() as conn:
        by_status = conn.execute(
            sa.select(Reminder.status, sa.func.count())
            .where(Reminder.due_at > datetime.now(UTC))
            .group_by(Reminder.status)
        ).all()
    result.rows = [
        memory.MemoryRow(
            design="ours: outbox rows in PostgreSQL, beat claims due rows",
            idle_mb=idle["ours"],
            loaded_mb=loaded["ours"],
            processes=memory.tree_rss_mb(worker.pid)[1],
            loaded=SCHEDULED,
            load_seconds=ours_load,
            settle_seconds=clock.monotonic() - loaded_at,
            detail=f"{ticks} dispatcher ticks after the rows were written; future outbox rows "
            "by status: " + ", ".join(f"{status} {n}" for status, n in by_status),
        ),
        memory.MemoryRow(
            design="naive: one Celery task per reminder, apply_async(eta=due)",
            idle_mb=idle["naive"],
            loaded_mb=loaded["naive"],
            processes=memory.tree_rss_mb(naive_worker.pid)[1],
            loaded=naive_count,
            load_seconds=naive_load,
            settle_seconds=naive_settle,
            detail=f"Redis: {backlog[0]} in the queue, {backlog[1]} taken by the worker and "
            "unacknowledged",
        ),
    ]
    return result


# --- (a) dispatch -----------------------------------------------------------------------------


def _bursts(times: list[float]) -> list[tuple[float, float, int]]:
    out: list[tuple[float, float, int]] = []
    if not times:
        return out
    start = prev = times[0]
    count = 0
    for t in times:
        if t - prev > BURST_GAP_SECONDS:
            out.append((start, prev, count))
            start, count = t, 0
        count += 1
        prev = t
    out.append((start, prev, count))
    return out


def _wait_settled(
    engine: sa.Engine,
    ours: sa.ColumnElement[bool],
    procs: dict[str, subprocess.Popen[bytes]],
    result: DispatchResult,
) -> dict[str, int]:
    """Poll (a)'s rows until none is pending or claimed, for at most DISPATCH_LIMIT seconds."""
    open_statuses = {ReminderStatus.PENDING.value, ReminderStatus.CLAIMED.value}
    deadline = clock.monotonic() + DISPATCH_LIMIT
    statuses: dict[str, int] = {}
    last_report = 0.0
    while clock.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"celery {name} exited with status {proc.returncode}")
        with engine.connect() as conn:
            statuses = dict(
                conn.execute(
                    sa.select(Reminder.status, sa.func.count())
                    .where(ours)
                    .group_by(Reminder.status)
                ).all()
            )
        if not open_statuses & statuses.keys():
            result.finished = True
            break
        if clock.monotonic() - last_report > 15:
            last_report = clock.monotonic()
            print(f"    {dict(sorted(statuses.items()))}", flush=True)
        clock.sleep(0.5)
    return statuses


def _dispatch(
    engine: sa.Engine,
    seeded: _Seeded,
    fake: FakeTwilioProcess,
    result: DispatchResult,
    procs: dict[str, subprocess.Popen[bytes]],
    meter_pids: dict[str, int],
    client: redis.Redis,
    profile_to: Path | None,
) -> None:
    fake.reset()
    started = clock.perf_counter()
    now = datetime.now(UTC)
    first_due = now + timedelta(seconds=DUE_LEAD_SECONDS)
    step = timedelta(seconds=DUE_SPREAD_SECONDS) / DUE
    due_by_phone: dict[str, float] = {}
    rows = []
    with engine.connect() as conn:
        # dict(result) would take a Result for a mapping (it has keys()): pass rows.
        phones = dict(
            conn.execute(
                sa.select(Patient.id, Patient.phone_e164).where(
                    Patient.id.in_([f.patient_id for f in seeded.due])
                )
            ).all()
        )
    for i, f in enumerate(seeded.due):
        due_at = first_due + i * step
        rows.append(_reminder_row(f, Kind.SAME_DAY, Channel.SMS, due_at, now))
        due_by_phone[phones[f.patient_id]] = due_at.timestamp()
    meter = _CpuMeter(engine, client, meter_pids)
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                sa.insert(Reminder).returning(Reminder.id, sort_by_parameter_order=True), rows
            ).scalars()
        )
    result.insert_seconds = clock.perf_counter() - started
    binary = _py_spy() if profile_to is not None else None
    profiler = None
    if binary is not None and profile_to is not None:
        profiler = _Profiler(binary, procs["worker"].pid, profile_to, DISPATCH_LIMIT + 30)
    elif profile_to is not None:
        result.notes.append("not profiled: py-spy is not installed (pip install py-spy)")
    print(
        f"  {DUE} reminders written in {result.insert_seconds:.1f} s, due from "
        f"{first_due:%H:%M:%S} over {DUE_SPREAD_SECONDS:.0f} s; waiting ...",
        flush=True,
    )
    ours = Reminder.id.between(min(ids), max(ids))
    try:
        statuses = _wait_settled(engine, ours, procs, result)
    finally:
        waited_until = clock.time()
        result.cpu_seconds, result.wall_seconds = meter.stop()
        if profiler is not None:
            result.profile = profiler.stop()
    result.statuses = statuses
    result.worker_rss_after_mb = memory.tree_rss_mb(procs["worker"].pid)[0]

    # The sent rows first, then the server's records: each of these rows was marked sent after
    # its request had arrived, so a row sent while we look cannot be missing from the dump.
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(Reminder.status, Reminder.provider_id, Patient.phone_e164)
            .join(Patient, Patient.id == Reminder.patient_id)
            .where(ours, Reminder.status == ReminderStatus.SENT.value)
        ).all()
    creates, others, sids = fake.dump()
    result.other_requests = others
    result.create_requests = len(creates)
    per_phone = Counter(to for _, to, _, _ in creates)
    result.patients_with_requests = len(per_phone.keys() & due_by_phone.keys())
    result.duplicates = sum(1 for n in per_phone.values() if n > 1)
    result.missing = len(due_by_phone.keys() - per_phone.keys())
    result.non_201 = sum(1 for _, _, status, _ in creates if status != 201)
    result.violations = [v for _, _, _, vs in creates for v in vs]
    first_at: dict[str, float] = {}
    for at, to, _, _ in creates:
        first_at.setdefault(to, at)
    result.lags = [at - due_by_phone[to] for to, at in first_at.items() if to in due_by_phone]
    result.censored_lags = [
        waited_until - due_by_phone[to] for to in due_by_phone.keys() - first_at.keys()
    ]
    base = first_due.timestamp()
    times = sorted(at - base for at, _, _, _ in creates)
    result.bursts = _bursts(times)
    result.last_request = times[-1] if times else 0.0
    # A sent row must carry the SID the server gave that patient's message.
    result.provider_id_mismatches = sum(
        1 for _, sid, phone in stored if sid is None or sids.get(sid) != phone
    )


# --- the whole run ------------------------------------------------------------------------------


def run(pg_url: str, *, profile: bool = True) -> ReminderRun:
    """Both reminder benchmarks on the (migrated, empty) PostgreSQL database at ``pg_url``."""
    run_started = clock.perf_counter()
    out = ReminderRun()
    work = OUT_DIR / f"reminders_{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True, exist_ok=True)
    client = redis.Redis.from_url(REDIS_URL)
    naive_client = redis.Redis.from_url(memory.NAIVE_BROKER_URL)
    client.flushdb()
    naive_client.flushdb()
    out.redis_version = str(client.info("server")["redis_version"])
    engine = make_engine(pg_url)
    fake: FakeTwilioProcess | None = None
    enqueue: memory.EtaEnqueue | None = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: work / f"{name}.log" for name in ("worker", "beat", "naive-worker")}
    try:
        fake = FakeTwilioProcess()
        env = _worker_env(pg_url, work, fake)
        print(
            "  starting worker, beat and the naive worker; enqueueing the naive design's "
            f"{SCHEDULED} ETA tasks and seeding meanwhile ...",
            flush=True,
        )
        procs.update(_start_celery(env, work, logs))
        _wait_for_log(procs["naive-worker"], logs["naive-worker"], " ready.", 60.0)
        # Nothing is measured until the enqueueing is over: it would compete for the cores.
        first_due = datetime.now(UTC) + timedelta(hours=1)
        enqueue = memory.EtaEnqueue(
            SCHEDULED,
            first_due,
            timedelta(days=SCHEDULED_DAYS) - timedelta(hours=1),
            limit=ENQUEUE_LIMIT,
        )
        now = datetime.now(UTC)
        zone = _zone_in_window(now)
        seeded = _seed(engine, zone, now)
        _wait_for_tick(engine, None, START_LIMIT, procs)
        enqueued = enqueue.wait()
        enqueue = None
        print(
            f"  patients in {zone}; {enqueued[0]} ETA tasks enqueued in {enqueued[1]:.0f} s",
            flush=True,
        )
        dispatch = DispatchResult(reminders=DUE, zone=zone)
        print(f"  baseline: the provider call alone, {BASELINE_CLIENTS} processes ...", flush=True)
        rate, total, failures = _baseline(fake)
        dispatch.baseline_rate, dispatch.baseline_requests = rate, total
        dispatch.baseline_failures = failures
        print(f"    {rate:.0f} requests/s", flush=True)
        print(
            f"  the send path in-process: {PROFILE_SENDS} sends timed, {PROFILE_SENDS} "
            "profiled ...",
            flush=True,
        )
        try:
            out.send_path = _profile_send_path(engine, seeded, env)
            print(
                f"    {out.send_path.cpu_ms:.1f} CPU ms, {out.send_path.statements:.1f} SQL "
                "statements per message",
                flush=True,
            )
        except Exception as exc:  # the benchmarks do not depend on it
            out.errors.append(f"send path profile: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        dispatch.worker_rss_fresh_mb = memory.sample_rss({"w": procs["worker"].pid})["w"]

        print(f"(a) dispatch: {DUE} reminders due over {DUE_SPREAD_SECONDS:.0f} s ...", flush=True)
        meter_pids = {
            f"celery worker (main + {CONCURRENCY} pool processes)": procs["worker"].pid,
            "celery beat": procs["beat"].pid,
            "Twilio-compatible server": fake.pid,
        }
        try:
            _dispatch(
                engine,
                seeded,
                fake,
                dispatch,
                {"worker": procs["worker"], "beat": procs["beat"]},
                meter_pids,
                client,
                work / "py-spy.raw" if profile else None,
            )
        except Exception as exc:  # keep going: (b) does not depend on (a)
            out.errors.append(f"(a) {type(exc).__name__}: {exc}")
            traceback.print_exc()
        out.dispatch = dispatch
        _settle_dispatch(engine, client, dispatch)

        print(
            f"(b) memory: {SCHEDULED} reminders over {SCHEDULED_DAYS} days, ours vs naive ...",
            flush=True,
        )
        try:
            out.memory = _measure_memory(
                engine,
                seeded,
                procs["worker"],
                procs["beat"],
                procs["naive-worker"],
                naive_client,
                enqueued,
            )
        except Exception as exc:
            out.errors.append(f"(b) {type(exc).__name__}: {exc}")
            traceback.print_exc()
    except Exception as exc:
        out.errors.append(f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    finally:
        if enqueue is not None:
            enqueue.close()
        for proc in procs.values():
            _stop(proc)
        if fake is not None:
            fake.stop()
        engine.dispose()
        client.flushdb()
        naive_client.flushdb()
        client.close()
        naive_client.close()
    if out.errors:
        for name, path in logs.items():
            print(f"--- {name} log ---\n{_tail(path)}", file=sys.stderr, flush=True)
        print(f"logs kept in {work}", file=sys.stderr, flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    out.seconds = clock.perf_counter() - run_started
    return out


def _worker_env(pg_url: str, work: Path, fake: FakeTwilioProcess) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "BROKER_URL": REDIS_URL,
        "SECRET_KEY": secrets.token_urlsafe(32),
        "INSTANCE_DIR": str(work / "instance"),
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "DISPATCH_INTERVAL_SECONDS": str(TICK_SECONDS),
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": fake.auth_token,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "TWILIO_MESSAGING_SERVICE_SID": "",
        "TWILIO_BASE_URL": fake.base_url,
        "SMTP_HOST": "",
        "SQL_ECHO": "",
    }
    # Production defaults for the lease and the reconcile tick (tests shorten them).
    for name in ("REMINDER_LEASE_SECONDS", "RECONCILE_INTERVAL_SECONDS"):
        env.pop(name, None)
    return env


def _start_celery(
    env: dict[str, str], work: Path, logs: dict[str, Path]
) -> dict[str, subprocess.Popen[bytes]]:
    """The product's worker and beat, and the naive design's worker on an idle queue."""
    celery = [sys.executable, "-m", "celery"]
    procs = {
        "worker": _start(
            [
                *celery,
                "-A",
                "worker",
                "worker",
                "--loglevel=INFO",
                f"--concurrency={CONCURRENCY}",
                f"--hostname=bench-reminders-{work.name}@%h",
            ],
            env,
            logs["worker"],
        ),
        "beat": _start(
            [
                *celery,
                "-A",
                "worker",
                "beat",
                "--loglevel=INFO",
                f"--schedule={work / 'celerybeat-schedule'}",
            ],
            env,
            logs["beat"],
        ),
    }
    # The naive app gets its broker on the command line and nothing of ours: celery's CLI
    # would take BROKER_URL from the environment and consume the product's queue.
    naive_env = {k: v for k, v in env.items() if k != "BROKER_URL"}
    procs["naive-worker"] = _start(
        [
            *celery,
            "-A",
            "bench.memory:naive",
            "-b",
            memory.NAIVE_BROKER_URL,
            "worker",
            "-Q",
            memory.IDLE_QUEUE,
            "--loglevel=INFO",
            f"--concurrency={CONCURRENCY}",
            f"--hostname=bench-naive-{work.name}@%h",
        ],
        naive_env,
        logs["naive-worker"],
    )
    return procs


def _settle_dispatch(engine: sa.Engine, client: redis.Redis, dispatch: DispatchResult) -> None:
    """After (a): wait for the broker to drain, so that (b) starts from an idle worker.

    If (a) ran out of time, what is left is taken back (suppressed rows, deleted tasks): no
    task left to run, no claim left to expire and come back.
    """
    if _drained(client, DRAIN_LIMIT):
        return
    with engine.begin() as conn:
        left = conn.execute(
            sa.update(Reminder)
            .where(Reminder.status.in_([s.value for s in OPEN_STATUSES]))
            .values(status=ReminderStatus.SUPPRESSED.value, status_reason="bench: late")
        ).rowcount
    dispatch.notes.append(
        f"(a) had not finished {DRAIN_LIMIT:.0f} s after its time was up: "
        f"{client.llen('celery')} queued tasks deleted and {left} open rows suppressed before (b)"
    )
    client.delete("celery")
    _drained(client, 20.0)


# --- report -----------------------------------------------------------------------------------

NOTES_START, NOTES_END = "<!-- reminders-notes:start -->", "<!-- reminders-notes:end -->"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _old_notes() -> str:
    """The hand-written notes on the reminder benchmarks in the previous RESULTS.md."""
    path = REPO_ROOT / "bench" / "RESULTS.md"
    if not path.exists():
        return ""
    text = path.read_text()
    if NOTES_START not in text or NOTES_END not in text:
        return ""
    return text.split(NOTES_START, 1)[1].split(NOTES_END, 1)[0].strip("\n") + "\n"


def _dispatch_lines(d: DispatchResult) -> list[str]:
    ok_rate = d.rate >= TARGET_RATE
    ok_lag = d.lag(95) <= TARGET_P95_LAG
    arrivals = d.reminders / DUE_SPREAD_SECONDS
    out = [
        "| figure | value | target |",
        "|---|---|---|",
        f"| messages/s while sending (requests / busy seconds, summed over the bursts) | "
        f"{d.rate:.1f} | >= {TARGET_RATE:.0f}: {_met(ok_rate)} |",
        f"| p95 lag, due time -> request received by the provider | {d.lag_text(95)} | "
        f"<= {TARGET_P95_LAG:.0f} s: {_met(ok_lag)} |",
        f"| lag p50 / max | {d.lag_text(50)} / {d.lag_text(100)} | |",
        f"| baseline: the provider call alone ({BASELINE_CLIENTS} processes, "
        f"{d.baseline_requests} requests, {d.baseline_failures} failed) | "
        f"{d.baseline_rate:.0f} requests/s | |",
        f"| ratio messages/s / baseline requests/s | {d.ratio:.2f} | |",
        f"| end to end: requests / (last request - first due time); the reminders fall due at "
        f"{arrivals:.0f}/s, so this cannot exceed that by much | {d.overall_rate:.1f} msg/s | |",
        f"| all settled within the {DISPATCH_LIMIT:.0f} s allowed | "
        f"{'yes' if d.finished else 'no'} | |",
        "| outbox rows by status | "
        + ", ".join(f"{k} {v}" for k, v in sorted(d.statuses.items()))
        + f" | sent {d.reminders} |",
        f"| CreateMessage requests / patients reached | {d.create_requests} / "
        f"{d.patients_with_requests} | {d.reminders} / {d.reminders} |",
        f"| patients with more than one request / reminders without a request | "
        f"{d.duplicates} / {d.missing} | 0 / 0 |",
        f"| answers other than 201 / OpenAPI violations recorded by the server | {d.non_201} / "
        f"{len(d.violations)} | 0 / 0 |",
        f"| sent rows whose provider_id is not the server's SID for that patient | "
        f"{d.provider_id_mismatches} | 0 |",
        f"| verified: every row sent, exactly one request each, no violation | "
        f"{'yes' if d.verified else 'NO'} | yes |",
        "| other requests to the server | "
        + (", ".join(f"{k}: {v}" for k, v in sorted(d.other_requests.items())) or "none")
        + " | |",
        f"| worker RSS after the first tick / after (a) | {d.worker_rss_fresh_mb:.0f} / "
        f"{d.worker_rss_after_mb:.0f} MB | |",
    ]
    if d.violations:
        out += ["", "First violations: " + "; ".join(sorted(set(d.violations))[:5])]
    out += [
        "",
        "Bursts of requests (gaps over 2 s split them; one per dispatcher tick while the "
        "workers keep up), seconds after the first reminder fell due:",
        "",
        "| burst | first request | last request | requests | msg/s |",
        "|---|---|---|---|---|",
    ]
    for i, (start, end, n) in enumerate(d.bursts, 1):
        rate = f"{n / (end - start):.1f}" if end > start else "-"
        out.append(f"| {i} | {start:.1f} | {end:.1f} | {n} | {rate} |")
    if d.cpu_seconds:
        sent = max(1, d.statuses.get(ReminderStatus.SENT.value, 0))
        total = sum(d.cpu_seconds.values())
        cores = os.cpu_count() or 1
        out += [
            "",
            f"CPU over the {d.wall_seconds:.0f} s from writing the rows to the last one settled "
            f"({cores} cores: {cores * d.wall_seconds:.0f} CPU seconds available, of which "
            f"these processes used {total:.0f}; the rest went to other work on the machine), per "
            f"message sent ({sent}):",
            "",
            "| process | CPU s | CPU ms per message |",
            "|---|---|---|",
        ]
        for name, seconds in sorted(d.cpu_seconds.items(), key=lambda kv: -kv[1]):
            out.append(f"| {name} | {seconds:.1f} | {seconds * 1000 / sent:.1f} |")
        out.append(f"| all of the above | {total:.1f} | {total * 1000 / sent:.1f} |")
        ceiling = cores * sent / total if total else 0.0
        out += [
            "",
            f"At {total * 1000 / sent:.1f} CPU ms per message, {cores} cores can send at most "
            f"~{ceiling:.0f} messages/s with nothing else running.",
        ]
    for note in d.notes:
        out += ["", f"Note: {note}"]
    return out


def _nested(name: str) -> str:
    """A step's label with its nesting (two leading spaces a level) shown as dots."""
    level = (len(name) - len(name.lstrip())) // 2
    return "· " * level + name.strip()


def _worker_profile_lines(d: DispatchResult) -> list[str]:
    out: list[str] = []
    p = d.profile
    if p is not None and p.samples:
        out += [
            f"#### Where the worker's time goes in (a) (py-spy, {p.rate} samples/s, non-blocking)",
            "",
            f"{p.samples} samples: {p.main_samples} in the worker's main process (consumer: "
            f"takes messages from Redis, hands them to the pool, acknowledges), "
            f"{p.pool_samples} in the pool processes (the tasks). py-spy leaves out samples "
            "of threads it sees blocked in a known system call; time spent waiting inside "
            "psycopg's and redis-py's socket loops is partly counted, so their shares mix CPU "
            "with waiting for PostgreSQL and Redis.",
            "",
            "| step, in the pool processes (incl. callees) | share of pool samples |",
            "|---|---|",
        ]
        out += [f"| {_nested(name)} | {share:.0%} |" for name, share in p.steps]
        out += [
            "",
            "| own time by where the code lives (whole worker) | share |",
            "|---|---|",
        ]
        out += [f"| {name} | {share:.0%} |" for name, share in p.groups]
        out += ["", "| hottest functions, own time (whole worker) | share |", "|---|---|"]
        out += [f"| `{name}` | {share:.1%} |" for name, share in p.top]
    return out


def _send_path_lines(p: SendPathProfile, d: DispatchResult | None) -> list[str]:
    out = [
        "#### The send path alone, in-process (no Celery)",
        "",
        f"Before (a), with the worker idle: {2 * p.messages + PROFILE_WARMUP} more reminders "
        "like (a)'s, written as already claimed, are sent in batches of the dispatcher's size "
        f"({SEND_BATCH}) by calling the task's body (`notifications.tasks.send_reminders`) "
        "in a fresh process with the "
        f"worker's environment: {PROFILE_WARMUP} to warm up, {p.messages} timed (each step "
        "timed on its own, CPU and wall clock, by wrapping the functions in that process), "
        f"{p.profiled} under cProfile with a CPU clock.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| per message: wall / CPU | {p.wall_ms:.1f} / {p.cpu_ms:.1f} ms |",
        f"| SQL statements per message (each a round trip to PostgreSQL) | {p.statements:.1f} |",
    ]
    worker = next((v for k, v in (d.cpu_seconds if d else {}).items() if "worker" in k), None)
    sent = d.statuses.get(ReminderStatus.SENT.value, 0) if d else 0
    if worker is not None and sent:
        per = worker * 1000 / sent
        out += [
            f"| the worker's CPU per message in (a) (both pool processes and the main process) "
            f"| {per:.1f} ms |",
        ]
        extra = per - p.cpu_ms
        out.append(
            f"| so Celery, the dispatcher and the rest of the worker add | {extra:.1f} ms |"
            if extra >= 0
            # The in-process figure carries the timing wrappers and a colder process (150
            # messages against 10,000), so it can come out above the worker's own.
            else "| so Celery, the dispatcher and the rest of the worker add | too little to "
            "show: the in-process figure (timing wrappers, a colder process) is the larger |"
        )
    if p.step_times:
        out += [
            "",
            "| step, timed directly (incl. callees) | CPU ms per message | wall ms per message |",
            "|---|---|---|",
        ]
        out += [f"| {_nested(name)} | {cpu:.2f} | {wall:.2f} |" for name, cpu, wall in p.step_times]
        steps_cpu = sum(cpu for name, cpu, _ in p.step_times if not name.startswith(" "))
        steps_wall = sum(wall for name, _, wall in p.step_times if not name.startswith(" "))
        out.append(
            f"| the rest of the task body (sessions, connection checkouts) | "
            f"{p.cpu_ms - steps_cpu:.2f} | {p.wall_ms - steps_wall:.2f} |"
        )
    out += [
        "",
        f"Under cProfile ({p.profiled_cpu_ms:.0f} CPU ms per message): cProfile inflates code "
        "that makes many small Python calls far more than code that waits or runs in C, so "
        "read these shares as pointers, the direct timings above as the figures.",
        "",
        "| step (incl. callees) | share of the send's CPU under cProfile |",
        "|---|---|",
    ]
    out += [f"| {_nested(name)} | {share:.0%} |" for name, share in p.steps]
    out += ["", "| own CPU under cProfile, by where the code lives | share |", "|---|---|"]
    out += [f"| {name} | {share:.0%} |" for name, share in p.groups if share >= 0.005]
    out += ["", "| hottest functions, own CPU under cProfile | share |", "|---|---|"]
    out += [f"| `{name}` | {share:.1%} |" for name, share in p.top]
    return out


def _memory_lines(m: memory.MemoryResult) -> list[str]:
    out = [
        "| design | processes | idle MB | loaded MB | delta MB | reminders written (time) | "
        "loaded measured after | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(m.rows):
        target = (
            f"within {MEMORY_FLAT_MB:.0f} MB of idle: {_met(abs(row.delta_mb) <= MEMORY_FLAT_MB)}"
            if i == 0
            else "(comparison)"
        )
        out.append(
            f"| {row.design} | {row.processes} | {row.idle_mb:.1f} | {row.loaded_mb:.1f} | "
            f"{row.delta_mb:+.1f} | {row.loaded:,} ({row.load_seconds:.0f} s) | "
            f"{row.settle_seconds:.0f} s | "
            f"{target} |"
        )
    out.append("")
    out += [f"- {row.design.split(':')[0]}: {row.detail}." for row in m.rows]
    if len(m.rows) == 2 and m.rows[1].delta_mb > 0:
        per_task = m.rows[1].delta_mb * memory.MB / max(1, m.rows[1].loaded)
        out.append(f"- naive: about {per_task:,.0f} bytes of worker memory per scheduled task.")
    out += [f"- {note}" for note in m.notes]
    return out


def report(run: ReminderRun, machine: dict[str, str], command: str) -> str:
    """The reminders part's section of RESULTS.md."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "## Reminders (issue 3)",
        "",
        f"Reminder benchmarks measured {when} with `{command}`, run {run.seconds:.0f} s. "
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + ".",
        "",
        "Production shape on loopback: PostgreSQL; Redis as the broker (db 12); one Celery "
        f"worker `celery -A worker worker --concurrency={CONCURRENCY}` (the Procfile's and "
        f"docker-compose's command: {CONCURRENCY} pool processes, prefetch 1, late acks) and "
        f"one beat with the production tick, DISPATCH_INTERVAL_SECONDS={TICK_SECONDS:.0f}; "
        "SMS through the Twilio SDK, TWILIO_BASE_URL pointing at the Twilio-compatible server "
        "of the test suite (tests/fakes/twilio_server.py: records every request and checks "
        "CreateMessage against Twilio's OpenAPI description), run in a process of its own.",
        "",
    ]
    for error in run.errors:
        out += [f"**Failed:** {error}", ""]
    d = run.dispatch
    out += [f"### (a) {DUE:,} due reminders dispatched end to end", ""]
    if d is None:
        out += ["Not measured.", ""]
    else:
        out += [
            f"{DUE:,} same-day SMS reminders, one per patient (booked one-fraction courses, "
            f"fractions 30+ days ahead, E.164 numbers, SMS consent, time zone {d.zone} so the "
            "run is inside the 08:00-21:00 message window), bulk-inserted as outbox rows "
            f"({d.insert_seconds:.1f} s) due evenly over the {DUE_SPREAD_SECONDS:.0f} s after "
            "they were written; the worker and beat were already running (ticks at their own "
            "phase). Lag = the time the server received the CreateMessage request minus the "
            "reminder's due_at. Baseline: the product's `TwilioSmsChannel.send_sms` in a loop "
            f"from {BASELINE_CLIENTS} processes against the same server (no database, no "
            "Celery): the provider call alone.",
            "",
            *_dispatch_lines(d),
            "",
        ]
    if run.send_path is not None:
        out += [*_send_path_lines(run.send_path, d), ""]
    if d is not None and d.profile is not None and d.profile.samples:
        out += [*_worker_profile_lines(d), ""]
    m = run.memory
    out += [
        f"### (b) Worker memory with {SCHEDULED:,} reminders scheduled over the next "
        f"{SCHEDULED_DAYS} days",
        "",
    ]
    if m is None:
        out += ["Not measured.", ""]
    else:
        out += [
            "RSS summed over the worker's process tree (main + pool processes; psutil; the "
            f"median of {m.samples} samples 0.5 s apart). Ours: the same worker as in (a), "
            "idle after it (the send queue drained), then "
            f"{SCHEDULED:,} pending outbox rows (DAY_BEFORE and SAME_DAY, SMS and email, for "
            f"25,000 booked fractions) due from 1 h to {SCHEDULED_DAYS} days ahead are "
            "bulk-inserted "
            f"and measured again after {TICKS_AFTER_LOAD} more dispatcher ticks. Naive, side "
            "by side in the same run on the same Redis server (db 11): a separate Celery app "
            "defined in bench/memory.py, the same worker command and settings, one task per "
            "reminder enqueued with `apply_async(eta=due_at)` over the same 30 days. The tasks "
            "are enqueued at the start of the run, while its worker consumes another, empty "
            "queue (nothing else is measured until the enqueueing is over); at (b) it is told "
            "to consume them (`add_consumer`) and measured once the queue is empty and its RSS "
            "has stopped growing.",
            "",
            *_memory_lines(m),
            "",
        ]
    notes = _old_notes() or "(none yet)\n"
    out += ["### Notes on the reminder benchmarks", "", NOTES_START, notes + NOTES_END]
    return "\n".join(out)


def console_table(run: ReminderRun) -> str:
    lines = [f"{'figure':<64} {'value':>14}  target", "-" * 92]

    def add(name: str, value: str, target: str = "") -> None:
        lines.append(f"{name:<64} {value:>14}  {target}")

    for error in run.errors:
        add("reminders failed", "", error)
    d = run.dispatch
    if d is not None:
        add(
            "(a) reminders: messages/s while sending",
            f"{d.rate:.1f}",
            f">= {TARGET_RATE:.0f}: {_met(d.rate >= TARGET_RATE)}",
        )
        add(
            "(a) reminders: p95 lag due -> provider",
            d.lag_text(95),
            f"<= {TARGET_P95_LAG:.0f} s: {_met(d.lag(95) <= TARGET_P95_LAG)}",
        )
        add("(a) reminders: baseline provider call alone, req/s", f"{d.baseline_rate:.0f}")
        add("(a) reminders: ratio msg/s / baseline", f"{d.ratio:.2f}")
        add("(a) reminders: verified (sent once each, no violation)", "yes" if d.verified else "NO")
    if run.send_path is not None:
        add(
            "(a) send path in-process: CPU ms / SQL statements per message",
            f"{run.send_path.cpu_ms:.1f} / {run.send_path.statements:.0f}",
        )
    m = run.memory
    if m is not None:
        for row in m.rows:
            add(
                f"(b) memory {row.design.split(':')[0]}: idle / loaded MB",
                f"{row.idle_mb:.0f} / {row.loaded_mb:.0f}",
                f"delta {row.delta_mb:+.1f} MB",
            )
    return "\n".join(lines)
