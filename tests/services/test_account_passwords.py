"""Creating and updating staff users refuses easily guessed passwords and keeps what was
stored, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

import scheduler.accounts
from scheduler.errors import InvalidInput
from scheduler.models import User
from tests.committing import accounts

EMAIL = "quintrell.okonkwo@example.org"
NAME = "Quintrell Okonkwo"
STRONG = "plum-orbit-kettle-harbor"
# The passwords a security review found accepted.
WEAK = ["aaaaaaaaaaaa", "123456789012", " " * 12, EMAIL]


@pytest.fixture(autouse=True)
def _fast_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Argon2 at production cost takes most of a second per hash; these tests are about which
    # passwords are allowed, not about hashing.
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(scheduler.accounts, "_hasher", lambda: cheap)


@pytest.mark.parametrize("password", WEAK)
def test_create_user_refuses_a_weak_password_and_stores_nobody(session, password: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        accounts.create_user(session, email=EMAIL, name=NAME, role="viewer", password=password)
    assert [e.field for e in refused.value.errors] == ["password"]
    session.rollback()
    assert session.scalar(sa.select(sa.func.count(User.id))) == 0


def test_create_user_judges_the_password_against_the_users_own_name(session) -> None:
    with pytest.raises(InvalidInput) as refused:
        accounts.create_user(
            session, email=EMAIL, name=NAME, role="viewer", password="QuintrellOkonkwo"
        )
    assert refused.value.errors[0].message.startswith("is too easy to guess")


def test_the_email_is_refused_however_it_is_typed(session) -> None:
    with pytest.raises(InvalidInput) as refused:
        accounts.create_user(
            session, email=f"  {EMAIL.upper()} ", name=NAME, role="viewer", password=EMAIL
        )
    assert [(e.field, e.message) for e in refused.value.errors] == [
        ("password", "cannot be or contain the email address")
    ]


@pytest.mark.parametrize("password", WEAK)
def test_update_user_refuses_a_weak_password_and_keeps_the_old_one(session, password) -> None:
    user = accounts.create_user(session, email=EMAIL, name=NAME, role="viewer", password=STRONG)
    with pytest.raises(InvalidInput) as refused:
        accounts.update_user(session, user.id, name="Q. Okonkwo", password=password)
    assert [e.field for e in refused.value.errors] == ["password"]
    session.rollback()
    assert session.get(User, user.id).name == NAME
    assert accounts.authenticate(session, EMAIL, STRONG) is not None
    assert accounts.authenticate(session, EMAIL, password) is None


def test_a_strong_password_is_accepted_and_signs_in(session) -> None:
    user = accounts.create_user(session, email=EMAIL, name=NAME, role="viewer", password=STRONG)
    assert accounts.authenticate(session, EMAIL, STRONG).id == user.id
    accounts.update_user(session, user.id, password="copper lantern drifts seaward")
    assert accounts.authenticate(session, EMAIL, "copper lantern drifts seaward").id == user.id
