"""Throttling of password guessing, per account and client address, with a growing delay.

Failures are counted per account *from one address*, so a stranger who knows a staff email
cannot lock its owner out from elsewhere: only the stranger's own address is refused. A looser
count per address across all accounts stops one client trying a common password on many
accounts (password spraying).

An attempt is counted *before* its password is checked: ``begin_attempt`` takes a slot under
a row lock and commits, and only a request given a slot may verify the password. Parallel
guesses therefore queue on the counter, and no more than the limit are ever checked. A correct
password gives the slot back (``attempt_succeeded``).

Once a key reaches its limit it is refused for BASE_DELAY; every further failure after the
delay has passed doubles it, up to MAX_DELAY. A successful sign-in clears the account's count
from that address; counts are forgotten after FAILURE_MEMORY without a failure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from scheduler.models import SignInThrottle

# Failures allowed before the first delay: per account from one address, and per address.
MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS = 5
MAX_FAILURES_PER_ADDRESS = 20
BASE_DELAY = timedelta(minutes=1)
MAX_DELAY = timedelta(minutes=30)
# Longer than MAX_DELAY, so waiting out the longest delay never resets the count.
FAILURE_MEMORY = timedelta(hours=24)


@dataclass(frozen=True)
class AttemptVerdict:
    """Whether a sign-in attempt may check its password, and if not, for how long to wait."""

    allowed: bool
    retry_after: timedelta = timedelta(0)
    # Set when this attempt reached a limit: the delay a failure now starts, worth auditing.
    delay_started: timedelta | None = None


def _normalised_email(email: object) -> str:
    return email.strip().lower() if isinstance(email, str) else ""


def _key(*parts: str) -> str:
    # NUL cannot occur in a form field's email or an address, so parts cannot run together.
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def account_and_address_key(email: object, address: str | None) -> str:
    return _key("account-address", _normalised_email(email), address or "unknown")


def address_key(address: str | None) -> str:
    return _key("address", address or "unknown")


def delay_after(failures: int, limit: int) -> timedelta:
    """How long a key with ``failures`` failures (at least ``limit``) is refused."""
    doublings = min(failures - limit, 16)  # 2**16 minutes is far past any sensible cap
    return min(BASE_DELAY * 2**doublings, MAX_DELAY)


def _locked_rows(session: Session, keys: list[str]) -> dict[str, SignInThrottle]:
    """The throttle rows of ``keys``, created when missing and locked until the commit."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for key in sorted(keys):
        # A concurrent insert of the same key makes this wait for it, then do nothing.
        session.execute(
            insert(SignInThrottle)
            .values(key=key, failures=0)
            .on_conflict_do_nothing(index_elements=["key"])
        )
    # Sorted (as the inserts are), so two requests always lock in the same order and cannot
    # deadlock. On SQLite every transaction already holds the write lock (BEGIN IMMEDIATE).
    rows = session.scalars(
        sa.select(SignInThrottle)
        .where(SignInThrottle.key.in_(keys))
        .order_by(SignInThrottle.key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {row.key: row for row in rows}


def begin_attempt(
    session: Session, email: object, address: str | None, *, now: datetime
) -> AttemptVerdict:
    """Take a slot for one sign-in attempt, counted as a failure unless it later succeeds.

    Refused (without counting) while the account is delayed for this address or the address
    is delayed altogether. Commits, so the count holds before any password is checked.
    """
    limits = {
        address_key(address): MAX_FAILURES_PER_ADDRESS,
        account_and_address_key(email, address): MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS,
    }
    rows = _locked_rows(session, list(limits))
    waits = [
        row.locked_until - now
        for row in rows.values()
        if row.locked_until is not None and row.locked_until > now
    ]
    if waits:
        session.commit()
        return AttemptVerdict(allowed=False, retry_after=max(waits))
    delays = []
    for key, limit in limits.items():
        row = rows[key]
        if row.last_failure_at is not None and now - row.last_failure_at >= FAILURE_MEMORY:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        if row.failures >= limit:
            delays.append(delay_after(row.failures, limit))
            row.locked_until = now + delays[-1]
    session.commit()
    return AttemptVerdict(allowed=True, delay_started=max(delays, default=None))


def attempt_succeeded(session: Session, email: object, address: str | None) -> None:
    """Give back the slot of an attempt whose password was right.

    The account's count from this address starts again; the address keeps its other failures.
    """
    session.execute(
        sa.delete(SignInThrottle).where(
            SignInThrottle.key == account_and_address_key(email, address)
        )
    )
    session.execute(
        sa.update(SignInThrottle)
        .where(SignInThrottle.key == address_key(address), SignInThrottle.failures > 0)
        .values(failures=SignInThrottle.failures - 1)
    )
    session.commit()
