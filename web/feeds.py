"""iCalendar files: a patient's course (behind their link) and per-linac feeds for staff.

Both use the UIDs the emailed attachments use ("fraction-<id>@<host>") with SEQUENCE = the
fraction's version, so a calendar that imported a confirmation email and then the download
updates one entry per session instead of showing two; every change to a fraction bumps its
version, so clients take the newer one.

Staff feeds are subscribed to by calendar apps that often sync to personal phones and cloud
accounts outside the hospital. They therefore carry the least that lets staff act on an entry:
the fraction number and the MRN (to look the patient up in this app). No name, initials,
diagnosis, protocol or treatment words: an MRN alone means nothing outside the hospital's
systems, while initials plus a time narrow down a person.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import Blueprint, Flask, Response, abort, current_app
from sqlalchemy.orm import Session

from notifications.ics import (
    IcsEvent,
    event_status,
    fraction_uid,
    schedule_ics,
    uid_host,
)
from scheduler import links
from scheduler.models import (
    Course,
    Department,
    Downtime,
    Fraction,
    FractionStatus,
    Linac,
    Patient,
    Protocol,
)
from web import ratelimit
from web.db import get_session

bp = Blueprint("feeds", __name__, url_prefix="/feeds")

ICS_MIMETYPE = "text/calendar; charset=utf-8"
# What a staff feed covers: yesterday (a late-running day is still visible) to eight weeks on.
FEED_PAST = timedelta(days=1)
FEED_AHEAD = timedelta(weeks=8)
FEED_RATE_LIMIT = 60  # requests per minute per address
FEED_STATUSES = (
    FractionStatus.TENTATIVE,
    FractionStatus.BOOKED,
    FractionStatus.CONFIRMED,
    FractionStatus.COMPLETED,
    FractionStatus.MISSED,
    FractionStatus.CANCELLED,
)


def linac_feed_ics(session: Session, linac: Linac, *, host: str, now: datetime) -> bytes:
    """One linac's fractions from yesterday to eight weeks ahead, in its department's zone."""
    department = session.get(Department, linac.department_id)
    assert department is not None  # foreign key
    rows = session.execute(
        sa.select(Fraction, Patient.mrn, Protocol.fractions)
        .join(Course, Course.id == Fraction.course_id)
        .join(Protocol, Protocol.id == Course.protocol_id)
        .join(Patient, Patient.id == Fraction.patient_id)
        .where(
            Fraction.linac_id == linac.id,
            Fraction.status.in_(FEED_STATUSES),
            Fraction.starts_at >= now - FEED_PAST,
            Fraction.starts_at < now + FEED_AHEAD,
        )
        .order_by(Fraction.starts_at, Fraction.id)
    ).all()
    events = [
        IcsEvent(
            uid=fraction_uid(fraction.id, host),
            sequence=fraction.version,
            start=fraction.starts_at,
            end=fraction.ends_at,
            summary=f"Fraction {fraction.number}/{total} - {mrn}",
            location=linac.name,
            status=event_status(fraction.status),
        )
        for fraction, mrn, total in rows
    ]
    events += downtime_events(
        session, linac, host=host, start=now - FEED_PAST, end=now + FEED_AHEAD
    )
    events.sort(key=lambda e: (e.start, e.uid))
    return schedule_ics(events, tz=department.timezone, calendar_name=linac.name, stamp=now)


def downtime_uid(downtime_id: int, host: str) -> str:
    return f"downtime-{downtime_id}@{host}"


def downtime_events(
    session: Session, linac: Linac, *, host: str, start: datetime, end: datetime
) -> list[IcsEvent]:
    """The linac's downtime overlapping [start, end) as busy blocks, so a calendar shows the
    machine unavailable; an edit raises SEQUENCE, a removed one leaves the feed."""
    rows = session.scalars(
        sa.select(Downtime)
        .where(Downtime.linac_id == linac.id, Downtime.ends_at > start, Downtime.starts_at < end)
        .order_by(Downtime.starts_at, Downtime.id)
    )
    return [
        IcsEvent(
            uid=downtime_uid(d.id, host),
            sequence=d.version,
            start=d.starts_at,
            end=d.ends_at,
            summary=f"Downtime ({d.kind})" + (f": {d.reason}" if d.reason else ""),
            location=linac.name,
        )
        for d in rows
    ]


def ics_response(body: bytes, *, filename: str | None = None) -> Response:
    response = Response(body, mimetype="text/calendar")
    response.headers["Content-Type"] = ICS_MIMETYPE
    if filename:
        response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    # Secret-URL documents: never index them.
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _now() -> datetime:
    return datetime.now(UTC)


@bp.get("/linac/<token>.ics")
def linac_feed(token: str) -> Response:
    """A staff calendar subscription: the secret token is the only credential."""
    from web import SETTINGS_KEY

    session = get_session()
    feed = links.resolve_feed_token(session, token)
    if feed is None:
        abort(404)
    linac = session.get(Linac, feed.linac_id)
    if linac is None:
        abort(404)
    now = _now()
    host = uid_host(current_app.extensions[SETTINGS_KEY].public_base_url)
    response = ics_response(linac_feed_ics(session, linac, host=host, now=now))
    # Written last, so that on SQLite the write lock is held only from here to the request's
    # commit, not while the calendar is built.
    links.record_feed_use(session, feed.id, now=now)
    return response


def init_app(app: Flask) -> None:
    # Feed URLs are long secrets; the limit only keeps one client from flooding the lookup.
    # Calendar apps refresh every few minutes at most, far below it.
    ratelimit.limit_blueprint(app, bp, FEED_RATE_LIMIT)
    app.register_blueprint(bp)
