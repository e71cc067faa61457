"""The reminder pipeline under faults, with real processes only.

Two `celery worker` processes (prefork, two pool processes each) on Redis, `celery beat` ticking
every second, the database, and the Twilio-compatible server on loopback. Each test ends with
the same check: every due reminder was sent exactly once and nothing was lost (every due row is
`sent`, the provider holds exactly one message for each, and no request broke Twilio's API).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bootstrap import make_session_factory
from notifications import sending
from notifications.models import Reminder, ReminderStatus
from notifications.tasks import SEND_BATCH
from scheduler import links
from scheduler.models import Fraction
from tests.committing import services
from tests.fakes.twilio_server import FakeTwilio, RecordedRequest
from tests.integration.dispatch_loop import READY as LOOP_READY
from tests.integration.harness import (
    PUBLIC_BASE_URL,
    REPORTS,
    Pipeline,
    RedisServer,
    all_final,
    assert_sent_exactly_once,
    book_courses,
    broker_state,
    make_due,
    message_key,
    percentile,
    status_counts,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis]
# SKIP LOCKED and row locks are what these faults test: PostgreSQL, the production database.
on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
# Seconds for a scenario's reminders to settle once due: a guard against hangs, far above the
# 5-30 s they take even on a loaded two-core machine, not a speed check (that is bench/).
SEND_TIMEOUT = 60.0


def _running(make_pipeline, broker_url: str, engine: sa.Engine, ids: list[int], **env: str):
    """Two workers and a beat, started and ready; failures show the outbox's status counts."""
    pipeline: Pipeline = make_pipeline(broker_url, **env)
    pipeline.status = lambda: (
        f"reminder statuses: {dict(status_counts(engine, ids))}\n{broker_state(broker_url)}"
    )
    pipeline.start_worker("worker-a")
    pipeline.start_worker("worker-b")
    pipeline.start_beat("beat")
    pipeline.wait_ready()
    return pipeline


def _accepted(fake: FakeTwilio) -> list[RecordedRequest]:
    return [r for r in fake.create_requests if r.status == 201]


def _host(request: RecordedRequest) -> str:
    host = next((v for k, v in request.headers.items() if k.lower() == "host"), "")
    return host.rsplit(":", 1)[0]


def _sent_by_key(requests: list[RecordedRequest]) -> dict[tuple[str | None, str | None], datetime]:
    return {message_key(r.param("To"), r.param("Body")): r.at for r in requests}


def test_every_due_reminder_is_sent_once_and_the_lag_is_reported(
    redis_broker, make_pipeline, engine, fake_twilio, database_url
):
    ids = book_courses(engine, 11).reminder_ids
    pipeline = _running(make_pipeline, redis_broker, engine, ids)
    # Due one after another over three seconds, as a morning's reminders come due.
    first = datetime.now(UTC) + timedelta(seconds=1)
    make_due(engine, ids, [first + timedelta(seconds=3 * k / len(ids)) for k in range(len(ids))])

    pipeline.wait_for(
        "every due reminder sent", lambda: all_final(engine, ids), timeout=SEND_TIMEOUT
    )
    pipeline.stop_all()

    rows = assert_sent_exactly_once(engine, fake_twilio, ids)
    # Each message carries its own patient link, and the link opens that patient's schedule.
    link_pattern = re.compile(rf"{re.escape(PUBLIC_BASE_URL)}/p/([A-Za-z0-9]{{16}})\b")
    with make_session_factory(engine)() as session:
        for i in ids:
            # The working link is in what the patient got, never in what we keep.
            received = fake_twilio.messages[rows[i].provider_id]["body"]
            token = link_pattern.search(received)
            assert token, f"a message without its patient link: {received!r}"
            assert token.group(1) not in (rows[i].body or "")
            link = links.resolve_patient_link(
                session, token.group(1), purpose="schedule", now=datetime.now(UTC)
            )
            assert link is not None
            assert link.course_id == session.get(Reminder, i).course_id
    requested = _sent_by_key(_accepted(fake_twilio))
    lags = [
        (requested[message_key(rows[i].phone, rows[i].body)] - rows[i].due_at).total_seconds()
        for i in ids
    ]
    assert min(lags) >= 0, "a reminder left before it was due"
    backend = sa.make_url(database_url).get_backend_name()
    REPORTS.append(
        f"{backend}: {len(ids)} reminders, lag from due time to provider request at a 1 s tick:"
        f" p50 {percentile(lags, 0.5):.2f} s, p95 {percentile(lags, 0.95):.2f} s,"
        f" max {max(lags):.2f} s"
    )


