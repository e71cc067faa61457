"""Staff accounts: users with roles, password sign-in and API tokens for integrations.

Passwords must be hard to guess (zxcvbn's estimate, told the user's own email and name) and
are hashed with Argon2id; API tokens are random strings of which only a SHA-256
digest is stored (a token has 256 bits of entropy, so a slow hash adds nothing and a fast
digest lets every request be authenticated with one indexed lookup).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import email_validator
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from zxcvbn import zxcvbn

from scheduler import links
from scheduler.errors import FieldError, InvalidInput, NotFound, StateConflict
from scheduler.models import ApiToken, Role, User
from scheduler.plain_text import plain_text_problem

ROLES = frozenset(r.value for r in Role)
# Privileges are nested: each role can do everything the roles after it can.
ROLE_RANK = {Role.ADMIN.value: 3, Role.SCHEDULER.value: 2, Role.VIEWER.value: 1}
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
# zxcvbn's score 3 means at least 10^8 guesses: its "safely unguessable" level, which holds
# against an offline attack on a stolen Argon2 hash; 2 and below fall to a dictionary run.
MIN_PASSWORD_SCORE = 3
# zxcvbn refuses longer input (its pattern matching grows with the square of the length). A
# password is never easier to guess than its first 72 characters, so judging those alone
# never accepts a weak one.
_STRENGTH_CHECKED_LENGTH = 72
# Words anyone guessing a password for this service would try first.
_SERVICE_WORDS = ("sbrt", "sabr", "radiotherapy", "radiation", "oncology", "linac")
# zxcvbn keeps the user's words in a module-level dictionary while it scores, so two threads
# scoring at once could each be judged against the other's words.
_strength_lock = threading.Lock()
TOKEN_PREFIX = "sbrt_"
# Recording every use would make each API call a write (and on SQLite, a wait for the write
# lock); a minute's resolution is plenty to see whether a token is still in use.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Verified against when the user does not exist, so an unknown email takes as long as a
    # wrong password and response times do not reveal which staff emails exist.
    return _hasher().hash(secrets.token_urlsafe(16))


def has_role(user: User, role: str) -> bool:
    """Whether ``user`` holds ``role`` or a more privileged one."""
    return ROLE_RANK.get(user.role, 0) >= ROLE_RANK[role]


def _normal_email(errors: list[FieldError], email: Any) -> str | None:
    if not isinstance(email, str):
        errors.append(FieldError("email", "is required"))
        return None
    # A staff address is a sign-in name: "аdmin@clinic.org" with a Cyrillic "а", or a
    # lookalike domain, must not pass for another person's account. Hospital mail systems use
    # ASCII addresses, so anything else is refused rather than normalised.
    if not email.strip().isascii():
        errors.append(
            FieldError(
                "email",
                "must use only plain ASCII letters, digits and punctuation "
                "(lookalike characters from other alphabets are refused)",
            )
        )
        return None
    try:
        return email_validator.validate_email(
            email.strip(), check_deliverability=False
        ).normalized.lower()
    except email_validator.EmailNotValidError as exc:
        errors.append(FieldError("email", f"is not a valid email address: {exc}"))
        return None


def _personal_words(email: Any, name: Any) -> list[str]:
    """The user's own email and name, whole and in pieces, for zxcvbn to guess with."""
    words: list[str] = []
    for value in (email, name):
        if isinstance(value, str) and value.strip():
            words.append(value.strip())
            words.extend(w for w in re.split(r"\W+", value) if len(w) > 1)
    return words + [*_SERVICE_WORDS, *ROLES]


