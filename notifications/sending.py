"""Sending claimed reminders in batches: re-read, drop what went stale, send, record outcomes.

A batch costs a few queries whatever its size: the rows and everything their messages need
are loaded together, one compare-and-set marks the sends as started, one transaction writes
the answers. The database session is never held across a provider call: the batch is
prepared and committed first, the providers are called, then the outcomes are written in a
new transaction.
Retrying is only done for what is known not to have been sent; anything that may have
reached the provider becomes ``unknown`` and is reconciled instead of re-posted.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from time import monotonic
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload, sessionmaker

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
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    Course,
    CourseStatus,
    Department,
    Fraction,
    Patient,
    PatientLink,
)
from scheduler.observability import metrics

log = logging.getLogger(__name__)

# Tries of a message known not to have been sent (429, 5xx, connection refused) before it is
# given up as failed. Ten spans at least an hour of backoff (see RETRY_SPAN_AT_LEAST): a
# provider outage of ten minutes or more must delay reminders, never lose them. Six spanned
# as little as 7.75 minutes, and the ten-minute outage drill (bench/drills.py) saw reminders
# reach their sixth try.
MAX_ATTEMPTS = 10
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=30)
# How long the provider gets to show a message we may have sent before we conclude it never
# arrived there and send it again.
RECONCILE_GRACE = timedelta(minutes=2)
PERMANENT_SMS_FLAG = "the SMS provider refused this number"
# The reason on a retry held until the patient's message window opens: not late, but waiting.
WINDOW_WAIT_REASON = "waiting for the message window"


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
    # The text as the patient will see it, stored on the row when its send starts, with the
    # patient link's token masked: only the message handed to the provider holds a working
    # link, and the database keeps just the link's digest.
    subject: str | None = None
    body: str = ""
    origin_request_id: str | None = None  # the request that planned the message


def backoff(attempt: int, rng: Callable[[], float] = random.random) -> timedelta:
    """Exponential backoff with full jitter: spreads a burst of 429s instead of echoing it."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(attempt - 1, 0)))
    return timedelta(seconds=ceiling.total_seconds() * (0.5 + rng() / 2))


# The shortest time from a message's first try to its last, the jitter drawing low every time.
RETRY_SPAN_AT_LEAST = sum(
    (backoff(attempt, rng=lambda: 0.0) for attempt in range(1, MAX_ATTEMPTS)), timedelta()
)


def _in_window(now: datetime, tz: str, start: time, end: time) -> bool:
    local = now.astimezone(ZoneInfo(tz)).time()
    return start <= local < end


def _finish(row: Reminder, status: ReminderStatus, reason: str | None, now: datetime) -> None:
    row.status = status
    row.status_reason = reason
    row.send_started_at = None
    row.lease_until = None
    row.updated_at = now


@dataclass
class _Batch:
    """What one batch's checks share, loaded in a handful of queries instead of per message."""

    courses: dict[int, Course]
    departments: dict[int, Department]
    linacs: dict[int, str]
    overrides: dict[str, str]


@dataclass(frozen=True)
class _Rendered:
    prepared: Prepared
    link_row: dict[str, object] | None  # the patient link it carries, inserted if it goes


def _load_batch(session: Session, rows: list[Reminder]) -> _Batch:
    course_ids = {row.course_id for row in rows}
    courses = {
        course.id: course
        for course in session.scalars(
            sa.select(Course)
            .where(Course.id.in_(course_ids))
            .options(
                joinedload(Course.patient),
                joinedload(Course.protocol),
                selectinload(Course.fractions),
            )
        ).unique()
    }
    department_ids = {course.patient.department_id for course in courses.values()}
    departments = {
        d.id: d
        for d in session.scalars(sa.select(Department).where(Department.id.in_(department_ids)))
    }
    return _Batch(
        courses=courses,
        departments=departments,
        linacs=outbox.linac_names(session),
        overrides=template_store.load_overrides(session),
    )


