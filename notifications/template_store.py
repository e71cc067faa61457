"""Admin-edited message templates: stored overrides of the shipped files, and their checks.

A shipped file ``notifications/templates/<kind>/<file>.<lang>.<ext>`` can be replaced by a
MessageTemplate row (kind, part, language). :func:`load_overrides` returns the rows keyed by
the template name ``rendering.render(..., overrides=...)`` expects; deleting a row restores the
shipped file.

Before an edit is stored it is rendered on a sample course (see :func:`sample_contexts`) in
every variant the template can take. An SMS edit is refused when any variant would need more
than one GSM-7 segment, leaves the GSM-7 alphabet or names a diagnosis or treatment, because
those are the promises the shipped SMS templates keep (see the templates README).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from jinja2 import TemplateError
from sqlalchemy.orm import Session

from notifications import rendering
from notifications.models import MessageTemplate
from notifications.policy import fraction_facts
from notifications.sandbox import safe_error_text
from notifications.types import Channel, CourseSnapshot, FractionSnapshot, Kind, PatientSnapshot
from scheduler.links import mask_patient_links
from scheduler.protocols import PREP_INSTRUCTIONS
from scheduler.timeutil import local_to_utc

# part -> (file stem, extension): the editable files of each message kind.
PARTS: dict[str, tuple[str, str]] = {
    "sms": ("sms", "txt"),
    "email_subject": ("email_subject", "txt"),
    "email_body": ("email_body", "txt"),
    "email_body_html": ("email_body", "html"),
}
PART_LABELS = {
    "sms": "SMS",
    "email_subject": "Email subject",
    "email_body": "Email text",
    "email_body_html": "Email HTML",
}
KINDS: tuple[str, ...] = tuple(k.value for k in Kind)
LANGUAGES: tuple[str, ...] = rendering.LANGUAGES
SMS_MAX_CHARACTERS = 160
# A real SMS may come out longer than the sample (a long link, a name that needs UCS-2); the
# provider splits it, but beyond this many parts it is refused rather than sent.
SMS_MAX_SEGMENTS_SENT = 3
MAX_SOURCE_LENGTH = 20_000


def template_name(kind: str, part: str, language: str) -> str:
    """The loader name of one template: ``"confirmation/sms.en.txt"``."""
    stem, ext = PARTS[part]
    return f"{kind}/{stem}.{language}.{ext}"


def is_known(kind: str, part: str, language: str) -> bool:
    return kind in KINDS and part in PARTS and language in LANGUAGES


def shipped_source(kind: str, part: str, language: str) -> str:
    """The shipped file's text ('' when the language has none and English applies)."""
    path = rendering.TEMPLATE_DIR / template_name(kind, part, language)
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def load_overrides(session: Session) -> dict[str, str]:
    """Every stored edit, keyed by template name, for ``rendering.render(overrides=...)``."""
    rows = session.execute(
        sa.select(
            MessageTemplate.kind,
            MessageTemplate.part,
            MessageTemplate.language,
            MessageTemplate.source,
        )
    ).all()
    return {
        template_name(kind, part, language): source
        for kind, part, language, source in rows
        # A row for a part or kind this version no longer ships is ignored, not fatal.
        if is_known(kind, part, language)
    }


def get_override(session: Session, kind: str, part: str, language: str) -> MessageTemplate | None:
    return session.scalar(
        sa.select(MessageTemplate).where(
            MessageTemplate.kind == kind,
            MessageTemplate.part == part,
            MessageTemplate.language == language,
        )
    )


def list_overrides(session: Session) -> dict[tuple[str, str, str], MessageTemplate]:
    rows = session.scalars(sa.select(MessageTemplate))
    return {(r.kind, r.part, r.language): r for r in rows}


def current_source(session: Session, kind: str, part: str, language: str) -> str:
    """What applies now: the stored edit, else the shipped file."""
    row = get_override(session, kind, part, language)
    return row.source if row is not None else shipped_source(kind, part, language)


def normalise_source(source: str) -> str:
    """Browsers post textarea text with CRLF line ends; the shipped files use LF."""
    return source.replace("\r\n", "\n").replace("\r", "\n")


