"""What patients text back, and what the SMS provider reports about what we sent.

``classify_reply`` is pure keyword matching. ``handle_inbound`` and ``apply_status_callback``
are the use cases behind the Twilio webhooks; each owns its transaction and is safe to run
twice for the same provider message (webhooks are retried and can be replayed).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from notifications import outbox
from notifications.models import InboundMessage, ProviderEvent, Reminder, ReminderStatus
from notifications.phone_display import national_phone
from notifications.types import Channel
from scheduler import links, services
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    Department,
    Fraction,
    FractionStatus,
    Patient,
)

log = logging.getLogger(__name__)


class ReplyAction(enum.StrEnum):
    CONFIRM = "confirm"  # confirm the patient's next booked fraction
    OPT_OUT = "opt_out"  # no more SMS
    OPT_IN = "opt_in"  # SMS again
    HELP = "help"  # answer with the clinic's phone
    INBOX = "inbox"  # a person has to read it


# Whole-message keywords only, as the carriers and Twilio match them: "STOP" opts out but
# "please don't stop" must not, and "yes I'll be late" is for a person, not a confirmation.
_KEYWORDS: dict[str, ReplyAction] = {
    **dict.fromkeys(
        ("c", "y", "yes", "confirm", "confirmed", "si", "confirmo"), ReplyAction.CONFIRM
    ),
    # REVOKE and OPTOUT are the newer opt-out words Twilio honours too; honouring more words
    # than the carrier only ever errs towards not texting.
    **dict.fromkeys(
        ("stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"),
        ReplyAction.OPT_OUT,
    ),
    **dict.fromkeys(("start", "unstop"), ReplyAction.OPT_IN),
    **dict.fromkeys(("help", "info", "ayuda"), ReplyAction.HELP),
}
# Twilio re-subscribes an opted-out number on any of these, YES included; an opted-out
# patient's YES is therefore an opt-in here too, or our state and Twilio's would disagree.
_PROVIDER_OPT_IN_WORDS = frozenset({"start", "unstop", "yes"})
# "CANCEL" stops SMS at the carrier whatever we do, but the patient may have meant the
# appointment: a person should call them.
_ASK_A_PERSON_WORDS = frozenset({"cancel"})

_NOT_WORD = re.compile(r"[\W_]+")


def normalise(body: str) -> str:
    """Lower case, accents and everything but letters and digits removed ("Sí!! 👍" -> "si")."""
    decomposed = unicodedata.normalize("NFKD", body.casefold())
    without_marks = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NOT_WORD.sub("", without_marks)


def classify_reply(body: str) -> ReplyAction:
    return _KEYWORDS.get(normalise(body or ""), ReplyAction.INBOX)


# --- what the provider posts --------------------------------------------------------------
# A valid signature proves who sent a webhook, not that its fields fit our columns: a NUL is
# refused by PostgreSQL in any text, and an id longer than the column fails the insert. Either
# would turn a patient's message into a 500 that is never stored, so fields are made storable
# here, in the use cases, whichever caller hands them in.

# Twilio's own description of a Message SID (twilio_api_v2010.json: ^(SM|MM)[0-9a-fA-F]{32}$).
_TWILIO_MESSAGE_SID = re.compile(r"(?:SM|MM)[0-9a-fA-F]{32}")
# Ids kept as they came: they fit the provider_id columns (64) and carry nothing that could break
# a log line. Derived keys below match this too, so deriving a key twice changes nothing.
_PLAIN_PROVIDER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
DERIVED_ID_PREFIX = "sha256:"
# Twilio's error codes are five digits; room for a longer one, not for a paragraph.
_ERROR_CODE_WIDTH = 10
_STATUS_WIDTH = 20  # ProviderEvent.status and Reminder.provider_status


def looks_like_twilio_sid(provider_id: str) -> bool:
    return _TWILIO_MESSAGE_SID.fullmatch(provider_id) is not None


def provider_message_key(provider_id: str) -> str:
    """The id a provider message is stored and deduplicated under.

    A plain id that fits the column (every real Twilio SID) is kept as it is, so it still
    matches the id recorded when we sent the message. Anything else (too long, control
    characters, spaces) becomes a digest of the whole id: stable, so a replay is still
    recognised, and distinct, where cutting two long ids to one prefix could make a new
    message look like a replay and drop it.
    """
    if _PLAIN_PROVIDER_ID.fullmatch(provider_id):
        return provider_id
    digest = hashlib.sha256(provider_id.encode("utf-8", "surrogatepass")).hexdigest()
    return DERIVED_ID_PREFIX + digest[: 64 - len(DERIVED_ID_PREFIX)]


def clean_message_text(text: str) -> str:
    """Text as a person wrote it, storable everywhere: line breaks become newlines, tabs
    spaces, and NUL and every other control character (and lone surrogates) are removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    return "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cs"))