def prepare(
    session: Session,
    reminder_ids: Sequence[int],
    *,
    public_base_url: str,
    now: datetime,
    link: str | None = None,
    lease: timedelta = outbox.DEFAULT_LEASE,
    link_grace: timedelta = links.LINK_GRACE,
) -> list[Prepared]:
    """Check claimed reminders are still wanted and render them.

    Returns what is to be sent, in due order. A reminder left out has nothing to send (already
    handled by another task, stale, cancelled, no consent, outside the window, too late); its
    row then says why. The claims of the rest are renewed for ``lease``: a batch that waited
    long in the queue still has its whole lease to send in. One transaction; commits.
    """
    rows = list(
        session.scalars(
            sa.select(Reminder)
            .where(
                Reminder.id.in_(list(reminder_ids)),
                # The status guard: a redelivered or duplicated id finds nothing to do.
                Reminder.status == ReminderStatus.CLAIMED,
                Reminder.send_started_at.is_(None),
            )
            .order_by(Reminder.due_at, Reminder.id)
        )
    )
    if not rows:
        session.rollback()
        return []
    batch = _load_batch(session, rows)
    rendered: dict[int, _Rendered] = {}
    for row in rows:
        try:
            message = _check_and_render(session, row, batch, public_base_url, now, link, link_grace)
        except sa.exc.SQLAlchemyError:
            raise  # the database, not this row: the claims stay and come back after the lease
        except Exception:  # one broken template or row must not hold up the rest of the batch
            log.exception("could not prepare reminder %s", row.id)
            _finish(row, ReminderStatus.FAILED, "the message could not be prepared", now)
            continue
        if message is not None:
            rendered[row.id] = message
            row.lease_until = now + lease
    link_rows = [m.link_row for m in rendered.values() if m.link_row is not None]
    if link_rows:
        # Core insert: no ids are read back, so every dialect takes it as one executemany. A
        # link whose message is not sent after all (another task took the row) is never shown.
        session.execute(sa.insert(PatientLink), link_rows)
    session.commit()
    return [rendered[row.id].prepared for row in rows if row.id in rendered]


