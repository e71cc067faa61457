"""The sign-in page's throttle: per account and client address, a growing delay shown in
minutes, the same answer for unknown accounts, and a limit parallel guesses cannot pass."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from config import Settings
from scheduler.models import AuditEntry
from scheduler.sign_in_throttle import MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS
from tests.api.conftest import ADMIN_PASSWORD, Seed
from tests.pages.conftest import csrf_from
from web import create_app

LIMIT = MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS
ADMIN = "admin@example.org"
STRANGER = "203.0.113.66"
OWNER = "192.0.2.10"
# A fixed moment for tests that move the clock, so they never depend on the day they run.
MONDAY_MORNING = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _sign_in(client: FlaskClient, email: str, password: str, address: str, **headers: str):
    environ = {"REMOTE_ADDR": address}
    token = csrf_from(client.get("/login", environ_base=environ).get_data(as_text=True))
    return client.post(
        "/login",
        data={"csrf_token": token, "email": email, "password": password},
        environ_base=environ,
        headers=headers,
    )


def _statuses(client: FlaskClient, times: int, email: str = ADMIN, address: str = STRANGER):
    return [_sign_in(client, email, "wrong-guess!", address).status_code for _ in range(times)]


def test_a_strangers_failures_do_not_lock_the_owner_out(client: FlaskClient, seed: Seed) -> None:
    # A still clock, so the wait the page states does not depend on how fast the test runs.
    with time_machine.travel(MONDAY_MORNING, tick=False):
        assert _statuses(client, LIMIT - 1) == [401] * (LIMIT - 1)
        last = _sign_in(client, ADMIN, "wrong-guess!", STRANGER)
        refused = _sign_in(client, ADMIN, ADMIN_PASSWORD, STRANGER)
        # Meanwhile the owner, from their own address, signs in as usual.
        owner = _sign_in(client.application.test_client(), ADMIN, ADMIN_PASSWORD, OWNER)
        still_refused = _sign_in(client, ADMIN, ADMIN_PASSWORD, STRANGER)
    assert last.status_code == 401
    # The failure that starts the delay says so at once.
    assert "wrong. Too many attempts; try again in 1 minute." in last.get_data(as_text=True)
    assert refused.status_code == 429
    assert "Too many attempts; try again in 1 minute." in refused.get_data(as_text=True)
    assert refused.headers["Retry-After"] == "60"
    assert owner.status_code == 302
    assert still_refused.status_code == 429


def test_behind_a_trusted_proxy_each_client_address_has_its_own_count(
    settings: Settings, engine: sa.Engine, seed: Seed
) -> None:
    app = create_app(dataclasses.replace(settings, trusted_proxies=1))
    app.config["TESTING"] = True
    proxy = "10.0.0.2"

    def attempt(client_address: str, password: str) -> int:
        client = app.test_client()
        forwarded = {"X-Forwarded-For": client_address}
        token_page = client.get("/login", environ_base={"REMOTE_ADDR": proxy}, headers=forwarded)
        return client.post(
            "/login",
            data={"csrf_token": csrf_from(token_page.get_data(as_text=True)), "email": ADMIN,
                  "password": password},
            environ_base={"REMOTE_ADDR": proxy},
            headers=forwarded,
        ).status_code  # fmt: skip

    assert [attempt(STRANGER, "wrong-guess!") for _ in range(LIMIT)] == [401] * LIMIT
    assert attempt(STRANGER, ADMIN_PASSWORD) == 429
    assert attempt(OWNER, ADMIN_PASSWORD) == 302


def test_unknown_accounts_are_answered_exactly_like_known_ones(
    client: FlaskClient, seed: Seed
) -> None:
    known = _statuses(client, LIMIT + 1, email=ADMIN)
    unknown = _statuses(client, LIMIT + 1, email="nobody@example.org")
    assert known == unknown == [401] * LIMIT + [429]
    pages = [
        _sign_in(client, email, "wrong-guess!", STRANGER).get_data(as_text=True)
        for email in (ADMIN, "nobody@example.org")
    ]
    assert all("Too many attempts; try again in 1 minute." in page for page in pages)


def test_the_delay_grows_and_a_right_password_works_once_it_has_passed(
    client: FlaskClient, seed: Seed
) -> None:
    with time_machine.travel(MONDAY_MORNING, tick=False) as clock:
        assert _statuses(client, LIMIT) == [401] * LIMIT
        assert _statuses(client, 1) == [429]
        clock.shift(timedelta(minutes=1))
        # One more wrong guess once the minute has passed doubles the delay.
        assert _statuses(client, 1) == [401]
        refused = _sign_in(client, ADMIN, ADMIN_PASSWORD, STRANGER)
        assert refused.status_code == 429
        assert "try again in 2 minutes." in refused.get_data(as_text=True)
        clock.shift(timedelta(minutes=1, seconds=59))
        assert _sign_in(client, ADMIN, ADMIN_PASSWORD, STRANGER).status_code == 429
        clock.shift(timedelta(seconds=1))
        assert _sign_in(client, ADMIN, ADMIN_PASSWORD, STRANGER).status_code == 302


def test_parallel_wrong_guesses_check_no_more_than_the_limit(app: Flask, seed: Seed) -> None:
    guesses = 20
    clients = [app.test_client() for _ in range(guesses)]
    tokens = [
        csrf_from(c.get("/login", environ_base={"REMOTE_ADDR": STRANGER}).get_data(as_text=True))
        for c in clients
    ]
    start = threading.Barrier(guesses)
    statuses: list[int] = []

    def guess(client: FlaskClient, token: str) -> None:
        start.wait()
        response = client.post(
            "/login",
            data={"csrf_token": token, "email": ADMIN, "password": "wrong-guess!"},
            environ_base={"REMOTE_ADDR": STRANGER},
        )
        statuses.append(response.status_code)

    threads = [
        threading.Thread(target=guess, args=pair) for pair in zip(clients, tokens, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 401: the password was checked and wrong; 429: refused before any check.
    assert sorted(statuses) == [401] * LIMIT + [429] * (guesses - LIMIT)


def test_each_delay_a_failure_starts_is_audited_without_naming_the_account(
    client: FlaskClient, seed: Seed, db: Session
) -> None:
    with time_machine.travel(MONDAY_MORNING, tick=False) as clock:
        _statuses(client, LIMIT)
        clock.shift(timedelta(minutes=1))
        _statuses(client, 2)  # one checked and wrong, starting two minutes; one refused
    entries = db.scalars(sa.select(AuditEntry).where(AuditEntry.subject_type == "sign_in")).all()
    assert [(e.action, e.subject_id, e.actor_id) for e in entries] == [("delay", None, None)] * 2
    assert [e.detail["minutes"] for e in entries] == [1, 2]
    assert all(ADMIN not in str(e.detail) for e in entries)
