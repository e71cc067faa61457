"""The admin user pages refuse easily guessed passwords with a readable message, keep what
was typed in the other fields and change nothing."""

from __future__ import annotations

import re
from html import unescape

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, User
from tests.api.conftest import Seed
from tests.committing import accounts

# The sign-in helper and the cheap password hashing of the message page tests.
from tests.pages.test_messages_pages import _fast_password_hashes, sign_in  # noqa: F401

EMAIL = "nurse.okonkwo@example.org"
STRONG = "plum-orbit-kettle-harbor"
WEAK = {
    "aaaaaaaaaaaa": "is too easy to guess",
    "123456789012": "is too easy to guess",
    " " * 12: "cannot be only spaces",
    EMAIL: "cannot be or contain the email address",
}


def _users(db: Session) -> list[str]:
    emails = list(db.scalars(sa.select(User.email).order_by(User.id)))
    db.rollback()  # never hold a transaction while the app runs (SQLite's write lock)
    return emails


@pytest.mark.parametrize("password", list(WEAK))
def test_new_user_with_a_weak_password_is_refused_and_the_form_kept(
    client: FlaskClient, db: Session, seed: Seed, password: str
) -> None:
    csrf = sign_in(client, db, "admin")
    before = _users(db)
    response = client.post(
        "/admin/users",
        data={
            "csrf_token": csrf,
            "name": "Nurse Okonkwo",
            "email": EMAIL,
            "role": "scheduler",
            "password": password,
        },
    )
    assert response.status_code == 422
    page = unescape(response.get_data(as_text=True))
    assert WEAK[password] in page
    assert 'value="Nurse Okonkwo"' in page and f'value="{EMAIL}"' in page
    assert '<option value="scheduler" selected>' in page
    # The message is tied to the field for screen readers; the password is never echoed.
    password_input = re.search(r'<input id="f-password"[^>]*>', page).group(0)
    assert 'aria-describedby="hint-password err-password"' in password_input
    assert 'aria-invalid="true"' in password_input and "value=" not in password_input
    assert _users(db) == before


@pytest.mark.parametrize("password", list(WEAK))
def test_changing_to_a_weak_password_is_refused_and_nothing_saved(
    client: FlaskClient, db: Session, seed: Seed, password: str
) -> None:
    user = accounts.create_user(db, email=EMAIL, name="Nurse Okonkwo", role="viewer")
    user_id = user.id
    db.rollback()
    csrf = sign_in(client, db, "admin")
    response = client.post(
        f"/admin/users/{user_id}",
        data={
            "csrf_token": csrf,
            "name": "Nurse J. Okonkwo",
            "role": "scheduler",
            "active": "on",
            "password": password,
        },
    )
    assert response.status_code == 422
    page = unescape(response.get_data(as_text=True))
    assert WEAK[password] in page and 'value="Nurse J. Okonkwo"' in page
    row = db.get(User, user_id)
    assert (row.name, row.role, row.password_hash) == ("Nurse Okonkwo", "viewer", None)
    db.rollback()


def test_a_strong_password_creates_a_user_who_can_sign_in(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    csrf = sign_in(client, db, "admin")
    created = client.post(
        "/admin/users",
        data={
            "csrf_token": csrf,
            "name": "Nurse Okonkwo",
            "email": EMAIL,
            "role": "viewer",
            "password": STRONG,
        },
    )
    assert created.status_code == 302
    assert accounts.authenticate(db, EMAIL, STRONG) is not None
    audited = db.execute(
        sa.select(AuditEntry.action, AuditEntry.detail).where(AuditEntry.subject_type == "user")
    ).all()
    db.rollback()
    assert [action for action, _ in audited] == ["create"]
    assert STRONG not in str(audited)