@on_postgresql
def test_a_worker_killed_mid_batch_loses_and_repeats_nothing(
    redis_broker, make_pipeline, engine, fake_twilio
):
    ids = book_courses(engine, 11).reminder_ids
    # Short leases and frequent reconciling, so the dead worker's claims come back in seconds.
    pipeline = make_pipeline(
        redis_broker, REMINDER_LEASE_SECONDS="5", RECONCILE_INTERVAL_SECONDS="2"
    )
    pipeline.status = lambda: (
        f"reminder statuses: {dict(status_counts(engine, ids))}\n{broker_state(redis_broker)}"
    )
    # The workers reach the provider under different host names, so the Host header of each
    # request says which worker sent it.
    hosts = {"worker-a": "localhost", "worker-b": "127.0.0.1"}
    for name, host in hosts.items():
        pipeline.start_worker(name, TWILIO_BASE_URL=fake_twilio.base_url.replace("127.0.0.1", host))
    pipeline.start_beat("beat")
    pipeline.wait_ready()
    # The first sends hang at the provider, which has already taken the message: a worker killed
    # now dies with requests in flight.
    fake_twilio.program(delay=2.0, times=8)
    make_due(engine, ids, datetime.now(UTC) - timedelta(minutes=1))

    def worker_with_both_pool_processes_mid_request() -> str | None:
        # Fresh requests leave at least a second before any answer comes back.
        now = datetime.now(UTC)
        waiting = Counter(
            _host(r)
            for r in fake_twilio.create_requests
            if r.status is None and now - r.at < timedelta(seconds=1)
        )
        return next((name for name, host in hosts.items() if waiting[host] == 2), None)

    victim = pipeline.wait_for(
        "a worker with two sends in flight",
        worker_with_both_pool_processes_mid_request,
        timeout=30,
        interval=0.01,
    )
    pipeline.kill(victim)  # SIGKILL to the whole group: main process and pool

    pipeline.wait_for(
        "every due reminder settled", lambda: all_final(engine, ids), timeout=SEND_TIMEOUT
    )
    pipeline.stop_all()

    rows = assert_sent_exactly_once(engine, fake_twilio, ids)
    # The killed sends had reached the provider: found there, not posted again.
    reconciled = [r for r in rows.values() if r.status_reason == "confirmed by the provider"]
    assert len(reconciled) >= 2


@on_postgresql
def test_redis_restarted_mid_batch_loses_and_repeats_nothing(
    own_redis: RedisServer, make_pipeline, engine, fake_twilio
):
    ids = book_courses(engine, 11).reminder_ids
    pipeline = _running(make_pipeline, own_redis.url, engine, ids, REMINDER_LEASE_SECONDS="6")
    fake_twilio.program(delay=0.1, times=len(ids))  # about 40 sends a second: a batch to cut
    make_due(engine, ids, datetime.now(UTC) - timedelta(minutes=1))

    pipeline.wait_for(
        "a quarter of the batch sent",
        lambda: len(_accepted(fake_twilio)) >= len(ids) // 4,
        timeout=30,
    )
    # Nothing is persisted: the queued send tasks die with the server.
    own_redis.kill()
    sent_before = len(_accepted(fake_twilio))
    time.sleep(1.5)
    own_redis.start()
    assert sent_before < len(ids), "the batch finished before Redis went down"

    pipeline.wait_for(
        "every due reminder settled", lambda: all_final(engine, ids), timeout=SEND_TIMEOUT
    )
    pipeline.stop_all()

    assert_sent_exactly_once(engine, fake_twilio, ids)


@on_postgresql
def test_four_dispatchers_at_once_claim_each_reminder_once(
    redis_broker, make_pipeline, engine, fake_twilio, tmp_path: Path
):
    """Two beats ticking, and two loops claiming three rows at a time without pause."""
    ids = book_courses(engine, 11).reminder_ids
    pipeline = make_pipeline(redis_broker)
    pipeline.status = lambda: (
        f"reminder statuses: {dict(status_counts(engine, ids))}\n{broker_state(redis_broker)}"
    )
    pipeline.start_worker("worker-a")
    pipeline.start_worker("worker-b")
    pipeline.start_beat("beat-1")
    pipeline.start_beat("beat-2")
    claims = {name: tmp_path / f"{name}.ids" for name in ("loop-1", "loop-2")}
    for name, path in claims.items():
        pipeline.start_module(name, "tests.integration.dispatch_loop", str(path), ready=LOOP_READY)
    pipeline.wait_ready()
    # A few rows come due every few milliseconds, so the dispatchers keep meeting on them.
    first = datetime.now(UTC) + timedelta(seconds=1)
    make_due(engine, ids, [first + timedelta(seconds=3 * k / len(ids)) for k in range(len(ids))])

    pipeline.wait_for(
        "every due reminder sent", lambda: all_final(engine, ids), timeout=SEND_TIMEOUT
    )
    pipeline.stop_all()

    assert_sent_exactly_once(engine, fake_twilio, ids)
    claimed = {name: [int(x) for x in path.read_text().split()] for name, path in claims.items()}
    twice = [i for i, n in Counter(i for c in claimed.values() for i in c).items() if n > 1]
    assert twice == [], "SKIP LOCKED let two dispatchers claim the same reminder"
    assert all(claimed.values()), (
        f"a loop never won a claim: { {k: len(v) for k, v in claimed.items()} }"
    )


