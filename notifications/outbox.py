"""The outbox: reminder rows written in the booking transaction, claimed by the dispatcher.

Reminders never wait inside the broker. A booking change writes its reminder rows in the same
transaction (so a message exists if and only if its change was committed); a beat task claims
the due rows with a lease and hands their ids to short send tasks. A claim whose lease runs
out (its worker died) is claimed again; the send task's status guard makes a second delivery
of the same id harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from notifications import policy
from notifications.models import Reminder, ReminderStatus
from notifications.phone_display import dial_string, national_phone
from notifications.types import (
    CourseSnapshot,
    FractionSnapshot,
    Kind,
    PatientSnapshot,
    PlannedReminder,
    ReminderSettings,
)
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    BookingEvent,
    BookingEventKind,
    Course,
    CourseStatus,
    Department,
    Fraction,
    Linac,
    Patient,
    Protocol,
)
from scheduler.observability import request_id

# Statuses a change can still take back: not yet handed to a provider.
OPEN_STATUSES = (ReminderStatus.PENDING, ReminderStatus.CLAIMED)
DEFAULT_LEASE = timedelta(minutes=5)
# Why a reminder was held back for want of consent: the patient texted STOP, or the sender
# found no consent when it came due. Consent given again plans such reminders anew (a reason
# starting with the provider-refusal wording of notifications.replies counts too).
OPTED_OUT_REASON = "opted out"
NO_SMS_CONSENT_REASON = "no SMS consent, opted out or number refused"
NO_EMAIL_CONSENT_REASON = "no email consent or address"
_CONSENT_REASONS = frozenset({OPTED_OUT_REASON, NO_SMS_CONSENT_REASON, NO_EMAIL_CONSENT_REASON})
PROVIDER_REFUSED_PREFIX = "the SMS provider refused this number"
# Courses whose sessions may still happen (a draft has none booked yet).
_FINISHED_COURSE_STATUSES = (CourseStatus.COMPLETED, CourseStatus.CANCELLED)


def patient_snapshot(patient: Patient, department: Department) -> PatientSnapshot:
    return PatientSnapshot(
        id=patient.id,
        given_name=patient.given_name,
        language=patient.language or "en",
        timezone=patient.timezone or department.timezone,
        phone_e164=patient.phone_e164,
        email=patient.email,
        sms_allowed=bool(
            patient.phone_e164
            and patient.sms_consent
            and not patient.sms_opted_out
            and not patient.sms_blocked_reason
        ),
        email_allowed=bool(patient.email and patient.email_consent),
    )


def linac_names(session: Session) -> dict[int, str]:
    return dict(session.execute(sa.select(Linac.id, Linac.name)).tuples().all())


def course_snapshot(
    session: Session,
    course: Course,
    *,
    fraction_ids: Iterable[int] | None = None,
    department: Department | None = None,
    linacs: Mapping[int, str] | None = None,
) -> CourseSnapshot:
    """The policy's view of a course as it stands in this transaction.

    Normally the active fractions; ``fraction_ids`` picks fractions whatever their status
    (a cancellation notice lists the ones just cancelled). A caller building many snapshots
    passes the patient's ``department`` and the ``linacs`` names it has already loaded, so
    that no query is made here.
    """
    wanted = set(fraction_ids) if fraction_ids is not None else None
    patient = course.patient
    if department is None:
        department = session.get(Department, patient.department_id)
    assert department is not None  # foreign key
    linac_names_by_id = linacs if linacs is not None else linac_names(session)
    fractions = tuple(
        FractionSnapshot(
            id=f.id,
            number=f.number,
            version=f.version,
            status=f.status,
            starts_at=f.starts_at,
            ends_at=f.ends_at,
            linac_name=linac_names_by_id.get(f.linac_id, ""),
        )
        for f in sorted(course.fractions, key=lambda f: (f.number, f.starts_at))
        if (f.status in ACTIVE_FRACTION_STATUSES if wanted is None else f.id in wanted)
    )
    protocol = course.protocol
    return CourseSnapshot(
        id=course.id,
        patient=patient_snapshot(patient, department),
        fractions=fractions,
        fraction_count=protocol.fractions,
        ready_to_treat=course.ready_to_treat,
        clinic_name=department.name,
        clinic_phone=national_phone(department.phone, department.holiday_country),
        department_timezone=department.timezone,
        prep_instructions=protocol.prep_instructions,
        settings=reminder_settings(department, protocol),
        clinic_phone_dial=dial_string(department.phone, department.holiday_country),
    )


def reminder_settings(department: Department, protocol: Protocol) -> ReminderSettings:
    """The cadence a course follows: the protocol's choices over the department's."""

    def chosen(protocol_value, department_value):
        return department_value if protocol_value is None else protocol_value

    return ReminderSettings(
        day_before=chosen(protocol.day_before_reminder, department.day_before_reminder),
        day_before_minutes_before=chosen(
            protocol.day_before_reminder_minutes, department.day_before_reminder_minutes
        ),
        same_day=chosen(protocol.same_day_reminder, department.same_day_reminder),
        same_day_minutes_before=chosen(
            protocol.same_day_reminder_minutes, department.same_day_reminder_minutes
        ),
        window_start=time.fromisoformat(department.message_window_start),
        window_end=time.fromisoformat(department.message_window_end),
    )


# --- what one action queued -------------------------------------------------------------------


@dataclass
class QueuedMessages:
    """The messages an action wrote to the outbox, and the open ones it took back.

    Filled by the outbox itself as the action writes (see :func:`collect`), so a page can say
    exactly what was queued without comparing the outbox before and after.
    """

    written: list[Reminder] = field(default_factory=list)
    taken_back: list[Reminder] = field(default_factory=list)
    # How much of each list a commit has made permanent; a rollback forgets the rest.
    committed: tuple[int, int] = (0, 0)

    @property
    def withdrawn(self) -> list[Reminder]:
        """Open messages the action took back and did not bring back before it ended."""
        seen: set[int] = set()
        rows = []
        for row in self.taken_back:
            if id(row) not in seen and row.status == ReminderStatus.SUPERSEDED:
                seen.add(id(row))
                rows.append(row)
        return rows


_LEDGERS = "sbrt.outbox.queued"


def collect(session: Session) -> QueuedMessages:
    """Start recording what the outbox writes through ``session`` from now on, for as long
    as the session lives; what a rolled-back transaction wrote is forgotten with it."""
    queued = QueuedMessages()
    session.info.setdefault(_LEDGERS, []).append(queued)
    return queued


def _note(
    session: Session, *, written: Iterable[Reminder] = (), taken_back: Iterable[Reminder] = ()
) -> None:
    ledgers = session.info.get(_LEDGERS)
    if not ledgers:
        return
    written, taken_back = list(written), list(taken_back)
    for queued in ledgers:
        queued.written.extend(written)
        queued.taken_back.extend(taken_back)


@event.listens_for(Session, "after_commit")
def _keep_committed(session: Session) -> None:
    for queued in session.info.get(_LEDGERS, ()):
        queued.committed = (len(queued.written), len(queued.taken_back))


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    # A use case that lost a race runs again after a rollback: only the attempt that is kept
    # may count, and a preview (always rolled back) queued nothing. What an earlier
    # transaction of the same action committed stays.
    for queued in session.info.get(_LEDGERS, ()):
        written, taken_back = queued.committed
        del queued.written[written:]
        del queued.taken_back[taken_back:]


def write(session: Session, patient_id: int, planned: Iterable[PlannedReminder]) -> list[Reminder]:
    """Add the planned reminders that are not in the outbox yet (by dedupe key)."""
    planned = list(planned)
    if not planned:
        return []
    keys = [p.dedupe_key for p in planned]
    existing = set(
        session.scalars(sa.select(Reminder.dedupe_key).where(Reminder.dedupe_key.in_(keys)))
    )
    rows = []
    for p in planned:
        if p.dedupe_key in existing:
            continue
        existing.add(p.dedupe_key)
        rows.append(
            Reminder(
                dedupe_key=p.dedupe_key,
                kind=p.kind,
                channel=p.channel,
                patient_id=patient_id,
                course_id=p.course_id,
                fraction_id=p.fraction_id,
                fraction_version=p.fraction_version,
                due_at=p.due_at,
                status=ReminderStatus.PENDING,
                context=p.context,
                origin_request_id=request_id.current(),
            )
        )
    session.add_all(rows)
    _note(session, written=rows)
    return rows


def supersede(
    session: Session,
    *,
    reason: str,
    now: datetime,
    fraction_id: int | None = None,
    course_id: int | None = None,
    kinds: Iterable[Kind] | None = None,
) -> list[Reminder]:
    """Take back every open reminder of a fraction (or a course): a newer plan replaces it."""
    # A claim whose provider call has started is left alone: it may already be on its way,
    # and its sender records what really happened.
    query = sa.select(Reminder).where(
        Reminder.status.in_(OPEN_STATUSES), Reminder.send_started_at.is_(None)
    )
    if fraction_id is not None:
        query = query.where(Reminder.fraction_id == fraction_id)
    if course_id is not None:
        query = query.where(Reminder.course_id == course_id)
    if kinds is not None:
        query = query.where(Reminder.kind.in_(list(kinds)))
    rows = list(session.scalars(query))
    for row in rows:
        row.status = ReminderStatus.SUPERSEDED
        row.status_reason = reason
        row.updated_at = now
    _note(session, taken_back=rows)
    return rows


# How the outbox answers each kind of booking change. Every kind is in exactly one of
# HANDLED_KINDS and IGNORED_KINDS, so a new kind cannot be forgotten here silently.
MOVE_KINDS = frozenset({BookingEventKind.FRACTION_MOVED, BookingEventKind.FRACTION_REBOOKED})
OUTCOME_KINDS = frozenset({BookingEventKind.FRACTION_MISSED, BookingEventKind.FRACTION_COMPLETED})
READINESS_KINDS = frozenset({BookingEventKind.COURSE_READY, BookingEventKind.COURSE_NOT_READY})
# A session that changed can take back, or bring back, another session's same-day reminder.
SAME_DAY_REPLAN_KINDS = MOVE_KINDS | {BookingEventKind.FRACTION_CANCELLED}
HANDLED_KINDS = (
    MOVE_KINDS
    | OUTCOME_KINDS
    | READINESS_KINDS
    | {
        BookingEventKind.COURSE_BOOKED,
        BookingEventKind.COURSE_CANCELLED,
        BookingEventKind.FRACTION_CANCELLED,
    }
)
# Changes that alter no patient message: staff-side states, or a change whose messages come
# from the other event it writes (undoing a missed fraction cancels its rebooking).
IGNORED_KINDS = frozenset(
    {
        BookingEventKind.COURSE_NEEDS_REVIEW,
        BookingEventKind.COURSE_REVIEWED,
        BookingEventKind.PRESCRIPTION_CHANGED,
        BookingEventKind.FRACTION_MISSED_UNDONE,
        BookingEventKind.FRACTION_CONFIRMED,
        # The planning steps before treatment are the department's own appointments; the
        # patient hears of them from the team, not from treatment reminders.
        BookingEventKind.PATHWAY_BOOKED,
        BookingEventKind.PATHWAY_CANCELLED,
    }
)


def _reload_fractions(session: Session, course: Course) -> None:
    """The course's fractions as they now stand, in one round trip (a refresh of the
    collection reads the course row first, then the fractions)."""
    fractions = session.scalars(
        sa.select(Fraction)
        .where(Fraction.course_id == course.id)
        .order_by(Fraction.number, Fraction.id)  # the relationship's own order
        .execution_options(populate_existing=True)
    ).all()
    set_committed_value(course, "fractions", list(fractions))


def _loaded_department(course: Course) -> dict[str, object]:
    """The patient's department and its linac names when the session already holds them (a
    booking loads them with the course): the snapshot then needs no query of its own."""
    patient_state = sa.inspect(course.patient)
    if "department" in patient_state.unloaded:
        return {}
    department = course.patient.department
    if department is None or "linacs" in sa.inspect(department).unloaded:
        return {}
    # A course's sessions are only ever on its own department's linacs.
    return {"department": department, "linacs": {x.id: x.name for x in department.linacs}}


def record_booking_event(session: Session, event: BookingEvent, *, now: datetime) -> list[Reminder]:
    """Plan the patient messages a booking change calls for, in the change's transaction."""
    session.flush()  # the event's id and the changed rows' new versions
    course = session.get(Course, event.course_id)
    assert course is not None
    _reload_fractions(session, course)
    snapshot = course_snapshot(session, course, **_loaded_department(course))
    fraction = session.get(Fraction, event.fraction_id) if event.fraction_id else None
    current = (
        next((f for f in snapshot.fractions if f.id == fraction.id), None) if fraction else None
    )
    payload = event.payload or {}
    planned: list[PlannedReminder] = []
    kind = BookingEventKind(event.kind)
    if kind == BookingEventKind.COURSE_BOOKED:
        planned = policy.plan_for_booking(snapshot, now=now, event_id=event.id)
    elif kind in MOVE_KINDS and fraction is not None:
        before = payload.get("before")
        if kind == BookingEventKind.FRACTION_MOVED:
            # A notice not yet sent about an earlier move is replaced; the patient was told
            # nothing about that intermediate time, so the new notice starts from theirs.
            for old in supersede(
                session,
                fraction_id=fraction.id,
                reason="the fraction changed again",
                now=now,
                kinds=[Kind.CHANGE],
            ):
                before = old.context.get("before", before)
        supersede(session, fraction_id=fraction.id, reason="the fraction was moved", now=now)
        planned = policy.plan_change_notice(
            snapshot,
            fraction.id,
            before=before,
            after=_after(payload, current),
            version=fraction.version,
            now=now,
        )
        if current is not None:
            planned += policy.plan_for_fraction(snapshot, current, now=now)
    elif kind == BookingEventKind.FRACTION_CANCELLED and fraction is not None:
        supersede(session, fraction_id=fraction.id, reason="the fraction was cancelled", now=now)
        planned = policy.plan_change_notice(
            snapshot,
            fraction.id,
            before=payload.get("before"),
            after=None,
            version=fraction.version,
            now=now,
            cancelled=True,
        )
    elif kind == BookingEventKind.COURSE_CANCELLED:
        supersede(session, course_id=course.id, reason="the course was cancelled", now=now)
        cancelled = [f["id"] for f in payload.get("fractions", [])]
        planned = policy.plan_course_cancellation(
            course_snapshot(session, course, fraction_ids=cancelled), now=now, event_id=event.id
        )
    elif kind in OUTCOME_KINDS and fraction is not None:
        supersede(session, fraction_id=fraction.id, reason=kind.replace("_", " "), now=now)
    elif kind in READINESS_KINDS and fraction is not None:
        # The first fraction's wording depends on readiness: re-plan it at its new version.
        supersede(session, fraction_id=fraction.id, reason="readiness changed", now=now)
        if current is not None:
            planned = policy.plan_for_fraction(snapshot, current, now=now)
    if fraction is not None and kind in SAME_DAY_REPLAN_KINDS:
        replan_same_day_reminders(session, snapshot, now=now, changed_fraction_id=fraction.id)
    return write(session, course.patient_id, planned)