# --- sample course and checks ----------------------------------------------------------------

SAMPLE_TZ = "America/New_York"
# The budget the shipped SMS templates are tested against: a 24-character clinic name and a
# 40-character link, so a preview that fits here fits for a real clinic too.
SAMPLE_CLINIC = "St. Bartholomew's Clinic"
SAMPLE_LINK = "https://rvs.example.org/p/Ab3dE5gH7jK9mN"
SAMPLE_PHONE = "+1 212 555 0100"
# Two-digit days and hours: the longest date forms.
_SAMPLE_DAYS = ((2026, 10, 12), (2026, 10, 14), (2026, 10, 16), (2026, 10, 19), (2026, 10, 21))


@dataclass(frozen=True)
class _SampleReminder:
    kind: str
    channel: str
    fraction_id: int | None
    context: Mapping[str, Any] | None


def _sample_course(language: str, *, ready: bool) -> CourseSnapshot:
    fractions = []
    for number, (y, m, d) in enumerate(_SAMPLE_DAYS, start=1):
        starts = local_to_utc(datetime(y, m, d, 10, 45), SAMPLE_TZ)
        fractions.append(
            FractionSnapshot(
                id=number,
                number=number,
                version=1,
                status="booked",
                starts_at=starts,
                ends_at=starts + timedelta(hours=1),
                linac_name="TrueBeam 1",
            )
        )
    return CourseSnapshot(
        id=1,
        patient=PatientSnapshot(
            id=1,
            given_name="Alejandra",
            language=language,
            timezone=SAMPLE_TZ,
            phone_e164="+12125550100",
            email="patient@example.org",
            sms_allowed=True,
            email_allowed=True,
        ),
        fractions=tuple(fractions),
        fraction_count=len(fractions),
        ready_to_treat=ready,
        clinic_name=SAMPLE_CLINIC,
        clinic_phone=SAMPLE_PHONE,
        department_timezone=SAMPLE_TZ,
        prep_instructions=PREP_INSTRUCTIONS["liver"],
    )


def _variants(kind: str, course: CourseSnapshot) -> list[tuple[str, int | None, dict[str, Any]]]:
    """(label, fraction id, stored context) for every branch a template of ``kind`` has."""
    second = course.fractions[1]
    # Moved to the next afternoon: "Thu 15 Oct, 12:15 PM" is the longest English form.
    moved_start = local_to_utc(datetime(2026, 10, 15, 12, 15), SAMPLE_TZ)
    moved = FractionSnapshot(
        id=second.id,
        number=second.number,
        version=2,
        status="booked",
        starts_at=moved_start,
        ends_at=moved_start + timedelta(hours=1),
        linac_name="TrueBeam 2",
    )
    if kind == Kind.CHANGE:
        before, after = fraction_facts(second), fraction_facts(moved)
        return [
            ("moved", second.id, {"before": before, "after": after, "fraction_number": 2}),
            ("added", second.id, {"before": None, "after": after, "fraction_number": 2}),
            ("must move", second.id, {"before": before, "after": None, "fraction_number": 2}),
        ]
    if kind == Kind.CANCELLATION:
        return [
            ("all cancelled", None, {"cancelled": [fraction_facts(f) for f in course.fractions]}),
            ("one cancelled", second.id, {"cancelled": [fraction_facts(second)]}),
        ]
    if kind in (Kind.DAY_BEFORE, Kind.SAME_DAY):
        return [("first session", course.fractions[0].id, {})]
    return [("booked", None, {})]


def sample_contexts(kind: str, part: str, language: str) -> list[tuple[str, dict[str, Any]]]:
    """Template contexts for a realistic fake 5-fraction liver course, one per variant.

    The first is the ordinary case (course ready to treat); the rest cover every branch,
    including a first session still awaiting plan approval.
    """
    channel = Channel.SMS if part == "sms" else Channel.EMAIL
    out = []
    for ready in (True, False):
        course = _sample_course(language, ready=ready)
        for label, fraction_id, stored in _variants(kind, course):
            reminder = _SampleReminder(kind, channel.value, fraction_id, stored)
            context = rendering.message_context(
                course, reminder, link=SAMPLE_LINK, clinic_sms_name=SAMPLE_CLINIC, site="liver"
            )
            out.append((label if ready else f"{label}, awaiting plan approval", context))
    return out


