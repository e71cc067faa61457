"""The patient's page behind their link: schedule, preparation, confirm button, calendar file.

The link's token is the patient's only credential. Whatever goes wrong with it (unknown,
expired, revoked, mistyped, wrong purpose) gets the same generic 404 page, built before
anything about its owner is read, so a guesser learns nothing. Nothing here logs tokens or
patient data.

The confirm form carries the CSRF token like every form (web/csrf.py; the patient's cookie
session holds only that token, never who they are). It also carries an HMAC, under the app's
secret key, of the link, the fraction, its version and its status: it only works for the exact
appointment the patient saw, and it is spent once the fraction is confirmed (its status
changes), so a second post has no effect.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy.orm import Session

from notifications import outbox, rendering
from notifications.ics import course_ics, uid_host
from notifications.phone_display import dial_string, national_phone
from notifications.policy import awaiting_readiness
from notifications.zone_names import zone_name
from scheduler import links, services
from scheduler.models import (
    ACTIVE_FRACTION_STATUSES,
    Course,
    Department,
    Fraction,
    FractionStatus,
    Patient,
    PatientLink,
)
from scheduler.timeutil import to_local
from web import feeds, ratelimit
from web.db import get_session
from web.patient.text import ENDED_LINK, INVALID_LINK, PAGE_TEXT, page_language

bp = Blueprint("patient_link", __name__, url_prefix="/p")

PURPOSE = "schedule"
PATIENT_RATE_LIMIT = 30  # requests per minute per address, to every /p/ URL
FORM_TOKEN_FIELD = "form_token"


def _now() -> datetime:
    return datetime.now(UTC)


# --- generic answers -------------------------------------------------------------------------


def invalid_link() -> Response:
    """The one page for every unusable link: no patient, clinic or reason in it."""
    body = render_template("patient/message.html", lines=INVALID_LINK)
    return make_response(body, 404)


def ended_link(session: Session, link: PatientLink) -> Response:
    """A real link that no longer opens the schedule: who to call, in the patient's language.

    Its holder once received the patient's message, which named the clinic; the page adds
    the clinic's phone number and nothing about the patient or their appointments.
    """
    patient = session.get(Patient, link.patient_id)
    department = session.get(Department, patient.department_id) if patient else None
    lang = page_language(patient.language if patient else None)
    text = ENDED_LINK[lang]
    body = render_template(
        "patient/ended.html",
        lang=lang,
        t=text,
        clinic_name=department.name if department else None,
        clinic_phone=national_phone(department.phone, department.holiday_country)
        if department
        else None,
        clinic_phone_dial=dial_string(department.phone, department.holiday_country)
        if department
        else None,
    )
    # Gone, not missing: the link existed and will not work again.
    return make_response(body, 410)


@bp.after_request
def _not_indexed(response: Response) -> Response:
    # The URL is a secret; a page that leaked into a crawler must not be listed.
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


# --- reading the link ------------------------------------------------------------------------


def _course_for(session: Session, link: PatientLink | None) -> Course | None:
    if link is None:
        return None
    if link.course_id is not None:
        course = session.get(Course, link.course_id)
    else:  # a patient-wide link shows the patient's latest course
        course = session.scalars(
            sa.select(Course)
            .where(Course.patient_id == link.patient_id)
            .order_by(Course.id.desc())
            .limit(1)
        ).first()
    # The link was issued for this patient: never show anyone else's course through it.
    if course is None or course.patient_id != link.patient_id:
        return None
    return course


def _link_grace() -> timedelta:
    from web import SETTINGS_KEY

    days = current_app.extensions[SETTINGS_KEY].patient_link_days_after_last_fraction
    return timedelta(days=days)


def _resolve(session: Session, token: str, now: datetime) -> tuple[PatientLink, Course] | Response:
    """The live link and its course, or the page to answer with instead."""
    state, link = links.patient_link_state(
        session, token, purpose=PURPOSE, now=now, grace=_link_grace()
    )
    if state is links.LinkState.ENDED and link is not None:
        return ended_link(session, link)
    course = _course_for(session, link if state is links.LinkState.LIVE else None)
    if link is None or course is None:
        return invalid_link()
    return link, course


def _next_fraction(
    session: Session, patient_id: int, now: datetime, *, lock: bool = False
) -> Fraction | None:
    """The patient's next active fraction: the one an SMS "C" reply would confirm too."""
    query = (
        sa.select(Fraction)
        .where(
            Fraction.patient_id == patient_id,
            Fraction.status.in_(ACTIVE_FRACTION_STATUSES),
            Fraction.starts_at > now,
        )
        .order_by(Fraction.starts_at)
        .limit(1)
    )
    if lock:
        # Held until the confirmation commits, so a concurrent move cannot slip in between
        # the check below and the confirmation (PostgreSQL; SQLite already serialises).
        query = query.with_for_update()
    return session.scalars(query).first()


def confirm_form_token(link: PatientLink, fraction: Fraction) -> str:
    """The confirm form's token: valid for this link, fraction, version and status only."""
    key = current_app.config["SECRET_KEY"]
    message = "\x1f".join(
        ("patient-confirm", link.token_digest, str(fraction.id), str(fraction.version),
         str(fraction.status))
    )  # fmt: skip
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


