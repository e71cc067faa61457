"""Secret-token links: patients' schedule links and staff calendar feed URLs.

A token is random and means nothing by itself: no patient, course or clinic can be read out
of it, and only its SHA-256 digest is stored, so a copy of the database does not hand out
working links. Looking a token up by its digest also keeps the comparison away from the
attacker-controlled text (a timing difference tells nothing about a digest's preimage).
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
import string
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from scheduler.models import (
    CalendarFeed,
    Course,
    CourseStatus,
    Fraction,
    FractionStatus,
    Linac,
    PatientLink,
    User,
)

# 62 symbols ** 16 ≈ 2 ** 95: far beyond guessing at any request rate, yet short enough that
# the whole URL fits the ~40 characters an SMS body budgets for it.
PATIENT_TOKEN_ALPHABET = string.ascii_letters + string.digits
PATIENT_TOKEN_LENGTH = 16
# A link stays usable for this long after the course's last session (questions, a moved
# session shortly after the end) and for at least this long after it was sent. A week covers
# the follow-up questions of the days after treatment without leaving a page with the
# patient's schedule open for months; PATIENT_LINK_DAYS_AFTER_LAST_FRACTION changes it.
LINK_GRACE = timedelta(days=7)
PURPOSES = frozenset({"schedule"})

# What stands for a token in every stored or shown copy of a message: the text stays
# readable for staff ("See https://clinic/p/•••• Reply C...") but holds no working link.
MASKED_TOKEN = "••••"
_PATIENT_LINK_IN_TEXT = re.compile(rf"/p/[A-Za-z0-9]{{{PATIENT_TOKEN_LENGTH}}}(?![A-Za-z0-9])")

# Staff feeds sit in calendar apps for months and are never typed: make them long (192 bits).
FEED_TOKEN_BYTES = 24  # -> 32 URL-safe characters
FEED_TOKEN_LENGTH = 32
_FEED_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")
# A feed's last use is written at most once per this long. Calendar apps poll every few
# minutes, so writing on every fetch would turn each read into a write transaction (on SQLite
# one that waits for the single writer) for no gain: the admin page only needs to show whether
# a feed is still in use, and a quarter of an hour is precise enough for that.
FEED_USE_RESOLUTION = timedelta(minutes=15)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def patient_link_url(public_base_url: str, token: str) -> str:
    """The URL a patient opens: ``{public_base_url}/p/{token}``."""
    return f"{public_base_url.rstrip('/')}/p/{token}"


def mask_patient_links(text: str | None, token: str | None = None) -> str | None:
    """``text`` with every patient-link token replaced by MASKED_TOKEN.

    The token itself (when known) is masked wherever it appears, also outside a URL; any
    other ``/p/<token>`` is masked by its shape. Masking a masked text changes nothing, so
    the copy a provider returns compares equal to the stored copy once masked.
    """
    if text is None:
        return None
    if token:
        text = text.replace(token, MASKED_TOKEN)
    return _PATIENT_LINK_IN_TEXT.sub("/p/" + MASKED_TOKEN, text)


def looks_like_patient_token(token: object) -> bool:
    """Right length and alphabet; anything else is rejected before touching the database."""
    return (
        isinstance(token, str)
        and len(token) == PATIENT_TOKEN_LENGTH
        and all(ch in PATIENT_TOKEN_ALPHABET for ch in token)
    )


def link_expiry(
    last_session_end: datetime | None, now: datetime, grace: timedelta = LINK_GRACE
) -> datetime:
    """``grace`` after the course's last session, and at least ``grace`` from now."""
    floor = now + grace
    if last_session_end is None:
        return floor
    return max(floor, last_session_end + grace)