# Why a same-day reminder is not sent although its session still is (see notifications.policy:
# at most one reminder per evening).
GIVES_WAY_REASON = "another session's day-before reminder goes out that evening"


def replan_same_day_reminders(
    session: Session, course: CourseSnapshot, *, now: datetime, changed_fraction_id: int
) -> list[Reminder]:
    """Bring the other sessions' same-day reminders in line after one session changed.

    Whether a same-day reminder goes out depends on the next session's day-before reminder
    (one reminder per evening), so a move can take one back or bring one back. Those not yet
    handed to a provider follow; the changed session itself is planned by its caller.
    """
    others = [
        f
        for f in course.fractions
        if f.id != changed_fraction_id and f.status in policy.ACTIVE_STATUSES and f.starts_at > now
    ]
    if not others:
        return []
    rows = {
        row.dedupe_key: row
        for row in session.scalars(
            sa.select(Reminder).where(
                Reminder.fraction_id.in_([f.id for f in others]),
                Reminder.kind == Kind.SAME_DAY,
            )
        )
    }
    changed = []
    # A reminder whose time has come is left to the dispatcher: the plan made now leaves it
    # out only because it is due, not because it is no longer wanted.
    rows = {key: row for key, row in rows.items() if row.due_at > now}
    for fraction in others:
        wanted = {
            p.dedupe_key: p
            for p in policy.plan_for_fraction(course, fraction, now=now)
            if p.kind is Kind.SAME_DAY
        }
        for key, row in rows.items():
            if row.fraction_id != fraction.id or row.fraction_version != fraction.version:
                continue
            if key not in wanted and row.status in OPEN_STATUSES and row.send_started_at is None:
                row.status, row.status_reason, row.updated_at = (
                    ReminderStatus.SUPERSEDED,
                    GIVES_WAY_REASON,
                    now,
                )
                _note(session, taken_back=[row])
                changed.append(row)
            elif (
                key in wanted
                and row.status == ReminderStatus.SUPERSEDED
                and row.status_reason == GIVES_WAY_REASON
            ):
                row.status, row.status_reason, row.updated_at = ReminderStatus.PENDING, None, now
                row.due_at = wanted[key].due_at
                changed.append(row)
        changed += write(
            session, course.patient.id, [p for k, p in wanted.items() if k not in rows]
        )
    return changed


