"""(b) of the reminder benchmarks: worker memory with 100,000 reminders scheduled for 30 days.

Our design keeps a scheduled reminder as a row in the database outbox; the worker holds nothing
until a row is due. The naive design it is compared with, side by side in the same run on the
same Redis, is the one ENGINEERING.md warns against: one Celery task per reminder, enqueued with
``eta=`` its due time. It lives here, not in product code: ``naive`` is a tiny separate Celery
app (``celery -A bench.memory:naive worker``) on its own Redis database, with the product's
worker settings (prefetch 1, late acks, JSON), so the only difference is the ETA. A worker
takes ETA messages off the queue at once, whatever the prefetch setting, and keeps each in its
timer until due: the memory that holds 100,000 of them is the worker's.

This module is imported by that worker, so it imports nothing but Celery, psutil and redis.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time as clock
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psutil
import redis
from celery import Celery

NAIVE_BROKER_URL = os.environ.get("BENCH_NAIVE_BROKER_URL", "redis://127.0.0.1:6379/11")
NAIVE_QUEUE = "celery"
# The naive worker starts on a queue nobody sends to, so it is idle while the 100,000 tasks are
# written (instead of competing for the two cores with the enqueueing); then it is told to
# consume the real queue.
IDLE_QUEUE = "bench-naive-idle"
MB = 1024 * 1024

naive = Celery("naive_eta", broker=NAIVE_BROKER_URL)
naive.conf.update(
    # The product's worker settings (worker.py), so the ETA is the only difference.
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    timezone="UTC",
    enable_utc=True,
    broker_transport_options={"visibility_timeout": 600},
    task_serializer="json",
    accept_content=["json"],
)


@naive.task(name="naive.send_reminder", ignore_result=True)
def naive_send_reminder(reminder_id: int) -> int:
    """Would load the reminder and send it; never runs here (every ETA is days away)."""
    return reminder_id


@dataclass
class MemoryRow:
    design: str
    idle_mb: float
    loaded_mb: float
    processes: int
    loaded: int  # reminders written (rows inserted / tasks enqueued)
    load_seconds: float  # the time that took
    settle_seconds: float  # from the end of loading to the "loaded" samples
    detail: str = ""

    @property
    def delta_mb(self) -> float:
        return self.loaded_mb - self.idle_mb


@dataclass
class MemoryResult:
    reminders: int
    span_days: int
    rows: list[MemoryRow] = field(default_factory=list)
    samples: int = 0
    notes: list[str] = field(default_factory=list)


def tree_rss_mb(pid: int) -> tuple[float, int]:
    """Resident memory of a process and all its descendants, in MiB, and how many there are."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0
    total = 0
    counted = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
            counted += 1
        except psutil.NoSuchProcess:
            pass
    return total / MB, counted


def sample_rss(
    pids: dict[str, int], *, samples: int = 5, interval: float = 0.5
) -> dict[str, float]:
    """The median of a few RSS samples per process tree (one sample can catch a spike)."""
    seen: dict[str, list[float]] = {name: [] for name in pids}
    for i in range(samples):
        if i:
            clock.sleep(interval)
        for name, pid in pids.items():
            seen[name].append(tree_rss_mb(pid)[0])
    return {name: statistics.median(values) for name, values in seen.items()}


def _enqueue_share(
    k: int, processes: int, count: int, first_due: datetime, span: timedelta, stop_at: float
) -> tuple[int, float]:
    """Enqueue tasks k, k + processes, ... of ``count``, ETAs spread evenly over ``span``.

    Stops at ``stop_at`` (time.time()) if not done by then. Returns how many it enqueued and
    when it finished (time.time()).
    """
    step = span / count
    done = 0
    with naive.producer_or_acquire() as producer:
        for i in range(k, count, processes):
            if done % 1000 == 0 and clock.time() > stop_at:
                break
            naive_send_reminder.apply_async((i,), eta=first_due + i * step, producer=producer)
            done += 1
    return done, clock.time()


class EtaEnqueue:
    """Enqueue ``count`` naive tasks from ``processes`` processes in the background.

    Stops after ``limit`` seconds if not done. One process publishes ~1,300 tasks/s on an idle
    machine here (Celery builds each message in Python, then a Redis round trip); two halve the
    wait on two cores; a busy machine can be several times slower, hence the limit.
    """

    def __init__(
        self, count: int, first_due: datetime, span: timedelta, *, limit: float, processes: int = 2
    ) -> None:
        self.limit = limit
        self.started = clock.time()
        jobs = [
            (k, processes, count, first_due, span, self.started + limit) for k in range(processes)
        ]
        self._pool = multiprocessing.get_context("spawn").Pool(processes)
        self._result = self._pool.starmap_async(_enqueue_share, jobs)

    def wait(self) -> tuple[int, float]:
        """(tasks enqueued, seconds the enqueueing took)."""
        try:
            shares = self._result.get(timeout=self.limit + 60)
        finally:
            self.close()
        return sum(n for n, _ in shares), max(t for _, t in shares) - self.started

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()


def start_consuming(timeout: float = 10.0) -> int:
    """Tell the naive worker to consume NAIVE_QUEUE (remote control); how many workers did."""
    replies = naive.control.add_consumer(NAIVE_QUEUE, reply=True, timeout=timeout)
    return len(replies or [])


def naive_backlog(client: redis.Redis) -> tuple[int, int]:
    """(messages still in the queue, messages taken by a worker and not acknowledged)."""
    return int(client.llen(NAIVE_QUEUE)), int(client.hlen("unacked"))
