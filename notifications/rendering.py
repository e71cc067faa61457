"""Patient message templates: context building, rendering, and SMS encoding checks.

Templates live in ``notifications/templates/<kind>/`` as ``sms.<lang>.txt``,
``email_subject.<lang>.txt``, ``email_body.<lang>.txt`` and ``email_body.<lang>.html``. They
are rendered in a sandbox (admins will edit them) with StrictUndefined, so a template that asks
for a key the context lacks fails loudly in tests instead of sending a message with a hole.

Times are formatted in the patient's zone and language with small built-in name tables (no
locale data dependency): English "Tue 3 Mar, 9:00 AM", Spanish "mar 3 mar, 9:00".
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from jinja2 import (
    ChoiceLoader,
    DictLoader,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment

from notifications.policy import ACTIVE_STATUSES, awaiting_readiness
from notifications.sandbox import BoundedSandboxedEnvironment, compile_bounded, render_bounded
from notifications.types import Channel, CourseSnapshot, FractionSnapshot, Kind
from notifications.zone_names import zone_name
from scheduler.protocols import PREP_INSTRUCTIONS
from scheduler.timeutil import to_local

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
PREP_DIR = TEMPLATE_DIR / "_prep_instructions"
LANGUAGES = ("en", "es")
DEFAULT_LANGUAGE = "en"
# Longest clinic display name an SMS template budgets for (see the template tests).
SMS_CLINIC_NAME_MAX = 24


@dataclass(frozen=True)
class RenderedMessage:
    subject: str | None  # email only
    text: str  # the SMS body, or the email's plain-text part
    html: str | None  # email only


class ReminderLike(Protocol):
    """What message_context reads from a reminder: a PlannedReminder or an outbox row."""

    kind: Any
    channel: Any
    fraction_id: int | None
    context: Mapping[str, Any] | None


# --- SMS encoding -----------------------------------------------------------------------------

# GSM 03.38 default alphabet (one septet each) and its extension table (escape + char: two).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")


def gsm7_ok(text: str) -> bool:
    """Whether ``text`` can be sent in the GSM-7 alphabet (basic or extension table)."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _pack(costs: list[int], single: int, multi: int) -> int:
    """Segments needed for units of the given sizes; a unit is never split across segments."""
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            segments, used = segments + 1, 0
        used += cost
    return segments


def sms_segments(text: str) -> int:
    """How many SMS segments ``text`` takes (0 for an empty text).

    GSM-7: 160 septets in one segment, 153 per segment when concatenated; extension characters
    take two septets and are not split. Anything else goes as UCS-2: 70 UTF-16 units, 67 per
    segment when concatenated, and a surrogate pair (e.g. an emoji) is not split.
    """
    if gsm7_ok(text):
        return _pack([2 if ch in GSM7_EXTENSION else 1 for ch in text], 160, 153)
    return _pack([2 if ord(ch) > 0xFFFF else 1 for ch in text], 70, 67)


def gsm7_fold(text: str) -> str:
    """``text`` with characters outside GSM-7 replaced by their unaccented letter, or dropped.

    For values that go into SMS (names, a Spanish "sáb"): "María" -> "Maria". Characters with
    no GSM-7 base letter are dropped, so the result is always GSM-7.
    """
    out = []
    for ch in text:
        if ch in GSM7_BASIC or ch in GSM7_EXTENSION:
            out.append(ch)
            continue
        base = unicodedata.normalize("NFKD", ch)
        out.extend(c for c in base if c in GSM7_BASIC)
    return "".join(out)


# Words that reveal a diagnosis or the treatment; SMS must not carry them (lock screens, shared
# phones). Matched as word starts after accent folding, so "Oncológico" and "metastatic" count.
DIAGNOSIS_STEMS = (
    "cancer",
    "carcinom",
    "tumor",
    "tumour",
    "radiation",
    "radiacion",
    "radiother",
    "radioterap",
    "radiosurg",
    "radiocirug",
    "sbrt",
    "sabr",
    "metasta",
    "oncolog",
    "oncologic",
    "chemo",
    "quimio",
    "stereotac",
    "estereotac",
)
_DIAGNOSIS_RE = re.compile(r"\b(" + "|".join(DIAGNOSIS_STEMS) + r")\w*", re.IGNORECASE)


def _ascii_fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def diagnosis_words(text: str) -> list[str]:
    """The diagnosis or treatment words in ``text`` (accent-insensitive), in order."""
    return [m.group(0) for m in _DIAGNOSIS_RE.finditer(_ascii_fold(text))]