def password_problem(password: Any, *, email: Any = None, name: Any = None) -> str | None:
    """Why ``password`` may not be used by the user with this email and name, or None."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters"
    if not password.strip():
        return "cannot be only spaces"
    if isinstance(email, str) and email.strip() and email.strip().lower() in password.lower():
        return "cannot be or contain the email address"
    with _strength_lock:
        estimate = zxcvbn(
            password[:_STRENGTH_CHECKED_LENGTH],
            user_inputs=_personal_words(email, name),
            max_length=_STRENGTH_CHECKED_LENGTH,
        )
    if estimate["score"] >= MIN_PASSWORD_SCORE:
        return None
    feedback = estimate["feedback"]
    advice = " ".join([feedback["warning"], *feedback["suggestions"]]).strip()
    return "is too easy to guess" + (f": {advice}" if advice else ".")


def _check_password(errors: list[FieldError], password: Any, *, email: Any, name: Any) -> None:
    problem = password_problem(password, email=email, name=name)
    if problem:
        errors.append(FieldError("password", problem))


def create_user(
    session: Session,
    *,
    email: str,
    name: str,
    role: str,
    password: str | None = None,
) -> User:
    """A staff user; without a password the user can only use API tokens."""
    errors: list[FieldError] = []
    normal = _normal_email(errors, email)
    if not isinstance(name, str) or not name.strip():
        errors.append(FieldError("name", "is required"))
    elif len(name.strip()) > 200:
        errors.append(FieldError("name", "must be at most 200 characters"))
    elif (problem := plain_text_problem(name.strip())) is not None:
        errors.append(FieldError("name", problem))
    if role not in ROLES:
        errors.append(FieldError("role", f"must be one of {', '.join(sorted(ROLES))}"))
    if password is not None:
        _check_password(errors, password, email=normal or email, name=name)
    if normal and session.scalar(sa.select(User.id).where(User.email == normal)):
        errors.append(FieldError("email", "is already used by another user"))
    if errors:
        raise InvalidInput("The user is not valid.", errors)
    user = User(
        email=normal,
        name=name.strip(),
        role=role,
        password_hash=None if password is None else _hasher().hash(password),
    )
    session.add(user)
    _flush_unique(session, "email")
    return user


def update_user(
    session: Session,
    user_id: int,
    *,
    name: str | None = None,
    role: str | None = None,
    active: bool | None = None,
    password: str | None = None,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> User:
    """Change a user; deactivating one also revokes the calendar feeds they made, in the same
    transaction (reactivating them later does not bring those feed URLs back)."""
    user = get_user(session, user_id)
    errors: list[FieldError] = []
    if name is not None and (not name.strip() or len(name.strip()) > 200):
        errors.append(FieldError("name", "must be 1 to 200 characters"))
    elif name is not None and (problem := plain_text_problem(name.strip())) is not None:
        errors.append(FieldError("name", problem))
    if role is not None and role not in ROLES:
        errors.append(FieldError("role", f"must be one of {', '.join(sorted(ROLES))}"))
    if password is not None:
        _check_password(errors, password, email=user.email, name=name or user.name)
    # An admin demoting or disabling themselves can leave nobody able to undo it.
    if actor_id == user.id and role is not None and role != user.role:
        errors.append(FieldError("role", "you cannot change your own role"))
    if actor_id == user.id and active is False:
        errors.append(FieldError("active", "you cannot deactivate yourself"))
    if errors:
        raise InvalidInput("The user is not valid.", errors)
    # A session or token issued under the old password, role or standing must not outlive it.
    ends_sessions = (
        password is not None
        or (role is not None and role != user.role)
        or (active is not None and active != user.active)
    )
    if name is not None:
        user.name = name.strip()
    if role is not None:
        user.role = role
    if active is False and user.active:
        now = now or datetime.now(UTC)
        links.revoke_feeds(session, created_by_id=user.id, now=now)
        _revoke_all_tokens(session, user.id, now=now)
    if active is not None:
        user.active = active
    if password is not None:
        user.password_hash = _hasher().hash(password)
    if ends_sessions:
        # Counted up in SQL, so two changes at once both move it on.
        user.session_epoch = User.session_epoch + 1
    session.flush()
    return user


def change_own_password(
    session: Session, user_id: int, *, current_password: str, new_password: str
) -> User:
    """A signed-in user's new password; the current one proves it is them and not a copied
    session, which could otherwise lock the owner out."""
    user = get_user(session, user_id)
    errors: list[FieldError] = []
    if not _password_matches(user, current_password):
        errors.append(FieldError("current_password", "is not your current password"))
    problem = password_problem(new_password, email=user.email, name=user.name)
    if problem:
        errors.append(FieldError("password", problem))
    if errors:
        raise InvalidInput("The password was not changed.", errors)
    return update_user(session, user.id, password=new_password, actor_id=user.id)


def _password_matches(user: User, password: Any) -> bool:
    if not user.password_hash or not isinstance(password, str):
        return False
    try:
        return _hasher().verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def end_sessions(session: Session, user_id: int) -> User:
    """End every signed-in session of the user (sign-out), wherever its cookie is."""
    user = get_user(session, user_id)
    user.session_epoch = User.session_epoch + 1
    session.flush()
    return user


def _revoke_all_tokens(session: Session, user_id: int, *, now: datetime) -> None:
    # Revoked rather than merely refused while inactive: reactivating the user must not bring
    # back a token that may have leaked with the reason for the deactivation.
    session.execute(
        sa.update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user with id {user_id}.")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(sa.select(User).order_by(User.id)))


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with this email and password, or None (without saying which was wrong)."""
    user = None
    if isinstance(email, str):
        user = session.scalar(sa.select(User).where(User.email == email.strip().lower()))
    stored = user.password_hash if user is not None and user.password_hash else None
    try:
        _hasher().verify(stored or _dummy_hash(), password)
        verified = stored is not None
    except (VerificationError, InvalidHashError):
        verified = False
    if not verified or user is None or not user.active:
        return None
    if _hasher().check_needs_rehash(stored):
        # Parameters were raised since this hash was made; upgrade it while we know the password.
        user.password_hash = _hasher().hash(password)
        session.flush()
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """A new token's row and its plaintext, which exists only in this value."""

    token: ApiToken
    plaintext: str