def held_back_for_consent(row: Reminder) -> bool:
    """Whether ``row`` was not sent only because consent was missing or withdrawn."""
    reason = row.status_reason or ""
    return row.status == ReminderStatus.SUPPRESSED and (
        reason in _CONSENT_REASONS or reason.startswith(PROVIDER_REFUSED_PREFIX)
    )


def replan_patient_reminders(
    session: Session, patient_id: int, *, now: datetime, reason: str
) -> list[Reminder]:
    """Plan again the reminders of every session still ahead in the patient's active courses.

    Used when the patient may be messaged again (START, consent recorded by staff): a reminder
    held back for want of consent is reopened at its planned time, one never planned is
    written, and the ones whose time has passed stay as they are (the policy leaves them out).
    Each reminder this returns carries ``reason``, so the message timeline shows the re-plan.
    Commits nothing: the change rides in the caller's transaction.
    """
    patient = session.get(Patient, patient_id)
    if patient is None:
        return []
    department = session.get(Department, patient.department_id)
    linacs = linac_names(session)
    courses = session.scalars(
        sa.select(Course)
        .where(Course.patient_id == patient_id, Course.status.not_in(_FINISHED_COURSE_STATUSES))
        .order_by(Course.id)
    )
    planned: list[PlannedReminder] = []
    for course in courses:
        snapshot = course_snapshot(session, course, department=department, linacs=linacs)
        for fraction in snapshot.fractions:
            planned += policy.plan_for_fraction(snapshot, fraction, now=now)
    if not planned:
        return []
    existing = {
        row.dedupe_key: row
        for row in session.scalars(
            sa.select(Reminder).where(Reminder.dedupe_key.in_([p.dedupe_key for p in planned]))
        )
    }
    reopened = []
    for p in planned:
        row = existing.get(p.dedupe_key)
        if row is None or not held_back_for_consent(row):
            continue
        row.status = ReminderStatus.PENDING
        row.due_at = p.due_at
        row.context = p.context
        row.attempts = 0
        row.next_attempt_at = row.lease_until = row.send_started_at = None
        row.status_reason = reason
        row.updated_at = now
        reopened.append(row)
    added = write(session, patient_id, [p for p in planned if p.dedupe_key not in existing])
    for row in added:
        row.status_reason = reason
    return reopened + added