def clean_field(value: str | None, width: int | None = None) -> str:
    """A one-line provider field (a phone number, a status word, an error code): control
    characters removed, outer spaces trimmed, cut to the column's width."""
    cleaned = clean_message_text(value or "").replace("\n", "").strip()
    return cleaned[:width] if width is not None else cleaned


# --- inbound messages ---------------------------------------------------------------------

# Reply texts stay in one GSM-7 segment (no á/í/ó/ú, which would switch to UCS-2), carry no
# diagnosis and no appointment details, since anyone holding the phone can read them.
_TEXTS = {
    "en": {
        "help": "{clinic}: for help with your appointments call {phone}. Reply STOP to opt out.",
        "confirmed": "{clinic}: thank you, your next appointment is confirmed.",
        "not_confirmed": (
            "{clinic}: we could not confirm an upcoming appointment by text; please call {phone}."
        ),
    },
    "es": {
        "help": "{clinic}: para ayuda con sus citas llame al {phone}. Responda STOP para no "
        "recibir mensajes.",
        "confirmed": "{clinic}: gracias, su proxima cita queda confirmada.",
        "not_confirmed": (
            "{clinic}: no pudimos confirmar su proxima cita por mensaje; por favor llame al "
            "{phone}."
        ),
    },
}
_NO_PHONE = {"en": "the clinic", "es": "consultorio"}  # "call the clinic" / "llame al ..."
_GENERIC_CLINIC = {"en": "Your clinic", "es": "Su clinica"}
# Department names often say what the patient is treated for ("... Radiation Oncology");
# an SMS must not, so such a name is replaced by a neutral one.
_REVEALING_WORDS = ("cancer", "oncolog", "radiat", "radiother", "sbrt", "tumo", "metasta")
# Same wording as the send path uses for a number the provider refuses.
SMS_BLOCKED_PREFIX = outbox.PROVIDER_REFUSED_PREFIX
# What the message timeline says about reminders planned again after the patient opted back in.
REPLANNED_AFTER_START = "planned again: the patient texted START"


@dataclass(frozen=True)
class InboundResult:
    inbound_id: int
    action: ReplyAction
    patient_id: int | None  # None: unknown number, or several patients share it
    needs_attention: bool  # waits in the schedulers' inbox
    confirmed: bool  # the next fraction is confirmed, by this message or an earlier one
    replayed: bool  # this message had been handled before: nothing was done again
    reply: str | None  # text to answer with; None means an empty TwiML response