@on_postgresql
def test_a_burst_of_429s_is_retried_with_backoff_and_sent_once(
    redis_broker, make_pipeline, engine, fake_twilio
):
    ids = book_courses(engine, 11).reminder_ids
    pipeline = _running(make_pipeline, redis_broker, engine, ids)
    # A batch stops at its first 429, so each tick spends about one refusal per batch: twenty
    # are spent within a few ticks, well before the first backoff (15 s at the least) ends,
    # and every refusal falls on a different reminder. Fifty took long enough on a loaded
    # machine for a reminder to come back from its backoff into the burst and be refused twice.
    refused = 20
    fake_twilio.program(status=429, times=refused)
    make_due(engine, ids, datetime.now(UTC) - timedelta(minutes=1))

    # The first retry waits 15-30 s (half to all of BACKOFF_BASE, jittered).
    pipeline.wait_for(
        "every due reminder sent", lambda: all_final(engine, ids), timeout=SEND_TIMEOUT + 30
    )
    pipeline.stop_all()

    rows = assert_sent_exactly_once(engine, fake_twilio, ids, refused=refused)
    creates = fake_twilio.create_requests
    first_try = _sent_by_key([r for r in creates if r.status == 429])
    sent = _sent_by_key(_accepted(fake_twilio))
    assert len(first_try) == refused
    for key, at in first_try.items():
        assert sent[key] - at > sending.BACKOFF_BASE / 2, f"retried before its backoff: {key}"
    attempts = Counter(rows[i].attempts for i in ids)
    assert attempts == Counter({1: len(ids) - refused, 2: refused})


@on_postgresql
def test_a_reminder_whose_fraction_moved_after_its_claim_is_never_sent(
    redis_broker, make_pipeline, engine, fake_twilio
):
    # Sixteen courses hold 96 to 176 reminders: at least four send batches, so every pool
    # process of both workers is busy and the last batch, holding the target, waits.
    ids = book_courses(engine, 16).reminder_ids
    sessions = make_session_factory(engine)
    with sessions() as session:
        fraction = session.scalars(
            sa.select(Fraction)
            .join(Reminder, Reminder.fraction_id == Fraction.id)
            .where(Reminder.id.in_(ids))
            .order_by(Fraction.starts_at.desc())
        ).first()
        assert fraction is not None
        stale = {
            kind: reminder_id
            for reminder_id, kind in session.execute(
                sa.select(Reminder.id, Reminder.kind).where(Reminder.fraction_id == fraction.id)
            )
        }
    target = stale["day_before"]
    # The fraction's same-day reminder (if any) stays days away; its day-before reminder comes
    # due last of all, so its send task waits at the back of the queue.
    due = [i for i in ids if i != stale.get("same_day")]
    assert len(due) > 3 * SEND_BATCH + 1, len(due)
    now = datetime.now(UTC)
    pipeline = _running(make_pipeline, redis_broker, engine, due)
    fake_twilio.program(delay=4.0, times=4)  # holds every pool process for four seconds
    make_due(engine, due, [now - timedelta(seconds=1 if i == target else 60) for i in due])

    def claimed_and_waiting() -> bool:
        waiting = [r for r in fake_twilio.create_requests if r.status is None]
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(Reminder.status, Reminder.send_started_at).where(Reminder.id == target)
            ).one()
        return len(waiting) == 4 and row == (ReminderStatus.CLAIMED, None)

    pipeline.wait_for(
        "the day-before reminder claimed, its task queued", claimed_and_waiting, timeout=30
    )
    with sessions() as session:
        moved_at = datetime.now(UTC)
        slot = next(
            a
            for a in services.fraction_alternatives(session, fraction.id, now=moved_at)
            if a.start != fraction.starts_at
        )
        services.move_fraction(
            session, fraction.id, linac_id=slot.linac_id, starts_at=slot.start, now=moved_at
        )
    with engine.connect() as conn:
        new = dict(
            conn.execute(
                sa.select(Reminder.kind, Reminder.id).where(
                    Reminder.fraction_id == fraction.id, Reminder.fraction_version == 2
                )
            )
            .tuples()
            .all()
        )
    assert {"change", "day_before"} <= set(new), new
    # The superseding reminders (the new day-before reminder, the change notice and any
    # same-day one) go now.
    make_due(engine, list(new.values()), datetime.now(UTC))
    expected = [i for i in due if i != target] + list(new.values())

    pipeline.wait_for(
        "every reminder settled",
        lambda: all_final(engine, [*expected, target]),
        timeout=SEND_TIMEOUT,
    )
    pipeline.stop_all()

    rows = assert_sent_exactly_once(engine, fake_twilio, expected)
    for old in stale.values():
        assert rows[old].status == ReminderStatus.SUPERSEDED
        assert rows[old].provider_id is None