def mark_started(session: Session, prepared: Prepared, *, now: datetime) -> bool:
    """Compare-and-set just before the provider call; commits. False: another task has it.

    Done per message, not per batch: a worker killed mid-batch leaves at most the message it
    was sending in doubt (reconciled with the provider); the rest of its batch is simply
    claimed again once the lease runs out.
    """
    started = session.execute(
        sa.update(Reminder)
        .where(
            Reminder.id == prepared.reminder_id,
            Reminder.status == ReminderStatus.CLAIMED,
            Reminder.send_started_at.is_(None),
        )
        .values(
            send_started_at=now,
            attempts=Reminder.attempts + 1,
            rendered_subject=prepared.subject,
            rendered_body=prepared.body,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    return started == 1


def _check_and_render(
    session: Session,
    row: Reminder,
    batch: _Batch,
    public_base_url: str,
    now: datetime,
    link: str | None,
    link_grace: timedelta = links.LINK_GRACE,
) -> _Rendered | None:
    """The message for one row, or None after recording on the row why nothing is sent."""
    course = batch.courses[row.course_id]
    fractions = {f.id: f for f in course.fractions}
    fraction = fractions.get(row.fraction_id) if row.fraction_id else None
    reason = _stale_reason(row, course, fraction, now)
    if reason is not None:
        status = ReminderStatus.SUPERSEDED if "changed" in reason else ReminderStatus.SUPPRESSED
        _finish(row, status, reason, now)
        return None
    snapshot = outbox.course_snapshot(
        session,
        course,
        department=batch.departments[course.patient.department_id],
        linacs=batch.linacs,
    )
    patient = snapshot.patient
    if row.channel == Channel.SMS and not patient.sms_allowed:
        _finish(row, ReminderStatus.SUPPRESSED, outbox.NO_SMS_CONSENT_REASON, now)
        return None
    if row.channel == Channel.EMAIL and not patient.email_allowed:
        _finish(row, ReminderStatus.SUPPRESSED, outbox.NO_EMAIL_CONSENT_REASON, now)
        return None
    window = snapshot.settings
    if row.kind in (Kind.DAY_BEFORE, Kind.SAME_DAY) and not _in_window(
        now, patient.timezone, window.window_start, window.window_end
    ):
        # A retry must not wake the patient: it waits for the next window if that still
        # comes before the fraction, and is dropped otherwise.
        _defer_to_window(row, fraction, patient.timezone, window.window_start, now)
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
    link_row = None
    token = None
    if link is None:
        # Each message carries its own patient link, minted here at send time: a retry or a
        # resend prepares again and mints a new one, so the working token never has to be
        # kept anywhere but in the message handed to the provider (only its digest is stored).
        last_end = max((f.ends_at for f in course.fractions), default=None)
        token, link_row = links.new_patient_link(
            patient_id=row.patient_id,
            course_id=row.course_id,
            expires_at=links.link_expiry(last_end, now, link_grace),
            now=now,
        )
        message_link = links.patient_link_url(public_base_url, token)
    else:
        message_link = link
    context = rendering.message_context(snapshot, planned, link=message_link)
    # The last check before sending: an edited template can render this patient's message
    # into something the save-time checks never saw; that one message fails, visibly.
    message, problem = template_store.render_for_sending(
        row.kind, row.channel, patient.language, context, overrides=batch.overrides
    )
    if message is None:
        # The reason is shown to staff: an error quoting the link must not carry a working one.
        _finish(row, ReminderStatus.FAILED, links.mask_patient_links(problem, token), now)
        return None
    sms = email = None
    if row.channel == Channel.SMS:
        assert patient.phone_e164 is not None
        sms = SmsMessage(
            patient.phone_e164,
            message.text,
            status_callback_url=replies.status_callback_url(public_base_url),
        )
    else:
        assert patient.email is not None
        email = EmailMessage(
            patient.email,
            message.subject or "",
            message.text,
            html=message.html,
            ics=_schedule_attachment(session, snapshot, course, row, public_base_url, now),
        )
    prepared = Prepared(
        row.id,
        Channel(row.channel),
        sms=sms,
        email=email,
        subject=links.mask_patient_links(message.subject, token) if email is not None else None,
        body=links.mask_patient_links(message.text, token) or "",
        origin_request_id=row.origin_request_id,
    )
    return _Rendered(prepared, link_row)


def _schedule_attachment(
    session: Session,
    snapshot: CourseSnapshot,
    course: Course,
    row: Reminder,
    public_base_url: str,
    now: datetime,
) -> bytes | None:
    """The course's appointments as an iCalendar file for the messages that change them.

    The same events as the patient's download and the staff feeds (stable UIDs, SEQUENCE =
    version), so a calendar that imported the confirmation updates those entries when a
    change or cancellation arrives.
    """
    if row.kind not in (Kind.CONFIRMATION, Kind.CHANGE, Kind.CANCELLATION):
        return None
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
        if row.kind in (Kind.DAY_BEFORE, Kind.SAME_DAY, Kind.CHANGE):
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
    _finish(row, ReminderStatus.PENDING, WINDOW_WAIT_REASON, now)
    row.next_attempt_at = opens


@dataclass(frozen=True)
class Held:
    """A prepared message the batch did not send after all: known unsent, so safe to retry."""

    prepared: Prepared
    reason: str
    # The provider's Retry-After, if it gave one; otherwise the message is due again at the
    # next dispatcher tick, which spaces the next try on its own.
    retry_after_seconds: float | None = None


def deliver_one(prepared: Prepared, channels: Channels) -> SendResult:
    """The provider call itself; no database session is open here."""
    began = monotonic()
    result = _call_provider(prepared, channels)
    metrics.record_send(prepared.channel, result.outcome, result.error_code, monotonic() - began)
    # Ids and codes only: the message, its address and its link stay out of the log.
    log.info(
        "reminder %s by %s: %s%s; planned in request %s",
        prepared.reminder_id,
        prepared.channel,
        result.outcome,
        f" ({result.error_code})" if result.error_code else "",
        prepared.origin_request_id or "-",
    )
    return result


def _call_provider(prepared: Prepared, channels: Channels) -> SendResult:
    try:
        if prepared.sms is not None:
            return channels.sms.send_sms(prepared.sms)
        assert prepared.email is not None
        return channels.email.send_email(prepared.email)
    except Exception as exc:  # a channel bug must not leave the row in limbo
        log.exception("channel raised for reminder %s", prepared.reminder_id)
        return SendResult(Outcome.UNKNOWN, error_message=type(exc).__name__)


def deliver(
    batch: Sequence[Prepared],
    channels: Channels,
    *,
    start: Callable[[Prepared], bool],
    deadline: float,
    clock: Callable[[], float] = monotonic,
) -> tuple[list[tuple[Prepared, SendResult]], list[Held]]:
    """Send a prepared batch one message at a time; returns the answers and what was held back.

    ``start`` marks a message's send as started (see :func:`mark_started`) and says whether
    this batch still owns it; a message it refuses is left to whoever has it.

    Two things stop a batch early, and what is left is handed back unsent rather than pushed
    at the provider: a channel that answered "try later" (rate limited, unreachable, 5xx) gets
    no more requests from this batch, and nothing starts after ``deadline``, so a batch slowed
    down by timeouts never outlives its claim's lease (an expired claim that has started
    counts as possibly sent).
    """
    sent: list[tuple[Prepared, SendResult]] = []
    held: list[Held] = []
    paused: dict[Channel, SendResult] = {}
    for prepared in batch:
        pause = paused.get(prepared.channel)
        if pause is not None:
            reason = f"held back: the provider asked to wait ({pause.error_code or 'retry'})"
            held.append(Held(prepared, reason, retry_after_seconds=pause.retry_after_seconds))
            continue
        if clock() >= deadline:
            held.append(Held(prepared, "held back: the batch ran out of time"))
            continue
        if not start(prepared):
            continue
        result = deliver_one(prepared, channels)
        sent.append((prepared, result))
        if result.outcome == Outcome.RETRY:
            paused[prepared.channel] = result
    return sent, held


def record(
    session: Session,
    sent: Sequence[tuple[Prepared, SendResult]],
    held: Sequence[Held] = (),
    *,
    now: datetime,
) -> dict[int, str]:
    """Write the providers' verdicts for a batch in one transaction; returns the new statuses.

    Commits. Should the batch's commit fail on one bad row, each outcome is written on its
    own, so one row cannot take the others' answers with it.
    """
    try:
        statuses = _record(session, sent, held, now)
        session.commit()
        return statuses
    except IntegrityError:
        session.rollback()
        if len(sent) + len(held) == 1:
            raise
    log.warning("writing a batch of send outcomes failed; writing them one by one")
    statuses = {}
    for item in [*sent, *held]:
        one_sent = [item] if isinstance(item, tuple) else []
        one_held = [item] if isinstance(item, Held) else []
        try:
            statuses |= _record(session, one_sent, one_held, now)
            session.commit()
        except IntegrityError:
            # Left as it is: its claim expires with the send started, and the provider is
            # asked what happened before anything else is done with it.
            session.rollback()
            log.exception("could not record the outcome of a send")
    return statuses


def _record(
    session: Session,
    sent: Sequence[tuple[Prepared, SendResult]],
    held: Sequence[Held],
    now: datetime,
) -> dict[int, str]:
    ids = [p.reminder_id for p, _ in sent] + [h.prepared.reminder_id for h in held]
    rows = {row.id: row for row in session.scalars(sa.select(Reminder).where(Reminder.id.in_(ids)))}
    for prepared, result in sent:
        _apply_result(session, rows[prepared.reminder_id], result, now)
    for item in held:
        _hold(rows[item.prepared.reminder_id], item, now)
    return {reminder_id: rows[reminder_id].status for reminder_id in ids}


def _hold(row: Reminder, held: Held, now: datetime) -> None:
    """Hand a message that was never started back to the dispatcher."""
    if row.status != ReminderStatus.CLAIMED or row.send_started_at is not None:
        return  # no longer this batch's to hand back
    _finish(row, ReminderStatus.PENDING, held.reason, now)
    if held.retry_after_seconds:
        row.next_attempt_at = now + timedelta(seconds=held.retry_after_seconds)


def _apply_result(session: Session, row: Reminder, result: SendResult, now: datetime) -> None:
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


def send_batch(
    session_factory: sessionmaker[Session],
    reminder_ids: Sequence[int],
    channels: Channels,
    *,
    public_base_url: str,
    link: str | None = None,
    lease: timedelta = outbox.DEFAULT_LEASE,
    link_grace: timedelta = links.LINK_GRACE,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[int, str]:
    """Send a batch of claimed reminders; safe to run twice for the same ids.

    Returns the new status of every reminder that was prepared for sending. The database
    session is closed while the providers are called.
    """
    began = monotonic()
    with session_factory() as session:
        prepared = prepare(
            session,
            reminder_ids,
            link=link,
            public_base_url=public_base_url,
            now=now(),
            lease=lease,
            link_grace=link_grace,
        )
    if not prepared:
        return {}

    def start(message: Prepared) -> bool:
        with session_factory() as session:
            return mark_started(session, message, now=now())

    # Stop starting sends well inside the lease the dispatcher gave the claims.
    sent, held = deliver(
        prepared, channels, start=start, deadline=began + lease.total_seconds() / 2
    )
    with session_factory() as session:
        return record(session, sent, held, now=now())


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
    statuses = send_batch(
        session_factory,
        [reminder_id],
        channels,
        public_base_url=public_base_url,
        link=link,
        now=now,
    )
    return statuses.get(reminder_id)


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