_CONNECTORS = frozenset({"of", "the", "and", "for", "at", "de", "del", "la", "el", "y", "en"})
_SMS_CLINIC_FALLBACK = {"en": "Your clinic", "es": "Su centro"}


def sms_clinic_name(name: str, language: str = DEFAULT_LANGUAGE) -> str:
    """A clinic display name fit for SMS: GSM-7, no diagnosis words, at most 24 characters.

    "Riverside Radiation Oncology (demo)" -> "Riverside (demo)". Words are removed rather than
    the name replaced, so the patient still recognises the sender; too long a rest is cut at a
    word boundary, and nothing left means a generic "Your clinic".
    """
    words = [w for w in gsm7_fold(name).split() if not diagnosis_words(w)]
    kept = " ".join(words)
    kept = re.sub(r"\(\s*\)", "", kept)  # "(Radiation)" leaves empty brackets
    kept = re.sub(r"\s+", " ", kept).strip(" -,&/")
    while len(kept) > SMS_CLINIC_NAME_MAX and " " in kept:
        kept = kept.rsplit(" ", 1)[0].rstrip(" -,&/")
    # Cutting words can leave a dangling "of the" / "de la"; a name does not end in those.
    while " " in kept and kept.rsplit(" ", 1)[1].lower() in _CONNECTORS:
        kept = kept.rsplit(" ", 1)[0].rstrip(" -,&/")
    if not kept or len(kept) > SMS_CLINIC_NAME_MAX:
        return _SMS_CLINIC_FALLBACK.get(_language(language), _SMS_CLINIC_FALLBACK["en"])
    return kept


# --- dates and times in the patient's language ------------------------------------------------

_DAYS = {
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    "es": ("lun", "mar", "mié", "jue", "vie", "sáb", "dom"),
}
_DAYS_LONG = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "es": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
}
_MONTHS = {
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "es": ("ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"),
}
_MONTHS_LONG = {
    "en": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    "es": (
        "enero",
        "febrero",
        "marzo",
        "abril",
        "mayo",
        "junio",
        "julio",
        "agosto",
        "septiembre",
        "octubre",
        "noviembre",
        "diciembre",
    ),
}


def _language(language: str | None) -> str:
    """ "es-MX" -> "es"; anything without shipped templates -> English."""
    code = (language or "").replace("_", "-").split("-")[0].lower()
    return code if code in LANGUAGES else DEFAULT_LANGUAGE


def format_time(local: datetime, language: str) -> str:
    """Clock time as the language writes it: "9:00 AM" (en), "9:00" (es, 24-hour)."""
    if _language(language) == "es":
        return f"{local.hour}:{local.minute:02d}"
    hour = local.hour % 12 or 12
    return f"{hour}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"


def format_when(instant: datetime, tz: str, language: str) -> str:
    """Short date and time in ``tz``: "Tue 3 Mar, 9:00 AM" / "mar 3 mar, 9:00"."""
    lang = _language(language)
    local = to_local(instant, tz)
    day = _DAYS[lang][local.weekday()]
    month = _MONTHS[lang][local.month - 1]
    return f"{day} {local.day} {month}, {format_time(local, lang)}"


def format_date_long(instant: datetime, tz: str, language: str) -> str:
    """ "Tuesday 3 March 2026" / "martes 3 de marzo de 2026"."""
    lang = _language(language)
    local = to_local(instant, tz)
    day = _DAYS_LONG[lang][local.weekday()]
    month = _MONTHS_LONG[lang][local.month - 1]
    if lang == "es":
        return f"{day} {local.day} de {month} de {local.year}"
    return f"{day} {local.day} {month} {local.year}"


def format_when_long(instant: datetime, tz: str, language: str) -> str:
    """ "Tuesday 3 March 2026 at 9:00 AM" / "martes 3 de marzo de 2026 a las 9:00"."""
    lang = _language(language)
    local = to_local(instant, tz)
    date_part = format_date_long(instant, tz, lang)
    if lang == "es":
        # Spanish says "a la 1:00" (one o'clock is singular); 24-hour 13:00 is plural again.
        article = "a la" if local.hour == 1 else "a las"
        return f"{date_part} {article} {format_time(local, lang)}"
    return f"{date_part} at {format_time(local, lang)}"


# --- preparation instructions ----------------------------------------------------------------

