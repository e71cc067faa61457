"""Per-address limits (Flask-Limiter) shared by every web process through Redis, their 429
answers, and client addresses behind a proxy."""

from __future__ import annotations

import dataclasses
import secrets

import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from config import Settings, load_settings
from web import create_app
from web.ratelimit import KEY_PREFIX, LIMITER_KEY

LIMIT = 30  # the patient link pages' default, requests per minute per address
FEED_LIMIT = 60
# A Redis database of these tests' own, so their counters meet no one else's.
OWN_REDIS_DB = 11


@pytest.fixture
def limits_redis(redis_url: str) -> str:
    # Not emptied: each test counts fresh addresses, and keys expire within a minute.
    return f"{redis_url.rsplit('/', 1)[0]}/{OWN_REDIS_DB}"


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
    settings: Settings, engine: sa.Engine, limits_redis: str
) -> None:
    first = _app(settings, rate_limit_storage_uri=limits_redis).test_client()
    second = _app(settings, rate_limit_storage_uri=limits_redis).test_client()
    address = _address()
    answers = [_guess(first if n % 2 else second, address) for n in range(LIMIT)]
    assert answers == [404] * LIMIT
    # Each app has seen only half the limit; together they have seen all of it.
    assert _guess(first, address) == 429
    assert _guess(second, address) == 429
    assert _guess(second, _address()) == 404  # another address is unaffected
    # The counts are in Redis, under this product's prefix, not in either process.
    assert redis.Redis.from_url(limits_redis).keys(f"*{KEY_PREFIX}*")


def test_without_redis_each_process_counts_alone(settings: Settings, engine: sa.Engine) -> None:
    first = _app(settings, rate_limit_storage_uri="memory://").test_client()
    second = _app(settings, rate_limit_storage_uri="memory://").test_client()
    address = _address()
    for _ in range(LIMIT):
        assert _guess(first, address) == 404
    assert _guess(first, address) == 429
    assert _guess(second, address) == 404


def test_an_unreachable_redis_lets_patients_through(settings: Settings, engine: sa.Engine) -> None:
    client = _app(settings, rate_limit_storage_uri="redis://127.0.0.1:1/0").test_client()
    address = _address()
    assert [_guess(client, address) for _ in range(LIMIT + 5)] == [404] * (LIMIT + 5)


def test_behind_a_trusted_proxy_each_client_has_its_own_limit(
    settings: Settings, engine: sa.Engine
) -> None:
    client = _app(settings, trusted_proxies=1, rate_limit_storage_uri="memory://").test_client()
    proxy = "10.0.0.2"
    for _ in range(LIMIT):
        assert _guess(client, proxy, **{"X-Forwarded-For": "203.0.113.10"}) == 404
    assert _guess(client, proxy, **{"X-Forwarded-For": "203.0.113.10"}) == 429
    # Another patient behind the same proxy is not counted with the first.
    assert _guess(client, proxy, **{"X-Forwarded-For": "203.0.113.11"}) == 404


def test_without_a_trusted_proxy_a_forged_forwarded_header_changes_nothing(
    settings: Settings, engine: sa.Engine
) -> None:
    client = _app(settings, trusted_proxies=0, rate_limit_storage_uri="memory://").test_client()
    address = _address()
    for n in range(LIMIT):
        assert _guess(client, address, **{"X-Forwarded-For": f"203.0.113.{n}"}) == 404
    assert _guess(client, address, **{"X-Forwarded-For": "203.0.113.200"}) == 429


def test_a_refusal_says_when_to_come_back(
    settings: Settings, engine: sa.Engine, limits_redis: str
) -> None:
    client = _app(settings, rate_limit_storage_uri=limits_redis).test_client()
    address = _address()
    for _ in range(LIMIT):
        _guess(client, address)
    refused = client.get(f"/p/{secrets.token_hex(8)}", environ_base={"REMOTE_ADDR": address})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    body = refused.get_data(as_text=True)
    assert "Too many requests" in body and "Demasiadas solicitudes" in body
    assert refused.mimetype == "text/html"


def test_feeds_have_their_own_count_and_a_plain_answer(
    settings: Settings, engine: sa.Engine, limits_redis: str
) -> None:
    client = _app(settings, rate_limit_storage_uri=limits_redis).test_client()
    address = _address()
    env = {"REMOTE_ADDR": address}
    for _ in range(LIMIT):
        _guess(client, address)  # the patient pages' limit is used up...
    # ...and the feeds, counted apart, still answer (404: no such feed).
    answers = [
        client.get(f"/feeds/linac/{secrets.token_hex(8)}.ics", environ_base=env)
        for _ in range(FEED_LIMIT)
    ]
    assert {r.status_code for r in answers} == {404}
    refused = client.get(f"/feeds/linac/{secrets.token_hex(8)}.ics", environ_base=env)
    assert refused.status_code == 429
    assert refused.mimetype == "text/plain"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_an_api_refusal_is_problem_json(
    settings: Settings, engine: sa.Engine, limits_redis: str
) -> None:
    app = _app(settings, rate_limit_storage_uri=limits_redis)
    # The API has no per-address limit of its own today; one made for this test shows how a
    # refusal under /api/ is answered.
    limiter = app.extensions[LIMITER_KEY]
    app.add_url_rule(
        "/api/v1/limited-for-test", "limited_for_test", limiter.limit("1/minute")(lambda: "ok")
    )
    client = app.test_client()
    env = {"REMOTE_ADDR": _address()}
    assert client.get("/api/v1/limited-for-test", environ_base=env).status_code == 200
    refused = client.get("/api/v1/limited-for-test", environ_base=env)
    assert refused.status_code == 429
    assert refused.mimetype == "application/problem+json"
    assert refused.json["status"] == 429 and refused.json["title"] == "Too many requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_settings_for_proxies_and_shared_limits(tmp_path) -> None:
    base = {"SECRET_KEY": "x", "INSTANCE_DIR": str(tmp_path)}
    # The embedded broker: each process counts in memory.
    assert load_settings(base).rate_limit_storage_uri == "memory://"
    on_redis = load_settings(base | {"BROKER_URL": "redis://broker:6379/0"})
    assert on_redis.rate_limit_storage_uri == "redis://broker:6379/0"
    redis_broker = {"BROKER_URL": "redis://broker:6379/0"}
    own = load_settings(base | redis_broker | {"RATE_LIMIT_STORAGE_URI": "redis://rl/1"})
    assert own.rate_limit_storage_uri == "redis://rl/1"
    # The setting's earlier name still works.
    older = load_settings(base | redis_broker | {"RATE_LIMIT_REDIS_URL": "redis://rl/2"})
    assert older.rate_limit_storage_uri == "redis://rl/2"
    assert load_settings(base | {"TRUSTED_PROXIES": "2"}).trusted_proxies == 2
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        load_settings(base | {"TRUSTED_PROXIES": "-1"})
