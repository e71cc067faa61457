"""How many task messages wait in the broker, per queue, read at scrape time.

Redis (production) keeps each queue as a list: its length is the depth. The embedded broker
(kombu's SQLAlchemy transport) keeps messages as rows, the visible ones waiting. Any other
broker reports nothing rather than a guess.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import cache

import redis
import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler.observability.metrics import PREFIX

log = logging.getLogger(__name__)

DEPTH = PREFIX + "queue_depth"
BROKER_UP = PREFIX + "broker_up"
DEPTH_HELP = "Task messages waiting in the broker, by queue"
BROKER_UP_HELP = "1 when the broker answered the last queue depth reading"
REDIS_SCHEMES = ("redis", "rediss")
# kombu's Redis transport keeps a queue's messages of priority 3, 6 and 9 in lists of their
# own, named after the queue with these separators.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
# A scrape must answer quickly even when the broker is down.
TIMEOUT_SECONDS = 2.0


@cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
    )


@cache
def _kombu_engine(url: str) -> sa.Engine:
    return sa.create_engine(url.removeprefix("sqla+"), connect_args={"timeout": TIMEOUT_SECONDS})


def queue_depths(broker_url: str, queues: tuple[str, ...]) -> dict[str, int] | None:
    """Messages waiting per queue; None when this broker cannot be asked."""
    scheme = broker_url.split(":", 1)[0]
    if scheme in REDIS_SCHEMES:
        client = _redis(broker_url)
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
        lengths = pipe.execute()
        step = len(_PRIORITY_SUFFIXES)
        return {q: sum(lengths[i * step : (i + 1) * step]) for i, q in enumerate(queues)}
    if broker_url.startswith("sqla+"):
        with _kombu_engine(broker_url).connect() as conn:
            try:
                rows = conn.execute(
                    sa.text(
                        "SELECT q.name, count(m.id) FROM kombu_queue q"
                        " LEFT JOIN kombu_message m ON m.queue_id = q.id AND m.visible"
                        " GROUP BY q.name"
                    )
                ).all()
            except sa.exc.OperationalError:
                return dict.fromkeys(queues, 0)  # no worker has declared a queue yet
        found = dict(rows)
        return {q: int(found.get(q, 0)) for q in queues}
    return None


class QueueDepthCollector(Collector):
    def __init__(self, broker_url: str, queues: tuple[str, ...]) -> None:
        self.broker_url = broker_url
        self.queues = queues

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(DEPTH, DEPTH_HELP, labels=["queue"])
        yield GaugeMetricFamily(BROKER_UP, BROKER_UP_HELP)

    def collect(self) -> Iterator[Metric]:
        try:
            depths = queue_depths(self.broker_url, self.queues)
        except (redis.RedisError, sa.exc.SQLAlchemyError, OSError) as exc:
            log.warning("metrics: the broker could not be asked (%s)", type(exc).__name__)
            yield GaugeMetricFamily(BROKER_UP, BROKER_UP_HELP, 0)
            return
        if depths is None:
            return
        depth = GaugeMetricFamily(DEPTH, DEPTH_HELP, labels=["queue"])
        for queue, count in depths.items():
            depth.add_metric([queue], count)
        yield depth
        yield GaugeMetricFamily(BROKER_UP, BROKER_UP_HELP, 1)