@dataclass
class Rendered:
    label: str
    text: str
    characters: int = 0
    segments: int = 0
    gsm7: bool = True
    diagnosis_words: list[str] = field(default_factory=list)


@dataclass
class TemplateCheck:
    """A source rendered on the sample course, and why it may not be saved."""

    kind: str
    part: str
    language: str
    source: str
    renders: list[Rendered] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def is_sms(self) -> bool:
        return self.part == "sms"

    @property
    def diagnosis_found(self) -> list[str]:
        """Diagnosis words in any render or in the source itself (lowercased, unique)."""
        words = {w.lower() for r in self.renders for w in r.diagnosis_words}
        words |= {w.lower() for w in rendering.diagnosis_words(self.source)}
        return sorted(words)

    @property
    def worst(self) -> Rendered | None:
        """The longest SMS render (what the length indicator shows)."""
        return max(self.renders, key=lambda r: (r.segments, r.characters), default=None)


def check_source(kind: str, part: str, language: str, source: str) -> TemplateCheck:
    """Render ``source`` on every sample variant; SMS must fit the rules the shipped ones keep."""
    source = normalise_source(source)
    result = TemplateCheck(kind, part, language, source)
    if not source.strip():
        result.problems.append("The template is empty.")
        return result
    if len(source) > MAX_SOURCE_LENGTH:
        result.problems.append(f"The template is longer than {MAX_SOURCE_LENGTH} characters.")
        return result
    html = PARTS[part][1] == "html"
    for label, context in sample_contexts(kind, part, language):
        try:
            text = rendering.render_source(source, context, html=html)
        except TemplateError as exc:
            # Jinja's messages name the template problem (unknown variable, bad tag, sandbox
            # refusal, a render limit); the sample context holds no real patient data. Object
            # addresses and server paths are taken out of them.
            result.problems.append(f"The template does not render: {safe_error_text(exc)}")
            result.renders = []
            return result
        # rendering.render sends these as one line: template line breaks are layout.
        one_line = part in ("sms", "email_subject")
        text = " ".join(text.split()) if one_line else text.strip()
        rendered = Rendered(label, text)
        if part == "sms":
            rendered.characters = len(text)
            rendered.segments = rendering.sms_segments(text)
            rendered.gsm7 = rendering.gsm7_ok(text)
            rendered.diagnosis_words = rendering.diagnosis_words(text)
        result.renders.append(rendered)
    if part == "sms":
        _sms_problems(result)
    return result


def _sms_problems(result: TemplateCheck) -> None:
    for r in result.renders:
        if r.characters > SMS_MAX_CHARACTERS or r.segments > 1:
            result.problems.append(
                f"The SMS ({r.label}) is {r.characters} characters: it must fit one "
                f"{SMS_MAX_CHARACTERS}-character GSM-7 segment."
            )
        if not r.gsm7:
            odd = sorted({ch for ch in r.text if not rendering.gsm7_ok(ch)})
            result.problems.append(
                f"The SMS ({r.label}) uses characters outside GSM-7: {' '.join(odd)}"
            )
    # Words in a branch no sample reaches still count, so the source is searched as well.
    found = result.diagnosis_found
    if found:
        result.problems.append(
            "The SMS names a diagnosis or treatment (" + ", ".join(found) + "); SMS are read on "
            "lock screens and shared phones."
        )


# --- the last check before a real message goes out ---------------------------------------------


