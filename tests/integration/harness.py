"""The pieces of the reminder pipeline tests: processes, Redis servers, reminders, the check.

The workers and dispatchers are subprocesses in process groups of their own, so a SIGKILL takes a
worker's pool with it and teardown can never leave one behind. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import redis
import sqlalchemy as sa

from bootstrap import make_session_factory
from notifications.models import FINAL_STATUSES, Reminder, ReminderStatus
from scheduler.models import Patient
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services
from tests.fakes.twilio_server import FakeTwilio

REPO_ROOT = Path(__file__).resolve().parents[2]
# The database used on the machine's shared Redis when redis-server is not installed.
SHARED_BROKER_DB = 13
PUBLIC_BASE_URL = "https://clinic.example.org"
# A working link (in what the provider got) or a masked one (in what we keep).
_PATIENT_LINK = re.compile(r"/p/(?:[A-Za-z0-9]{16}\b|••••)")


def message_key(to: str | None, body: str | None) -> tuple[str | None, str | None]:
    """Who got what, the patient link left out: every attempt carries a new link, so two sends
    of one reminder differ only there."""
    return to, _PATIENT_LINK.sub("/p/<link>", body) if body is not None else None


FROM_NUMBER = "+12125550199"
READY_TIMEOUT = 40.0  # seconds for a worker or beat to start
STOP_TIMEOUT = 15.0
# Variables the app reads that must come from the test, never from the developer's shell.
APP_ENV_PREFIXES = ("TWILIO_", "SMTP_", "REMINDER_", "RECONCILE_")
APP_ENV_NAMES = {
    "DATABASE_URL",
    "BROKER_URL",
    "SECRET_KEY",
    "PUBLIC_BASE_URL",
    "INSTANCE_DIR",
    "DISPATCH_INTERVAL_SECONDS",
    "SQL_ECHO",
}
# Figures reported at the end of the run (lag from due time to the provider request).
REPORTS: list[str] = []

T = TypeVar("T")


# -- processes ---------------------------------------------------------------------------------


# One line per task received, run or scheduled: left out of failure reports, which need the rest.
_ROUTINE = re.compile(r"Task \S+\[[0-9a-f-]+\] (received|succeeded)|Scheduler: Sending due task")


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join([line for line in text if not _ROUTINE.search(line)][-lines:])


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    ready_marker: str | None
    killed: bool = False  # on purpose, by the test: not a failure


@dataclass
class Pipeline:
    """The subprocesses of one test, sharing one environment; all stopped at teardown."""

    tmp_path: Path
    env: dict[str, str]
    processes: dict[str, Process] = field(default_factory=dict)
    status: Callable[[], str] = lambda: ""

    def _start(
        self, name: str, command: list[str], ready_marker: str | None, env: dict[str, str]
    ) -> Process:
        assert name not in self.processes or self.processes[name].popen.poll() is not None
        log = self.tmp_path / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killpg reaps the prefork pool
            )
        process = Process(name, popen, log, ready_marker)
        self.processes[name] = process
        return process

    def start_worker(self, name: str, **env: str) -> Process:
        return self._start(
            name,
            [
                *_celery(),
                "worker",
                "--loglevel=INFO",
                "--pool=prefork",
                "--concurrency=2",
                f"--hostname={name}@integration",
                # Gossip, mingle and event heartbeats talk to other workers; none are wanted.
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            " ready.",
            env,
        )

    def start_beat(self, name: str, **env: str) -> Process:
        return self._start(
            name,
            [
                *_celery(),
                "beat",
                "--loglevel=INFO",
                f"--schedule={self.tmp_path / f'{name}-schedule'}",
            ],
            "beat: Starting",
            env,
        )

    def start_command(
        self, name: str, command: list[str], ready_marker: str | None = None, **env: str
    ) -> Process:
        """Any other process of the stack (a web server, a load generator), run like the rest."""
        return self._start(name, command, ready_marker, env)

    def start_module(self, name: str, module: str, *args: str, ready: str | None = None) -> Process:
        return self._start(name, [sys.executable, "-m", module, *args], ready, {})

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        waiting = [p for p in self.processes.values() if p.ready_marker and not p.killed]
        while waiting:
            self.check_alive()
            waiting = [
                p
                for p in waiting
                if p.ready_marker not in p.log.read_text(errors="replace")  # type: ignore[operator]
            ]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(p.name for p in waiting)
                raise AssertionError(self.report(f"{names} not ready within {timeout:.0f} s"))
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        """SIGKILL the process and its whole group (a worker's pool children with it)."""
        process = self.processes[name]
        process.killed = True
        _kill_group(process.popen)

    def stop(self, *names: str) -> None:
        """Warm shutdown (SIGTERM): running tasks finish; then make sure each group is gone."""
        processes = [self.processes[name] for name in names]
        for process in processes:
            process.killed = True
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            _kill_group(process.popen)

    def stop_all(self) -> None:
        """Dispatchers first, so nothing new is enqueued while the workers finish their tasks."""
        workers = [name for name in self.processes if name.startswith("worker")]
        self.stop(*(name for name in self.processes if name not in workers))
        self.stop(*workers)

    def check_alive(self) -> None:
        for process in self.processes.values():
            if not process.killed and process.popen.poll() is not None:
                raise AssertionError(
                    self.report(f"{process.name} exited early ({process.popen.returncode})")
                )

    def report(self, problem: str) -> str:
        parts = [problem, self.status()]
        for process in self.processes.values():
            parts.append(
                f"--- {process.name} (exit {process.popen.poll()}) ---\n{_tail(process.log)}"
            )
        return "\n".join(parts)

    def wait_for(
        self, what: str, check: Callable[[], T], *, timeout: float, interval: float = 0.05
    ) -> T:
        """Poll `check` until it returns something truthy; fail with the logs at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(self.report(f"timed out after {timeout:.0f} s: {what}"))
            time.sleep(interval)


def _celery() -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker"]


def app_environment(**values: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in APP_ENV_NAMES and not key.startswith(APP_ENV_PREFIXES)
    }
    return {**env, **values}


# -- brokers -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, with nothing persisted: a restart loses every key."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.log = directory / "redis.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start on this server's port (again, after a kill) and wait until it answers."""
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [
                    *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                    *("--dir", str(self.directory)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.popen.poll() is not None:
                    raise AssertionError(f"redis-server exited:\n{_tail(self.log)}")
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"redis-server not answering:\n{_tail(self.log)}")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.popen is not None:
            _kill_group(self.popen)


def start_redis(tmp_path: Path) -> RedisServer | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    directory = tmp_path / "redis"
    directory.mkdir(exist_ok=True)
    for attempt in range(3):  # the free port may be taken before redis-server binds it
        server = RedisServer(binary, directory)
        try:
            server.start()
            return server
        except AssertionError:
            server.kill()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def broker_state(url: str) -> str:
    """What the Redis broker holds, for failure reports."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return (
            f"broker: {client.llen('celery')} queued, {client.hlen('unacked')} unacked,"
            f" binding {'present' if client.exists('_kombu.binding.celery') else 'MISSING'}"
        )
    except redis.RedisError as exc:
        return f"broker: unreachable ({exc})"
    finally:
        client.close()


# -- reminders ---------------------------------------------------------------------------------


def midday_zone(now: datetime) -> str:
    """An IANA zone where it is now between 12:00 and 13:00, far from quiet hours.

    The workers run on the real clock, so a fixed zone would put a run at night into quiet
    hours and defer the day-before and same-day reminders. POSIX signs: Etc/GMT-5 is UTC+5.
    """
    offset = 12 - now.astimezone(UTC).hour  # -11 .. +12: all exist
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


@dataclass(frozen=True)
class Booked:
    course_ids: list[int]
    reminder_ids: list[int]


def book_courses(engine: sa.Engine, count: int, *, by_email: bool = False) -> Booked:
    """Book `count` five-fraction courses a week ahead for SMS-consenting patients (with
    `by_email`: patients who consented to email only).

    Each writes a confirmation, a day-before reminder per fraction and the same-day reminders
    that can go out on their session's day (up to 11 reminders), all pending and due later;
    the test decides which become due now.
    """
    now = datetime.now(UTC)
    zone = midday_zone(now)
    course_ids = []
    with make_session_factory(engine)() as session:
        w = f.world(session)
        for i in range(count):
            contact = (
                {"email": f"patient{i}@mail.example", "email_consent": True}
                if by_email
                else {"sms_consent": True}
            )
            patient = f.patient(
                session,
                w["department"],  # type: ignore[arg-type]
                phone_e164=f"+1212555{1000 + i:04d}",
                timezone=zone,
                **contact,
            )
            course = f.course(session, patient, w["liver"])  # type: ignore[arg-type]
            session.commit()
            proposal = services.propose_schedules(
                session, course.id, earliest=(now + timedelta(days=7)).date(), now=now
            ).schedules[0]
            placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
            services.book_course(session, course.id, placements, now=now)
            course_ids.append(course.id)
        reminder_ids = list(
            session.scalars(
                sa.select(Reminder.id)
                .where(Reminder.course_id.in_(course_ids))
                .order_by(Reminder.id)
            )
        )
    assert 6 * count <= len(reminder_ids) <= 11 * count
    # A confirmation is due as soon as it is booked: hold everything until the test says.
    make_due(engine, reminder_ids, now + timedelta(days=1))
    return Booked(course_ids, reminder_ids)


def make_due(engine: sa.Engine, ids: list[int], at: datetime | list[datetime]) -> None:
    """Move these reminders' due time (one instant, or one per id) as a set-up step."""
    times = at if isinstance(at, list) else [at] * len(ids)
    table = Reminder.__table__
    with engine.begin() as conn:
        conn.execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("rid"))
            .values(due_at=sa.bindparam("due", type_=table.c.due_at.type)),
            [{"rid": i, "due": t} for i, t in zip(ids, times, strict=True)],
        )