# Why a reminder planned under an earlier cadence is not sent (it may come back if the cadence
# is changed back).
CADENCE_CHANGED_REASON = "the reminder cadence changed"


def replan_for_cadence(
    session: Session,
    *,
    now: datetime,
    department_id: int | None = None,
    protocol_id: int | None = None,
) -> list[Reminder]:
    """Bring the reminders still ahead in line with a department's or a protocol's new cadence.

    Every active course of the department's patients (or under the protocol) is planned
    again: reminders the cadence no longer wants are taken back, ones it moves get their new
    time, new ones are written, and ones taken back by an earlier change come back. Reminders
    already handed to a provider are left as they are. Commits nothing.
    """
    query = sa.select(Course).where(Course.status.not_in(_FINISHED_COURSE_STATUSES))
    if department_id is not None:
        query = query.join(Patient, Patient.id == Course.patient_id).where(
            Patient.department_id == department_id
        )
    if protocol_id is not None:
        query = query.where(Course.protocol_id == protocol_id)
    linacs = linac_names(session)
    changed: list[Reminder] = []
    for course in session.scalars(query.order_by(Course.id)):
        snapshot = course_snapshot(session, course, linacs=linacs)
        changed += _reconcile_fraction_reminders(session, snapshot, now=now)
    return changed


