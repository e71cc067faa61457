"""Staff sessions end on the server: a copied session cookie stops working after sign-out, a
password change or reset, a role change and deactivation, after idling and after its
lifetime; reactivating a user revives neither old sessions nor old API tokens.

A stolen cookie is simulated by copying the session cookie into a second client.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from flask_login.utils import encode_cookie
from sqlalchemy.orm import Session

from config import Settings, load_settings
from scheduler.models import AuditEntry, User
from tests.api.conftest import ADMIN_PASSWORD, Seed
from tests.pages.conftest import SignIn
from web import create_app

SESSION_COOKIE = "session"
# A fixed sign-in time, so the idle and lifetime checks never depend on the day they run.
SIGNED_IN_AT = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def _copy_session(app: Flask, client: FlaskClient) -> FlaskClient:
    """A second browser holding a copy of ``client``'s session cookie."""
    cookie = client.get_cookie(SESSION_COOKIE)
    assert cookie is not None, "the client is not signed in"
    thief = app.test_client()
    thief.set_cookie(SESSION_COOKIE, cookie.value)
    return thief


def _signed_in(client: FlaskClient) -> bool:
    status = client.get("/api/v1/me").status_code
    assert status in (200, 401), status
    return status == 200


def _user_id(db: Session, role: str) -> int:
    user_id = db.scalar(sa.select(User.id).where(User.email == f"{role}@example.org"))
    db.rollback()
    return user_id


def _edit_user(client: FlaskClient, csrf: str, user_id: int, **changes: str) -> None:
    form = {"csrf_token": csrf, "name": "Someone", "role": "scheduler", "active": "on"}
    form.update(changes)
    form = {key: value for key, value in form.items() if value is not None}
    response = client.post(f"/admin/users/{user_id}", data=form)
    assert response.status_code == 302, response.get_data(as_text=True)