def handle_inbound(
    session: Session, *, provider_id: str, from_number: str, body: str, now: datetime
) -> InboundResult:
    """Record an SMS a patient sent and act on its keyword, exactly once per provider id.

    The InboundMessage row (unique provider_id) is written in the same transaction as the
    effect, so either both are committed or neither is: a replay finds the row and does
    nothing, and a crash before the commit leaves nothing that would block the provider's
    retry. Concurrent deliveries of one message serialise on the unique index (PostgreSQL)
    or the write lock taken at BEGIN (SQLite); the loser sees the winner's row. Fields are
    stored as provider_message_key, clean_field and clean_message_text make them.
    """
    provider_id = provider_message_key(provider_id)
    from_number = clean_field(from_number)
    body = clean_message_text(body or "")
    existing = _inbound_by_provider_id(session, provider_id)
    if existing is not None:
        return _replayed(session, existing)

    action = classify_reply(body)
    word = normalise(body or "")
    patients = list(
        session.scalars(
            sa.select(Patient).where(Patient.phone_e164 == from_number).order_by(Patient.id)
        )
    )
    if (
        action is ReplyAction.CONFIRM
        and word in _PROVIDER_OPT_IN_WORDS
        and patients
        and all(p.sms_opted_out for p in patients)
    ):
        action = ReplyAction.OPT_IN

    row = InboundMessage(
        provider_id=provider_id,
        # The column holds an E.164 number; anything longer (a channel prefix) is cut.
        from_number=from_number[:20],
        patient_id=patients[0].id if len(patients) == 1 else None,
        body=body,
        action=action,
        needs_attention=not patients or action is ReplyAction.INBOX,
        received_at=now,
    )
    confirmed = False  # the patient's next fraction is confirmed (now or by an earlier reply)
    if action is ReplyAction.OPT_OUT:
        for patient in patients:
            patient.sms_opted_out = True
            # Whoever holds this number no longer wants our texts; the links we sent it stop.
            links.revoke_patient_links(session, patient_id=patient.id, now=now)
        _suppress_pending_sms(session, [p.id for p in patients], outbox.OPTED_OUT_REASON, now)
        if word in _ASK_A_PERSON_WORDS or len(patients) > 1:
            row.needs_attention = True
    elif action is ReplyAction.OPT_IN:
        for patient in patients:
            patient.sms_opted_out = False
            # The number just texted us, so whatever made the provider refuse it (invalid,
            # landline, unsubscribed) no longer holds.
            patient.sms_blocked_reason = None
        # Texts held back while opted out are planned again for the sessions still ahead.
        for patient in patients:
            outbox.replan_patient_reminders(
                session, patient.id, now=now, reason=REPLANNED_AFTER_START
            )
        row.needs_attention = row.needs_attention or len(patients) > 1
    elif action is ReplyAction.CONFIRM:
        patient = _patient_to_confirm(session, patients, now)
        upcoming = _next_active_fraction(session, patient.id, now) if patient else None
        if patient is None:
            row.needs_attention = True
        elif upcoming is not None and upcoming.status == FractionStatus.CONFIRMED:
            # Patients often answer twice: it is confirmed already, so say so again.
            row.patient_id = patient.id
            confirmed = True
        else:
            row.patient_id = patient.id
            row.handled_at = now
            session.add(row)
            if not _flush_new(session):
                return _replayed(session, _inbound_by_provider_id(session, provider_id))
            # One unit of work: the confirmation and this message are stored together.
            fraction = services.confirm_next_fraction(session, patient.id, now=now)
            if fraction is not None:
                session.commit()
                return _result(session, row, confirmed=True, replayed=False)
            # Nothing confirmable (none booked, or the first one still tentative): a person
            # calls the patient.
            row.needs_attention = True
            row.handled_at = None
    if not row.needs_attention:
        row.handled_at = now  # answered automatically; nothing left for the inbox
    session.add(row)
    if not _flush_new(session):
        return _replayed(session, _inbound_by_provider_id(session, provider_id))
    session.commit()
    return _result(session, row, confirmed=confirmed, replayed=False)


def _inbound_by_provider_id(session: Session, provider_id: str) -> InboundMessage | None:
    return session.scalars(
        sa.select(InboundMessage).where(InboundMessage.provider_id == provider_id)
    ).first()


def _flush_new(session: Session) -> bool:
    """Flush the pending InboundMessage; False when that provider id is already recorded."""
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return False
    return True


def _next_active_fraction(session: Session, patient_id: int, now: datetime) -> Fraction | None:
    """The fraction confirm_next_fraction looks at (the same query)."""
    return session.scalars(
        sa.select(Fraction)
        .where(
            Fraction.patient_id == patient_id,
            Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
            Fraction.starts_at > now,
        )
        .order_by(Fraction.starts_at)
        .limit(1)
    ).first()


def _patient_to_confirm(session: Session, patients: list[Patient], now: datetime) -> Patient | None:
    """The one patient this number belongs to; among several sharing a phone, the only one
    with an upcoming session. Anything ambiguous goes to a person."""
    if len(patients) <= 1:
        return patients[0] if patients else None
    with_upcoming = [p for p in patients if _next_active_fraction(session, p.id, now) is not None]
    return with_upcoming[0] if len(with_upcoming) == 1 else None


