"""Drills: Redis down for a minute, the SMTP server down, Twilio answering 500 for a while.

Real processes throughout (two Celery workers, beat, gunicorn for the Redis drill) on
PostgreSQL, with the loopback provider servers of tests/fakes. Each drill ends with the same
question: was every due reminder sent exactly once, after the fault was over?
The full ten-minute Twilio outage runs for real with `python -m bench.drills twilio-outage`
(bench/RESULTS.md); here it is forty seconds, at the production backoff.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import requests
import sqlalchemy as sa

from bootstrap import make_session_factory
from config import Settings, load_settings
from notifications import sending
from notifications.models import Reminder, ReminderStatus
from scheduler import health
from scheduler.models import Course, Department, Patient
from tests import factories as f
from tests.committing import links
from tests.fakes.smtp_server import start_fake_smtp
from tests.integration.drills.stack import (
    api_client,
    free_port,
    scheduler_account,
    signed_in,
    start_web,
    timed,
)
from tests.integration.harness import (
    REPORTS,
    Pipeline,
    all_final,
    assert_sent_exactly_once,
    book_courses,
    broker_state,
    make_due,
    message_key,
    midday_zone,
    reminder_rows,
    status_counts,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis]
on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
REDIS_DOWN_SECONDS = 60.0
TWILIO_DOWN_SECONDS = 40.0


def _watched(pipeline: Pipeline, engine: sa.Engine, ids: list[int], broker: str) -> Pipeline:
    pipeline.status = lambda: (
        f"reminder statuses: {dict(status_counts(engine, ids))}\n{broker_state(broker)}"
    )
    pipeline.start_worker("worker-a")
    pipeline.start_worker("worker-b")
    pipeline.start_beat("beat")
    pipeline.wait_ready()
    return pipeline


def _supervise(pipeline: Pipeline, restarts: list[str]) -> None:
    """Start again a worker that exited, as docker-compose does (`restart: unless-stopped`).

    A worker holding an unacknowledged task when Redis goes away can exit: kombu 5.7 fails
    while giving the task back to the broker it cannot reach (AttributeError in
    restore_unacked) and Celery calls that unrecoverable. Nothing is lost by it (the outbox,
    not the broker, holds every reminder), but only a supervisor brings the worker back.
    """
    for name in ("worker-a", "worker-b"):
        process = pipeline.processes[name]
        if process.popen.poll() is not None and not process.killed:
            process.killed = True  # seen and handled: not a failure of the drill
            restarts.append(f"{name} (exit {process.popen.returncode})")
            pipeline.start_worker(name)


def _reminder_lag(engine: sa.Engine, settings: Settings) -> health.Check:
    with make_session_factory(engine)() as session:
        report = health.readiness(session, settings, now=datetime.now(UTC), broker=False)
    check = report.check(health.CheckName.REMINDER_LAG)
    assert check is not None
    return check


def _settled_early(engine: sa.Engine, ids: list[int]) -> list[tuple]:
    """Rows already sent or failed, with their kind and reason: what to look at when the
    outage drill finds one settled while the provider was refusing everything."""
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                sa.select(
                    Reminder.id, Reminder.kind, Reminder.status, Reminder.status_reason,
                    Reminder.attempts,
                ).where(
                    Reminder.id.in_(ids),
                    Reminder.status.in_([ReminderStatus.SENT, ReminderStatus.FAILED]),
                )
            )
        ]  # fmt: skip


def _retrying(engine: sa.Engine, ids: list[int]) -> list[tuple[str, str | None, datetime | None]]:
    """What staff see of these rows that are waiting to be tried again."""
    with engine.connect() as conn:
        return [
            tuple(row)  # type: ignore[misc]
            for row in conn.execute(
                sa.select(Reminder.status, Reminder.status_reason, Reminder.next_attempt_at).where(
                    Reminder.id.in_(ids), Reminder.status_reason.like("retrying:%")
                )
            )
        ]


@on_postgresql
def test_redis_down_for_a_minute_pages_keep_working_and_reminders_resume(
    own_redis, make_pipeline, engine, fake_twilio
):
    ids = book_courses(engine, 8).reminder_ids
    with make_session_factory(engine)() as session:
        department = session.scalars(sa.select(Department)).one()
        course = session.scalars(sa.select(Course).order_by(Course.id)).first()
        assert course is not None
        # Living where it is midday now: the booking's confirmation is due at once, not held
        # until a New York morning, whatever the hour this drill runs at.
        patient = f.patient(
            session,
            department,
            sms_consent=True,
            phone_e164="+12125559000",
            timezone=midday_zone(datetime.now(UTC)),
        )
        draft = f.course(session, patient, session.get(Course, course.id).protocol)
        session.commit()
        link = links.issue_patient_link(
            session, patient_id=course.patient_id, course_id=course.id, now=datetime.now(UTC)
        )
        department_id, course_id, draft_id = department.id, course.id, draft.id
    staff = scheduler_account(engine, department_id)
    # A short lease: the sends queued in Redis when it dies come back within seconds.
    pipeline = _watched(
        # Plain http on loopback: the session cookie must travel without TLS here.
        make_pipeline(own_redis.url, REMINDER_LEASE_SECONDS="20", SESSION_COOKIE_SECURE="0"),
        engine,
        ids,
        own_redis.url,
    )
    base = start_web(pipeline, free_port())
    browser, api = signed_in(base, staff), api_client(staff)
    # Due one after another from now until well after Redis is back.
    first = datetime.now(UTC) + timedelta(seconds=1)
    span = REDIS_DOWN_SECONDS + 30
    make_due(engine, ids, [first + timedelta(seconds=span * k / len(ids)) for k in range(len(ids))])
    pipeline.wait_for("a few reminders sent", lambda: len(fake_twilio.messages) >= 3, timeout=30)

    own_redis.kill()
    down_at = time.monotonic()
    plain = requests.Session()
    pages = {
        "week calendar": (browser, f"{base}/calendar/week?department={department_id}"),
        "course page": (browser, f"{base}/courses/{course_id}"),
        "API courses": (api, f"{base}/api/v1/courses"),
        # Rate-limited per address, counted in Redis: let through while it is away.
        "patient link": (plain, f"{base}/p/{link}"),
        "health": (plain, f"{base}/healthz"),
    }
    answers: list[tuple[str, float, int | str]] = []
    booked = None
    sent_during = set(fake_twilio.messages)
    restarts: list[str] = []
    while time.monotonic() - down_at < REDIS_DOWN_SECONDS:
        _supervise(pipeline, restarts)
        for name, (http, url) in pages.items():
            _, seconds, result = timed(http.get, url)
            answers.append((name, seconds, getattr(result, "status_code", type(result).__name__)))
        if booked is None:
            # A booking while the broker is away: its reminders are rows, not broker messages.
            proposal = api.post(f"{base}/api/v1/courses/{draft_id}/proposals", json={"count": 1})
            fractions = [
                {"number": x["number"], "linac_id": x["linac_id"], "starts_at": x["starts_at"]}
                for x in proposal.json()["schedules"][0]["fractions"]
            ]
            booked = api.post(
                f"{base}/api/v1/courses/{draft_id}/booking", json={"fractions": fractions}
            ).status_code
        time.sleep(2)
    sent_during = set(fake_twilio.messages) - sent_during
    own_redis.start()

    with engine.connect() as conn:
        confirmation = conn.execute(
            sa.select(Reminder.id).where(
                Reminder.course_id == draft_id, Reminder.kind == "confirmation"
            )
        ).scalar_one()
    due = [*ids, confirmation]
    # After a minute away the workers' reconnect backoff has grown to tens of seconds, and the
    # sends lost with Redis wait out their claim's lease: minutes at most on a busy machine.
    deadline = time.monotonic() + 240
    while not all_final(engine, due):
        _supervise(pipeline, restarts)
        if time.monotonic() > deadline:
            raise AssertionError(pipeline.report("timed out: every due reminder sent"))
        time.sleep(0.5)
    pipeline.stop_all()
    if restarts:
        REPORTS.append(f"Redis drill: workers restarted after exiting: {restarts}")

    failed = [a for a in answers if a[2] != 200]
    assert failed == [], f"pages that failed while Redis was down: {failed[:5]}"
    assert max(a[1] for a in answers) < 5, "a page slowed down to 5 s or more without Redis"
    assert booked == 201
    assert sent_during == set(), "sent while the broker was down?"
    assert_sent_exactly_once(engine, fake_twilio, due)


@on_postgresql
def test_smtp_down_email_reminders_are_retried_and_sent_once_when_it_returns(
    redis_broker, make_pipeline, engine
):
    ids = book_courses(engine, 8, by_email=True).reminder_ids
    smtp = start_fake_smtp()
    port = smtp.port
    smtp.stop()  # down before anything is due: every connection is refused
    pipeline = _watched(
        make_pipeline(
            redis_broker,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(port),
            SMTP_FROM="Clinic <clinic@clinic.example>",
        ),
        engine,
        ids,
        redis_broker,
    )
    make_due(engine, ids, datetime.now(UTC) - timedelta(seconds=1))
    try:
        # Staff see each message waiting for its next try, with the reason.
        pipeline.wait_for(
            "every email tried and waiting",
            lambda: len(_retrying(engine, ids)) >= len(ids) // 2,
            timeout=60,
        )
        waiting = _retrying(engine, ids)
        assert {status for status, _, _ in waiting} == {ReminderStatus.PENDING}
        assert all(reason.startswith("retrying: connection") for _, reason, _ in waiting)
        smtp = start_fake_smtp(port)
        pipeline.wait_for("every email sent", lambda: all_final(engine, ids), timeout=150)
        pipeline.stop_all()
        mails = smtp.messages
    finally:
        smtp.stop()

    rows = reminder_rows(engine)
    assert Counter(rows[i].status for i in ids) == Counter({ReminderStatus.SENT: len(ids)})
    received = Counter(m.parsed()["Message-ID"] for m in mails)
    assert all(n == 1 for n in received.values()), "an email was delivered twice"
    assert set(received) == {rows[i].provider_id for i in ids}
    assert len(mails) == len(ids)
    assert max(rows[i].attempts for i in ids) >= 2, "nothing was retried: the drill missed"


@on_postgresql
def test_twilio_answering_500_backs_off_sends_once_and_shows_the_delay(
    redis_broker, make_pipeline, engine, fake_twilio
):
    ids = book_courses(engine, 10).reminder_ids
    # Readiness fails once a due reminder has waited 10 s (in production: five minutes).
    pipeline = _watched(
        make_pipeline(redis_broker, HEALTH_REMINDER_LAG_SECONDS="10"), engine, ids, redis_broker
    )
    base = start_web(pipeline, free_port())
    settings = load_settings(pipeline.env)
    fake_twilio.outage(TWILIO_DOWN_SECONDS)
    began = time.monotonic()
    make_due(engine, ids, datetime.now(UTC) - timedelta(seconds=1))

    # Half-way through: staff see messages waiting, why, and until when; nothing lost or sent.
    time.sleep(TWILIO_DOWN_SECONDS / 2)
    waiting = _retrying(engine, ids)
    assert len(waiting) >= len(ids) // 4, waiting
    assert all(reason == "retrying: 500" for _, reason, _ in waiting), waiting[:3]
    counts = status_counts(engine, ids)
    assert counts[ReminderStatus.SENT] == counts[ReminderStatus.FAILED] == 0, (
        counts,
        _settled_early(engine, ids),
    )
    assert fake_twilio.messages == {}
    # The System page and /readyz say reminders are stalled, and for how long.
    lag = _reminder_lag(engine, settings)
    assert lag.status == health.Status.FAIL and lag.figure >= 10, lag
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["checks"]["reminder_lag"]["status"] == "fail"

    time.sleep(max(0.0, TWILIO_DOWN_SECONDS - (time.monotonic() - began)))
    pipeline.wait_for("every due reminder sent", lambda: all_final(engine, ids), timeout=180)
    assert _reminder_lag(engine, settings).status == health.Status.OK
    pipeline.stop_all()

    creates = fake_twilio.create_requests
    refused = sum(1 for r in creates if r.status == 500)
    assert refused >= len(ids) // 2
    by_reminder: dict[tuple, list] = {}
    for r in creates:
        by_reminder.setdefault(message_key(r.param("To"), r.param("Body")), []).append(r)
    assert len(by_reminder) == len(ids)
    retried_twice = 0
    for attempts in by_reminder.values():
        assert [r.status for r in attempts][-1] == 201
        assert all(r.status == 500 for r in attempts[:-1])
        # The wait after the k-th refusal is at least half of BACKOFF_BASE * 2^(k-1): growing.
        for k, (a, b) in enumerate(zip(attempts, attempts[1:], strict=False), start=1):
            least = sending.BACKOFF_BASE.total_seconds() * 2 ** (k - 1) / 2
            assert (b.at - a.at).total_seconds() >= least - 0.5, (k, a.at, b.at)
        retried_twice += len(attempts) >= 3
    assert retried_twice, "no reminder was refused twice: growing intervals not shown"
    # Exactly one accepted request per reminder, and the rows agree with the provider.
    refused_per_reminder = sum(len(a) - 1 for a in by_reminder.values())
    assert refused_per_reminder == refused
    rows = reminder_rows(engine)
    assert {rows[i].provider_id for i in ids} == set(fake_twilio.messages)
    assert all(rows[i].status == ReminderStatus.SENT for i in ids)
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(Patient).where(
            Patient.sms_blocked_reason.is_not(None))) == 0  # fmt: skip