def test_sign_out_ends_a_copied_session(
    app: Flask, client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    csrf = signed_in(client, "scheduler")
    thief = _copy_session(app, client)
    assert _signed_in(thief)

    response = client.post("/logout", data={"csrf_token": csrf})
    assert response.status_code == 302

    assert not _signed_in(thief)
    assert not _signed_in(client)
    user_id = _user_id(db, "scheduler")
    assert db.scalar(
        sa.select(AuditEntry.id).where(
            AuditEntry.action == "sign_out", AuditEntry.subject_id == user_id
        )
    )


def test_admin_password_reset_ends_a_copied_session(
    app: Flask, client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    victim = app.test_client()
    signed_in(victim, "scheduler")
    thief = _copy_session(app, victim)
    admin = app.test_client()
    csrf = signed_in(admin, "admin")

    _edit_user(admin, csrf, _user_id(db, "scheduler"), password="a-brand-new-password")

    assert not _signed_in(thief)
    assert not _signed_in(victim)
    assert _signed_in(admin)


def test_own_password_change_ends_other_copies_but_keeps_this_session(
    app: Flask, client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    csrf = signed_in(client, "admin")
    thief = _copy_session(app, client)

    _edit_user(client, csrf, seed.admin_id, role="admin", password="my-own-new-password")

    assert not _signed_in(thief)
    assert _signed_in(client)
    # The new password signs in; the old one no longer does.
    fresh = app.test_client()
    page = fresh.get("/login").get_data(as_text=True)
    csrf_login = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    old = fresh.post(
        "/login",
        data={"csrf_token": csrf_login, "email": "admin@example.org", "password": ADMIN_PASSWORD},
    )
    assert old.status_code == 401


def test_role_change_ends_a_copied_session(
    app: Flask, client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    victim = app.test_client()
    signed_in(victim, "scheduler")
    thief = _copy_session(app, victim)
    admin = app.test_client()
    csrf = signed_in(admin, "admin")

    _edit_user(admin, csrf, _user_id(db, "scheduler"), role="viewer")

    assert not _signed_in(thief)
    assert not _signed_in(victim)


def test_saving_a_user_unchanged_keeps_their_sessions(
    app: Flask, client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    victim = app.test_client()
    signed_in(victim, "scheduler")
    admin = app.test_client()
    csrf = signed_in(admin, "admin")

    _edit_user(admin, csrf, _user_id(db, "scheduler"), name="Renamed Only")

    assert _signed_in(victim)


def test_reactivation_revives_neither_old_sessions_nor_old_tokens(
    app: Flask, client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    victim = app.test_client()
    signed_in(victim, "scheduler")
    thief = _copy_session(app, victim)
    admin = app.test_client()
    csrf = signed_in(admin, "admin")
    user_id = _user_id(db, "scheduler")
    token = seed.auth("scheduler")
    assert client.get("/api/v1/me", headers=token).status_code == 200

    _edit_user(admin, csrf, user_id, active=None)  # the box unticked: deactivated
    assert not _signed_in(thief)
    assert client.get("/api/v1/me", headers=token).status_code == 401
    audited = db.scalars(
        sa.select(AuditEntry.detail).where(
            AuditEntry.subject_type == "user", AuditEntry.subject_id == user_id
        )
    ).all()
    db.rollback()
    assert [(d["active"], d["api_tokens"]) for d in audited] == [(False, "revoked")]

    _edit_user(admin, csrf, user_id, active="on")
    assert not _signed_in(thief)
    assert not _signed_in(victim)
    assert client.get("/api/v1/me", headers=token).status_code == 401
    # The reactivated user signs in afresh and works.
    signed_in(victim, "scheduler")
    assert _signed_in(victim)


def test_idle_session_ends_after_the_idle_timeout(
    app: Flask, client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    with time_machine.travel(SIGNED_IN_AT, tick=False) as clock:
        signed_in(client, "viewer")
        thief = _copy_session(app, client)
        # Used every 29 minutes, the session lives on past the 30-minute idle limit.
        for _ in range(3):
            clock.shift(timedelta(minutes=29))
            assert _signed_in(client)
        clock.shift(timedelta(minutes=31))
        assert not _signed_in(client)
        # The copy made at sign-in was idle all along.
        assert not _signed_in(thief)


def test_session_ends_after_its_lifetime_however_much_it_is_used(
    app: Flask, client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    with time_machine.travel(SIGNED_IN_AT, tick=False) as clock:
        signed_in(client, "viewer")
        for _ in range(12 * 3 - 1):
            clock.shift(timedelta(minutes=20))
            assert _signed_in(client)
        # 11 h 40 min in; the next request after 12 hours is refused.
        clock.shift(timedelta(minutes=21))
        assert not _signed_in(client)


def test_a_remember_me_cookie_does_not_sign_in(
    app: Flask, client: FlaskClient, db: Session, seed: Seed
) -> None:
    # Sign-in never issues one, but one forged with the secret key must not bypass the rules.
    with app.test_request_context():
        cookie = encode_cookie(str(seed.admin_id))
    client.set_cookie("remember_token", cookie)
    assert not _signed_in(client)


def test_session_from_before_the_epoch_existed_is_refused(
    app: Flask, client: FlaskClient, db: Session, seed: Seed
) -> None:
    # A cookie signed in the old format carries only the user id.
    with client.session_transaction() as session:
        session["_user_id"] = str(seed.admin_id)
        session["_fresh"] = True
    assert not _signed_in(client)


def _sign_in_cookie_header(app: Flask, base_url: str) -> str:
    client = app.test_client()
    page = client.get("/login", base_url=base_url)
    csrf = page.get_data(as_text=True).split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = client.post(
        "/login",
        base_url=base_url,
        data={"csrf_token": csrf, "email": "admin@example.org", "password": ADMIN_PASSWORD},
    )
    assert response.status_code == 302
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    return cookie


def test_session_cookie_is_secure_when_served_over_https(
    settings: Settings, engine: sa.Engine, seed: Seed
) -> None:
    env = {
        "DATABASE_URL": settings.database_url,
        "BROKER_URL": "memory://",
        "SECRET_KEY": settings.secret_key,
        "INSTANCE_DIR": str(settings.instance_dir),
    }
    https_app = create_app(load_settings({**env, "PUBLIC_BASE_URL": "https://sbrt.example.org"}))
    cookie = _sign_in_cookie_header(https_app, "https://sbrt.example.org")
    assert "Secure" in cookie and "HttpOnly" in cookie

    http_app = create_app(load_settings({**env, "PUBLIC_BASE_URL": "http://127.0.0.1:5000"}))
    assert "Secure" not in _sign_in_cookie_header(http_app, "http://127.0.0.1:5000")


def test_own_password_change_page_ends_every_other_session(
    app: Flask, client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    csrf = signed_in(client, "viewer")
    thief = _copy_session(app, client)
    assert client.get("/account/password").status_code == 200

    changed = client.post(
        "/account/password",
        data={
            "csrf_token": csrf,
            "current_password": ADMIN_PASSWORD,
            "new_password": "the-viewers-new-password",
            "confirm_password": "the-viewers-new-password",
        },
    )
    assert changed.status_code == 302

    assert not _signed_in(thief)
    assert _signed_in(client)
    user_id = _user_id(db, "viewer")
    assert db.scalar(
        sa.select(AuditEntry.id).where(
            AuditEntry.action == "update",
            AuditEntry.subject_type == "user",
            AuditEntry.subject_id == user_id,
            AuditEntry.actor_id == user_id,
        )
    )


def test_own_password_change_needs_the_current_password(
    app: Flask, client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    csrf = signed_in(client, "viewer")
    thief = _copy_session(app, client)
    form = {
        "csrf_token": csrf,
        "current_password": "a-guess-at-the-password",
        "new_password": "the-thiefs-new-password",
        "confirm_password": "the-thiefs-new-password",
    }
    wrong = thief.post("/account/password", data=form)
    assert wrong.status_code == 422
    assert "is not your current password" in wrong.get_data(as_text=True)
    mismatch = thief.post(
        "/account/password",
        data={**form, "current_password": ADMIN_PASSWORD, "confirm_password": "something-else"},
    )
    assert mismatch.status_code == 422
    assert "does not match the new password" in mismatch.get_data(as_text=True)
    # Nothing changed: the owner's session and password still work.
    assert _signed_in(client)
    db.expire_all()
    viewer = db.scalar(sa.select(User).where(User.email == "viewer@example.org"))
    admin = db.scalar(sa.select(User).where(User.email == "admin@example.org"))
    assert viewer.password_hash == admin.password_hash
    db.rollback()


def test_password_page_needs_a_signed_in_user(client: FlaskClient, seed: Seed) -> None:
    response = client.get("/account/password")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_own_password_change_refuses_an_easy_new_password_readably(
    client: FlaskClient, db: Session, seed: Seed, signed_in: SignIn
) -> None:
    csrf = signed_in(client, "viewer")
    form = {
        "csrf_token": csrf,
        "current_password": ADMIN_PASSWORD,
        "new_password": "aaaaaaaaaaaa",
        "confirm_password": "aaaaaaaaaaaa",
    }
    refused = client.post("/account/password", data=form)
    assert refused.status_code == 422
    page = refused.get_data(as_text=True)
    assert 'id="err-password"' in page and "too easy to guess" in page
    assert _signed_in(client)
    # The wrong try took no slot of the sign-in throttle: the right one still goes through.
    form |= {
        "new_password": "the-viewers-new-password",
        "confirm_password": "the-viewers-new-password",
    }
    assert client.post("/account/password", data=form).status_code == 302
