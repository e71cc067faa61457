"""Real processes for the reminder pipeline: Celery workers, beat, Redis, a fake Twilio.

Nothing of ours is mocked or run eagerly. Workers and dispatchers are subprocesses; the
Twilio-compatible server runs in the test process, so a killed worker cannot take it down and its
records stay readable. Each test gets a Redis server of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from tests.conftest import REDIS_URL, unavailable
from tests.fakes.twilio_server import FakeTwilio
from tests.integration.harness import (
    FROM_NUMBER,
    PUBLIC_BASE_URL,
    REPORTS,
    SHARED_BROKER_DB,
    Pipeline,
    RedisServer,
    app_environment,
    start_redis,
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORTS:
        terminalreporter.section("reminder pipeline")
        for line in REPORTS:
            terminalreporter.write_line(line)


@pytest.fixture
def make_pipeline(
    database_url: str, fake_twilio: FakeTwilio, tmp_path: Path
) -> Iterator[Callable[..., Pipeline]]:
    """Build the pipeline's environment for a broker; every process is stopped at teardown."""
    made: list[Pipeline] = []
    instance = tmp_path / "instance"
    instance.mkdir()

    def make(broker_url: str, **env: str) -> Pipeline:
        pipeline = Pipeline(
            tmp_path,
            app_environment(
                DATABASE_URL=database_url,
                BROKER_URL=broker_url,
                SECRET_KEY="test-secret-key-not-for-production",
                PUBLIC_BASE_URL=PUBLIC_BASE_URL,
                INSTANCE_DIR=str(instance),
                DISPATCH_INTERVAL_SECONDS="1",
                TWILIO_ACCOUNT_SID=fake_twilio.account_sid,
                TWILIO_AUTH_TOKEN=fake_twilio.auth_token,
                TWILIO_FROM_NUMBER=FROM_NUMBER,
                TWILIO_BASE_URL=fake_twilio.base_url,
                PYTHONUNBUFFERED="1",
                **env,
            ),
        )
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.stop_all()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server the test may kill and restart."""
    server = start_redis(tmp_path)
    if server is None:
        unavailable("redis-server is not installed")
    yield server
    server.kill()


@pytest.fixture
def redis_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A Redis broker no other test run can reach: a redis-server of the test's own.

    Several sessions share the development machines and their Redis; a database number of our
    own is not enough, since another run of these tests would use the same one. Only when
    redis-server is not installed is the shared Redis used (skipped, or failed under
    REQUIRE_SERVICES=1, when it is unreachable), in a database of its own, emptied.
    """
    server = start_redis(tmp_path)
    if server is not None:
        yield server.url
        server.kill()
        return
    request.getfixturevalue("redis_url")
    parts = urlsplit(REDIS_URL)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{SHARED_BROKER_DB}", "", ""))
    client = redis.Redis.from_url(url, socket_timeout=5)
    client.flushdb()
    yield url
    with contextlib.suppress(redis.RedisError):
        client.flushdb()
    client.close()
