"""Sending one claimed reminder: re-read, drop what went stale, send, record the outcome.

The database session is never held across the provider call: the row is prepared and
committed first, the provider is called, then the outcome is written in a new transaction.
Retrying is only done for what is known not to have been sent; anything that may have
reached the provider becomes ``unknown`` and is reconciled instead of re-posted.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from notifications import outbox, rendering, replies, template_store
from notifications.channels.base import (
    EmailChannel,
    EmailMessage,
    Outcome,
    SendResult,
    SmsChannel,
    SmsMessage,
)
from notifications.ics import course_ics, uid_host
from notifications.models import Reminder, ReminderStatus
from notifications.types import Channel, CourseSnapshot, Kind, PlannedReminder
from scheduler import links
from scheduler.models import ACTIVE_FRACTION_STATUSES, Course, CourseStatus, Fraction, Patient

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=30)
# How long the provider gets to show a message we may have sent before we conclude it never
# arrived there and send it again.
RECONCILE_GRACE = timedelta(minutes=2)
PERMANENT_SMS_FLAG = "the SMS provider refused this number"


@dataclass(frozen=True)
class Channels:
    sms: SmsChannel
    email: EmailChannel


@dataclass(frozen=True)
class Prepared:
    reminder_id: int
    channel: Channel
    sms: SmsMessage | None = None
    email: EmailMessage | None = None


def backoff(attempt: int, rng: Callable[[], float] = random.random) -> timedelta:
    """Exponential backoff with full jitter: spreads a burst of 429s instead of echoing it."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(attempt - 1, 0)))
    return timedelta(seconds=ceiling.total_seconds() * (0.5 + rng() / 2))


def _in_window(now: datetime, tz: str, start: time, end: time) -> bool:
    local = now.astimezone(ZoneInfo(tz)).time()
    return start <= local < end


def _finish(row: Reminder, status: ReminderStatus, reason: str | None, now: datetime) -> None:
    row.status = status
    row.status_reason = reason
    row.send_started_at = None
    row.lease_until = None
    row.updated_at = now


