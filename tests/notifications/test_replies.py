"""Reply keywords (pure) and the reply/status use cases on both database backends."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from notifications import replies
from notifications.models import InboundMessage, ProviderEvent, Reminder, ReminderStatus
from notifications.replies import ReplyAction, classify_reply
from scheduler.models import Fraction, FractionStatus, Patient
from scheduler.services import Placement
from tests import factories as f
from tests.committing import services

NOW = f.MONDAY
PHONE = "+12125550123"
# GSM 03.38 basic character set: anything else turns an SMS into UCS-2 (70 characters).
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


# --- keywords -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["C", "c", " c ", "YES", "yes!", "Yes.", " Confirm. ", "CONFIRMED", "y", "Sí", "si!!", "✅ C"],
)
def test_confirm_words_in_any_case_with_stray_punctuation_and_emoji(body):
    assert classify_reply(body) is ReplyAction.CONFIRM


@pytest.mark.parametrize(
    "body", ["STOP", "stop", "Stop.", "STOPALL", "stop all", "UNSUBSCRIBE", "Cancel", "END",
             "quit!", "revoke", "opt-out"],
)  # fmt: skip
def test_opt_out_words(body):
    assert classify_reply(body) is ReplyAction.OPT_OUT


@pytest.mark.parametrize("body", ["START", "start", "Unstop", "UNSTOP!"])
def test_opt_in_words(body):
    assert classify_reply(body) is ReplyAction.OPT_IN


@pytest.mark.parametrize("body", ["HELP", "help?", "Info", "ayuda"])
def test_help_words(body):
    assert classify_reply(body) is ReplyAction.HELP


@pytest.mark.parametrize(
    "body",
    ["", "   ", "👍", "yes I'll be there", "please stop texting me", "Can I come at 3?",
     "cancelled", "C C", "confirm my ride", "no"],
)  # fmt: skip
def test_anything_else_goes_to_the_inbox(body):
    # Only a whole-message keyword acts: sentences are for a person to read.
    assert classify_reply(body) is ReplyAction.INBOX


def test_normalise_strips_accents_case_and_symbols():
    assert replies.normalise("  Sí!! 👍 ") == "si"
    assert replies.normalise("S.T.O.P") == "stop"


def test_status_callback_url_is_built_on_the_public_base_url():
    assert (
        replies.status_callback_url("https://sbrt.example.org/")
        == "https://sbrt.example.org/webhooks/twilio/status"
    )


def test_sms_clinic_name_never_reveals_the_treatment():
    class Dept:
        name = "Mercy Radiation Oncology"

    assert replies.sms_clinic_name(Dept()) == "Your clinic"
    assert replies.sms_clinic_name(Dept(), "es") == "Su clinica"
    Dept.name = "Riverside Health"
    assert replies.sms_clinic_name(Dept()) == "Riverside Health"
    assert replies.sms_clinic_name(None) == "Your clinic"


@pytest.mark.parametrize("language", ["en", "es"])
def test_reply_texts_fit_one_gsm7_segment(language):
    clinic = "St Bartholomew-Whitechapel Health Centre"  # 40 characters
    for text in replies._TEXTS[language].values():
        rendered = text.format(clinic=clinic, phone="+442071234567")
        assert len(rendered) <= 160, rendered
        assert set(rendered) <= GSM7, set(rendered) - GSM7


# --- inbound use case -------------------------------------------------------------------------


def _book(session, w, *, ready=True, **patient):
    pat = f.patient(session, w["department"], sms_consent=True, **patient)
    course = f.course(session, pat, w["liver"], ready=ready)
    session.commit()
    proposal = services.propose_schedules(session, course.id, now=NOW).schedules[0]
    placements = [Placement(p.number, p.linac_id, p.start) for p in proposal.fractions]
    services.book_course(session, course.id, placements, now=NOW)
    return pat.id


def _fractions(session, patient_id):
    session.expire_all()
    return list(
        session.scalars(
            sa.select(Fraction).where(Fraction.patient_id == patient_id).order_by(Fraction.number)
        )
    )


# The proposal's first fraction starts right at NOW; the patient answers the evening before.
EVENING_BEFORE = NOW - timedelta(hours=14)


def _inbound(session, sid, body, *, sender=PHONE, now=EVENING_BEFORE):
    return replies.handle_inbound(session, provider_id=sid, from_number=sender, body=body, now=now)


def test_confirm_marks_the_next_booked_fraction_once_even_when_replayed(session):
    w = f.world(session)
    patient_id = _book(session, w)
    result = _inbound(session, "SM1", "Yes!")
    assert result.action is ReplyAction.CONFIRM and result.confirmed and not result.replayed
    assert result.patient_id == patient_id and not result.needs_attention
    assert result.reply and "confirmed" in result.reply
    statuses = [x.status for x in _fractions(session, patient_id)]
    assert statuses[:2] == [FractionStatus.CONFIRMED, FractionStatus.BOOKED]

    again = _inbound(session, "SM1", "Yes!", now=EVENING_BEFORE + timedelta(minutes=1))
    assert again.replayed and again.confirmed and again.inbound_id == result.inbound_id
    assert again.reply == result.reply
    # The replay did not confirm the second fraction.
    assert [x.status for x in _fractions(session, patient_id)] == statuses
    assert session.scalar(sa.select(sa.func.count(InboundMessage.id))) == 1
    row = session.get(InboundMessage, result.inbound_id)
    assert row.handled_at is not None and row.action == "confirm"

    # A second "C" the same evening: confirmed already, so it says so and asks nobody.
    twice = _inbound(session, "SM2", "c")
    assert twice.confirmed and not twice.needs_attention and twice.reply == result.reply
    assert [x.status for x in _fractions(session, patient_id)] == statuses

    # After the first session, a new message confirms the next one.
    _inbound(session, "SM3", "C", now=NOW + timedelta(hours=2))
    statuses = [x.status for x in _fractions(session, patient_id)]
    assert statuses[:3] == [FractionStatus.CONFIRMED] * 2 + [FractionStatus.BOOKED]


def test_a_tentative_first_fraction_is_not_confirmed_and_a_person_is_asked(session):
    w = f.world(session)
    patient_id = _book(session, w, ready=False)
    result = _inbound(session, "SM1", "CONFIRM")
    assert not result.confirmed and result.needs_attention
    assert result.reply and "please call (212) 555-0100" in result.reply
    assert _fractions(session, patient_id)[0].status == FractionStatus.TENTATIVE
    row = session.get(InboundMessage, result.inbound_id)
    assert row.needs_attention and row.handled_at is None and row.patient_id == patient_id
    replay = _inbound(session, "SM1", "CONFIRM")
    assert replay.replayed and not replay.confirmed and replay.reply == result.reply


def test_concurrent_deliveries_of_one_message_confirm_once(session, session_factory):
    w = f.world(session)
    patient_id = _book(session, w)
    session.rollback()  # SQLite: the test's session must not hold the write lock
    results = []
    barrier = threading.Barrier(2)

    def deliver() -> None:
        with session_factory() as s:
            barrier.wait()
            results.append(_inbound(s, "SMrace", "C"))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.replayed for r in results) == [False, True]
    statuses = [x.status for x in _fractions(session, patient_id)]
    assert statuses.count(FractionStatus.CONFIRMED) == 1


def _reminder(session, patient, course, *, status, channel="sms", key, provider_id=None):
    row = Reminder(
        dedupe_key=key,
        kind="same_day",
        channel=channel,
        patient_id=patient.id,
        course_id=course.id,
        due_at=NOW + timedelta(days=1),
        status=status,
        provider_id=provider_id,
    )
    session.add(row)
    session.flush()
    return row


def test_stop_opts_out_suppresses_pending_sms_and_start_opts_back_in(session):
    w = f.world(session)
    pat = f.patient(session, w["department"], sms_consent=True, sms_blocked_reason="old flag")
    course = f.course(session, pat, w["liver"])
    pending = _reminder(session, pat, course, status="pending", key="a")
    claimed = _reminder(session, pat, course, status="claimed", key="b")
    sent = _reminder(session, pat, course, status="sent", key="c", provider_id="SMx")
    email = _reminder(session, pat, course, status="pending", channel="email", key="d")
    session.commit()

    result = _inbound(session, "SM1", "Stop")
    assert result.action is ReplyAction.OPT_OUT and result.reply is None
    assert not result.needs_attention
    session.expire_all()
    assert session.get(Patient, pat.id).sms_opted_out
    assert [session.get(Reminder, r.id).status for r in (pending, claimed, sent, email)] == [
        "suppressed", "suppressed", "sent", "pending"
    ]  # fmt: skip
    assert session.get(Reminder, pending.id).status_reason == "opted out"

    # An opted-out patient's YES is Twilio's opt-in word: it opts in, it does not confirm.
    result = _inbound(session, "SM2", "yes")
    assert result.action is ReplyAction.OPT_IN and result.reply is None
    session.expire_all()
    patient = session.get(Patient, pat.id)
    assert not patient.sms_opted_out and patient.sms_blocked_reason is None

    _inbound(session, "SM3", "STOP")
    _inbound(session, "SM4", "start")
    session.expire_all()
    assert not session.get(Patient, pat.id).sms_opted_out


def test_cancel_opts_out_but_asks_a_person_to_call(session):
    w = f.world(session)
    f.patient(session, w["department"], sms_consent=True)
    session.commit()
    result = _inbound(session, "SM1", "CANCEL")
    assert result.action is ReplyAction.OPT_OUT and result.needs_attention


def test_unknown_number_and_free_text_go_to_the_inbox(session):
    w = f.world(session)
    f.patient(session, w["department"])
    session.commit()
    free = _inbound(session, "SM1", "Can I come at 3pm instead?")
    assert free.action is ReplyAction.INBOX and free.needs_attention and free.reply is None
    assert free.patient_id is not None
    stranger = _inbound(session, "SM2", "C", sender="+13105550199")
    assert stranger.patient_id is None and stranger.needs_attention and not stranger.confirmed
    # One department: the stranger is told whom to call.
    assert stranger.reply and "(212) 555-0100" in stranger.reply
    row = session.get(InboundMessage, free.inbound_id)
    assert row.body == "Can I come at 3pm instead?" and row.handled_at is None


def test_help_answers_in_the_patients_language(session):
    w = f.world(session)
    f.patient(session, w["department"], language="es")
    session.commit()
    result = _inbound(session, "SM1", "AYUDA")
    assert result.action is ReplyAction.HELP
    assert result.reply == (
        "Su clinica: para ayuda con sus citas llame al (212) 555-0100. "
        "Responda STOP para no recibir mensajes."
    )


# --- status callbacks -------------------------------------------------------------------------


def _sent_reminder(session, **patient):
    w = f.world(session)
    pat = f.patient(session, w["department"], sms_consent=True, **patient)
    course = f.course(session, pat, w["liver"])
    row = _reminder(session, pat, course, status="sent", key="sent", provider_id="SM100")
    other = _reminder(session, pat, course, status="pending", key="next")
    session.commit()
    return pat.id, row.id, other.id


def _status(session, status, *, sid="SM100", code=None, now=NOW):
    return replies.apply_status_callback(
        session, provider_id=sid, status=status, error_code=code, now=now
    )


def test_status_only_moves_forward_and_repeats_are_ignored(session):
    _, reminder_id, _ = _sent_reminder(session)
    for status in ("queued", "sent", "delivered", "delivered", "sent", "undelivered", "sending"):
        assert _status(session, status, now=NOW + timedelta(minutes=1)) is True
    session.expire_all()
    row = session.get(Reminder, reminder_id)
    assert row.status == ReminderStatus.DELIVERED and row.provider_status == "delivered"
    assert row.delivered_at == NOW + timedelta(minutes=1)
    events = session.scalars(sa.select(ProviderEvent.status).order_by(ProviderEvent.id)).all()
    assert events == ["queued", "sent", "delivered", "undelivered", "sending"]


def test_unknown_message_id_is_reported_and_nothing_is_stored(session):
    _sent_reminder(session)
    assert _status(session, "delivered", sid="SMnobody") is False
    assert session.scalar(sa.select(sa.func.count(ProviderEvent.id))) == 0


def test_a_permanent_error_fails_the_message_and_flags_the_number(session):
    patient_id, reminder_id, other_id = _sent_reminder(session)
    assert _status(session, "undelivered", code="30006")
    session.expire_all()
    row = session.get(Reminder, reminder_id)
    assert row.status == ReminderStatus.FAILED and row.status_reason == "undelivered: error 30006"
    patient = session.get(Patient, patient_id)
    assert "30006" in patient.sms_blocked_reason
    assert session.get(Reminder, other_id).status == ReminderStatus.SUPPRESSED
    # A late "delivered" cannot undo a final failure.
    _status(session, "delivered")
    session.expire_all()
    assert session.get(Reminder, reminder_id).status == ReminderStatus.FAILED


def test_an_unreachable_handset_is_not_flagged_for_good(session):
    patient_id, reminder_id, other_id = _sent_reminder(session)
    _status(session, "undelivered", code="30003")
    session.expire_all()
    assert session.get(Reminder, reminder_id).status == ReminderStatus.FAILED
    assert session.get(Patient, patient_id).sms_blocked_reason is None
    assert session.get(Reminder, other_id).status == ReminderStatus.PENDING


def test_unsubscribed_error_marks_the_patient_opted_out(session):
    patient_id, _, _ = _sent_reminder(session)
    _status(session, "failed", code="21610")
    session.expire_all()
    patient = session.get(Patient, patient_id)
    assert patient.sms_opted_out and "21610" in patient.sms_blocked_reason


def test_a_callback_settles_an_unknown_send(session):
    _, reminder_id, _ = _sent_reminder(session)
    row = session.get(Reminder, reminder_id)
    row.status = ReminderStatus.UNKNOWN
    session.commit()
    _status(session, "sent")
    session.expire_all()
    row = session.get(Reminder, reminder_id)
    assert row.status == ReminderStatus.SENT and row.sent_at == NOW


# --- fields as the provider posts them --------------------------------------------------------

TWILIO_SID = "SM" + "0f" * 16


@pytest.mark.parametrize("sid", [TWILIO_SID, "MM" + "AB" * 16, "SM100", "local-7"])
def test_plain_provider_ids_are_kept_as_they_came(sid):
    # Real SIDs must still match the id recorded when the message was sent.
    assert replies.provider_message_key(sid) == sid


@pytest.mark.parametrize(
    "sid", ["SM" + "0f" * 40, "SM1\x00", "SM1 2", "SM1\n", "SMé", "x" * 65, "SM\ud800"]
)
def test_other_provider_ids_become_a_stable_storable_key(sid):
    key = replies.provider_message_key(sid)
    assert key.startswith(replies.DERIVED_ID_PREFIX) and len(key) == 64
    assert key.isascii() and key.isprintable()
    assert replies.provider_message_key(sid) == key  # a replay finds the same row
    assert replies.provider_message_key(key) == key  # deriving twice changes nothing
    # Two long ids sharing their first 64 characters stay two messages.
    assert replies.provider_message_key(sid + "x") != key


def test_twilio_sids_are_recognised_by_twilios_own_pattern():
    assert replies.looks_like_twilio_sid(TWILIO_SID)
    assert replies.looks_like_twilio_sid("MM" + "AB" * 16)
    for odd in ("SM100", TWILIO_SID + "0", "XX" + "0f" * 16, TWILIO_SID + "\n", ""):
        assert not replies.looks_like_twilio_sid(odd)


def test_message_text_keeps_words_emoji_and_line_breaks_but_no_control_characters():
    text = "Sí 👍\r\nsee you\rat\t3\x00\x07\x1b[0m\u200d\ud800"
    assert replies.clean_message_text(text) == "Sí 👍\nsee you\nat 3[0m\u200d"
    assert replies.clean_message_text("plain") == "plain"


def test_one_line_fields_lose_control_characters_and_are_cut_to_width():
    assert replies.clean_field(" +12125550123\x00\n") == "+12125550123"
    assert replies.clean_field("\x00\x01") == ""
    assert replies.clean_field(None) == ""
    assert replies.clean_field("4" * 30, 10) == "4" * 10


def test_an_overlong_sid_and_a_nul_body_are_stored_once_and_acted_on(session):
    w = f.world(session)
    f.patient(session, w["department"], sms_consent=True)
    session.commit()
    long_sid = "SM" + "0f" * 40
    first = _inbound(session, long_sid, "STOP\x00")
    assert first.action is ReplyAction.OPT_OUT and not first.replayed
    again = _inbound(session, long_sid, "STOP\x00")
    assert again.replayed and again.inbound_id == first.inbound_id
    row = session.get(InboundMessage, first.inbound_id)
    assert row.body == "STOP" and row.provider_id == replies.provider_message_key(long_sid)
    free = _inbound(session, "SM\x002", "Running\x00 late\r\nsorry", sender=PHONE + "\x00")
    row = session.get(InboundMessage, free.inbound_id)
    assert row.body == "Running late\nsorry" and row.from_number == PHONE
    assert row.patient_id is not None and row.needs_attention


def test_a_status_report_with_odd_fields_is_applied_or_ignored_never_an_error(session):
    _, reminder_id, _ = _sent_reminder(session)
    assert _status(session, "delivered", sid="SM" + "0f" * 40) is False
    assert _status(session, "delivered", sid="SM100\x00") is False
    assert _status(session, " SENT\x00 ") is True
    code = "3\x0000" + "7" * 50
    assert _status(session, "undelivered\x00", code=code) is True
    session.expire_all()
    row = session.get(Reminder, reminder_id)
    assert row.status == ReminderStatus.FAILED and row.provider_status == "undelivered"
    assert row.status_reason == "undelivered: error 3007777777"
    assert sorted(session.scalars(sa.select(ProviderEvent.status))) == ["sent", "undelivered"]