def sending_problems(channel: Channel | str, message: rendering.RenderedMessage) -> list[str]:
    """Why a rendered real message must not be sent (empty when it may be).

    The save-time checks render an edit on a sample course only, and a template can branch on
    the patient's data (a name, a date) into text no sample reached, so every real SMS is
    checked again: no diagnosis or treatment words, and a length the provider sends in at most
    SMS_MAX_SEGMENTS_SENT parts (GSM-7, or UCS-2's shorter segments when it needs other
    characters).
    """
    problems = []
    if Channel(str(channel)) is Channel.SMS:
        text = message.text
        if not text.strip():
            return ["the SMS is empty"]
        segments = rendering.sms_segments(text)
        if segments > SMS_MAX_SEGMENTS_SENT:
            alphabet = "GSM-7" if rendering.gsm7_ok(text) else "UCS-2"
            problems.append(
                f"the SMS is {len(text)} characters ({alphabet}), {segments} segments; "
                f"at most {SMS_MAX_SEGMENTS_SENT} are sent"
            )
        # The patient link's token is random letters: one that happens to begin "sbrt" or
        # "tumor" names nothing, and must not stop the message.
        words = sorted({w.lower() for w in rendering.diagnosis_words(mask_patient_links(text))})
        if words:
            problems.append(f"the SMS names a diagnosis or treatment ({', '.join(words)})")
    else:
        if not (message.subject or "").strip():
            problems.append("the email has no subject")
        if not message.text.strip():
            problems.append("the email is empty")
    return problems


def render_for_sending(
    kind: Kind | str,
    channel: Channel | str,
    language: str,
    context: Mapping[str, Any],
    *,
    overrides: Mapping[str, str] | None = None,
) -> tuple[rendering.RenderedMessage | None, str | None]:
    """The message to send, or None and the reason (fit to show staff) it must not go out."""
    try:
        message = rendering.render(kind, channel, language, context, overrides=overrides)
    except Exception as exc:  # noqa: BLE001 - any failure of an edited template is this message's
        return None, f"not sent: the message template does not render ({safe_error_text(exc)})"
    problems = sending_problems(channel, message)
    if problems:
        return None, "not sent: " + "; ".join(problems)
    return message, None


# --- saving -----------------------------------------------------------------------------------


def save_override(
    session: Session,
    kind: str,
    part: str,
    language: str,
    source: str,
    *,
    user_id: int | None,
    now: datetime | None = None,
) -> MessageTemplate | None:
    """Store an edit that passed :func:`check_source`; flushes, the caller commits.

    A source equal to the shipped file removes the override instead (returns None), so the
    clinic picks up later fixes to the shipped text.
    """
    if not is_known(kind, part, language):
        raise ValueError(f"unknown template {kind}/{part}/{language}")
    source = normalise_source(source)
    row = get_override(session, kind, part, language)
    if source.strip() == shipped_source(kind, part, language).strip():
        if row is not None:
            session.delete(row)
            session.flush()
        return None
    if row is None:
        row = MessageTemplate(kind=kind, part=part, language=language)
        session.add(row)
    row.source = source
    row.updated_by_id = user_id
    row.updated_at = now or datetime.now(UTC)
    session.flush()
    return row


def reset_override(session: Session, kind: str, part: str, language: str) -> int | None:
    """Delete the stored edit (the shipped file applies again); flushes, the caller commits.

    Returns the id the edit had, or None when there was none.
    """
    row = get_override(session, kind, part, language)
    if row is None:
        return None
    row_id = row.id
    session.delete(row)
    session.flush()
    return row_id


@dataclass(frozen=True)
class SavedEdit:
    language: str
    template_id: int | None  # None: the edit equalled the shipped file and was removed


@dataclass(frozen=True)
class EditResult:
    checks: dict[str, TemplateCheck]
    saved: list[SavedEdit]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks.values())


def save_edits(
    session: Session,
    kind: str,
    part: str,
    sources: Mapping[str, str],
    *,
    user_id: int | None,
    now: datetime | None = None,
) -> EditResult:
    """Check every language's source and, only when all pass, store the ones that changed.

    One save covers all languages at once, so a clinic never sends one language's new text
    next to another's refused one. Flushes; the caller commits.
    """
    normalised = {lang: normalise_source(sources.get(lang) or "") for lang in LANGUAGES}
    checks = {lang: check_source(kind, part, lang, normalised[lang]) for lang in LANGUAGES}
    if not all(check.ok for check in checks.values()):
        return EditResult(checks, [])
    saved = []
    for lang, source in normalised.items():
        if source == current_source(session, kind, part, lang):
            continue
        row = save_override(session, kind, part, lang, source, user_id=user_id, now=now)
        saved.append(SavedEdit(lang, row.id if row is not None else None))
    return EditResult(checks, saved)
