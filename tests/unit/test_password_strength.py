"""Which passwords staff may choose: long enough, not only spaces, not their email, and hard
to guess for someone who knows their name and email (zxcvbn)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.accounts import MAX_PASSWORD_LENGTH, password_problem

EMAIL = "quintrell.okonkwo@example.org"
NAME = "Quintrell Okonkwo"
STRONG = "plum-orbit-kettle-harbor"


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("aaaaaaaaaaaa", "is too easy to guess"),
        ("123456789012", "is too easy to guess"),
        (" " * 12, "cannot be only spaces"),
        ("\t \n" * 5, "cannot be only spaces"),
        (EMAIL, "cannot be or contain the email address"),
        (EMAIL.upper(), "cannot be or contain the email address"),
        (f"my {EMAIL} login!", "cannot be or contain the email address"),
    ],
)
def test_weak_passwords_of_the_security_review_are_refused(password: str, problem: str) -> None:
    assert password_problem(password, email=EMAIL, name=NAME).startswith(problem)


def test_the_refusal_says_what_makes_it_guessable() -> None:
    problem = password_problem("aaaaaaaaaaaa", email=EMAIL, name=NAME)
    assert 'Repeats like "aaa" are easy to guess.' in problem


def test_the_users_own_name_counts_as_easy_to_guess() -> None:
    # Strong for a stranger, but anyone who knows whose account it is would try it early.
    assert password_problem("QuintrellOkonkwo") is None
    assert password_problem("QuintrellOkonkwo", email=EMAIL, name=NAME).startswith(
        "is too easy to guess"
    )


def test_length_limits_still_hold() -> None:
    assert password_problem("Xq7#pL2!vR9", email=EMAIL, name=NAME) == (
        "must be at least 12 characters"
    )
    assert password_problem(None, email=EMAIL, name=NAME) == "must be at least 12 characters"
    too_long = STRONG * (MAX_PASSWORD_LENGTH // len(STRONG) + 1)
    assert password_problem(too_long, email=EMAIL, name=NAME) == "must be at most 1024 characters"


def test_a_strong_password_is_accepted() -> None:
    assert password_problem(STRONG, email=EMAIL, name=NAME) is None


def test_long_passwords_are_judged_without_error() -> None:
    # zxcvbn itself refuses input over 72 characters; a long passphrase is still welcome and
    # a long run of one character is still refused.
    assert password_problem(STRONG * 10, email=EMAIL, name=NAME) is None
    assert password_problem("a" * 300, email=EMAIL, name=NAME).startswith("is too easy to guess")


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=12, max_size=120), st.text(max_size=60), st.text(max_size=60))
def test_any_text_gets_an_answer_rather_than_an_error(password, email, name) -> None:
    problem = password_problem(password, email=email, name=name)
    assert problem is None or problem.split()[0] in {"must", "cannot", "is"}
