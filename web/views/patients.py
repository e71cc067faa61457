"""Staff pages: find and create patients, create courses, propose and book schedules, move,
cancel and record missed fractions, and the readiness checklist.

Every page is server-rendered and works without JavaScript. Reading needs the viewer role,
changing needs the scheduler role (``role_required`` also checks the CSRF token on POST).
Every view or change of a patient, course or fraction is written to the audit log, and every
change says in its flash message what changed and which patient messages it queued.

No personal data goes into a URL (the patient search is a POST) or into a log line: records
are named by id only, and flash messages carry times and machines, never names or numbers
that identify the patient.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import phonenumbers
import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy.orm import Session

from notifications import outbox
from notifications.outbox import patient_snapshot
from scheduler import access, records, services, unit_of_work
from scheduler.alternatives import Alternative
from scheduler.context import rules_from_protocol
from scheduler.errors import (
    Conflict,
    ConflictingBooking,
    InvalidInput,
    NearbyCourse,
    NearbyCourseWarning,
    NotFound,
    RuleBreak,
    RulesBroken,
    StateConflict,
)
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    MISSED_REASON_LABELS,
    Course,
    CourseStatus,
    Fraction,
    MissedReason,
    Patient,
    Role,
    User,
)
from scheduler.services import Placement
from scheduler.timeutil import (
    AmbiguousLocalTime,
    NonexistentLocalTime,
    format_local,
    localize,
    to_local,
)
from scheduler.types import PlannedFraction
from web import audit, params
from web.auth import session_user
from web.db import get_session
from web.ui import done, role_required

bp = Blueprint("patients", __name__)

# Countries offered as the default for a phone typed without "+": the department's own first,
# then the neighbours and the countries most of its patients' numbers come from.
PHONE_COUNTRIES = ("US", "CA", "MX", "PR", "GB", "ES", "FR", "DE", "IT", "AU")
DEFAULT_PHONE_COUNTRY = records.PHONE_DEFAULT_REGION
LANGUAGE_NAMES = {"en": "English", "es": "Spanish (Español)"}
READINESS_LABELS = {
    "ct_simulation": "CT simulation",
    "plan_approved": "Plan approval",
    "physics_qa": "Physics QA",
    "consent": "Consent",
    "fiducials_placed": "Fiducial markers placed",
}
PRIORITY_LABELS = {1: "1 (urgent)", 2: "2", 3: "3 (normal)", 4: "4", 5: "5 (routine)"}
# How messages are named in flash messages: day-before and same-day are both "reminders".
MESSAGE_KIND_NAMES = {
    "confirmation": ("confirmation", "confirmations"),
    "day_before": ("reminder", "reminders"),
    "same_day": ("reminder", "reminders"),
    "change": ("change notice", "change notices"),
    "cancellation": ("cancellation notice", "cancellation notices"),
}
CHANNEL_NAMES = {"sms": "SMS", "email": "email"}
PROPOSAL_COUNT = 3
# What an HTML datetime-local field shows and sends: local date and time to the minute.
LOCAL_INPUT_FORMAT = "%Y-%m-%dT%H:%M"
ALTERNATIVE_COUNT = 5
# How each one-click alternative differs from the current placement, in the scheduler's words.
ALTERNATIVE_KINDS = {
    "partner_same_time": "same time, beam-matched machine",
    "same_time_other_day": "same time, another day",
    "same_day_other_time": "same day, another time",
    "other_time": "another day and time",
    "other_linac": "another machine: needs a plan for it",
}
SEARCH_LIMIT = 50


# --- who may see what --------------------------------------------------------------------


def departments_visible_to(user: User) -> frozenset[int] | None:
    """The departments whose records ``user`` may see; None means every department.

    The request's session is already narrowed to these (scheduler.access); the checks below
    restate the rule where a record is in hand.
    """
    return access.visible_department_ids(get_session(), user)


def can_see_patient(user: User | None, patient: Patient) -> bool:
    """Whether ``user`` may see ``patient`` (and so the patient's courses and fractions):
    the record's department must be one the user may see."""
    if user is None or not user.active:
        return False
    visible = departments_visible_to(user)
    return visible is None or patient.department_id in visible


def _staff() -> User:
    user = session_user()
    assert user is not None  # role_required signed the user in
    return user


def _patient_or_404(db: Session, patient_id: int) -> Patient:
    # A record the user may not see answers exactly like one that does not exist, so ids
    # cannot be probed for which patients exist elsewhere.
    patient = db.get(Patient, patient_id)
    if patient is None or not can_see_patient(_staff(), patient):
        abort(404)
    return patient


def _course_or_404(db: Session, course_id: int) -> Course:
    try:
        course = records.get_course(db, course_id)
    except NotFound:
        abort(404)
    if not can_see_patient(_staff(), course.patient):
        abort(404)
    return course


def _fraction_or_404(db: Session, fraction_id: int) -> Fraction:
    fraction = db.get(Fraction, fraction_id)
    if fraction is None or not can_see_patient(_staff(), fraction.course.patient):
        abort(404)
    return fraction


# --- formatting --------------------------------------------------------------------------


def _utc_iso(instant: datetime) -> str:
    """An instant as the forms post it back: UTC with a Z, so no zone is re-read."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _span(start: datetime, end: datetime, tz: str) -> str:
    """``Mon 9 Mar 2026 09:00–10:00 EDT``: a session ends on the day it starts."""
    local, until = to_local(start, tz), to_local(end, tz)
    return f"{local:%a} {local.day} {local:%b %Y %H:%M}–{until:%H:%M} {until.tzname()}"


def _linac_names(course: Course) -> dict[int, str]:
    return {linac.id: linac.name for linac in course.patient.department.linacs}


def _taken_times(conflicts: Iterable[ConflictingBooking], names: Mapping[int, str], tz: str) -> str:
    """The bookings a lost race collided with, as people read them."""
    kinds = {"linac": "booked", "patient": "the patient's other booking", "downtime": "downtime"}
    parts = []
    for c in list(conflicts)[:3]:
        start = datetime.fromisoformat(c.starts_at.replace("Z", "+00:00"))
        end = datetime.fromisoformat(c.ends_at.replace("Z", "+00:00"))
        machine = names.get(c.linac_id, "a linac") if c.linac_id is not None else "a linac"
        parts.append(f"{machine} {_span(start, end, tz)} ({kinds.get(c.kind, c.kind)})")
    return "; ".join(parts)


# --- the outbox: which patient messages an action queued ----------------------------------


def _queued_summary(db: Session, course_id: int, queued: outbox.QueuedMessages) -> str:
    """``Queued messages: 1 confirmation (SMS), 10 reminders (SMS).`` for what the action wrote
    to the course's outbox, plus how many earlier messages it withdrew."""
    new = [(r.kind, r.channel) for r in queued.written if r.course_id == course_id]
    counts = Counter((MESSAGE_KIND_NAMES.get(k, (k, k + "s")), c) for k, c in new)
    # A fixed order (kinds as listed above, SMS before email) so the sentence reads the same
    # way every time.
    kind_order = list(MESSAGE_KIND_NAMES.values())
    channel_order = list(CHANNEL_NAMES)
    parts = [
        f"{n} {names[0] if n == 1 else names[1]} ({CHANNEL_NAMES.get(channel, channel)})"
        for (names, channel), n in sorted(
            counts.items(),
            key=lambda item: (
                kind_order.index(item[0][0]) if item[0][0] in kind_order else len(kind_order),
                channel_order.index(item[0][1]) if item[0][1] in channel_order else 9,
            ),
        )
    ]
    if parts:
        text = f"Queued messages: {', '.join(parts)}."
    else:
        text = "No patient messages queued."
        patient = db.scalar(sa.select(Patient).join(Course).where(Course.id == course_id))
        # The outbox's own test of which channels may carry messages to this patient.
        reach = patient_snapshot(patient, patient.department) if patient is not None else None
        if reach is not None and not (reach.sms_allowed or reach.email_allowed):
            text += " The patient has no consented SMS or email."
    withdrawn = len([r for r in queued.withdrawn if r.course_id == course_id])
    if withdrawn:
        text += f" Withdrawn: {withdrawn} earlier message{'s' if withdrawn != 1 else ''}."
    return text


# --- forms -------------------------------------------------------------------------------


def _errors_by_field(exc: InvalidInput) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for error in exc.errors:
        found.setdefault(error.field, []).append(error.message)
    return found


def _phone_country_choices() -> list[tuple[str, str]]:
    return [
        (region, f"{region} (+{phonenumbers.country_code_for_region(region)})")
        for region in PHONE_COUNTRIES
    ]


def _international_phone(raw: str, region: str) -> str:
    """The number in "+" form when it can be read with ``region`` as the default country.

    records validates with its own default country (US); a number already in "+" form means
    the same thing whatever the default, so the country chosen on the form is what counts.
    One that cannot be read at all is passed as typed and records names the problem.
    """
    raw = raw.strip()
    if not raw:
        return raw
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return raw
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _patient_form_values(form: Mapping[str, str]) -> dict[str, Any]:
    """What the form holds, as typed (re-rendered after an error so nothing is lost)."""
    country = form.get("phone_country", DEFAULT_PHONE_COUNTRY)
    return {
        "department_id": form.get("department_id", ""),
        "mrn": form.get("mrn", ""),
        "given_name": form.get("given_name", ""),
        "family_name": form.get("family_name", ""),
        "date_of_birth": form.get("date_of_birth", "").strip(),
        "phone": form.get("phone", ""),
        "phone_country": country if country in PHONE_COUNTRIES else DEFAULT_PHONE_COUNTRY,
        "email": form.get("email", ""),
        "language": form.get("language", "en"),
        "timezone": form.get("timezone", ""),
        "sms_consent": form.get("sms_consent") == "yes",
        "email_consent": form.get("email_consent") == "yes",
    }


def _optional(value: str) -> str | None:
    value = value.strip()
    return value or None


def _int_or_none(value: str | None) -> int | None:
    return params.int_or_none(value, low=-params.MAX_ID)


def _date_or_none(value: str | None, *, horizon: bool = True) -> date | None:
    """An ISO date, within the product's horizon unless the records layer checks a narrower
    range with its own message (``horizon=False``: the date of birth)."""
    try:
        if not value:
            return None
        return params.parse_date(value) if horizon else date.fromisoformat(value.strip())
    except ValueError:
        return None


def _time_or_none(value: str | None) -> time | None:
    try:
        return params.parse_time(value) if value else None
    except ValueError:
        return None


def _instant(value: str | None) -> datetime | None:
    """An ISO 8601 instant with an offset, as the booking forms carry (UTC)."""
    if not value:
        return None
    try:
        moment = params.parse_datetime(value)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


# --- patients ----------------------------------------------------------------------------


@bp.route("/patients", methods=["GET", "POST"])
@role_required(Role.VIEWER)
def index():
    """Find a patient by MRN or name. The search is a POST so the terms, which identify a
    person, never appear in a URL, a browser history or an access log."""
    results: list[Patient] | None = None
    query = ""
    if request.method == "POST":
        query = request.form.get("q", "").strip()[:200]
        db = get_session()
        user = _staff()
        if query:
            found = records.list_patients(db, search=query, limit=SEARCH_LIMIT)
            results = [p for p in found if can_see_patient(user, p)]
        else:
            results = []
        html = render_template("patients/index.html", query=query, results=results)
        # The search terms are personal data: the log keeps only how many records were shown.
        audit.record("search", "patient", None, actor_id=user.id, results=len(results))
        return html
    return render_template("patients/index.html", query=query, results=results)


def _departments(db: Session) -> list[Any]:
    visible = departments_visible_to(_staff())
    return [d for d in records.list_departments(db) if visible is None or d.id in visible]


@bp.route("/patients/new", methods=["GET", "POST"])
@role_required(Role.SCHEDULER)
def new_patient():
    db = get_session()
    departments = _departments(db)
    if not departments:
        abort(404)

    def form(values: dict[str, Any], errors: dict[str, list[str]], status: int = 200):
        page = render_template(
            "patients/new.html",
            values=values,
            errors=errors,
            departments=departments,
            countries=_phone_country_choices(),
            languages=LANGUAGE_NAMES,
            timezones=records.timezone_choices(),
            earliest_birth_date=records.EARLIEST_BIRTH_DATE.isoformat(),
            today=datetime.now(UTC).date().isoformat(),
            error="The patient was not saved: correct the fields marked below." if errors else None,
        )
        return page, status

    if request.method == "GET":
        values = _patient_form_values({})
        values["department_id"] = str(departments[0].id)
        return form(values, {})
    values = _patient_form_values(request.form)
    department_id = _int_or_none(values["department_id"])
    if len(departments) == 1:
        department_id = departments[0].id
    if department_id not in {d.id for d in departments}:
        return form(values, {"department_id": ["choose a department"]}, 422)
    try:
        patient = records.create_patient(
            db,
            {
                "department_id": department_id,
                "mrn": values["mrn"],
                "given_name": values["given_name"],
                "family_name": values["family_name"],
                # Unreadable text goes through as typed, so records names the problem.
                "date_of_birth": _date_or_none(values["date_of_birth"], horizon=False)
                or _optional(values["date_of_birth"]),
                "phone": _optional(_international_phone(values["phone"], values["phone_country"])),
                "email": _optional(values["email"]),
                "language": values["language"],
                "timezone": _optional(values["timezone"]),
                "sms_consent": values["sms_consent"],
                "email_consent": values["email_consent"],
            },
        )
    except InvalidInput as exc:
        errors = _errors_by_field(exc) or {"": [exc.detail]}
        return form(values, errors, 422)
    audit.record("create", "patient", patient.id, actor_id=_staff().id)
    message = "Patient created."
    if patient.phone_e164:
        message += " The phone number is saved in international (E.164) form, shown below."
    return done(message, "patients.show", patient_id=patient.id)


def _render_patient(
    patient: Patient,
    *,
    birth_date_typed: str = "",
    birth_date_error: str | None = None,
    status: int = 200,
):
    html = render_template(
        "patients/show.html",
        patient=patient,
        tz=patient.department.timezone,
        languages=LANGUAGE_NAMES,
        format_local=format_local,
        priorities=PRIORITY_LABELS,
        birth_date_typed=birth_date_typed,
        birth_date_error=birth_date_error,
        earliest_birth_date=records.EARLIEST_BIRTH_DATE.isoformat(),
        error="The date of birth was not saved: correct it below." if birth_date_error else None,
    )
    return html, status


@bp.get("/patients/<int:patient_id>")
@role_required(Role.VIEWER)
def show(patient_id: int):
    db = get_session()
    patient = _patient_or_404(db, patient_id)
    page = _render_patient(patient)
    audit.record("view", "patient", patient.id, actor_id=_staff().id)
    return page


@bp.post("/patients/<int:patient_id>/date-of-birth")
@role_required(Role.SCHEDULER)
def record_date_of_birth(patient_id: int):
    """Add the date of birth of a patient registered before it was asked for."""
    db = get_session()
    patient = _patient_or_404(db, patient_id)
    typed = request.form.get("date_of_birth", "").strip()
    if patient.date_of_birth is not None:
        flash("The date of birth is already recorded; nothing was changed.", "error")
        return redirect(url_for("patients.show", patient_id=patient_id))
    try:
        born = _date_or_none(typed, horizon=False) or _optional(typed)
        records.update_patient(db, patient_id, {"date_of_birth": born})
    except InvalidInput as exc:
        db.rollback()
        messages = _errors_by_field(exc).get("date_of_birth") or [exc.detail]
        patient = _patient_or_404(db, patient_id)
        return _render_patient(
            patient, birth_date_typed=typed, birth_date_error="; ".join(messages), status=422
        )
    audit.record("update", "patient", patient_id, actor_id=_staff().id, field="date_of_birth")
    return done("Date of birth recorded.", "patients.show", patient_id=patient_id)


# --- courses -----------------------------------------------------------------------------


@bp.route("/patients/<int:patient_id>/courses/new", methods=["GET", "POST"])
@role_required(Role.SCHEDULER)
def new_course(patient_id: int):
    db = get_session()
    patient = _patient_or_404(db, patient_id)
    protocols = records.list_protocols(db)

    def form(values: dict[str, str], errors: dict[str, list[str]], status: int = 200):
        page = render_template(
            "courses/new.html",
            patient=patient,
            protocols=protocols,
            priorities=PRIORITY_LABELS,
            values=values,
            errors=errors,
            error="The course was not created: correct the fields marked." if errors else None,
        )
        return page, status

    if request.method == "GET":
        return form({"protocol_id": "", "priority": "3", "ready_to_treat_on": "", "notes": ""}, {})
    values = {
        name: request.form.get(name, "")
        for name in ("protocol_id", "priority", "ready_to_treat_on", "notes")
    }
    errors: dict[str, list[str]] = {}
    protocol_id = _int_or_none(values["protocol_id"])
    if protocol_id is None:
        errors["protocol_id"] = ["choose a protocol"]
    priority = _int_or_none(values["priority"])
    if priority is None:
        errors["priority"] = ["choose a priority"]
    ready_on = _date_or_none(values["ready_to_treat_on"])
    if values["ready_to_treat_on"] and ready_on is None:
        errors["ready_to_treat_on"] = ["must be a date (YYYY-MM-DD)"]
    if errors:
        return form(values, errors, 422)
    try:
        course = records.create_course(
            db,
            {
                "patient_id": patient.id,
                "protocol_id": protocol_id,
                "priority": priority,
                "ready_to_treat_on": ready_on,
                "notes": values["notes"],
            },
        )
    except InvalidInput as exc:
        return form(values, _errors_by_field(exc) or {"": [exc.detail]}, 422)
    audit.record("create", "course", course.id, actor_id=_staff().id, patient_id=patient.id)
    return done(
        "Course created. Record its readiness steps, then propose a schedule.",
        "patients.course",
        course_id=course.id,
    )


@dataclass
class _ReadinessForm:
    """The readiness form as submitted: steps to record, steps to clear, the typed time."""

    record: list[str] = field(default_factory=list)
    clear: list[str] = field(default_factory=list)
    done_at: str = ""
    error: str | None = None
    time_error: str | None = None


PATHWAY_STEP_LABELS = {
    "fiducials": "Fiducial markers",
    "ct_sim": "CT simulation",
    "planning": "Planning",
}


def _render_course(
    course: Course,
    *,
    error: str | None = None,
    readiness_form: _ReadinessForm | None = None,
    prescription_errors: Mapping[str, str] | None = None,
    prescription_values: Mapping[str, str] | None = None,
    status: int = 200,
):
    tz = course.patient.department.timezone
    now = datetime.now(UTC)
    readiness = [
        (step, label, getattr(course, services.READINESS_STEPS[step]))
        for step, label in READINESS_LABELS.items()
    ]
    html = render_template(
        "courses/show.html",
        course=course,
        patient=course.patient,
        tz=tz,
        linacs=_linac_names(course),
        readiness=readiness,
        readiness_form=readiness_form or _ReadinessForm(),
        fractions=sorted(course.fractions, key=lambda f: (f.number, f.starts_at)),
        active=set(ACTIVE_FRACTION_STATUSES),
        now=now,
        span=_span,
        format_local=format_local,
        priorities=PRIORITY_LABELS,
        error=error,
        prescription_choices=_prescription_choices(course),
        prescription_errors=prescription_errors or {},
        prescription_values=prescription_values or {},
        undoable=_undoable_missed(course, now, tz),
        pathway=services.get_pathway(get_session(), course.id),
        pathway_labels=PATHWAY_STEP_LABELS,
    )
    return html, status


def _prescription_choices(course: Course) -> list[int]:
    """The counts a clinician may prescribe: what the course holds, or the protocol's."""
    if course.status not in (
        CourseStatus.BOOKED,
        CourseStatus.INCOMPLETE,
        CourseStatus.NEEDS_REVIEW,
    ):
        return []
    choices = sorted({max(1, len(course.held_numbers)), course.protocol.fractions})
    return [n for n in choices if n != course.fraction_count]


def _undoable_missed(course: Course, now: datetime, tz: str) -> set[int]:
    """Missed fractions recorded today (department time): the ones an undo is offered for."""
    today = to_local(now, tz).date()
    return {
        f.id
        for f in course.fractions
        if f.status == "missed" and to_local(f.updated_at, tz).date() == today
    }


@bp.get("/courses/<int:course_id>")
@role_required(Role.VIEWER)
def course(course_id: int):
    db = get_session()
    found = _course_or_404(db, course_id)
    page = _render_course(found)
    audit.record("view", "course", found.id, actor_id=_staff().id)
    return page


def _readiness_form(form: Any) -> _ReadinessForm:
    """The steps ticked on the course page's one readiness form; a single ``step`` with an
    ``action`` (record or clear) is read as the same thing."""
    submitted = _ReadinessForm(
        record=form.getlist("record"),
        clear=form.getlist("clear"),
        done_at=form.get("done_at", "").strip(),
    )
    step = form.get("step")
    if step is not None:
        (submitted.clear if form.get("action") == "clear" else submitted.record).append(step)
    return submitted


def _names(labels: list[str]) -> str:
    """``A``, ``A and B``, ``A, B and C``."""
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


@bp.post("/courses/<int:course_id>/readiness")
@role_required(Role.SCHEDULER)
def readiness(course_id: int):
    """Record the ticked readiness steps at one local date and time (blank means now) and
    clear the ticked ones."""
    db = get_session()
    found = _course_or_404(db, course_id)
    form = _readiness_form(request.form)
    if any(step not in READINESS_LABELS for step in (*form.record, *form.clear)):
        abort(400, "Unknown readiness step.")
    tz = found.patient.department.timezone

    def refused(message: str, *, time_error: str | None = None):
        form.error, form.time_error = message, time_error
        # The ticks and the typed time come back as they were, so nothing has to be redone.
        return _render_course(
            found,
            error="Readiness was not saved: correct the form.",
            readiness_form=form,
            status=422,
        )

    if not form.record and not form.clear:
        return refused("Tick the steps to record (or to clear), then save.")
    both = [READINESS_LABELS[s] for s in READINESS_LABELS if s in form.record and s in form.clear]
    if both:
        return refused(f"{_names(both)}: tick either Record or Clear, not both.")
    done_at = datetime.now(UTC)
    if form.record and form.done_at:
        try:
            done_at = localize(params.parse_datetime(form.done_at).replace(second=0), tz)
        except ValueError as exc:
            # Nonexistent (spring-forward) and ambiguous (fall-back) times are ValueErrors
            # too; their messages say which and what to do.
            return refused(
                "The time was not understood; nothing was recorded.",
                time_error=(
                    str(exc)
                    if isinstance(exc, NonexistentLocalTime | AmbiguousLocalTime)
                    else "must be a local date and time"
                ),
            )
    queued = outbox.collect(db)
    updated = found
    try:
        for step in READINESS_LABELS:
            if step in form.record or step in form.clear:
                updated = services.record_readiness(
                    db,
                    course_id,
                    step=step,
                    done_at=done_at if step in form.record else None,
                    actor_id=_staff().id,
                )
                audit.record("readiness", "course", course_id, actor_id=_staff().id, step=step)
    except InvalidInput as exc:
        abort(400, exc.detail)
    recorded = [READINESS_LABELS[s] for s in READINESS_LABELS if s in form.record]
    cleared = [READINESS_LABELS[s] for s in READINESS_LABELS if s in form.clear]
    parts = []
    if recorded:
        parts.append(f"{_names(recorded)} recorded for {format_local(done_at, tz)}.")
    if cleared:
        parts.append(f"{_names(cleared)} cleared.")
    message = " ".join(parts)
    if updated.ready_to_treat and recorded:
        message += " Plan approval and physics QA are done: the course is ready to treat."
    return done(
        f"{message} {_queued_summary(db, course_id, queued)}",
        "patients.course",
        course_id=course_id,
    )


@bp.route("/courses/<int:course_id>/cancel", methods=["GET", "POST"])
@role_required(Role.SCHEDULER)
def cancel_course(course_id: int):
    """A confirmation page with the reason, then the cancellation itself."""
    db = get_session()
    found = _course_or_404(db, course_id)
    reason = request.form.get("reason", "").strip()
    if request.method == "GET" or not reason:
        return render_template(
            "courses/cancel.html",
            course=found,
            reason=reason,
            reason_error="give a reason" if request.method == "POST" else None,
        ), (422 if request.method == "POST" else 200)
    queued = outbox.collect(db)
    try:
        cancelled = services.cancel_course(db, course_id, reason=reason, actor_id=_staff().id)
    except StateConflict as exc:
        db.rollback()  # refused: nothing of it is kept, though the page redirects
        flash(f"The course was not cancelled: {exc.detail}.", "error")
        return redirect(url_for("patients.course", course_id=course_id))
    audit.record("cancel", "course", course_id, actor_id=_staff().id)
    count = sum(1 for f in cancelled.fractions if f.status == "cancelled")
    return done(
        f"Course cancelled ({count} fraction{'s' if count != 1 else ''} cancelled). "
        f"{_queued_summary(db, course_id, queued)}",
        "patients.course",
        course_id=course_id,
    )


# --- proposing and booking -----------------------------------------------------------------


@dataclass
class _ProposalQuery:
    earliest: date | None
    window: tuple[time, time] | None
    values: dict[str, str]
    errors: dict[str, str]


def _proposal_query(source: Mapping[str, str]) -> _ProposalQuery:
    values = {name: source.get(name, "") for name in ("earliest", "window_start", "window_end")}
    errors: dict[str, str] = {}
    earliest = _date_or_none(values["earliest"])
    if values["earliest"] and earliest is None:
        errors["earliest"] = "must be a date (YYYY-MM-DD)"
    start, end = _time_or_none(values["window_start"]), _time_or_none(values["window_end"])
    for name, parsed in (("window_start", start), ("window_end", end)):
        if values[name] and parsed is None:
            errors[name] = "must be a time (HH:MM)"
    window = None
    if start is not None and end is not None:
        if start >= end:
            errors["window_end"] = "must be after the window's start"
        else:
            window = (start, end)
    elif (start is None) != (end is None) and not errors:
        errors["window_end" if end is None else "window_start"] = "give both times or neither"
    return _ProposalQuery(earliest, window, values, errors)


def _render_proposals(
    db: Session, found: Course, query: _ProposalQuery, *, error: str | None = None, status=200
):
    tz = found.patient.department.timezone
    names = _linac_names(found)
    result = None
    if found.status == CourseStatus.DRAFT and not query.errors:
        result = services.propose_schedules(
            db,
            found.id,
            earliest=query.earliest,
            count=PROPOSAL_COUNT,
            preferred_window=query.window,
        )
    html = render_template(
        "courses/propose.html",
        course=found,
        patient=found.patient,
        tz=tz,
        linacs=names,
        query=query,
        result=result,
        span=_span,
        to_local=to_local,
        iso=_utc_iso,
        error=error,
    )
    return html, status


@bp.get("/courses/<int:course_id>/propose")
@role_required(Role.SCHEDULER)
def propose(course_id: int):
    """Complete schedules side by side; the query holds dates and times only, never
    anything about the patient, so a GET with parameters is safe to bookmark or share."""
    db = get_session()
    found = _course_or_404(db, course_id)
    query = _proposal_query(request.args)
    page = _render_proposals(db, found, query, status=422 if query.errors else 200)
    audit.record("view", "course", course_id, actor_id=_staff().id, page="propose")
    return page


def _placements(form: Any) -> list[Placement] | None:
    numbers, linacs, starts = (
        form.getlist("number"),
        form.getlist("linac_id"),
        form.getlist("starts_at"),
    )
    if not numbers or not len(numbers) == len(linacs) == len(starts):
        return None
    placements = []
    for number, linac_id, start in zip(numbers, linacs, starts, strict=True):
        n, linac, moment = _int_or_none(number), _int_or_none(linac_id), _instant(start)
        if n is None or linac is None or moment is None:
            return None
        placements.append(Placement(n, linac, moment))
    return placements


def _render_nearby(
    db: Session,
    found: Course,
    placements: list[Placement],
    query: _ProposalQuery,
    nearby: list[NearbyCourse],
    *,
    unticked: bool,
):
    """The booking held back: the patient's other courses close to it, and the same schedule
    to book once the scheduler ticks that they have checked them."""
    tz = found.patient.department.timezone
    rules = rules_from_protocol(found.protocol)
    schedule = [
        PlannedFraction(
            p.number,
            p.linac_id,
            p.starts_at,
            p.starts_at + timedelta(minutes=rules.minutes_for(p.number)),
        )
        for p in sorted(placements, key=lambda p: p.number)
    ]

    def local_day(iso_instant: str) -> str:
        moment = to_local(datetime.fromisoformat(iso_instant.replace("Z", "+00:00")), tz)
        return f"{moment:%a} {moment.day} {moment:%b %Y}"

    html = render_template(
        "courses/book_nearby.html",
        course=found,
        patient=found.patient,
        tz=tz,
        linacs=_linac_names(found),
        schedule=schedule,
        nearby=nearby,
        nearby_days=services.NEARBY_COURSE_DAYS,
        query=query,
        local_day=local_day,
        span=_span,
        iso=_utc_iso,
        unticked=unticked,
        error=(
            "Nothing was booked: tick the box to confirm you have checked the other course."
            if unticked
            else "Nothing was booked yet: this patient has another course close to this schedule."
        ),
    )
    return html, 409


@bp.post("/courses/<int:course_id>/book")
@role_required(Role.SCHEDULER)
def book(course_id: int):
    db = get_session()
    found = _course_or_404(db, course_id)
    tz = found.patient.department.timezone
    names = _linac_names(found)
    placements = _placements(request.form)
    if placements is None:
        abort(400, "The schedule in the form is incomplete; propose again.")
    query = _proposal_query(request.form)
    # The other courses the scheduler was shown and accepted (only with the box ticked).
    acknowledged = (
        [i for i in map(_int_or_none, request.form.getlist("nearby_course_id")) if i is not None]
        if request.form.get("acknowledge_nearby") == "yes"
        else []
    )
    queued = outbox.collect(db)

    def book_and_audit() -> Course:
        booked = services.book_course(
            db,
            course_id,
            placements,
            acknowledged_course_ids=acknowledged,
            actor_id=_staff().id,
        )
        audit.record(
            "book",
            "course",
            course_id,
            actor_id=_staff().id,
            fractions=len(placements),
            acknowledged_nearby_courses=acknowledged,
        )
        return booked

    try:
        # Its own unit of work, run again when PostgreSQL broke a deadlock between two bookings.
        booked = unit_of_work.run(db, book_and_audit)
    except NearbyCourseWarning as exc:
        found = _course_or_404(db, course_id)
        asked_before = bool(request.form.getlist("nearby_course_id"))
        return _render_nearby(
            db,
            found,
            placements,
            query,
            exc.nearby_courses,
            # Shown the warning already and sent it back without the tick.
            unticked=asked_before and not acknowledged,
        )
    except Conflict as exc:
        taken = _taken_times(exc.conflicts, names, tz)
        message = "That schedule was taken a moment ago"
        message += f": {taken}." if taken else "."
        found = _course_or_404(db, course_id)
        return _render_proposals(
            db, found, query, error=f"{message} Choose another schedule.", status=409
        )
    except RulesBroken as exc:
        found = _course_or_404(db, course_id)
        broken = "; ".join(v.message for v in exc.violations)
        return _render_proposals(
            db, found, query, error=f"That schedule can no longer be booked: {broken}.", status=422
        )
    except (StateConflict, InvalidInput) as exc:
        db.rollback()  # refused: nothing of it is kept, though the page redirects
        flash(f"Nothing was booked: {exc.detail}.", "error")
        return redirect(url_for("patients.course", course_id=course_id))
    active = sorted(
        (f for f in booked.fractions if f.status in ACTIVE_FRACTION_STATUSES),
        key=lambda f: f.starts_at,
    )
    message = (
        f"Booked {len(active)} fraction{'s' if len(active) != 1 else ''}, "
        f"{format_local(active[0].starts_at, tz)} to {format_local(active[-1].starts_at, tz)}."
    )
    if not booked.ready_to_treat:
        message += " Fraction 1 stays tentative until plan approval and physics QA are recorded."
    return done(
        f"{message} {_queued_summary(db, course_id, queued)}",
        "patients.course",
        course_id=course_id,
    )


# --- moving a fraction -------------------------------------------------------------------


@dataclass
class _MoveForm:
    """The typed move: local date, time, machine, which occurrence of an ambiguous time,
    and an override reason once the rules it breaks are shown."""

    date: str = ""
    time: str = ""
    linac_id: str = ""
    fold: str = ""
    override_reason: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    # For an ambiguous time: (fold, label) such as ("0", "first (EDT)").
    fold_choices: list[tuple[str, str]] = field(default_factory=list)
    violations: list[RuleBreak] = field(default_factory=list)

    @property
    def overridable(self) -> bool:
        return bool(self.violations) and all(v.overridable for v in self.violations)


def _fold_choices(naive: datetime, tz: str) -> list[tuple[str, str]]:
    labels = []
    for fold, word in ((0, "first"), (1, "second")):
        instant = localize(naive, tz, fold=fold)
        labels.append((str(fold), f"{word} ({to_local(instant, tz).tzname()})"))
    return labels


def _render_move(
    db: Session,
    fraction: Fraction,
    form: _MoveForm,
    *,
    error: str | None = None,
    status: int = 200,
):
    course = fraction.course
    tz = course.patient.department.timezone
    names = _linac_names(course)
    alternatives: list[Alternative] = []
    if fraction.status in ACTIVE_FRACTION_STATUSES:
        alternatives = services.fraction_alternatives(db, fraction.id, count=ALTERNATIVE_COUNT)
    html = render_template(
        "courses/move.html",
        fraction=fraction,
        course=course,
        patient=course.patient,
        tz=tz,
        linacs=names,
        alternatives=alternatives,
        alternative_kinds=ALTERNATIVE_KINDS,
        form=form,
        span=_span,
        iso=_utc_iso,
        error=error,
    )
    return html, status


@bp.get("/fractions/<int:fraction_id>/move")
@role_required(Role.SCHEDULER)
def move(fraction_id: int):
    db = get_session()
    fraction = _fraction_or_404(db, fraction_id)
    if fraction.status not in ACTIVE_FRACTION_STATUSES:
        flash(f"Fraction {fraction.number} is {fraction.status} and cannot be moved.", "error")
        return redirect(url_for("patients.course", course_id=fraction.course_id))
    tz = fraction.course.patient.department.timezone
    local = to_local(fraction.starts_at, tz)
    form = _MoveForm(
        date=local.date().isoformat(),
        time=local.strftime("%H:%M"),
        linac_id=str(fraction.linac_id),
    )
    page = _render_move(db, fraction, form)
    audit.record("view", "fraction", fraction_id, actor_id=_staff().id, page="move")
    return page


@bp.post("/fractions/<int:fraction_id>/move")
@role_required(Role.SCHEDULER)
def move_post(fraction_id: int):
    """Either a one-click alternative (an exact UTC instant) or a typed local date and time."""
    db = get_session()
    fraction = _fraction_or_404(db, fraction_id)
    course_id, number = fraction.course_id, fraction.number
    tz = fraction.course.patient.department.timezone
    names = _linac_names(fraction.course)
    before = _span(fraction.starts_at, fraction.ends_at, tz)
    f = request.form
    form = _MoveForm(
        date=f.get("date", ""),
        time=f.get("time", ""),
        linac_id=f.get("linac_id", ""),
        fold=f.get("fold", ""),
        override_reason=f.get("override_reason", "").strip(),
    )
    linac_id = _int_or_none(form.linac_id)
    if linac_id not in names:
        form.errors["linac_id"] = "choose a linac"
    starts_at = _instant(f.get("starts_at"))
    if starts_at is not None:
        # A one-click alternative: show it in the typed form too, should its rules fail now.
        local = to_local(starts_at, tz)
        form.date, form.time = local.date().isoformat(), local.strftime("%H:%M")
        form.fold = str(local.fold)
    else:
        day, clock = _date_or_none(form.date), _time_or_none(form.time)
        if day is None:
            form.errors["date"] = "must be a date (YYYY-MM-DD)"
        if clock is None:
            form.errors["time"] = "must be a time (HH:MM)"
        if day is not None and clock is not None:
            naive = datetime.combine(day, clock.replace(second=0, microsecond=0))
            fold = int(form.fold) if form.fold in ("0", "1") else None
            try:
                starts_at = localize(naive, tz, fold=fold)
            except NonexistentLocalTime as exc:
                form.errors["time"] = f"{exc}: choose another time"
            except AmbiguousLocalTime as exc:
                form.errors["time"] = str(exc)
                form.fold_choices = _fold_choices(naive, tz)
    if form.errors or starts_at is None:
        return _render_move(
            db,
            fraction,
            form,
            error="The fraction was not moved: correct the fields marked.",
            status=422,
        )
    assert linac_id is not None
    queued = outbox.collect(db)

    def move_and_audit() -> Fraction:
        moved = services.move_fraction(
            db,
            fraction_id,
            linac_id=linac_id,
            starts_at=starts_at,
            override_reason=form.override_reason or None,
            actor_id=_staff().id,
        )
        audit.record(
            "move",
            "fraction",
            fraction_id,
            actor_id=_staff().id,
            course_id=course_id,
            override=moved.override_reason is not None and bool(form.override_reason),
        )
        return moved

    try:
        # Its own unit of work, run again when PostgreSQL broke a deadlock between two moves.
        moved = unit_of_work.run(db, move_and_audit)
    except RulesBroken as exc:
        form.violations = exc.violations
        fraction = _fraction_or_404(db, fraction_id)
        needs = (
            "Give a clinical reason to move it anyway."
            if form.overridable
            else "Some of these rules cannot be overridden: choose another time."
        )
        return _render_move(
            db,
            fraction,
            form,
            error=f"The fraction was not moved: the new time breaks protocol rules. {needs}",
            status=422,
        )
    except Conflict as exc:
        fraction = _fraction_or_404(db, fraction_id)
        taken = _taken_times(exc.conflicts, names, tz)
        return _render_move(
            db,
            fraction,
            form,
            error=f"That time was taken a moment ago{': ' + taken if taken else ''}. "
            "Choose another.",
            status=409,
        )
    except (StateConflict, InvalidInput) as exc:
        db.rollback()  # refused: nothing of it is kept, though the page redirects
        flash(f"The fraction was not moved: {exc.detail}.", "error")
        return redirect(url_for("patients.course", course_id=course_id))
    message = (
        f"Moved fraction {number} to {_span(moved.starts_at, moved.ends_at, tz)} on "
        f"{names.get(moved.linac_id, 'linac')} (was {before})."
    )
    if form.override_reason and moved.override_reason:
        message += " The rule override and its reason are recorded."
    return done(
        f"{message} {_queued_summary(db, course_id, queued)}",
        "patients.course",
        course_id=course_id,
    )


# --- cancelling a fraction, recording a missed one -----------------------------------------


@bp.route("/fractions/<int:fraction_id>/cancel", methods=["GET", "POST"])
@role_required(Role.SCHEDULER)
def cancel_fraction(fraction_id: int):
    """A confirmation page with the reason, then the cancellation itself."""
    db = get_session()
    fraction = _fraction_or_404(db, fraction_id)
    course_id, number = fraction.course_id, fraction.number
    tz = fraction.course.patient.department.timezone
    reason = request.form.get("reason", "").strip()
    if request.method == "GET" or not reason:
        return render_template(
            "courses/cancel_fraction.html",
            fraction=fraction,
            course=fraction.course,
            when=_span(fraction.starts_at, fraction.ends_at, tz),
            linac=_linac_names(fraction.course).get(fraction.linac_id, ""),
            reason=reason,
            reason_error="give a reason" if request.method == "POST" else None,
        ), (422 if request.method == "POST" else 200)
    when = _span(fraction.starts_at, fraction.ends_at, tz)
    queued = outbox.collect(db)
    try:
        services.cancel_fraction(db, fraction_id, reason=reason, actor_id=_staff().id)
    except StateConflict as exc:
        db.rollback()  # refused: nothing of it is kept, though the page redirects
        flash(f"The fraction was not cancelled: {exc.detail}.", "error")
        return redirect(url_for("patients.course", course_id=course_id))
    audit.record("cancel", "fraction", fraction_id, actor_id=_staff().id, course_id=course_id)
    return done(
        f"Cancelled fraction {number} ({when}). {_queued_summary(db, course_id, queued)}",
        "patients.course",
        course_id=course_id,
    )


@dataclass
class _MissedForm:
    """The missed-fraction form as typed: a reason, words for "other", and a confirmation."""

    reason: str = ""
    reason_text: str = ""
    confirmed: bool = False
    errors: dict[str, str] = field(default_factory=dict)


def _render_missed(fraction: Fraction, form: _MissedForm, *, status: int = 200):
    course = fraction.course
    tz = course.patient.department.timezone
    html = render_template(
        "courses/missed.html",
        fraction=fraction,
        course=course,
        when=_span(fraction.starts_at, fraction.ends_at, tz),
        linac=_linac_names(course).get(fraction.linac_id, ""),
        reasons=MISSED_REASON_LABELS,
        form=form,
        error="Nothing was recorded: correct the fields marked." if form.errors else None,
    )
    return html, status


@bp.route("/fractions/<int:fraction_id>/missed", methods=["GET", "POST"])
@role_required(Role.SCHEDULER)
def missed(fraction_id: int):
    """A form with the reason and a confirmation, then the missed fraction and its rebooking."""
    db = get_session()
    fraction = _fraction_or_404(db, fraction_id)
    course_id, number = fraction.course_id, fraction.number
    if fraction.status not in ACTIVE_FRACTION_STATUSES:
        flash(f"Fraction {number} is {fraction.status} and cannot be recorded as missed.", "error")
        return redirect(url_for("patients.course", course_id=course_id))
    if request.method == "GET":
        page = _render_missed(fraction, _MissedForm())
        audit.record("view", "fraction", fraction_id, actor_id=_staff().id, page="missed")
        return page
    form = _MissedForm(
        reason=request.form.get("reason", ""),
        reason_text=request.form.get("reason_text", "").strip(),
        confirmed=request.form.get("confirm") == "yes",
    )
    if form.reason not in MISSED_REASON_LABELS:
        form.errors["reason"] = "choose why the fraction was missed"
    elif form.reason == MissedReason.OTHER and not form.reason_text:
        form.errors["reason_text"] = "say why, when the reason is other"
    if not form.confirmed:
        form.errors["confirm"] = "confirm that the patient was not treated in this session"
    if form.errors:
        return _render_missed(fraction, form, status=422)
    tz = fraction.course.patient.department.timezone
    names = _linac_names(fraction.course)
    queued = outbox.collect(db)
    try:
        result = services.record_missed(
            db,
            fraction_id,
            reason=form.reason,
            reason_text=form.reason_text or None,
            actor_id=_staff().id,
        )
    except InvalidInput as exc:
        form.errors.update({k: v[0] for k, v in _errors_by_field(exc).items()})
        return _render_missed(_fraction_or_404(db, fraction_id), form, status=422)
    except (StateConflict, Conflict) as exc:
        db.rollback()  # refused: nothing of it is kept, though the page redirects
        flash(f"Nothing was recorded: {exc.detail}.", "error")
        return redirect(url_for("patients.course", course_id=course_id))
    audit.record(
        "missed",
        "fraction",
        fraction_id,
        actor_id=_staff().id,
        course_id=course_id,
        reason=form.reason,
    )
    if result.rebooked is not None:
        r = result.rebooked
        outcome = (
            f"Rebooked for {_span(r.starts_at, r.ends_at, tz)} on {names.get(r.linac_id, 'linac')}."
        )
    else:
        outcome = "It could not be rebooked within the protocol's rules: the course needs review."
    label = MISSED_REASON_LABELS[MissedReason(form.reason)]
    return done(
        f"Fraction {number} recorded as missed ({label}). {outcome} "
        f"{_queued_summary(db, course_id, queued)}",
        "patients.course",
        course_id=course_id,
    )


@bp.post("/fractions/<int:fraction_id>/missed/undo")
@role_required(Role.SCHEDULER)
def undo_missed(fraction_id: int):
    """Take back a missed fraction recorded in error (only on the day it was recorded)."""
    db = get_session()
    fraction = _fraction_or_404(db, fraction_id)
    course_id, number = fraction.course_id, fraction.number
    queued = outbox.collect(db)
    try:
        restored = services.undo_missed(db, fraction_id, actor_id=_staff().id)
    except (StateConflict, Conflict) as exc:
        db.rollback()  # refused: nothing of it is kept, though the page redirects
        flash(f"The missed fraction was not restored: {exc.detail}.", "error")
        return redirect(url_for("patients.course", course_id=course_id))
    audit.record("undo_missed", "fraction", fraction_id, actor_id=_staff().id, course_id=course_id)
    return done(
        f"Fraction {number} is no longer recorded as missed; it is {restored.status} again. "
        f"{_queued_summary(db, course_id, queued)}",
        "patients.course",
        course_id=course_id,
    )


# --- repairing an incomplete course ---------------------------------------------------------


def _render_rebooking(db: Session, found: Course, *, error: str | None = None, status: int = 200):
    tz = found.patient.department.timezone
    names = _linac_names(found)
    result = None
    if found.incomplete:
        result = services.propose_rebooking(db, found.id, count=PROPOSAL_COUNT)
        # Proposing may have flagged the course: show it as it now stands.
        found = _course_or_404(db, found.id)
    html = render_template(
        "courses/rebook.html",
        course=found,
        patient=found.patient,
        tz=tz,
        linacs=names,
        result=result,
        to_local=to_local,
        iso=_utc_iso,
        error=error,
    )
    return html, status


@bp.get("/courses/<int:course_id>/rebook")
@role_required(Role.SCHEDULER)
def rebook(course_id: int):
    """Placements for the missing fractions inside the protocol's overall time."""
    db = get_session()
    found = _course_or_404(db, course_id)
    page = _render_rebooking(db, found)
    audit.record("view", "course", course_id, actor_id=_staff().id, page="rebook")
    return page


@bp.post("/courses/<int:course_id>/rebook")
@role_required(Role.SCHEDULER)
def rebook_post(course_id: int):
    db = get_session()
    found = _course_or_404(db, course_id)
    tz = found.patient.department.timezone
    names = _linac_names(found)
    placements = _placements(request.form)
    if placements is None:
        abort(400, "The schedule in the form is incomplete; propose again.")
    queued = outbox.collect(db)
    try:
        course = services.rebook_fractions(db, course_id, placements, actor_id=_staff().id)
    except Conflict as exc:
        taken = _taken_times(exc.conflicts, names, tz)
        message = "That time was taken a moment ago" + (f": {taken}." if taken else ".")
        found = _course_or_404(db, course_id)
        return _render_rebooking(db, found, error=f"{message} Choose another.", status=409)
    except RulesBroken as exc:
        broken = "; ".join(v.message for v in exc.violations)
        found = _course_or_404(db, course_id)
        return _render_rebooking(
            db, found, error=f"That time can no longer be booked: {broken}.", status=422
        )
    except (StateConflict, InvalidInput) as exc:
        db.rollback()  # refused: nothing of it is kept, though the page redirects
        flash(f"Nothing was rebooked: {exc.detail}.", "error")
        return redirect(url_for("patients.course", course_id=course_id))
    audit.record(
        "rebook",
        "course",
        course_id,
        actor_id=_staff().id,
        fractions=[p.number for p in placements],
    )
    parts = [
        f"fraction {p.number} for {format_local(p.starts_at, tz)} on "
        f"{names.get(p.linac_id, 'linac')}"
        for p in sorted(placements, key=lambda p: p.number)
    ]
    message = f"Rebooked {', '.join(parts)}."
    if not course.incomplete:
        message += " The course is complete again."
    return done(
        f"{message} {_queued_summary(db, course_id, queued)}",
        "patients.course",
        course_id=course_id,
    )


@bp.post("/courses/<int:course_id>/prescription")
@role_required(Role.SCHEDULER)
def prescription(course_id: int):
    """A clinician's change to the number of fractions, with the reason recorded."""
    db = get_session()
    _course_or_404(db, course_id)  # one the user may not see answers 404, as everywhere
    values = {
        "fractions": request.form.get("fractions", "").strip(),
        "reason": request.form.get("reason", "").strip(),
    }
    count = _int_or_none(values["fractions"])
    errors: dict[str, str] = {}
    if count is None:
        errors["fractions"] = "choose the number of fractions"
    else:
        try:
            services.change_prescription(
                db, course_id, fractions=count, reason=values["reason"], actor_id=_staff().id
            )
        except InvalidInput as exc:
            errors = {k: v[0] for k, v in _errors_by_field(exc).items()}
        except StateConflict as exc:
            db.rollback()  # refused: nothing of it is kept, though the page redirects
            flash(f"The prescription was not changed: {exc.detail}.", "error")
            return redirect(url_for("patients.course", course_id=course_id))
    if errors:
        return _render_course(
            _course_or_404(db, course_id),
            error="The prescription was not changed: correct the fields marked.",
            prescription_errors=errors,
            prescription_values=values,
            status=422,
        )
    audit.record("prescription", "course", course_id, actor_id=_staff().id, fractions=count)
    updated = _course_or_404(db, course_id)
    plural = "s" if count != 1 else ""
    message = f"Prescription changed to {count} fraction{plural}; the reason is recorded."
    if updated.incomplete:
        message += " The course is incomplete until its missing fractions are rebooked."
    return done(message, "patients.course", course_id=course_id)