def _replayed(session: Session, row: InboundMessage | None) -> InboundResult:
    if row is None:  # the conflicting row vanished: only a deleted record can do that
        raise RuntimeError("inbound message conflict without a stored row")
    action = ReplyAction(row.action)
    # A confirmation that worked was stored as handled and not needing attention.
    confirmed = action is ReplyAction.CONFIRM and not row.needs_attention
    return _result(session, row, confirmed=confirmed, replayed=True)


def _result(
    session: Session, row: InboundMessage, *, confirmed: bool, replayed: bool
) -> InboundResult:
    action = ReplyAction(row.action)
    return InboundResult(
        inbound_id=row.id,
        action=action,
        patient_id=row.patient_id,
        needs_attention=row.needs_attention,
        confirmed=confirmed,
        replayed=replayed,
        reply=_reply_text(session, row, action, confirmed),
    )


def _reply_text(
    session: Session, row: InboundMessage, action: ReplyAction, confirmed: bool
) -> str | None:
    """HELP and CONFIRM get an answer; STOP/START get none from us, because Twilio (or the
    carrier) already answers those keywords with its standard text, and anything else waits
    for a person."""
    if action not in (ReplyAction.HELP, ReplyAction.CONFIRM):
        return None
    patient = session.get(Patient, row.patient_id) if row.patient_id is not None else None
    if patient is not None and patient.sms_opted_out:
        return None  # the provider would refuse it (error 21610)
    department = _department_for(session, row, patient)
    language = patient.language if patient is not None and patient.language in _TEXTS else "en"
    key = "confirmed" if confirmed else "not_confirmed"
    if action is ReplyAction.HELP:
        key = "help"
    return _TEXTS[language][key].format(
        clinic=sms_clinic_name(department, language),
        phone=(
            national_phone(department.phone, department.holiday_country)
            if department is not None
            else None
        )
        or _NO_PHONE[language],
    )


def _department_for(
    session: Session, row: InboundMessage, patient: Patient | None
) -> Department | None:
    if patient is not None:
        return session.get(Department, patient.department_id)
    # Unknown (or shared) number: name a clinic only when there is just one to name.
    first_two = list(session.scalars(sa.select(Department).order_by(Department.id).limit(2)))
    if len(first_two) == 1:
        return first_two[0]
    if row.from_number:
        owner = session.scalars(
            sa.select(Patient).where(Patient.phone_e164 == row.from_number).order_by(Patient.id)
        ).first()
        if owner is not None:
            return session.get(Department, owner.department_id)
    return None


def sms_clinic_name(department: Department | None, language: str = "en") -> str:
    name = (department.name if department is not None else "").strip()
    lowered = name.casefold()
    if not name or any(word in lowered for word in _REVEALING_WORDS):
        return _GENERIC_CLINIC.get(language, _GENERIC_CLINIC["en"])
    return name


def _suppress_pending_sms(
    session: Session, patient_ids: list[int], reason: str, now: datetime
) -> None:
    """SMS not yet handed to the provider will not be sent. A claimed row's send task
    re-reads it before calling the provider and drops it."""
    if not patient_ids:
        return
    session.execute(
        sa.update(Reminder)
        .where(
            Reminder.patient_id.in_(patient_ids),
            Reminder.channel == Channel.SMS,
            Reminder.status.in_((ReminderStatus.PENDING, ReminderStatus.CLAIMED)),
        )
        .values(status=ReminderStatus.SUPPRESSED, status_reason=reason, updated_at=now)
        .execution_options(synchronize_session=False)
    )


# --- status callbacks ---------------------------------------------------------------------

# Where Twilio posts (web/webhooks.py serves both). Kept here, free of Flask, so the sender can
# build its StatusCallback URL without importing the web app.
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"


def status_callback_url(public_base_url: str) -> str:
    """The StatusCallback to give Twilio with each message; signatures are checked on it."""
    return public_base_url.rstrip("/") + STATUS_CALLBACK_PATH


