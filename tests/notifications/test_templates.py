"""Every shipped template renders; SMS fit one GSM-7 segment and reveal no diagnosis.

SMS are rendered for every kind and variant, in both languages, with and without pending
readiness, for 24-character clinic names, 20-character given names, a 40-character link and
the longest date forms (two-digit days and hours, every weekday including Spanish "sáb").
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest
from jinja2 import UndefinedError
from jinja2.sandbox import SecurityError

from notifications import template_store
from notifications.policy import (
    plan_change_notice,
    plan_course_cancellation,
    plan_for_booking,
)
from notifications.rendering import (
    GSM7_BASIC,
    TEMPLATE_DIR,
    diagnosis_words,
    format_when,
    format_when_long,
    gsm7_fold,
    gsm7_ok,
    message_context,
    prep_instructions_for,
    render,
    render_source,
    sms_clinic_name,
    sms_segments,
)
from notifications.types import (
    Channel,
    CourseSnapshot,
    FractionSnapshot,
    Kind,
    PatientSnapshot,
    PlannedReminder,
)
from scheduler.protocols import PREP_INSTRUCTIONS
from scheduler.timeutil import local_to_utc

NY = "America/New_York"
LA = "America/Los_Angeles"
LINK = "https://rvs.example.org/p/Ab3dE5gH7jK9mN"  # 40 characters: the SMS budget for a link
CLINIC_SMS_NAMES = [
    "Riverside Clinic",
    "St. Bartholomew's Clinic",  # 24
    "Mount Sinai Queens Annex",  # 24
    "Clínica Nuestra Señora",  # í is not GSM-7: folded for SMS
]
GIVEN_NAMES = ["Maximiliana-Josefina", "María José", "Zoë", "Jean-Christophe Yves"]
# Written out here rather than imported: the test is the independent check of the templates.
DIAGNOSIS_WORDS = re.compile(
    r"cancer|cáncer|tumou?r|radiation|radiaci[oó]n|radiotherap|radioterapia|sbrt|sabr|"
    r"metasta|metásta|oncolog|oncológ|chemo|quimio",
    re.IGNORECASE,
)
NOT_FINAL_WORDS = re.compile(r"confirmed|confirmad", re.IGNORECASE)


def patient(language: str, given_name: str = "Ana", tz: str = NY) -> PatientSnapshot:
    return PatientSnapshot(
        id=1,
        given_name=given_name,
        language=language,
        timezone=tz,
        phone_e164="+15550100001",
        email="patient@example.org",
        sms_allowed=True,
        email_allowed=True,
    )


def course(
    language: str,
    starts: list[datetime],
    *,
    ready: bool = True,
    given_name: str = "Ana",
    clinic_name: str = "Riverside Radiation Oncology (demo)",
    tz: str = NY,
    site: str = "liver",
) -> CourseSnapshot:
    fractions = tuple(
        FractionSnapshot(
            id=100 + i,
            number=i,
            version=1,
            status="booked",
            starts_at=start,
            ends_at=start + timedelta(minutes=45),
            linac_name="TrueBeam 2",
        )
        for i, start in enumerate(starts, start=1)
    )
    return CourseSnapshot(
        id=7,
        patient=patient(language, given_name, tz),
        fractions=fractions,
        fraction_count=len(fractions),
        ready_to_treat=ready,
        clinic_name=clinic_name,
        clinic_phone="+1 555 010 0000",
        department_timezone=NY,
        prep_instructions=PREP_INSTRUCTIONS[site],
    )


def ny(*args: int) -> datetime:
    return local_to_utc(datetime(*args), NY)


# Two-digit days and hours give the longest dates; a week of them covers every weekday name.
LONG_STARTS = [
    local_to_utc(datetime.combine(date(2026, 9, 24) + timedelta(days=d), t), NY)
    for d in range(7)
    for t in (time(12, 45), time(10, 59), time(23, 59))
]


def side(at: datetime) -> dict[str, object]:
    return {"starts_at": at.isoformat(), "linac_name": "TrueBeam 2"}


def sms_variants(c: CourseSnapshot, start: datetime, other: datetime) -> list[PlannedReminder]:
    """One SMS reminder of every kind and variant for course ``c``."""
    now = start - timedelta(days=10)
    booking = plan_for_booking(c, now=now, event_id=1)
    first_id = c.fractions[0].id
    picked = [r for r in booking if r.channel is Channel.SMS and r.fraction_id in (None, first_id)]
    notices = [
        plan_change_notice(c, first_id, before=side(start), after=side(other), version=2, now=now),
        plan_change_notice(c, first_id, before=None, after=side(other), version=3, now=now),
        plan_change_notice(c, first_id, before=side(start), after=None, version=4, now=now),
        plan_change_notice(
            c, first_id, before=side(start), after=None, version=5, now=now, cancelled=True
        ),
        plan_course_cancellation(c, now=now, event_id=2),
    ]
    picked += [r for plan in notices for r in plan if r.channel is Channel.SMS]
    assert {r.kind for r in picked} == set(Kind)
    return picked


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("ready", [True, False])
@pytest.mark.parametrize("fraction_count", [1, 5])
def test_every_sms_fits_one_gsm7_segment_without_diagnosis_words(
    language: str, ready: bool, fraction_count: int
) -> None:
    rendered = 0
    # Given names are not in SMS (minimum content), so cycling them is enough to show that.
    names = itertools.cycle(GIVEN_NAMES)
    for start, clinic in itertools.product(LONG_STARTS, CLINIC_SMS_NAMES):
        given = next(names)
        starts = [start + timedelta(days=2 * i) for i in range(fraction_count)]
        c = course(language, starts, ready=ready, given_name=given)
        other = LONG_STARTS[(LONG_STARTS.index(start) + 5) % len(LONG_STARTS)]
        for reminder in sms_variants(c, start, other):
            ctx = message_context(c, reminder, link=LINK, clinic_sms_name=clinic)
            text = render(reminder.kind, Channel.SMS, language, ctx).text
            where = f"{language} {reminder.kind} {reminder.dedupe_key}: {text!r}"
            assert gsm7_ok(text), where
            assert len(text) <= 160, f"{len(text)} chars: {where}"
            assert sms_segments(text) == 1, where
            assert not DIAGNOSIS_WORDS.search(text), where
            assert LINK in text, where
            assert gsm7_fold(clinic) in text, where
            assert given not in text, where
            if not ready and reminder.kind in (Kind.CONFIRMATION, Kind.DAY_BEFORE, Kind.SAME_DAY):
                assert not NOT_FINAL_WORDS.search(text), where
                assert "provisional" in text, where
            rendered += 1
    assert rendered > 0


def test_sms_never_carries_a_diagnosis_from_the_clinic_name() -> None:
    c = course("en", [ny(2026, 6, 16, 10)])
    reminder = plan_for_booking(c, now=ny(2026, 6, 1), event_id=1)[0]
    # No SMS name given: derived from "Riverside Radiation Oncology (demo)".
    text = render(Kind.CONFIRMATION, Channel.SMS, "en", message_context(c, reminder, link=LINK))
    assert text.text.startswith("Riverside (demo): ")
    assert not DIAGNOSIS_WORDS.search(text.text)
    # A name given by the deployment is made safe too.
    ctx = message_context(c, reminder, link=LINK, clinic_sms_name="SBRT Center of Riverside")
    assert not DIAGNOSIS_WORDS.search(render("confirmation", "sms", "en", ctx).text)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Riverside Radiation Oncology (demo)", "Riverside (demo)"),
        ("Riverside Clinic", "Riverside Clinic"),
        ("Clínica Nuestra Señora", "Clinica Nuestra Señora"),
        ("Oncology Associates of the Greater Riverside Valley", "Associates"),
        ("Radiation Oncology", "Your clinic"),
        ("Centro Oncológico", "Centro"),
    ],
)
def test_sms_clinic_name(name: str, expected: str) -> None:
    result = sms_clinic_name(name)
    assert result == expected
    assert len(result) <= 24 and gsm7_ok(result) and not diagnosis_words(result)
    assert sms_clinic_name("Radioterapia", "es") == "Su centro"


def test_sms_templates_spanish_text_is_gsm7_as_written() -> None:
    # Values are folded into GSM-7, but the fixed Spanish wording must already be GSM-7: a
    # stray "ó" would silently turn every message into UCS-2 (70 characters a segment).
    for path in TEMPLATE_DIR.glob("*/sms.*.txt"):
        fixed_text = re.sub(
            r"{{.*?}}|{%.*?%}|{#.*?#}", "", path.read_text(encoding="utf-8"), flags=re.DOTALL
        )
        outside = {ch for ch in fixed_text if ch not in GSM7_BASIC}
        assert not outside, f"{path}: {sorted(outside)}"


# --- email ------------------------------------------------------------------------------------


def email_variants(c: CourseSnapshot) -> list[PlannedReminder]:
    start = c.fractions[0].starts_at
    now = start - timedelta(days=10)
    fid = c.fractions[0].id
    booking = [r for r in plan_for_booking(c, now=now, event_id=1) if r.channel is Channel.EMAIL]
    plans = [
        plan_change_notice(
            c, fid, before=side(start), after=side(start + timedelta(days=1)), version=2, now=now
        ),
        plan_change_notice(c, fid, before=None, after=side(start), version=3, now=now),
        plan_change_notice(c, fid, before=side(start), after=None, version=4, now=now),
        plan_change_notice(
            c, fid, before=side(start), after=None, version=5, now=now, cancelled=True
        ),
        plan_course_cancellation(c, now=now, event_id=2),
    ]
    return booking + [r for plan in plans for r in plan if r.channel is Channel.EMAIL]


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("ready", [True, False])
def test_every_email_renders_subject_text_and_html(language: str, ready: bool) -> None:
    starts = [ny(2026, 6, 15, 10, 30) + timedelta(days=2 * i) for i in range(5)]
    c = course(language, starts, ready=ready, given_name="Maximiliana-Josefina")
    variants = email_variants(c)
    assert {r.kind for r in variants} == set(Kind)
    for reminder in variants:
        msg = render(
            reminder.kind, Channel.EMAIL, language, message_context(c, reminder, link=LINK)
        )
        where = f"{language} {reminder.dedupe_key}"
        assert msg.subject and "\n" not in msg.subject, where
        assert msg.text and "<" not in msg.text, where
        assert msg.html and msg.html.startswith("<!DOCTYPE html>"), where
        assert f'<html lang="{language}">' in msg.html, where
        assert "Maximiliana-Josefina" in msg.text and LINK in msg.text and LINK in msg.html
        assert "{{" not in msg.text + msg.html, where
        awaiting_kinds = (Kind.CONFIRMATION, Kind.DAY_BEFORE, Kind.SAME_DAY, Kind.CHANGE)
        if not ready and reminder.kind in awaiting_kinds:
            for part in (msg.subject, msg.text, msg.html):
                assert not NOT_FINAL_WORDS.search(part), (where, part)


def test_confirmation_lists_every_fraction_with_preparation() -> None:
    starts = [ny(2026, 6, 15, 10, 30) + timedelta(days=2 * i) for i in range(5)]
    c = course("en", starts)
    reminder = next(
        r
        for r in plan_for_booking(c, now=ny(2026, 6, 1), event_id=1)
        if r.kind is Kind.CONFIRMATION and r.channel is Channel.EMAIL
    )
    msg = render("confirmation", "email", "en", message_context(c, reminder, link=LINK))
    for start in starts:
        assert format_when_long(start, NY, "en") in msg.text
    assert "Monday 15 June 2026 at 10:30 AM" in msg.text
    assert PREP_INSTRUCTIONS["liver"] in msg.text
    assert "are booked" in msg.subject


def test_awaiting_readiness_is_worded_as_provisional() -> None:
    c = course("en", [ny(2026, 6, 15, 10, 30), ny(2026, 6, 17, 10, 30)], ready=False)
    plan = plan_for_booking(c, now=ny(2026, 6, 1), event_id=1)
    by_key = {(r.kind, r.fraction_id, r.channel): r for r in plan}
    first_prep = by_key[(Kind.DAY_BEFORE, 101, Channel.EMAIL)]
    second_prep = by_key[(Kind.DAY_BEFORE, 102, Channel.EMAIL)]
    assert (
        "provisional"
        in render("day_before", "email", "en", message_context(c, first_prep, link=LINK)).text
    )
    assert (
        "provisional"
        not in render("day_before", "email", "en", message_context(c, second_prep, link=LINK)).text
    )
    # Readiness recorded after planning: the wording follows the course as it is now.
    ready_now = replace(c, ready_to_treat=True)
    assert first_prep.context["awaiting_readiness"] is True
    text = render(
        "day_before", "email", "en", message_context(ready_now, first_prep, link=LINK)
    ).text
    assert "provisional" not in text


def test_change_notice_shows_before_and_after_in_the_patients_zone() -> None:
    # The department is in New York; the patient lives in Los Angeles.
    before, after = ny(2026, 6, 16, 10, 0), ny(2026, 6, 18, 14, 30)
    for language, old, new in (
        ("en", "Tue 16 Jun, 7:00 AM", "Thu 18 Jun, 11:30 AM"),
        ("es", "mar 16 jun, 7:00", "jue 18 jun, 11:30"),
    ):
        c = course(language, [after], tz=LA)
        plan = plan_change_notice(
            c, 101, before=side(before), after=side(after), version=2, now=ny(2026, 6, 1)
        )
        for reminder in plan:
            ctx = message_context(c, reminder, link=LINK)
            msg = render("change", reminder.channel, language, ctx)
            if reminder.channel is Channel.SMS:
                assert msg.text.index(old) < msg.text.index(new)
                continue
            assert f"{old} → {new}" in msg.subject
            old_long = format_when_long(before, LA, language)
            new_long = format_when_long(after, LA, language)
            for part in (msg.text, msg.html):
                assert part.index(old_long) < part.index(new_long)


def test_cancelled_fraction_uses_the_remembered_time() -> None:
    start = ny(2026, 6, 16, 10)
    c = course("en", [start])
    plan = plan_change_notice(
        c, 101, before=side(start), after=None, version=5, now=ny(2026, 6, 1), cancelled=True
    )
    gone = replace(c, fractions=())  # the snapshot at send time no longer holds it
    msg = render("cancellation", "sms", "en", message_context(gone, plan[0], link=LINK))
    assert "Tue 16 Jun, 10:00 AM is cancelled" in msg.text


def test_html_escapes_a_malicious_name() -> None:
    evil = '<script>alert("x")</script>'
    c = course("en", [ny(2026, 6, 16, 10)], given_name=evil, clinic_name="A&B <b>Clinic</b>")
    for reminder in email_variants(c):
        msg = render(reminder.kind, "email", "en", message_context(c, reminder, link=LINK))
        assert "<script>" not in msg.html and "<b>Clinic" not in msg.html
        assert "&lt;script&gt;" in msg.html
        assert "A&amp;B" in msg.html
        assert evil in msg.text  # plain text is not HTML: shown as typed


# --- languages and preparation ----------------------------------------------------------------


@pytest.mark.parametrize("site", sorted(PREP_INSTRUCTIONS))
def test_spanish_preparation_instructions_ship_for_every_site(site: str) -> None:
    spanish = prep_instructions_for(PREP_INSTRUCTIONS[site], "es")
    assert spanish and spanish != PREP_INSTRUCTIONS[site]
    assert "Llegue" in spanish  # every site: arrive early
    assert prep_instructions_for(PREP_INSTRUCTIONS[site], "en") == PREP_INSTRUCTIONS[site]


def test_spanish_preparation_content() -> None:
    assert "2 horas" in prep_instructions_for("", "es", site="liver")
    assert "2 horas" in prep_instructions_for("", "es", site="abdomen")
    assert "350 a 500 ml" in prep_instructions_for("", "es", site="prostate")
    assert "respiración" in prep_instructions_for("", "es", site="lung")
    # An edited protocol text has no shipped translation: shown as the clinic wrote it.
    assert prep_instructions_for("Bring your glasses.", "es") == "Bring your glasses."


def test_unknown_language_falls_back_to_english() -> None:
    c = course("fr-CA", [ny(2026, 6, 16, 10)])
    reminder = plan_for_booking(c, now=ny(2026, 6, 1), event_id=1)[0]
    ctx = message_context(c, reminder, link=LINK)
    assert ctx["language"] == "en"
    assert render("confirmation", "sms", "fr", ctx).text.startswith("Riverside (demo): 1 visit")
    assert (
        message_context(replace(c, patient=patient("es-MX")), reminder, link=LINK)["language"]
        == "es"
    )


def test_templates_fail_loudly_on_a_missing_key() -> None:
    with pytest.raises(UndefinedError):
        render("same_day", "sms", "en", {"clinic_sms_name": "X", "awaiting_readiness": False})


def test_admin_template_preview_is_sandboxed_and_escaped() -> None:
    with pytest.raises(SecurityError):
        render_source("{{ name.__class__.__mro__ }}", {"name": "x"})
    assert render_source("<p>{{ name }}</p>", {"name": "<i>"}, html=True) == "<p>&lt;i&gt;</p>"
    assert render_source("{{ name }}", {"name": "<i>"}) == "<i>"


# --- dates ------------------------------------------------------------------------------------


def test_dates_in_each_language() -> None:
    morning = ny(2026, 3, 3, 9, 0)
    assert format_when(morning, NY, "en") == "Tue 3 Mar, 9:00 AM"
    assert format_when(morning, NY, "es") == "mar 3 mar, 9:00"
    assert format_when(ny(2026, 3, 3, 12, 5), NY, "en") == "Tue 3 Mar, 12:05 PM"
    assert format_when(ny(2026, 3, 3, 0, 30), NY, "en") == "Tue 3 Mar, 12:30 AM"
    assert format_when(ny(2026, 3, 7, 14, 0), NY, "es") == "sáb 7 mar, 14:00"
    assert (
        format_when_long(ny(2026, 3, 7, 13, 0), NY, "es") == "sábado 7 de marzo de 2026 a las 13:00"
    )
    assert format_when_long(ny(2026, 3, 7, 1, 0), NY, "es") == "sábado 7 de marzo de 2026 a la 1:00"
    assert format_when_long(morning, NY, "en") == "Tuesday 3 March 2026 at 9:00 AM"
    # The same instant in another zone, across the DST change (NY on EDT, LA too).
    assert format_when(datetime(2026, 3, 9, 13, 0, tzinfo=UTC), LA, "en") == "Mon 9 Mar, 6:00 AM"


# --- GSM-7 ------------------------------------------------------------------------------------


def test_gsm7_alphabet() -> None:
    assert gsm7_ok("Responda C para confirmar: mañana, ¿qué? ¡Ñandü! é è ü à ò ù ì É Ü Ç")
    for ch in "áíóúâêç":
        assert not gsm7_ok(ch), ch
    assert gsm7_ok("{[~]}|^\\€")  # extension table
    assert not gsm7_ok("→") and not gsm7_ok("😀")


def test_gsm7_fold() -> None:
    assert gsm7_fold("María Ramón Jesús sáb") == "Maria Ramon Jesus sab"
    assert gsm7_fold("Zoë Noël") == "Zoe Noel"
    assert gsm7_fold("José Muñoz Núñez") == "José Muñoz Nuñez"
    assert gsm7_fold("李 😀") == " "


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 0),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # two septets each
        ("a" * 159 + "€", 2),
        ("a" * 152 + "€" + "a" * 153, 3),  # the escape pair is not split across segments
        ("á" * 70, 1),
        ("á" * 71, 2),
        ("á" * 134, 2),
        ("á" * 135, 3),
        ("😀" * 35, 1),  # surrogate pairs: two UTF-16 units each
        ("a" * 66 + "😀" + "a" * 66, 3),
    ],
)
def test_sms_segments(text: str, segments: int) -> None:
    assert sms_segments(text) == segments


def test_a_patient_link_token_that_spells_a_diagnosis_word_does_not_stop_the_sms() -> None:
    c = course("en", [ny(2026, 6, 16, 10)])
    reminder = plan_for_booking(c, now=ny(2026, 6, 1), event_id=1)[0]
    # Tokens are 16 random letters and digits: about one in 400,000 begins "sbrt" or "sabr".
    unlucky = "https://clinic.example.org/p/SbrtK2mWv9PxL4cQ"
    message = render(
        Kind.CONFIRMATION, Channel.SMS, "en", message_context(c, reminder, link=unlucky)
    )
    assert template_store.sending_problems(Channel.SMS, message) == []
    # The same word in the text itself still stops it.
    named = replace(message, text=message.text.replace("See ", "Your SBRT: see "))
    assert any("diagnosis" in p for p in template_store.sending_problems(Channel.SMS, named))