def prepare(
    session: Session,
    reminder_id: int,
    *,
    public_base_url: str,
    now: datetime,
    link: str | None = None,
) -> Prepared | None:
    """Check a claimed reminder is still wanted, render it and mark the send as started.

    Returns None when there is nothing to send (already handled by another task, stale,
    cancelled, no consent, too late); the row then says why. Commits.
    """
    row = session.get(Reminder, reminder_id)
    if row is None or row.status != ReminderStatus.CLAIMED or row.send_started_at is not None:
        session.rollback()
        return None  # another task has it, or it is already done: the status guard
    course = session.get(Course, row.course_id)
    assert course is not None
    fraction = session.get(Fraction, row.fraction_id) if row.fraction_id else None
    reason = _stale_reason(row, course, fraction, now)
    if reason is not None:
        status = ReminderStatus.SUPERSEDED if "changed" in reason else ReminderStatus.SUPPRESSED
        _finish(row, status, reason, now)
        session.commit()
        return None
    snapshot = outbox.course_snapshot(session, course)
    patient = snapshot.patient
    if row.channel == Channel.SMS and not patient.sms_allowed:
        _finish(row, ReminderStatus.SUPPRESSED, "no SMS consent, opted out or number refused", now)
        session.commit()
        return None
    if row.channel == Channel.EMAIL and not patient.email_allowed:
        _finish(row, ReminderStatus.SUPPRESSED, "no email consent or address", now)
        session.commit()
        return None
    window = snapshot.settings
    if row.kind in (Kind.PREP, Kind.SAME_DAY) and not _in_window(
        now, patient.timezone, window.window_start, window.window_end
    ):
        # A retry must not wake the patient: it waits for the next window if that still
        # comes before the fraction, and is dropped otherwise.
        _defer_to_window(row, fraction, patient.timezone, window.window_start, now)
        session.commit()
        return None
    planned = PlannedReminder(
        kind=Kind(row.kind),
        channel=Channel(row.channel),
        due_at=row.due_at,
        course_id=row.course_id,
        fraction_id=row.fraction_id,
        fraction_version=row.fraction_version,
        dedupe_key=row.dedupe_key,
        context=row.context or {},
    )
    if link is None:
        # Each message carries its own patient link (only its digest is stored); it is
        # committed with the rendered text below, so a link exists iff the message can go.
        token = links.issue_patient_link(
            session, patient_id=row.patient_id, course_id=row.course_id, now=now
        )
        link = links.patient_link_url(public_base_url, token)
    context = rendering.message_context(snapshot, planned, link=link)
    message = rendering.render(
        row.kind,
        row.channel,
        patient.language,
        context,
        overrides=template_store.load_overrides(session),
    )
    # Compare-and-set: of two tasks holding the same claim, only one gets past this line.
    started = session.execute(
        sa.update(Reminder)
        .where(
            Reminder.id == row.id,
            Reminder.status == ReminderStatus.CLAIMED,
            Reminder.send_started_at.is_(None),
        )
        .values(
            send_started_at=now,
            attempts=Reminder.attempts + 1,
            rendered_subject=message.subject,
            rendered_body=message.text,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    if started != 1:
        return None
    if row.channel == Channel.SMS:
        assert patient.phone_e164 is not None
        return Prepared(
            row.id,
            Channel.SMS,
            sms=SmsMessage(
                patient.phone_e164,
                message.text,
                status_callback_url=replies.status_callback_url(public_base_url),
            ),
        )
    assert patient.email is not None
    return Prepared(
        row.id,
        Channel.EMAIL,
        email=EmailMessage(
            patient.email,
            message.subject or "",
            message.text,
            html=message.html,
            ics=_schedule_attachment(session, snapshot, row, public_base_url, now),
        ),
    )


def _schedule_attachment(
    session: Session, snapshot: CourseSnapshot, row: Reminder, public_base_url: str, now: datetime
) -> bytes | None:
    """The course's appointments as an iCalendar file for the messages that change them.

    The same events as the patient's download and the staff feeds (stable UIDs, SEQUENCE =
    version), so a calendar that imported the confirmation updates those entries when a
    change or cancellation arrives.
    """
    if row.kind not in (Kind.CONFIRMATION, Kind.CHANGE, Kind.CANCELLATION):
        return None
    course = session.get(Course, snapshot.id)
    assert course is not None
    return course_ics(
        session,
        course,
        host=uid_host(public_base_url),
        tz=snapshot.patient.timezone,
        language=snapshot.patient.language,
        clinic_name=snapshot.clinic_name,
        now=now,
    )


def _stale_reason(
    row: Reminder, course: Course, fraction: Fraction | None, now: datetime
) -> str | None:
    if row.fraction_id is not None:
        if fraction is None or fraction.version != row.fraction_version:
            return "the fraction changed after this message was planned"
        if row.kind in (Kind.PREP, Kind.SAME_DAY, Kind.CHANGE):
            if fraction.status not in ACTIVE_FRACTION_STATUSES:
                return f"the fraction is {fraction.status}"
            if fraction.starts_at <= now:
                return "too late: the fraction has started"
    if row.kind == Kind.CONFIRMATION and course.status == CourseStatus.CANCELLED:
        return "the course was cancelled"
    return None


def _defer_to_window(
    row: Reminder, fraction: Fraction | None, tz: str, start: time, now: datetime
) -> None:
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    day = local.date() if local.time() < start else local.date() + timedelta(days=1)
    opens = datetime.combine(day, start, zone).astimezone(UTC)
    if fraction is not None and opens >= fraction.starts_at:
        _finish(row, ReminderStatus.SUPPRESSED, "no time left inside the message window", now)
        return
    _finish(row, ReminderStatus.PENDING, "waiting for the message window", now)
    row.next_attempt_at = opens


def deliver(prepared: Prepared, channels: Channels) -> SendResult:
    """The provider call itself; no database session is open here."""
    try:
        if prepared.sms is not None:
            return channels.sms.send_sms(prepared.sms)
        assert prepared.email is not None
        return channels.email.send_email(prepared.email)
    except Exception as exc:  # a channel bug must not leave the row in limbo
        log.exception("channel raised for reminder %s", prepared.reminder_id)
        return SendResult(Outcome.UNKNOWN, error_message=type(exc).__name__)


def record(session: Session, prepared: Prepared, result: SendResult, *, now: datetime) -> str:
    """Write the provider's verdict; returns the reminder's new status. Commits."""
    row = session.get(Reminder, prepared.reminder_id)
    assert row is not None
    code = result.error_code
    if result.outcome == Outcome.ACCEPTED:
        _finish(row, ReminderStatus.SENT, None, now)
        row.provider_id = result.provider_id
        row.sent_at = now
    elif result.outcome == Outcome.RETRY and row.attempts < MAX_ATTEMPTS:
        _finish(row, ReminderStatus.PENDING, f"retrying: {code or result.error_message}", now)
        delay = backoff(row.attempts)
        if result.retry_after_seconds:
            delay = max(delay, timedelta(seconds=result.retry_after_seconds))
        row.next_attempt_at = now + delay
    elif result.outcome == Outcome.UNKNOWN:
        # The request may have reached the provider: keep send_started_at for reconciling.
        row.status = ReminderStatus.UNKNOWN
        row.status_reason = result.error_message or "no answer from the provider"
        row.lease_until = None
        row.updated_at = now
    else:
        reason = f"{code}: {result.error_message}" if code else (result.error_message or "failed")
        if result.outcome == Outcome.RETRY:
            reason = f"gave up after {row.attempts} attempts; last error {reason}"
        _finish(row, ReminderStatus.FAILED, reason, now)
        if result.outcome == Outcome.PERMANENT and row.channel == Channel.SMS:
            patient = session.get(Patient, row.patient_id)
            assert patient is not None
            patient.sms_blocked_reason = f"{PERMANENT_SMS_FLAG} ({code})"
            # No point trying this number again for any other pending message.
            session.execute(
                sa.update(Reminder)
                .where(
                    Reminder.patient_id == row.patient_id,
                    Reminder.channel == Channel.SMS,
                    Reminder.status == ReminderStatus.PENDING,
                )
                .values(status=ReminderStatus.SUPPRESSED, status_reason=patient.sms_blocked_reason)
                .execution_options(synchronize_session=False)
            )
    session.commit()
    return row.status


def send_reminder(
    session_factory: sessionmaker[Session],
    reminder_id: int,
    channels: Channels,
    *,
    public_base_url: str,
    link: str | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> str | None:
    """The whole send of one claimed reminder; safe to run twice for the same id."""
    with session_factory() as session:
        prepared = prepare(
            session, reminder_id, link=link, public_base_url=public_base_url, now=now()
        )
    if prepared is None:
        return None
    result = deliver(prepared, channels)
    with session_factory() as session:
        return record(session, prepared, result, now=now())


def reconcile_unknown(
    session_factory: sessionmaker[Session],
    channels: Channels,
    *,
    now: datetime,
    limit: int = 100,
) -> int:
    """Settle reminders that may or may not have been sent by asking the provider.

    Found there: sent. Not found once the provider has had time to show it: it never arrived,
    so it goes back to pending and is sent again. Email offers no way to ask, so an unknown
    email stays for a person to decide (retry or suppress). Returns how many were settled.
    """
    settled = 0
    with session_factory() as session:
        # Plain values, not rows: the session is closed before any provider is asked.
        rows = session.execute(
            sa.select(
                Reminder.id,
                Reminder.provider_id,
                Reminder.rendered_body,
                sa.func.coalesce(Reminder.send_started_at, Reminder.updated_at),
                Patient.phone_e164,
            )
            .join(Patient, Patient.id == Reminder.patient_id)
            .where(Reminder.status == ReminderStatus.UNKNOWN, Reminder.channel == Channel.SMS)
            .order_by(Reminder.id)
            .limit(limit)
        ).all()
        session.rollback()
    for reminder_id, provider_id, body, started, phone in rows:
        started = started if started.tzinfo else started.replace(tzinfo=UTC)
        found = None
        try:
            if provider_id:
                found = provider_id if channels.sms.fetch_status(provider_id) else None
            elif phone and body:
                found = channels.sms.find_sent(phone, body, since=started)
        except Exception:  # one unreachable answer must not hold up the others
            log.warning("could not reconcile reminder %s with the provider", reminder_id)
            continue
        with session_factory() as session:
            current = session.get(Reminder, reminder_id)
            if current is None or current.status != ReminderStatus.UNKNOWN:
                continue
            if found:
                _finish(current, ReminderStatus.SENT, "confirmed by the provider", now)
                current.provider_id = found
                current.sent_at = started
            elif now - started >= RECONCILE_GRACE:
                _finish(
                    current, ReminderStatus.PENDING, "not found at the provider: resending", now
                )
            else:
                session.rollback()
                continue
            try:
                session.commit()
            except IntegrityError:  # that provider id is already another reminder's
                session.rollback()
                log.warning("provider id found for reminder %s belongs to another", reminder_id)
                continue
            settled += 1
    return settled