def issue_api_token(session: Session, user_id: int, name: str) -> IssuedToken:
    user = get_user(session, user_id)
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 100:
        raise InvalidInput(
            "The token is not valid.", [FieldError("name", "must be 1 to 100 characters")]
        )
    if (problem := plain_text_problem(name.strip())) is not None:
        raise InvalidInput("The token is not valid.", [FieldError("name", problem)])
    if not user.active:
        raise StateConflict(f"User {user_id} is deactivated.")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name.strip(), token_digest=_digest(plaintext))
    session.add(token)
    session.flush()
    return IssuedToken(token, plaintext)


def create_api_token(session: Session, user_id: int, name: str) -> str:
    """A new bearer token for ``user_id``; the plaintext is returned once and never stored."""
    return issue_api_token(session, user_id, name).plaintext


def authenticate_token(session: Session, token: str, *, now: datetime | None = None) -> User | None:
    """The active user a live bearer token belongs to, or None."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.scalar(
        sa.select(ApiToken).where(
            ApiToken.token_digest == _digest(token), ApiToken.revoked_at.is_(None)
        )
    )
    if row is None or not row.user.active:
        return None
    moment = now or datetime.now(UTC)
    if row.last_used_at is None or moment - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = moment
        session.flush()
    return row.user


def revoke_api_token(session: Session, token_id: int, *, now: datetime | None = None) -> ApiToken:
    """Revoke a token (revoking twice is harmless and keeps the first time)."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"No API token with id {token_id}.")
    if token.revoked_at is None:
        token.revoked_at = now or datetime.now(UTC)
        session.flush()
    return token


def list_api_tokens(session: Session, *, user_id: int | None = None) -> list[ApiToken]:
    query = sa.select(ApiToken).order_by(ApiToken.id)
    if user_id is not None:
        get_user(session, user_id)
        query = query.where(ApiToken.user_id == user_id)
    return list(session.scalars(query))


def _flush_unique(session: Session, field: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        # A concurrent request created the same unique value between our check and insert.
        raise InvalidInput("Already exists.", [FieldError(field, "already exists")]) from exc
