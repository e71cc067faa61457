"""Drill: the database restarts (a crash: `pg_ctl stop -m immediate`) while staff book courses.

Real processes throughout: a PostgreSQL cluster of the test's own, gunicorn with two web
processes, and four clients booking five-fraction courses over the API (propose, then book,
asking again after a lost race). While the server is down, requests must fail at once and
cleanly (a problem+json 5xx, never a hang or a dropped connection); once it is back the same
web processes must serve bookings again without being restarted; and no course may be left
half-booked or with rows that belong to nothing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from bench.db import overlap_counts
from bootstrap import make_engine, make_session_factory
from notifications.models import Reminder
from scheduler.models import ACTIVE_FRACTION_STATUSES, BookingEvent, Course, Fraction, Protocol
from tests import factories as f
from tests.conftest import migrate, unavailable
from tests.integration.drills.postgres_cluster import PostgresCluster, server_binaries
from tests.integration.drills.stack import (
    api_client,
    free_port,
    scheduler_account,
    start_web,
    timed,
)
from tests.integration.harness import Pipeline, app_environment

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
CLIENTS = 4
# Enough draft courses to keep the clients booking well past the grace below: four clients
# book about a dozen courses a second on a quiet machine.
COURSES = 240
DOWN_SECONDS = 4.0
# Requests may fail only while the server is down, or while a web process's pool still holds
# connections from before the crash (each found dead by the pool's pre-ping, or by the one
# request that was using it): a few seconds past the restart at most.
RECOVERY_GRACE = 5.0


@pytest.fixture
def cluster() -> PostgresCluster:
    binaries = server_binaries()
    if binaries is None:
        unavailable("no PostgreSQL server binaries (initdb) on this machine")
    cluster = PostgresCluster(binaries)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pipeline(tmp_path: Path):
    made: list[Pipeline] = []

    def make(**env: str) -> Pipeline:
        made.append(Pipeline(tmp_path, app_environment(**env)))
        return made[-1]

    yield make
    for p in made:
        p.stop_all()


class Bookers:
    """Client threads booking one draft course after another until told to stop."""

    def __init__(self, base: str, token_client, course_ids: list[int]) -> None:  # type: ignore[no-untyped-def]
        self.base = f"{base}/api/v1"
        self.make_client = token_client
        self.todo = list(course_ids)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        # (start, seconds, what, status or exception name, content type)
        self.calls: list[tuple[float, float, str, int | str, str]] = []
        self.booked: dict[int, float] = {}  # course id -> when its booking started
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _take(self) -> int | None:
        with self.lock:
            return self.todo.pop(0) if self.todo and not self.stop.is_set() else None

    def _call(self, http: requests.Session, what: str, path: str, body: dict):  # type: ignore[no-untyped-def]
        started, seconds, result = timed(http.post, f"{self.base}{path}", json=body)
        if isinstance(result, Exception):
            record = (started, seconds, what, type(result).__name__, "")
        else:
            record = (
                started, seconds, what, result.status_code,
                result.headers.get("Content-Type", ""),
            )  # fmt: skip
        with self.lock:
            self.calls.append(record)
        return started, result

    def _run(self) -> None:
        http = self.make_client()
        while (course_id := self._take()) is not None:
            for _ in range(20):
                if self.stop.is_set():
                    return
                _, answer = self._call(
                    http, "proposals", f"/courses/{course_id}/proposals", {"count": 1}
                )
                if not isinstance(answer, requests.Response) or answer.status_code != 200:
                    time.sleep(0.2)  # the database is away: try this course again shortly
                    continue
                schedule = answer.json()["schedules"][0]
                placements = [
                    {"number": x["number"], "linac_id": x["linac_id"], "starts_at": x["starts_at"]}
                    for x in schedule["fractions"]
                ]
                started, answer = self._call(
                    http, "booking", f"/courses/{course_id}/booking", {"fractions": placements}
                )
                if isinstance(answer, requests.Response) and answer.status_code == 201:
                    with self.lock:
                        self.booked[course_id] = started
                    break
                if not isinstance(answer, requests.Response) or answer.status_code != 409:
                    time.sleep(0.2)

    def successes_after(self, moment: float) -> int:
        with self.lock:
            return sum(1 for started in self.booked.values() if started > moment)


def test_bookings_survive_a_database_restart_without_half_written_courses(
    cluster: PostgresCluster, pipeline
):
    url = cluster.create_database("sbrt")
    migrate(url)
    engine = make_engine(url)
    try:
        now = datetime.now(UTC)
        with make_session_factory(engine)() as session:
            world = f.world(session)
            department = world["department"]
            course_ids = []
            for i in range(COURSES):
                patient = f.patient(session, department, phone_e164=f"+1212555{2000 + i:04d}",
                                    sms_consent=True)  # fmt: skip
                course = f.course(session, patient, world["liver"])
                course.ready_to_treat_on = (now + timedelta(days=7 + i % 14)).date()
                course_ids.append(course.id)
            session.commit()
            department_id = department.id
        staff = scheduler_account(engine, department_id)
        stack = pipeline(
            DATABASE_URL=url,
            BROKER_URL="memory://",  # booking enqueues nothing: reminders are outbox rows
            SECRET_KEY="drill-secret-key-not-for-production",
            INSTANCE_DIR=str(cluster.root.parent / f"{cluster.root.name}-instance"),
        )
        base = start_web(stack, free_port())
        bookers = Bookers(base, lambda: api_client(staff), course_ids)
        for thread in bookers.threads:
            thread.start()
        stack.wait_for("five bookings before the restart", lambda: len(bookers.booked) >= 5,
                       timeout=120, interval=0.1)  # fmt: skip

        down_at = time.monotonic()
        cluster.stop("immediate")
        time.sleep(DOWN_SECONDS)
        cluster.start()
        up_at = time.monotonic()

        stack.wait_for(
            "eight bookings after the restart, by the same web processes",
            lambda: bookers.successes_after(up_at + RECOVERY_GRACE) >= 8,
            timeout=120,
            interval=0.2,
        )
        bookers.stop.set()
        for thread in bookers.threads:
            thread.join(30)
        stack.check_alive()  # gunicorn was never restarted
        web_pid = stack.processes["web"].popen.pid
    finally:
        engine.dispose()

    calls = bookers.calls
    hung = [c for c in calls if not isinstance(c[3], int)]
    assert hung == [], f"requests without an answer (hang or dropped): {hung[:5]}"
    assert max(c[1] for c in calls) < 10, "a request took 10 s or more during the drill"
    failed = [c for c in calls if c[3] not in (200, 201, 409)]
    assert failed, "no request met the outage: the drill proved nothing"
    unclean = [c for c in failed if c[3] not in (500, 503) or "problem+json" not in c[4]]
    assert unclean == [], f"failures that are not a problem+json 5xx: {unclean[:5]}"
    late = [c for c in failed if not down_at - 1 <= c[0] <= up_at + RECOVERY_GRACE]
    assert late == [], f"failures outside the outage (no recovery?): {late[:5]}"
    assert web_pid == stack.processes["web"].popen.pid

    # Nothing half-written: every course booked whole or not at all, nothing orphaned.
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            sizes = dict(
                conn.execute(
                    sa.select(Course.id, sa.func.count(Fraction.id))
                    .outerjoin(
                        Fraction,
                        sa.and_(
                            Fraction.course_id == Course.id,
                            Fraction.status.in_(list(ACTIVE_FRACTION_STATUSES)),
                        ),
                    )
                    .group_by(Course.id)
                ).all()
            )
            wanted = conn.execute(sa.select(Protocol.fractions)).scalar_one()
            statuses = dict(conn.execute(sa.select(Course.id, Course.status)).all())
            events = Counter(conn.scalars(sa.select(BookingEvent.course_id)))
            with_reminders = set(conn.scalars(sa.select(Reminder.course_id).distinct()))
            overlaps = overlap_counts(engine)
    finally:
        engine.dispose()
    assert set(Counter(sizes.values())) <= {0, wanted}, f"half-booked courses: {sizes}"
    booked = {c for c, n in sizes.items() if n == wanted}
    assert set(bookers.booked) <= booked, "a booking answered 201 is not in the database"
    assert {c for c in booked if statuses[c] == "draft"} == set()
    assert {c for c in sizes if sizes[c] == 0 and statuses[c] != "draft"} == set()
    assert set(events) == booked, "booking events without their booking, or the reverse"
    assert with_reminders == booked, "outbox rows without their booking, or the reverse"
    assert overlaps == {"linac_id": 0, "patient_id": 0}