def status_counts(engine: sa.Engine, ids: list[int] | None = None) -> Counter[str]:
    query = sa.select(Reminder.status, sa.func.count()).group_by(Reminder.status)
    if ids is not None:
        query = query.where(Reminder.id.in_(ids))
    with engine.connect() as conn:
        return Counter(dict(conn.execute(query).tuples().all()))


def all_final(engine: sa.Engine, ids: list[int]) -> bool:
    counts = status_counts(engine, ids)
    return sum(counts[s] for s in FINAL_STATUSES) == len(ids)


@dataclass(frozen=True)
class SentRow:
    id: int
    status: str
    status_reason: str | None
    provider_id: str | None
    phone: str
    body: str | None
    attempts: int
    due_at: datetime


def reminder_rows(engine: sa.Engine) -> dict[int, SentRow]:
    with engine.connect() as conn:
        result = conn.execute(
            sa.select(
                Reminder.id,
                Reminder.status,
                Reminder.status_reason,
                Reminder.provider_id,
                Patient.phone_e164,
                Reminder.rendered_body,
                Reminder.attempts,
                Reminder.due_at,
            ).join(Patient, Patient.id == Reminder.patient_id)
        )
        return {row[0]: SentRow(*row) for row in result}


def assert_sent_exactly_once(
    engine: sa.Engine, fake: FakeTwilio, due_ids: list[int], *, refused: int = 0
) -> dict[int, SentRow]:
    """Every due reminder ended SENT and the provider took exactly one message for each.

    `refused` is how many CreateMessage requests the fake was programmed to refuse (429).
    """
    rows = reminder_rows(engine)
    due = [rows[i] for i in due_ids]
    unsent = [r for r in due if r.status != ReminderStatus.SENT]
    assert not unsent, f"lost: {len(unsent)} due reminders not sent, e.g. {unsent[:3]}"
    wanted = set(due_ids)
    others = [r for i, r in rows.items() if i not in wanted and r.provider_id]
    assert not others, f"sent although not due: {others[:3]}"

    assert fake.violations == []
    creates = fake.create_requests
    assert [r for r in creates if r.status is None] == [], "requests still waiting for answers"
    answered = Counter(r.status for r in creates)
    assert answered == Counter({201: len(due), 429: refused} if refused else {201: len(due)})
    accepted = Counter(
        message_key(r.param("To"), r.param("Body")) for r in creates if r.status == 201
    )
    twice = [key for key, n in accepted.items() if n > 1]
    assert not twice, f"sent more than once: {twice[:3]}"

    messages = fake.messages
    sids = [r.provider_id for r in due]
    assert len(set(sids)) == len(due)
    assert set(sids) == set(messages), "the provider holds messages no reminder accounts for"
    for r in due:
        message = messages[r.provider_id]  # type: ignore[index]
        # We keep the text with its patient link masked; the provider has the working one.
        assert message["body"] != r.body
        assert message_key(message["to"], message["body"]) == message_key(r.phone, r.body), r
    return rows


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
