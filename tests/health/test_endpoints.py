"""/healthz, /readyz, the admins' System page and the stalled-reminders banner."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from config import Settings, load_settings
from scheduler import heartbeats
from tests.api.conftest import Seed
from tests.health import data
from tests.pages.conftest import SignIn
from web import create_app, health


@pytest.fixture(autouse=True)
def _no_cached_banner() -> Iterator[None]:
    health.forget_banner_cache()
    yield
    health.forget_banner_cache()


def _alive(db: Session) -> None:
    now = datetime.now(UTC)
    data.stamp(db, heartbeats.BEAT, now)
    data.stamp(db, heartbeats.WORKER, now)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_healthz_answers_without_a_database(tmp_path: Path) -> None:
    # A directory where the database file should be: every query would fail.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}", "SECRET_KEY": "x" * 40,
           "INSTANCE_DIR": str(tmp_path)}  # fmt: skip
    client = create_app(load_settings(env)).test_client()
    response = client.get("/healthz")
    assert (response.status_code, response.json) == (200, {"status": "ok"})
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["checks"]["database"]["status"] == "fail"


def test_readyz_is_ready_with_fresh_heartbeats(client: FlaskClient, db: Session) -> None:
    _alive(db)
    response = client.get("/readyz")
    assert response.status_code == 200, response.json
    body = response.json
    assert body["status"] == "ok" and body["reminders_stalled"] is False
    assert set(body["checks"]) == {
        "database", "broker", "beat", "worker", "reminder_lag", "task_failures"
    }  # fmt: skip
    for check in body["checks"].values():
        assert check["status"] == "ok" and check["figure"] is not None
    assert body["checks"]["beat"]["unit"] == "s"
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_fails_when_the_worker_stopped(
    client: FlaskClient, db: Session, settings: Settings
) -> None:
    now = datetime.now(UTC)
    data.stamp(db, heartbeats.BEAT, now)
    data.stamp(db, heartbeats.WORKER, now - timedelta(seconds=settings.worker_stale_after + 5))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["worker"]["status"] == "fail"
    assert response.json["checks"]["beat"]["status"] == "ok"
    assert response.json["reminders_stalled"] is True


def test_readyz_fails_when_a_reminder_is_overdue(
    client: FlaskClient, db: Session, settings: Settings
) -> None:
    _alive(db)
    data.due_reminder(db, datetime.now(UTC) - timedelta(seconds=settings.reminder_lag_limit + 60))
    response = client.get("/readyz")
    assert response.status_code == 503
    lag = response.json["checks"]["reminder_lag"]
    assert lag["status"] == "fail" and lag["figure"] >= settings.reminder_lag_limit + 60


def test_readyz_names_no_broker_host_or_password(settings: Settings, engine, db: Session) -> None:
    port = _closed_port()
    url = f"redis://:hunter2-broker-secret@127.0.0.1:{port}/0"
    app = create_app(Settings(**{**settings.__dict__, "broker_url": url,
                                 "health_broker_timeout_seconds": 1.0}))  # fmt: skip
    _alive(db)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["broker"]["status"] == "fail"
    text = response.get_data(as_text=True)
    for secret in ("hunter2", "127.0.0.1", str(port), "redis://", settings.database_url):
        assert secret not in text


def test_system_page_is_for_admins_only(client: FlaskClient, signed_in: SignIn, seed: Seed) -> None:
    anonymous = client.get("/admin/system")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    for role in ("viewer", "scheduler"):
        signed_in(client, role)
        assert client.get("/admin/system").status_code == 403


def test_system_page_shows_checks_and_masked_failures(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    _alive(db)
    data.failure(
        db,
        "notifications.send_reminders",
        ConnectionError("550 ana.example@mail.example.org unavailable"),
        datetime.now(UTC) - timedelta(minutes=3),
    )
    signed_in(client, "admin")
    admin = client.get("/admin")
    assert 'href="/admin/system"' in admin.get_data(as_text=True)  # in the admin navigation
    page = client.get("/admin/system")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Ready: reminders are going out." in html
    for label in ("Database", "Message broker", "Scheduler (beat)", "Worker",
                  "Oldest due reminder", "Task failures"):  # fmt: skip
        assert f'<th scope="row">{label}</th>' in html
    assert "notifications.send_reminders" in html and "ConnectionError" in html
    assert "550 [email] unavailable" in html and "ana.example" not in html


def test_system_page_says_not_ready(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    signed_in(client, "admin")
    html = client.get("/admin/system").get_data(as_text=True)
    assert "Not ready" in html and "has never ticked" in html


def test_banner_on_staff_pages_only_while_reminders_are_stalled(
    app: Flask, client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session,
    settings: Settings,
) -> None:  # fmt: skip
    banner = "Reminders are stalled"
    assert banner not in client.get("/login").get_data(as_text=True)  # nobody signed in
    signed_in(client, "scheduler")
    stalled = client.get("/calendar/week").get_data(as_text=True)  # nothing has ever ticked
    assert banner in stalled and "Tell an administrator" in stalled
    _alive(db)
    # Cached for a few seconds per process, so a busy page costs no extra queries.
    assert banner in client.get("/calendar/week").get_data(as_text=True)
    health.forget_banner_cache()
    assert banner not in client.get("/calendar/week").get_data(as_text=True)
    health.forget_banner_cache()
    # Late in a department this scheduler is not a member of: health is the whole service's.
    data.due_reminder(db, datetime.now(UTC) - timedelta(seconds=settings.reminder_lag_limit + 1))
    assert banner in client.get("/calendar/week").get_data(as_text=True)
    health.forget_banner_cache()
    signed_in(client, "admin")
    page = client.get("/admin").get_data(as_text=True)
    assert banner in page and 'See <a href="/admin/system">System</a>' in page


def test_banner_never_breaks_a_page(
    app: Flask, client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    signed_in(client, "scheduler")

    def broken(*_args, **_kwargs):
        raise RuntimeError("health checking itself failed")

    monkeypatch.setattr("scheduler.health.readiness", broken)
    health.forget_banner_cache()  # signing in showed a page, which worked it out already
    page = client.get("/calendar/week")
    assert page.status_code == 200
    assert "Reminders are stalled" not in page.get_data(as_text=True)