def _default_expiry(
    session: Session, course_id: int | None, now: datetime, grace: timedelta = LINK_GRACE
) -> datetime:
    if course_id is None:
        return now + grace
    last_end = session.scalar(
        sa.select(sa.func.max(Fraction.ends_at)).where(Fraction.course_id == course_id)
    )
    return link_expiry(last_end, now, grace)


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
    grace: timedelta = LINK_GRACE,
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
    expires_at = now + ttl if ttl is not None else _default_expiry(session, course_id, now, grace)
    token, values = new_patient_link(
        patient_id=patient_id, course_id=course_id, expires_at=expires_at, now=now
    )
    session.add(PatientLink(**values | {"purpose": purpose}))
    session.flush()
    return token


class LinkState(enum.StrEnum):
    LIVE = "live"
    # A real link that no longer opens anything: revoked, expired, its course cancelled or
    # over for longer than the grace. Its holder once had the patient's message.
    ENDED = "ended"
    # No such link (mistyped, guessed, another purpose): nothing is known about its holder.
    UNKNOWN = "unknown"


def _course_ended(session: Session, course_id: int, now: datetime, grace: timedelta) -> bool:
    """The course was cancelled, or its last session ended more than ``grace`` ago.

    Read at every use, not only when the link is made: a course cancelled or cut short
    after the message went out ends its links then. (The expiry stored with the link stays
    an upper bound; a session moved later than that comes with a message and a new link.)
    """
    status = session.scalar(sa.select(Course.status).where(Course.id == course_id))
    if status is None or status == CourseStatus.CANCELLED:
        return True
    ends = session.execute(
        sa.select(Fraction.status, Fraction.ends_at).where(Fraction.course_id == course_id)
    ).all()
    held = [end for status, end in ends if status != FractionStatus.CANCELLED]
    last_end = max(held or [end for _status, end in ends], default=None)
    if last_end is None:
        return False  # nothing booked yet: the stored expiry decides
    return now >= last_end + grace


def patient_link_state(
    session: Session,
    token: str,
    *,
    purpose: str,
    now: datetime,
    grace: timedelta = LINK_GRACE,
) -> tuple[LinkState, PatientLink | None]:
    """Whether ``token`` opens anything, with its row when it is (or was) a real link."""
    if not looks_like_patient_token(token):
        return LinkState.UNKNOWN, None
    link = session.scalar(
        sa.select(PatientLink).where(PatientLink.token_digest == token_digest(token))
    )
    if link is None or link.purpose != purpose:
        return LinkState.UNKNOWN, None
    if (
        link.revoked_at is not None
        or link.expires_at <= now
        or (link.course_id is not None and _course_ended(session, link.course_id, now, grace))
    ):
        return LinkState.ENDED, link
    return LinkState.LIVE, link


def resolve_patient_link(
    session: Session,
    token: str,
    *,
    purpose: str,
    now: datetime,
    grace: timedelta = LINK_GRACE,
) -> PatientLink | None:
    """The live link for ``token`` and ``purpose``; None for unknown, expired or revoked."""
    state, link = patient_link_state(session, token, purpose=purpose, now=now, grace=grace)
    return link if state is LinkState.LIVE else None