# Twilio's message statuses by progress. A callback can only move a message forward, so a
# late "sent" after "delivered" changes nothing; the final ones share one rank, so the first
# final status to arrive stands (only "read" may still follow "delivered").
_STATUS_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "canceled": 4,
    "read": 5,  # WhatsApp/RCS only: delivered, and then read
}
_FAILED_PROVIDER_STATUSES = frozenset({"undelivered", "failed", "canceled"})
# Errors that say this number will never receive our SMS. 30003 (handset unreachable) is
# left out on purpose: it is mostly a phone switched off or out of coverage, and flagging
# the channel on it would silence a reachable patient for good.
PERMANENT_SMS_ERRORS = {
    "21211": "invalid number",
    "21610": "the recipient replied STOP",
    "21614": "not a mobile number",
    "21635": "number cannot receive SMS",
    "30005": "unknown or inactive number",
    "30006": "landline or unreachable carrier",
}
# Reminder states a provider report may settle: it was sent, or might have been.
_SETTLEABLE = (ReminderStatus.CLAIMED, ReminderStatus.SENT, ReminderStatus.UNKNOWN)


def apply_status_callback(
    session: Session, *, provider_id: str, status: str, error_code: str | None, now: datetime
) -> bool:
    """Apply one provider status report. False when no reminder has this provider id.

    Each (provider id, status) is applied once (ProviderEvent is unique on the pair), and
    the reminder's row is locked first so that two reports for one message cannot
    interleave and leave the earlier status on top.
    """
    provider_id = provider_message_key(provider_id)
    status = clean_field(status).lower()[:_STATUS_WIDTH]
    error_code = clean_field(error_code, _ERROR_CODE_WIDTH) or None
    reminder = session.scalars(
        sa.select(Reminder).where(Reminder.provider_id == provider_id).with_for_update()
    ).first()
    if reminder is None:
        session.rollback()
        return False
    seen = session.scalar(
        sa.select(ProviderEvent.id).where(
            ProviderEvent.provider_id == provider_id, ProviderEvent.status == status
        )
    )
    if seen is not None:
        session.rollback()
        return True
    session.add(ProviderEvent(provider_id=provider_id, status=status, received_at=now))

    rank = _STATUS_RANK.get(status)
    current = reminder.provider_status or ""
    if rank is None:
        # Not PHI: a status word and the provider's message id.
        log.info("ignored unknown provider status %r for message %s", status, provider_id)
    elif rank > _STATUS_RANK.get(current, -1) and current not in _FAILED_PROVIDER_STATUSES:
        reminder.provider_status = status
        _settle(session, reminder, status, error_code, now)
    try:
        session.commit()
    except IntegrityError:  # the same report, applied concurrently without the row lock
        session.rollback()
    return True


def _settle(
    session: Session, reminder: Reminder, status: str, error_code: str | None, now: datetime
) -> None:
    if reminder.status not in _SETTLEABLE:
        return  # e.g. already failed by the send path: keep its reason
    reminder.updated_at = now
    if status in ("delivered", "read"):
        reminder.status = ReminderStatus.DELIVERED
        reminder.status_reason = None
        reminder.delivered_at = reminder.delivered_at or now
    elif status in _FAILED_PROVIDER_STATUSES:
        reminder.status = ReminderStatus.FAILED
        reminder.status_reason = f"{status}: error {error_code}" if error_code else status
        if error_code in PERMANENT_SMS_ERRORS and reminder.channel == Channel.SMS:
            _block_sms(session, reminder.patient_id, error_code, now)
    else:
        # queued/sending/sent: the provider has it, which also settles an "unknown" send.
        reminder.status = ReminderStatus.SENT
        reminder.sent_at = reminder.sent_at or now
        reminder.lease_until = None


def _block_sms(session: Session, patient_id: int, error_code: str, now: datetime) -> None:
    patient = session.get(Patient, patient_id)
    if patient is None:
        return
    patient.sms_blocked_reason = (
        f"{SMS_BLOCKED_PREFIX} ({error_code}: {PERMANENT_SMS_ERRORS[error_code]})"
    )
    if error_code == "21610":
        # Twilio holds this number as opted out; START from the patient clears both.
        patient.sms_opted_out = True
        links.revoke_patient_links(session, patient_id=patient_id, now=now)
    _suppress_pending_sms(session, [patient_id], patient.sms_blocked_reason, now)