# A protocol's site key -> the file holding its instructions in another language. English is
# the protocol's own (admin-editable) text; the other languages ship here per site.
_SITE_ALIASES = {"abdomen": "liver", "oligometastases": "oligomets"}


def _site_for(instructions: str) -> str | None:
    """The site whose shipped English instructions are exactly ``instructions``."""
    wanted = " ".join(instructions.split())
    for site, text in PREP_INSTRUCTIONS.items():
        if " ".join(text.split()) == wanted:
            return site
    return None


def prep_instructions_for(english_text: str, language: str, *, site: str | None = None) -> str:
    """Preparation instructions in the patient's language.

    English is the protocol's text as written. Another language uses the shipped translation
    for the protocol's site (given, or recognised from the unedited default English text); an
    edited text with no translation is shown as written rather than replaced by a stale one.
    """
    lang = _language(language)
    if lang == DEFAULT_LANGUAGE:
        return english_text
    key = _SITE_ALIASES.get(site or "", site) or _site_for(english_text)
    if key is None:
        return english_text
    path = PREP_DIR / f"{key}.{lang}.txt"
    if not path.is_file():
        return english_text
    return " ".join(path.read_text(encoding="utf-8").split())


# --- context ----------------------------------------------------------------------------------


def _describe(
    facts: Mapping[str, Any], *, tz: str, language: str, awaiting: bool = False
) -> dict[str, Any]:
    """A fraction (current or as remembered in a notice) as the templates show it."""
    starts_at = facts["starts_at"]
    if isinstance(starts_at, str):
        starts_at = datetime.fromisoformat(starts_at)
    when = format_when(starts_at, tz, language)
    return {
        "number": facts.get("number") or facts.get("fraction_number"),
        "starts_at": starts_at.isoformat(),
        "when": when,
        "sms_when": gsm7_fold(when),
        "when_long": format_when_long(starts_at, tz, language),
        "date_long": format_date_long(starts_at, tz, language),
        "time": format_time(to_local(starts_at, tz), language),
        "linac_name": facts.get("linac_name") or "",
        "awaiting_readiness": awaiting,
    }


def _fraction_facts(fraction: FractionSnapshot) -> dict[str, Any]:
    return {
        "number": fraction.number,
        "starts_at": fraction.starts_at,
        "linac_name": fraction.linac_name,
    }