def _reconcile_fraction_reminders(
    session: Session, course: CourseSnapshot, *, now: datetime
) -> list[Reminder]:
    """Make the open fraction reminders of ``course`` what the policy plans now."""
    versions = {
        f.id: f.version
        for f in course.fractions
        if f.status in policy.ACTIVE_STATUSES and f.starts_at > now
    }
    if not versions:
        return []
    wanted = {
        p.dedupe_key: p
        for f in course.fractions
        if f.id in versions
        for p in policy.plan_for_fraction(course, f, now=now)
    }
    rows = session.scalars(
        sa.select(Reminder).where(
            Reminder.fraction_id.in_(list(versions)),
            Reminder.kind.in_(list(policy.FRACTION_REMINDER_KINDS)),
        )
    )
    changed = []
    for row in rows:
        if versions.get(row.fraction_id) != row.fraction_version:
            continue  # an earlier version's: already superseded by the change that made it
        if row.due_at <= now:
            continue  # due: the dispatcher has it (a plan made now leaves it out for that alone)
        planned = wanted.get(row.dedupe_key)
        open_row = row.status in OPEN_STATUSES and row.send_started_at is None
        if planned is None and open_row:
            row.status, row.status_reason = ReminderStatus.SUPERSEDED, CADENCE_CHANGED_REASON
            _note(session, taken_back=[row])
        elif planned is not None and open_row and row.due_at != planned.due_at:
            row.due_at = planned.due_at
        elif (
            planned is not None
            and row.status == ReminderStatus.SUPERSEDED
            and row.status_reason in (CADENCE_CHANGED_REASON, GIVES_WAY_REASON)
        ):
            row.status, row.status_reason, row.due_at = (
                ReminderStatus.PENDING,
                None,
                planned.due_at,
            )
        else:
            continue
        row.updated_at = now
        changed.append(row)
    return changed + write(session, course.patient.id, wanted.values())


