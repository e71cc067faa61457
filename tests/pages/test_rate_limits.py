"""Per-address limits shared by every web process (Redis), and client addresses behind a proxy."""

from __future__ import annotations

import dataclasses
import secrets

import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from config import Settings, load_settings
from web import create_app
from web.patient.ratelimit import RedisWindowLimiter

LIMIT = 30  # the patient link pages' default, requests per minute per address


def _app(settings: Settings, **changes: object) -> Flask:
    app = create_app(dataclasses.replace(settings, **changes))
    app.config["TESTING"] = True
    return app


def _address() -> str:
    # A fresh address per test: counts in Redis outlive a test by up to a minute.
    return f"198.51.100.{secrets.randbelow(250) + 1}-{secrets.token_hex(3)}"


def _guess(client, address: str, **headers: str) -> int:
    path = f"/p/{secrets.token_hex(8)}"
    return client.get(path, environ_base={"REMOTE_ADDR": address}, headers=headers).status_code


def test_two_web_processes_share_one_count_in_redis(
    settings: Settings, engine: sa.Engine, redis_url: str
) -> None:
    first = _app(settings, rate_limit_redis_url=redis_url).test_client()
    second = _app(settings, rate_limit_redis_url=redis_url).test_client()
    address = _address()
    answers = [_guess(first if n % 2 else second, address) for n in range(LIMIT)]
    assert answers == [404] * LIMIT
    # Each app has seen only half the limit; together they have seen all of it.
    assert _guess(first, address) == 429
    assert _guess(second, address) == 429
    assert _guess(second, _address()) == 404  # another address is unaffected


def test_without_redis_each_process_counts_alone(settings: Settings, engine: sa.Engine) -> None:
    first = _app(settings, rate_limit_redis_url=None).test_client()
    second = _app(settings, rate_limit_redis_url=None).test_client()
    address = _address()
    for _ in range(LIMIT):
        assert _guess(first, address) == 404
    assert _guess(first, address) == 429
    assert _guess(second, address) == 404


def test_an_unreachable_redis_lets_patients_through(settings: Settings, engine: sa.Engine) -> None:
    client = _app(settings, rate_limit_redis_url="redis://127.0.0.1:1/0").test_client()
    address = _address()
    assert [_guess(client, address) for _ in range(LIMIT + 5)] == [404] * (LIMIT + 5)


def test_behind_a_trusted_proxy_each_client_has_its_own_limit(
    settings: Settings, engine: sa.Engine
) -> None:
    client = _app(settings, trusted_proxies=1, rate_limit_redis_url=None).test_client()
    proxy = "10.0.0.2"
    for _ in range(LIMIT):
        assert _guess(client, proxy, **{"X-Forwarded-For": "203.0.113.10"}) == 404
    assert _guess(client, proxy, **{"X-Forwarded-For": "203.0.113.10"}) == 429
    # Another patient behind the same proxy is not counted with the first.
    assert _guess(client, proxy, **{"X-Forwarded-For": "203.0.113.11"}) == 404


def test_without_a_trusted_proxy_a_forged_forwarded_header_changes_nothing(
    settings: Settings, engine: sa.Engine
) -> None:
    client = _app(settings, trusted_proxies=0, rate_limit_redis_url=None).test_client()
    address = _address()
    for n in range(LIMIT):
        assert _guess(client, address, **{"X-Forwarded-For": f"203.0.113.{n}"}) == 404
    assert _guess(client, address, **{"X-Forwarded-For": "203.0.113.200"}) == 429


def test_the_redis_window_expires_with_its_minute(redis_url: str) -> None:
    now = [1_000_020.0]
    limiter = RedisWindowLimiter(
        redis.Redis.from_url(redis_url), f"test-{secrets.token_hex(4)}", 2, 60, clock=lambda: now[0]
    )
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.allow("b") is True
    now[0] += 60  # the next window
    assert limiter.allow("a") is True


def test_settings_for_proxies_and_shared_limits(tmp_path) -> None:
    base = {"SECRET_KEY": "x", "INSTANCE_DIR": str(tmp_path)}
    assert load_settings(base).rate_limit_redis_url is None  # the embedded broker: in memory
    on_redis = load_settings(base | {"BROKER_URL": "redis://broker:6379/0"})
    assert on_redis.rate_limit_redis_url == "redis://broker:6379/0"
    own = load_settings(
        base | {"BROKER_URL": "redis://broker:6379/0", "RATE_LIMIT_REDIS_URL": "redis://rl/1"}
    )
    assert own.rate_limit_redis_url == "redis://rl/1"
    assert load_settings(base | {"TRUSTED_PROXIES": "2"}).trusted_proxies == 2
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        load_settings(base | {"TRUSTED_PROXIES": "-1"})