def message_context(
    course: CourseSnapshot,
    reminder: ReminderLike,
    *,
    link: str,
    clinic_sms_name: str | None = None,
    site: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything the templates read, in the patient's zone and language.

    ``course`` should be the CURRENT snapshot (at send time): readiness and the fraction list
    are taken from it, not from what the reminder remembered when it was planned.
    ``clinic_sms_name`` is made SMS-safe (see :func:`sms_clinic_name`); when None, it is
    derived from ``course.clinic_name``. ``now`` (aware) limits the schedule list to fractions
    that have not started; None lists every active fraction in the snapshot.
    """
    patient = course.patient
    lang = _language(patient.language)
    tz = patient.timezone
    kind = Kind(str(reminder.kind))
    channel = Channel(str(reminder.channel))
    stored: Mapping[str, Any] = reminder.context or {}

    active = sorted(
        (
            f
            for f in course.fractions
            if f.status in ACTIVE_STATUSES and (now is None or f.starts_at > now)
        ),
        key=lambda f: f.starts_at,
    )
    fractions = [
        _describe(
            _fraction_facts(f),
            tz=tz,
            language=lang,
            awaiting=awaiting_readiness(course, f),
        )
        for f in active
    ]

    fraction = None
    if reminder.fraction_id is not None:
        current = next((f for f in course.fractions if f.id == reminder.fraction_id), None)
        if current is not None:
            fraction = _describe(
                _fraction_facts(current),
                tz=tz,
                language=lang,
                awaiting=awaiting_readiness(course, current),
            )
        elif "starts_at" in stored:
            fraction = _describe(stored, tz=tz, language=lang)

    def side(key: str) -> dict[str, Any] | None:
        value = stored.get(key)
        return _describe(value, tz=tz, language=lang) if value else None

    before, after = side("before"), side("after")
    if kind is Kind.CANCELLATION:
        remembered = stored.get("cancelled")
        if remembered:
            cancelled = [_describe(c, tz=tz, language=lang) for c in remembered]
        else:
            cancelled = [before] if before else ([fraction] if fraction else [])
    else:
        cancelled = []

    # Readiness is read from the current course, not the planned context: plan approval may
    # have been recorded after the reminder was planned, and then the wording must say so.
    if kind is Kind.CONFIRMATION:
        awaiting = not course.ready_to_treat
    elif kind is Kind.CANCELLATION:
        awaiting = False
    else:
        awaiting = bool(fraction and fraction["awaiting_readiness"])

    return {
        "kind": str(kind),
        "channel": str(channel),
        "language": lang,
        "given_name": patient.given_name,
        "clinic_name": course.clinic_name,
        "clinic_sms_name": sms_clinic_name(clinic_sms_name or course.clinic_name, lang),
        "clinic_phone": course.clinic_phone,
        "link": link,
        "timezone": tz,
        # What patients read: "Central European Time", not "Europe/Berlin".
        "timezone_name": zone_name(tz, lang),
        "awaiting_readiness": awaiting,
        "fraction_count": course.fraction_count,
        "fractions": fractions,
        "first": fractions[0] if fractions else None,
        "fraction": fraction,
        "before": before,
        "after": after,
        "cancelled": cancelled,
        "prep_instructions": prep_instructions_for(course.prep_instructions, lang, site=site),
    }


# --- rendering --------------------------------------------------------------------------------


def make_environment(template_dir: Path | str = TEMPLATE_DIR) -> SandboxedEnvironment:
    """A sandboxed Jinja environment over ``template_dir``; autoescape for .html only.

    Bounded (see :mod:`notifications.sandbox`): an edited template cannot hold a worker.
    """
    return BoundedSandboxedEnvironment(
        loader=FileSystemLoader(str(template_dir)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


@functools.cache
def _default_environment() -> SandboxedEnvironment:
    # Built on first use, not at import: nothing happens at import time.
    return make_environment()


@functools.lru_cache(maxsize=16)
def _overlay(
    base: SandboxedEnvironment, overrides: frozenset[tuple[str, str]]
) -> SandboxedEnvironment:
    """``base`` with admin-edited sources in front of its loader (shipped files fill the rest).

    Cached by content: a sender renders many messages with the same overrides, and an edit
    changes the key, so a stale compiled template is never used.
    """
    assert base.loader is not None
    loader = ChoiceLoader([DictLoader(dict(overrides)), base.loader])
    return base.overlay(loader=loader)  # type: ignore[return-value]


def _template(env: SandboxedEnvironment, kind: str, name: str, language: str, ext: str):
    try:
        return env.get_template(f"{kind}/{name}.{language}.{ext}")
    except TemplateNotFound:
        if language == DEFAULT_LANGUAGE:
            raise
        return env.get_template(f"{kind}/{name}.{DEFAULT_LANGUAGE}.{ext}")


def _tidy_text(text: str) -> str:
    """Trim trailing spaces and collapse runs of blank lines left by template blocks."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def render(
    kind: Kind | str,
    channel: Channel | str,
    language: str,
    context: Mapping[str, Any],
    *,
    environment: SandboxedEnvironment | None = None,
    overrides: Mapping[str, str] | None = None,
) -> RenderedMessage:
    """Render one message; a language without its own template falls back to English.

    ``overrides`` maps template names such as ``"confirmation/sms.en.txt"`` to admin-edited
    sources (see ``notifications.template_store.load_overrides``); names it lacks come from
    the shipped files.
    """
    env = environment or _default_environment()
    if overrides:
        env = _overlay(env, frozenset(overrides.items()))
    kind_name = str(Kind(str(kind)))
    lang = _language(language)
    if Channel(str(channel)) is Channel.SMS:
        body = render_bounded(_template(env, kind_name, "sms", lang, "txt"), context)
        # One line: the template's line breaks are layout, not content.
        return RenderedMessage(subject=None, text=" ".join(body.split()), html=None)
    subject = render_bounded(_template(env, kind_name, "email_subject", lang, "txt"), context)
    text = render_bounded(_template(env, kind_name, "email_body", lang, "txt"), context)
    html = render_bounded(_template(env, kind_name, "email_body", lang, "html"), context)
    return RenderedMessage(
        subject=" ".join(subject.split()), text=_tidy_text(text), html=html.strip()
    )


def render_source(source: str, context: Mapping[str, Any], *, html: bool = False) -> str:
    """Render an admin-supplied template text in the same sandbox (for a preview)."""
    env = _default_environment()
    if html:
        # A string template has no file extension to select autoescaping; an HTML preview must
        # escape, so it gets its own environment (same loader, for includes and layouts).
        env = make_environment()
        env.autoescape = True
    return render_bounded(compile_bounded(env, source), context)