def revoke_patient_links(
    session: Session,
    *,
    now: datetime,
    patient_id: int | None = None,
    course_id: int | None = None,
) -> int:
    """Revoke every live link of a patient or a course (e.g. the phone changed hands).

    Returns how many were revoked; flushes, the caller commits.
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


def issue_feed_token(session: Session, linac_id: int, name: str, created_by_id: int) -> str:
    """A new secret feed URL token for one linac's calendar; the plaintext is returned once.

    Every feed has an owner, the user who made it: it is served only while they and the linac
    are active. Flushes; the caller's unit of work commits.
    """
    if created_by_id is None:
        # An ownerless feed would outlive every account; resolve_feed_token never serves one.
        raise ValueError("a feed needs the id of the user who creates it")
    token = secrets.token_urlsafe(FEED_TOKEN_BYTES)
    session.add(
        CalendarFeed(
            token_digest=token_digest(token),
            linac_id=linac_id,
            name=(name or "").strip()[:100],
            created_by_id=created_by_id,
        )
    )
    session.flush()
    return token


def resolve_feed_token(session: Session, token: str) -> CalendarFeed | None:
    """The live feed for ``token``, or None: unknown, revoked, or its owner or its linac no
    longer active (or gone) all look the same, so the URL tells a holder nothing.

    Deactivating a user or a linac revokes their feeds (revoke_feeds); checking the owner and
    the linac here as well covers a row changed by any other path.
    """
    if (
        not isinstance(token, str)
        or len(token) != FEED_TOKEN_LENGTH
        or not set(token) <= _FEED_ALPHABET
    ):
        return None
    return session.scalar(
        sa.select(CalendarFeed)
        .join(User, User.id == CalendarFeed.created_by_id)
        .join(Linac, Linac.id == CalendarFeed.linac_id)
        .where(
            CalendarFeed.token_digest == token_digest(token),
            CalendarFeed.revoked_at.is_(None),
            User.active.is_(True),
            Linac.active.is_(True),
        )
    )


def record_feed_use(session: Session, feed_id: int, *, now: datetime) -> bool:
    """Note that the feed was fetched at ``now``, unless that was already noted less than
    FEED_USE_RESOLUTION ago; True when it wrote. The feed request's unit of work commits it.

    One conditional UPDATE, so calendar apps fetching together write once between them.
    """
    result = session.execute(
        sa.update(CalendarFeed)
        .where(
            CalendarFeed.id == feed_id,
            sa.or_(
                CalendarFeed.last_used_at.is_(None),
                CalendarFeed.last_used_at <= now - FEED_USE_RESOLUTION,
            ),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def revoke_feeds(
    session: Session,
    *,
    now: datetime,
    created_by_id: int | None = None,
    linac_id: int | None = None,
) -> list[int]:
    """Revoke every live feed a user made, or every live feed of a linac (on deactivation).

    Revoked, not just hidden: reactivating the user or the linac later does not bring the
    old URLs back; an admin issues new ones. Returns the revoked ids; the caller commits.
    """
    if created_by_id is None and linac_id is None:
        raise ValueError("give created_by_id or linac_id")
    query = sa.select(CalendarFeed).where(CalendarFeed.revoked_at.is_(None))
    if created_by_id is not None:
        query = query.where(CalendarFeed.created_by_id == created_by_id)
    if linac_id is not None:
        query = query.where(CalendarFeed.linac_id == linac_id)
    feeds = list(session.scalars(query.order_by(CalendarFeed.id)))
    for feed in feeds:
        feed.revoked_at = now
    session.flush()
    return [feed.id for feed in feeds]


def revoke_feed(session: Session, feed_id: int, *, now: datetime) -> CalendarFeed | None:
    """Revoke a feed (revoking twice keeps the first time); None when there is no such feed.

    Once the caller's unit of work commits, calendar apps holding the URL get 404 from their
    next refresh on.
    """
    feed = session.get(CalendarFeed, feed_id)
    if feed is None:
        return None
    if feed.revoked_at is None:
        feed.revoked_at = now
    session.flush()
    return feed


def list_feeds(session: Session, linac_id: int) -> list[CalendarFeed]:
    """One linac's feeds, newest first; revoked ones too, so the admin page shows when."""
    return list(
        session.scalars(
            sa.select(CalendarFeed)
            .options(selectinload(CalendarFeed.created_by))
            .where(CalendarFeed.linac_id == linac_id)
            .order_by(CalendarFeed.created_at.desc(), CalendarFeed.id.desc())
        )
    )


def list_owned_feeds(session: Session, user_id: int) -> list[CalendarFeed]:
    """The feeds a user made on every linac, newest first, revoked ones too: what deactivating
    them stops."""
    return list(
        session.scalars(
            sa.select(CalendarFeed)
            .options(selectinload(CalendarFeed.linac))
            .where(CalendarFeed.created_by_id == user_id)
            .order_by(CalendarFeed.created_at.desc(), CalendarFeed.id.desc())
        )
    )