# --- the page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleRow:
    label: str
    date: str
    time: str
    status: str
    awaiting: bool
    past: bool
    length_note: str


def _schedule_context(
    session: Session, link: PatientLink, course: Course, token: str, now: datetime
) -> dict[str, object]:
    snapshot = outbox.course_snapshot(session, course)
    lang = page_language(snapshot.patient.language)
    tz = snapshot.patient.timezone
    text = PAGE_TEXT[lang]
    protocol = course.protocol
    first_longer = protocol.first_session_minutes > protocol.session_minutes

    rows = []
    for f in sorted(snapshot.fractions, key=lambda f: f.starts_at):
        minutes = round((f.ends_at - f.starts_at).total_seconds() / 60)
        longer = f.number == 1 and first_longer
        rows.append(
            ScheduleRow(
                label=text["session_of"].format(number=f.number, total=snapshot.fraction_count),
                date=rendering.format_date_long(f.starts_at, tz, lang),
                time=rendering.format_time(to_local(f.starts_at, tz), lang),
                status=f.status,
                awaiting=f.status == FractionStatus.TENTATIVE or awaiting_readiness(snapshot, f),
                past=f.starts_at <= now,
                length_note=text["first_longer" if longer else "about_minutes"].format(
                    minutes=minutes
                ),
            )
        )

    upcoming = _next_fraction(session, link.patient_id, now)
    next_card = None
    if upcoming is not None and upcoming.course_id == course.id:
        if upcoming.status == FractionStatus.BOOKED:
            state = "confirm"
        elif upcoming.status == FractionStatus.CONFIRMED:
            state = "confirmed"
        else:
            state = "awaiting"
        next_card = {
            "when": rendering.format_when_long(upcoming.starts_at, tz, lang),
            "state": state,
            "form_token": confirm_form_token(link, upcoming) if state == "confirm" else None,
        }

    return {
        "lang": lang,
        "t": text,
        "token": token,
        "clinic_name": snapshot.clinic_name,
        "clinic_phone": snapshot.clinic_phone,
        "clinic_phone_dial": snapshot.clinic_phone_dial,
        "rows": rows,
        "next": next_card,
        "just_confirmed": request.args.get("confirmed") == "1",
        "times_in": text["times_in"].format(tz=zone_name(tz, lang)),
        "prep": rendering.prep_instructions_for(
            protocol.prep_instructions, lang, site=protocol.site
        ).strip(),
        "form_token_field": FORM_TOKEN_FIELD,
    }


@bp.get("/<token>")
def schedule_page(token: str) -> Response | str:
    session = get_session()
    now = _now()
    found = _resolve(session, token, now)
    if isinstance(found, Response):
        return found
    link, course = found
    return render_template(
        "patient/schedule.html", **_schedule_context(session, link, course, token, now)
    )


@bp.post("/<token>/confirm")
def confirm(token: str) -> Response:
    session = get_session()
    now = _now()
    found = _resolve(session, token, now)
    if isinstance(found, Response):
        return found
    link, course = found
    submitted = request.form.get(FORM_TOKEN_FIELD, "")
    fraction = _next_fraction(session, link.patient_id, now, lock=True)
    confirmed = False
    if (
        fraction is not None
        and fraction.course_id == course.id
        and fraction.status == FractionStatus.BOOKED
        and hmac.compare_digest(submitted.encode(), confirm_form_token(link, fraction).encode())
    ):
        done = services.confirm_next_fraction(session, link.patient_id, now=now)
        confirmed = done is not None and done.id == fraction.id
    else:
        # A replayed, stale (the time moved) or forged form: nothing changes, and the page
        # shows the schedule as it now stands.
        session.rollback()
    target = url_for(".schedule_page", token=token, confirmed="1" if confirmed else None)
    return redirect(target, code=303)


@bp.get("/<token>/schedule.ics")
def schedule_ics_download(token: str) -> Response:
    from web import SETTINGS_KEY

    session = get_session()
    now = _now()
    found = _resolve(session, token, now)
    if isinstance(found, Response):
        return found
    _link, course = found
    patient = course.patient
    department = session.get(Department, patient.department_id)
    assert department is not None  # foreign key
    language = page_language(patient.language)
    body = course_ics(
        session,
        course,
        host=uid_host(current_app.extensions[SETTINGS_KEY].public_base_url),
        tz=patient.timezone or department.timezone,
        language=language,
        clinic_name=department.name,
        now=now,
    )
    filename = "citas.ics" if language == "es" else "appointments.ics"
    return feeds.ics_response(body, filename=filename)


@bp.route("/", defaults={"rest": ""}, methods=["GET", "POST"])
@bp.route("/<path:rest>", methods=["GET", "POST"])
def anything_else(rest: str) -> Response:
    """Any other /p/ URL (a truncated link, a wrong method) looks like a dead link."""
    return invalid_link()


def init_app(app: Flask) -> None:
    ratelimit.limit_blueprint(app, bp, PATIENT_RATE_LIMIT)
    app.register_blueprint(bp)