def _after(payload: dict, current: FractionSnapshot | None) -> dict | None:
    after = payload.get("after")
    if after is None or current is None:
        return after
    return {**after, "linac_name": current.linac_name}


def claim_due(
    session: Session, *, now: datetime, limit: int = 500, lease: timedelta = DEFAULT_LEASE
) -> list[int]:
    """Claim up to ``limit`` due reminders (and expired claims) for sending; commits.

    On PostgreSQL, ``FOR UPDATE SKIP LOCKED`` lets several dispatchers run at once without
    taking the same rows; SQLite serialises writers, so its claim is one transaction at a time.
    """
    expired = sa.and_(Reminder.status == ReminderStatus.CLAIMED, Reminder.lease_until < now)
    # A claim that expired after its provider call had started may have been sent: it is
    # reconciled with the provider, never simply sent again.
    session.execute(
        sa.update(Reminder)
        .where(expired, Reminder.send_started_at.is_not(None))
        .values(
            status=ReminderStatus.UNKNOWN,
            status_reason="the worker stopped during the send",
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    due = sa.or_(
        sa.and_(
            Reminder.status == ReminderStatus.PENDING,
            Reminder.due_at <= now,
            sa.or_(Reminder.next_attempt_at.is_(None), Reminder.next_attempt_at <= now),
        ),
        sa.and_(expired, Reminder.send_started_at.is_(None)),
    )
    query = sa.select(Reminder.id).where(due).order_by(Reminder.due_at, Reminder.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(session.scalars(query))
    if ids:
        session.execute(
            sa.update(Reminder)
            .where(Reminder.id.in_(ids))
            .values(status=ReminderStatus.CLAIMED, lease_until=now + lease, updated_at=now)
        )
    session.commit()
    return ids
