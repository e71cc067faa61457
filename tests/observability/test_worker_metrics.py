"""The worker's metrics port and log lines, from real worker and beat processes.

Reminders go through a real Celery worker (prefork, two pool processes) and beat to the
Twilio-compatible server; the worker's /metrics must count what the provider recorded, summed
over the pool's processes, and its JSON log lines must carry the request ids of the ticks
and of the web request that queued a task.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import load_settings
from tests.fakes.twilio_server import FakeTwilio
from tests.integration.harness import all_final, book_courses, make_due
from tests.observability.scrape import free_port, get, value
from web import create_app, task_queue

pytestmark = [pytest.mark.slow, pytest.mark.redis]
on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
SEND_TIMEOUT = 60.0
INVALID_NUMBER = 21211  # Twilio: permanent, never retried


def _json_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@on_postgresql
def test_worker_metrics_count_what_the_provider_saw_and_logs_carry_request_ids(
    redis_broker, make_pipeline, engine: sa.Engine, fake_twilio: FakeTwilio, database_url: str
) -> None:
    ids = book_courses(engine, 2).reminder_ids
    port = free_port()
    pipeline = make_pipeline(
        redis_broker, WORKER_METRICS_PORT=str(port), LOG_FORMAT="json", METRICS_TOKEN="tkn-123"
    )
    pipeline.start_worker("worker")
    pipeline.start_beat("beat")
    pipeline.wait_ready()
    # The first message is refused for good: one provider error with its code.
    fake_twilio.program(status=400, code=INVALID_NUMBER, times=1)
    make_due(engine, ids, datetime.now(UTC) - timedelta(minutes=1))
    pipeline.wait_for(
        "every reminder settled", lambda: all_final(engine, ids), timeout=SEND_TIMEOUT
    )

    # A task queued while a web request runs carries that request's id to the worker.
    app = create_app(
        load_settings(
            {
                "DATABASE_URL": database_url,
                "BROKER_URL": redis_broker,
                "SECRET_KEY": "test-secret-key-not-for-production",
                "INSTANCE_DIR": str(pipeline.tmp_path),
            }
        )
    )
    with app.test_request_context("/", headers={"X-Request-ID": "from-the-web-1234"}):
        app.preprocess_request()
        task_queue.enqueue("scheduler.tasks.record_heartbeat")
    log = pipeline.processes["worker"].log
    pipeline.wait_for(
        "the queued task's log line",
        lambda: any(line.get("request_id") == "from-the-web-1234" for line in _json_lines(log)),
        timeout=30,
    )

    # A task that raises: the heartbeat task takes no argument.
    with app.app_context():
        task_queue.enqueue("scheduler.tasks.record_heartbeat", "unexpected")
    base = f"http://127.0.0.1:{port}/metrics"
    assert get(base)[0] == 401
    failures = "sbrt_task_failures_total"

    def scraped_after_the_failure() -> str | None:
        # The failure is counted when the task raises and its duration once it has ended
        # (two signals, a moment apart): a scrape in between would see only the first.
        page = get(base, {"Authorization": "Bearer tkn-123"})[1]
        ended = value(page, "sbrt_task_duration_seconds_count", state="FAILURE")
        return page if value(page, failures) >= 1 and ended >= 1 else None

    text = pipeline.wait_for("the failed task counted", scraped_after_the_failure, timeout=30)
    assert value(text, failures) == 1
    assert value(text, failures, task="scheduler.tasks.record_heartbeat", exception="TypeError")
    assert (
        value(
            text,
            "sbrt_task_duration_seconds_count",
            task="scheduler.tasks.record_heartbeat",
            state="FAILURE",
        )
        == 1
    )
    answered = Counter(r.status for r in fake_twilio.create_requests)
    assert answered[400] == 1 and answered[201] >= 1
    assert (
        value(text, "sbrt_reminder_sends_total", channel="sms", outcome="accepted")
        == (answered[201])
    )
    assert value(text, "sbrt_reminder_sends_total", channel="sms", outcome="permanent") == 1
    assert value(text, "sbrt_provider_errors_total", channel="sms", code=str(INVALID_NUMBER)) == 1
    assert value(text, "sbrt_provider_request_duration_seconds_count", channel="sms") == len(
        fake_twilio.create_requests
    )
    sends = value(text, "sbrt_task_duration_seconds_count", task="notifications.send_reminders")
    assert sends >= 1
    assert (
        value(text, "sbrt_task_duration_seconds_count", task="notifications.dispatch_due_reminders")
        >= 1
    )

    # Every line is JSON; each send's line shares its id with the dispatch tick that queued it.
    lines = _json_lines(log)
    assert lines and all({"time", "level", "logger", "message", "service"} <= set(x) for x in lines)
    sent = [x for x in lines if x["message"].startswith("reminder ")]
    assert len(sent) == len(fake_twilio.create_requests)
    ticks = {
        x["request_id"]
        for x in lines
        if "notifications.dispatch_due_reminders" in x["message"] and "succeeded" in x["message"]
    }
    assert {x["request_id"] for x in sent} <= ticks
