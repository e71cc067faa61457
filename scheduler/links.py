"""Secret-token links: patients' schedule links and staff calendar feed URLs.

A token is random and means nothing by itself: no patient, course or clinic can be read out
of it, and only its SHA-256 digest is stored, so a copy of the database does not hand out
working links. Looking a token up by its digest also keeps the comparison away from the
attacker-controlled text (a timing difference tells nothing about a digest's preimage).
"""

from __future__ import annotations

import hashlib
import secrets
import string
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler.models import CalendarFeed, Course, Fraction, PatientLink

# 62 symbols ** 16 ≈ 2 ** 95: far beyond guessing at any request rate, yet short enough that
# the whole URL fits the ~40 characters an SMS body budgets for it.
PATIENT_TOKEN_ALPHABET = string.ascii_letters + string.digits
PATIENT_TOKEN_LENGTH = 16
# A link stays usable for this long after the course's last session (questions, a moved
# session shortly after the end) and for at least this long after it was sent.
LINK_GRACE = timedelta(days=7)
PURPOSES = frozenset({"schedule"})

# Staff feeds sit in calendar apps for months and are never typed: make them long (192 bits).
FEED_TOKEN_BYTES = 24  # -> 32 URL-safe characters
FEED_TOKEN_LENGTH = 32
_FEED_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def patient_link_url(public_base_url: str, token: str) -> str:
    """The URL a patient opens: ``{public_base_url}/p/{token}``."""
    return f"{public_base_url.rstrip('/')}/p/{token}"


def looks_like_patient_token(token: object) -> bool:
    """Right length and alphabet; anything else is rejected before touching the database."""
    return (
        isinstance(token, str)
        and len(token) == PATIENT_TOKEN_LENGTH
        and all(ch in PATIENT_TOKEN_ALPHABET for ch in token)
    )


def link_expiry(last_session_end: datetime | None, now: datetime) -> datetime:
    """Seven days after the course's last session, and at least seven days from now."""
    floor = now + LINK_GRACE
    if last_session_end is None:
        return floor
    return max(floor, last_session_end + LINK_GRACE)


def _default_expiry(session: Session, course_id: int | None, now: datetime) -> datetime:
    if course_id is None:
        return now + LINK_GRACE
    last_end = session.scalar(
        sa.select(sa.func.max(Fraction.ends_at)).where(Fraction.course_id == course_id)
    )
    return link_expiry(last_end, now)


def new_patient_link(
    *, patient_id: int, course_id: int | None, expires_at: datetime, now: datetime
) -> tuple[str, dict[str, object]]:
    """A fresh schedule-link token and the column values of its row; the caller inserts it.

    For callers that already checked the course is the patient's and know its last session,
    such as the reminder sender, which inserts the links of a whole batch in one statement.
    """
    token = "".join(secrets.choice(PATIENT_TOKEN_ALPHABET) for _ in range(PATIENT_TOKEN_LENGTH))
    values: dict[str, object] = {
        "token_digest": token_digest(token),
        "purpose": "schedule",
        "patient_id": patient_id,
        "course_id": course_id,
        "created_at": now,
        "expires_at": expires_at,
    }
    return token, values


def issue_patient_link(
    session: Session,
    *,
    patient_id: int,
    course_id: int | None,
    purpose: str = "schedule",
    now: datetime,
    ttl: timedelta | None = None,
) -> str:
    """A new link token for this patient (and course); the plaintext is returned only here.

    The row is added and flushed, not committed: the caller's transaction (e.g. the reminder
    that carries the link) decides whether it exists. Expiry: ``now + ttl`` when given, else
    seven days after the course's last session and at least seven days from now.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown link purpose {purpose!r}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if course_id is not None:
        owner = session.scalar(sa.select(Course.patient_id).where(Course.id == course_id))
        # A link for someone else's course would be an IDOR built into the token itself.
        if owner != patient_id:
            raise ValueError(f"course {course_id} does not belong to patient {patient_id}")
    expires_at = now + ttl if ttl is not None else _default_expiry(session, course_id, now)
    token, values = new_patient_link(
        patient_id=patient_id, course_id=course_id, expires_at=expires_at, now=now
    )
    session.add(PatientLink(**values | {"purpose": purpose}))
    session.flush()
    return token


def resolve_patient_link(
    session: Session, token: str, *, purpose: str, now: datetime
) -> PatientLink | None:
    """The live link for ``token`` and ``purpose``; None for unknown, expired or revoked.

    Every failure looks the same to the caller, so a page built on this cannot tell a
    guesser which of them happened.
    """
    if not looks_like_patient_token(token):
        return None
    link = session.scalar(
        sa.select(PatientLink).where(PatientLink.token_digest == token_digest(token))
    )
    if link is None or link.revoked_at is not None or link.expires_at <= now:
        return None
    if link.purpose != purpose:
        return None
    return link


def revoke_patient_links(
    session: Session,
    *,
    now: datetime,
    patient_id: int | None = None,
    course_id: int | None = None,
) -> int:
    """Revoke every live link of a patient or a course (e.g. the phone changed hands).

    Returns how many were revoked; the caller commits.
    """
    if patient_id is None and course_id is None:
        raise ValueError("give patient_id or course_id")
    query = sa.update(PatientLink).where(PatientLink.revoked_at.is_(None))
    if patient_id is not None:
        query = query.where(PatientLink.patient_id == patient_id)
    if course_id is not None:
        query = query.where(PatientLink.course_id == course_id)
    result = session.execute(
        query.values(revoked_at=now).execution_options(synchronize_session=False)
    )
    return result.rowcount


# --- staff calendar feeds -----------------------------------------------------------------


def issue_feed_token(session: Session, linac_id: int, name: str, created_by_id: int | None) -> str:
    """A new secret feed URL token for one linac's calendar; the plaintext is returned once.

    A use case of its own (the admin page calls it), so it commits.
    """
    token = secrets.token_urlsafe(FEED_TOKEN_BYTES)
    session.add(
        CalendarFeed(
            token_digest=token_digest(token),
            linac_id=linac_id,
            name=(name or "").strip()[:100],
            created_by_id=created_by_id,
        )
    )
    session.commit()
    return token


def resolve_feed_token(session: Session, token: str) -> CalendarFeed | None:
    """The live (not revoked) feed for ``token``, or None."""
    if (
        not isinstance(token, str)
        or len(token) != FEED_TOKEN_LENGTH
        or not set(token) <= _FEED_ALPHABET
    ):
        return None
    feed = session.scalar(
        sa.select(CalendarFeed).where(CalendarFeed.token_digest == token_digest(token))
    )
    if feed is None or feed.revoked_at is not None:
        return None
    return feed


def revoke_feed(session: Session, feed_id: int, *, now: datetime) -> CalendarFeed | None:
    """Revoke a feed (revoking twice keeps the first time); None when there is no such feed.

    Commits: calendar apps holding the URL get 404 from their next refresh on.
    """
    feed = session.get(CalendarFeed, feed_id)
    if feed is None:
        session.rollback()
        return None
    if feed.revoked_at is None:
        feed.revoked_at = now
    session.commit()
    return feed


def list_feeds(session: Session, linac_id: int) -> list[CalendarFeed]:
    """One linac's feeds, newest first; revoked ones too, so the admin page shows when."""
    return list(
        session.scalars(
            sa.select(CalendarFeed)
            .where(CalendarFeed.linac_id == linac_id)
            .order_by(CalendarFeed.created_at.desc(), CalendarFeed.id.desc())
        )
    )
