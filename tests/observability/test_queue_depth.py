"""The broker's queue depths as a scrape reports them, on Redis and on the embedded broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery

from scheduler.observability.queue_depth import queue_depths

QUEUES = ("celery", "ticks")


def _queue(broker_url: str, counts: dict[str, int]) -> None:
    """Queue messages with no worker to take them, as the web app queues them."""
    producer = Celery("queue-depth-test", broker=broker_url)
    producer.conf.update(task_serializer="json", accept_content=["json"])
    for queue, count in counts.items():
        for _ in range(count):
            producer.send_task("scheduler.tasks.record_heartbeat", args=["x"], queue=queue)


@pytest.mark.redis
def test_redis_queue_lengths(redis_broker: str) -> None:
    assert queue_depths(redis_broker, QUEUES) == {"celery": 0, "ticks": 0}
    _queue(redis_broker, {"celery": 3, "ticks": 1})
    assert queue_depths(redis_broker, QUEUES) == {"celery": 3, "ticks": 1}


def test_embedded_broker_waiting_messages(tmp_path: Path) -> None:
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    assert queue_depths(broker, QUEUES) == {"celery": 0, "ticks": 0}
    _queue(broker, {"celery": 2})
    assert queue_depths(broker, QUEUES) == {"celery": 2, "ticks": 0}


def test_other_brokers_report_nothing() -> None:
    assert queue_depths("amqp://guest@127.0.0.1//", QUEUES) is None
