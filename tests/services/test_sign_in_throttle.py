"""Sign-in throttling per account and address: a growing delay, and a count that holds
when guesses arrive in parallel."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from scheduler.sign_in_throttle import (
    MAX_DELAY,
    MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS,
    MAX_FAILURES_PER_ADDRESS,
    attempt_succeeded,
    begin_attempt,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
EMAIL = "scheduler@example.org"
OWNER = "192.0.2.10"
STRANGER = "203.0.113.66"


def _fail(session: Session, times: int, *, email: str = EMAIL, address: str = STRANGER,
          now: datetime = NOW) -> list[bool]:  # fmt: skip
    return [begin_attempt(session, email, address, now=now).allowed for _ in range(times)]


def test_five_failures_delay_only_that_address_for_that_account(session: Session) -> None:
    limit = MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS
    assert _fail(session, limit) == [True] * limit
    refused = begin_attempt(session, EMAIL, STRANGER, now=NOW)
    assert not refused.allowed
    assert refused.retry_after == timedelta(minutes=1)
    assert refused.delay_started is None
    # The owner, elsewhere, is not locked out by the stranger's guesses.
    assert begin_attempt(session, EMAIL, OWNER, now=NOW).allowed
    # Nor is another account from the stranger's address (below the per-address limit).
    assert begin_attempt(session, "admin@example.org", STRANGER, now=NOW).allowed


def test_the_failure_reaching_the_limit_says_which_delay_it_starts(session: Session) -> None:
    verdicts = [
        begin_attempt(session, EMAIL, STRANGER, now=NOW)
        for _ in range(MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS)
    ]
    assert [v.delay_started for v in verdicts] == [None] * 4 + [timedelta(minutes=1)]


def test_each_failure_after_a_delay_doubles_it_up_to_the_cap(session: Session) -> None:
    _fail(session, MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS)
    now, delays = NOW, []
    for _ in range(8):
        verdict = begin_attempt(session, EMAIL, STRANGER, now=now)
        assert not verdict.allowed
        delays.append(verdict.retry_after)
        now += verdict.retry_after  # the delay has just passed
        assert begin_attempt(session, EMAIL, STRANGER, now=now).allowed  # one more guess
    assert delays == [timedelta(minutes=m) for m in (1, 2, 4, 8, 16)] + [MAX_DELAY] * 3
    # Refused attempts do not extend the delay: halfway through it, the wait has halved.
    halfway = begin_attempt(session, EMAIL, STRANGER, now=now + MAX_DELAY / 2)
    assert halfway.retry_after == MAX_DELAY / 2


def test_a_right_password_after_the_delay_starts_the_count_again(session: Session) -> None:
    _fail(session, MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS)
    later = NOW + timedelta(minutes=1)
    assert begin_attempt(session, EMAIL, STRANGER, now=later).allowed
    attempt_succeeded(session, EMAIL, STRANGER)
    limit = MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS
    assert _fail(session, limit + 1, now=later) == [True] * limit + [False]


def test_failures_are_forgotten_after_a_quiet_day(session: Session) -> None:
    _fail(session, MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS - 1)
    next_day = NOW + timedelta(days=1)
    limit = MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS
    assert _fail(session, limit + 1, now=next_day) == [True] * limit + [False]


def test_one_address_guessing_across_many_accounts_is_delayed(session: Session) -> None:
    for n in range(MAX_FAILURES_PER_ADDRESS):
        assert begin_attempt(session, f"user{n}@example.org", STRANGER, now=NOW).allowed
    sprayed = begin_attempt(session, "someone.else@example.org", STRANGER, now=NOW)
    assert not sprayed.allowed
    assert sprayed.retry_after == timedelta(minutes=1)
    assert begin_attempt(session, "someone.else@example.org", OWNER, now=NOW).allowed


def test_successes_do_not_use_up_an_address_allowance(session: Session) -> None:
    # A ward behind one address signs in all day: only failures count against it.
    for n in range(MAX_FAILURES_PER_ADDRESS * 2):
        assert begin_attempt(session, f"user{n}@example.org", OWNER, now=NOW).allowed
        attempt_succeeded(session, f"user{n}@example.org", OWNER)


def test_parallel_guesses_take_no_more_than_the_limit(
    session_factory: sessionmaker[Session],
) -> None:
    guesses = 20
    start = threading.Barrier(guesses)
    allowed: list[bool] = []

    def guess() -> None:
        with session_factory() as own_session:
            start.wait()
            allowed.append(begin_attempt(own_session, EMAIL, STRANGER, now=NOW).allowed)

    threads = [threading.Thread(target=guess) for _ in range(guesses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == guesses
    assert allowed.count(True) == MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS


def test_parallel_guesses_across_accounts_take_no_more_than_the_address_limit(
    session_factory: sessionmaker[Session],
) -> None:
    guesses = MAX_FAILURES_PER_ADDRESS + 10
    start = threading.Barrier(guesses)
    allowed: list[bool] = []

    def guess(n: int) -> None:
        with session_factory() as own_session:
            start.wait()
            verdict = begin_attempt(own_session, f"user{n}@example.org", STRANGER, now=NOW)
            allowed.append(verdict.allowed)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(guesses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == guesses
    assert allowed.count(True) == MAX_FAILURES_PER_ADDRESS
